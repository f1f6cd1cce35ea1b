"""A user's network and loss in the YAML: the forms that are accepted, every error class (naming
the key), the checks that need torch (``check-config --deep``), the init policy and the cube's
provenance."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from eosflow.config import ConfigError, validate_config
from eosflow.jobs.check import check_settings
from eosflow.jobs.spec import RunSpec
from eosflow.models import build_model, model_provenance

ROOT = Path(__file__).resolve().parents[1]

FACTORY = '''
import torch
from torch import nn


class ResMLP(nn.Module):
    def __init__(self, input_shape, n_classes, width=8):
        super().__init__()
        d = 1
        for s in input_shape:
            d *= s
        self.inp, self.norm = nn.Linear(d, width), nn.LayerNorm(width)
        self.fc, self.out = nn.Linear(width, width), nn.Linear(width, n_classes)

    def forward(self, x):
        h = torch.tanh(self.inp(x.flatten(1)))
        return self.out(h + self.fc(torch.relu(self.norm(h))))


def make(input_shape, n_classes, width=8):
    return ResMLP(input_shape, n_classes, width)


def not_a_model():
    return 3
'''


@pytest.fixture()
def user_dir(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cfg(**settings):
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    base = {"dataset": "fashion-mnist", "n_train": 100, "n_test": 50}
    cfg["settings"].update({name: {**base, **s} for name, s in settings.items()})
    return cfg


def test_user_network_and_loss_forms_are_accepted(user_dir):
    cfg = validate_config(_cfg(
        a={"model": {"factory": "mymodels.py:make", "kwargs": {"width": 6}}, "loss": {"name": "CrossEntropyLoss",
                                                                                   "label_smoothing": 0.1}},
        b={"model": {"torchvision": "resnet18", "kwargs": {"num_classes": 10}}, "loss": "ce"},
        c={"model": {"factory": "mymodels.py:make", "init": "lecun"}, "loss": "MSELoss"},
        d={"model": {"arch": "mlp", "widths": [8]}, "loss": "mymodels.py:make"}))
    assert "init" not in cfg["settings"]["a"]["model"]  # a user's network keeps its own initialisation
    assert cfg["settings"]["c"]["model"]["init"] == "lecun" and cfg["settings"]["d"]["model"]["init"] == "lecun"
    spec = RunSpec.from_settings(cfg, "a", 0.1, 0)
    assert RunSpec.from_record(spec.record()) == spec and spec.record()["loss"]["label_smoothing"] == 0.1
    assert check_settings(cfg, ["a", "c"]) == []


@pytest.mark.parametrize("setting, expected", [
    ({"model": {"factory": "mymodels.py:make", "arch": "mlp"}, "loss": "ce"},
     ["settings.x.model", "exactly one of arch", "factory", "torchvision"]),
    ({"model": {"kwargs": {}}, "loss": "ce"}, ["settings.x.model", "exactly one of"]),
    ({"model": {"factory": "mymodels.py:make", "widths": [3]}, "loss": "ce"},
     ["settings.x.model", "['widths'] do not apply to a factory model"]),
    ({"model": {"arch": "mlp", "widths": [4], "kwargs": {"a": 1}}, "loss": "ce"}, ["settings.x.model.kwargs"]),
    ({"model": {"factory": "mymodels.make"}, "loss": "ce"}, ["settings.x.model.factory", "'pkg.module:function'"]),
    ({"model": {"factory": "missing.py:make"}, "loss": "ce"}, ["settings.x.model.factory", "no file missing.py"]),
    ({"model": {"factory": "no_such_pkg_q.mod:make"}, "loss": "ce"},
     ["settings.x.model.factory", "no module 'no_such_pkg_q'", "PYTHONPATH"]),
    ({"model": {"torchvision": "resnet-18"}, "loss": "ce"}, ["settings.x.model.torchvision", "not a model name"]),
    ({"model": {"arch": "mlp", "widths": [4]}, "loss": "HingeLoss"}, ["settings.x.loss", "unknown loss 'HingeLoss'",
                                                                      "CrossEntropyLoss"]),
    ({"model": {"arch": "mlp", "widths": [4]}, "loss": {"name": "ce", "weight": 1}},
     ["settings.x.loss.name", "takes no keyword arguments"]),
    ({"model": {"arch": "mlp", "widths": [4]}, "loss": {"label_smoothing": 0.1}}, ["settings.x.loss"]),
])
def test_config_errors_name_the_key(user_dir, setting, expected):
    with pytest.raises(ConfigError) as e:
        validate_config(_cfg(x=setting))
    for s in expected:
        assert s in str(e.value), (s, str(e.value))


@pytest.mark.parametrize("setting, expected", [
    ({"model": {"factory": "mymodels.py:not_a_model"}, "loss": "ce"},
     ["settings.x.model.factory", "returned int, not a torch.nn.Module"]),
    ({"model": {"factory": "mymodels.py:make", "kwargs": {"n_classes": 3}}, "loss": "ce"},
     ["settings.x.model", "3 outputs", "settings.x.dataset has 10 classes"]),
    ({"model": {"factory": "mymodels.py:make", "kwargs": {"wdth": 3}}, "loss": "ce"},
     ["settings.x.model.factory", "unexpected keyword argument 'wdth'"]),
    ({"model": {"factory": "mymodels.py:nothing"}, "loss": "ce"}, ["settings.x.model.factory", "has no 'nothing'"]),
    ({"model": {"torchvision": "resnet18"}, "loss": "ce"},
     ["settings.x.model", "does not run on the inputs of settings.x.dataset", "(1, 28, 28)", "3 channels"]),
    ({"model": {"torchvision": "resnet1800"}, "loss": "ce"}, ["settings.x.model.torchvision", "not a torchvision"]),
    ({"model": {"factory": "mymodels.py:make"}, "loss": {"name": "CrossEntropyLoss", "bogus": 2}},
     ["settings.x.loss", "CrossEntropyLoss(bogus=2) failed"]),
    ({"model": {"factory": "mymodels.py:make"}, "loss": "mymodels.py:make"}, ["settings.x.loss"]),
])
def test_deep_checks_name_the_key(user_dir, setting, expected):
    cfg = validate_config(_cfg(x=setting))
    problems = "\n".join(check_settings(cfg, ["x"]))
    for s in expected:
        assert s in problems, (s, problems)


def test_check_config_deep_on_the_command_line(user_dir):
    (user_dir / "over.yaml").write_text(yaml.safe_dump({"settings": {"x": {
        "dataset": "fashion-mnist", "n_train": 100, "n_test": 50, "loss": "ce",
        "model": {"factory": "mymodels.py:make", "kwargs": {"n_classes": 4}}}}}))
    cmd = [sys.executable, "-m", "eosflow", "check-config", "--default", str(ROOT / "config/config.yaml"), "over.yaml"]
    assert subprocess.run(cmd, capture_output=True, text=True).returncode == 0  # the schema alone cannot see it
    r = subprocess.run(cmd + ["--deep"], capture_output=True, text=True)
    assert r.returncode == 1 and "settings.x.model: the network has 4 outputs" in r.stderr


def test_user_network_seed_init_and_provenance(user_dir):
    spec = {"factory": "mymodels.py:make", "kwargs": {"width": 5}}
    a, b = build_model(spec, (1, 4, 4), 3, seed=1), build_model(spec, (1, 4, 4), 3, seed=1)
    c = build_model(spec, (1, 4, 4), 3, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.inp.weight, c.inp.weight)
    lecun = build_model({**spec, "init": "lecun"}, (1, 4, 4), 3, seed=1)
    assert torch.all(lecun.inp.bias == 0) and not torch.all(a.inp.bias == 0)
    assert torch.equal(lecun.norm.weight, a.norm.weight)  # only Linear/Conv2d are re-initialised
    prov = model_provenance(spec)
    import hashlib
    assert prov["model_factory"] == "mymodels.py:make" and prov["model_qualname"].endswith(":make")
    assert prov["model_source_sha256"] == hashlib.sha256((user_dir / "mymodels.py").read_bytes()).hexdigest()[:16]
    tv = build_model({"torchvision": "resnet18"}, (3, 16, 16), 4, seed=0)
    assert tv(torch.zeros(2, 3, 16, 16)).shape == (2, 4)
    assert model_provenance({"torchvision": "resnet18"})["model_torchvision"] == "resnet18"
