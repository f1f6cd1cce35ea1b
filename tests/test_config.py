"""Bad configurations give an error naming the key and the allowed values."""
import copy
from pathlib import Path

import pytest
import yaml

from eosflow.config import ConfigError, load_config, lr_tag, tracks_sharpness, validate_config
from eosflow.jobs.spec import InloopSpec, run_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def cfg():
    return yaml.safe_load((ROOT / "config/config.yaml").read_text())


def test_default_and_paper_configs_are_valid():
    for name in ("config.yaml", "paper.yaml"):
        c = load_config(ROOT / "config" / name)
        assert c["train"]["acc_goal"] == pytest.approx(0.999)
        assert c["fig5"]["lrs_relative"] and c["fig5"]["lrs"] is None and c["fig5"]["lr_unit"] == "seed"


def test_defaults_are_filled(cfg):
    del cfg["train"]
    out = validate_config(cfg)
    assert out["train"]["max_epochs"] == 3000 and out["hessian"]["k"] == 3


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c.__setitem__("bogus", 1), ["bogus", "allowed keys", "settings"]),
    (lambda c: c["train"].__setitem__("max_epoch", 10), ["train", "max_epoch", "max_epochs"]),
    (lambda c: c["train"].__setitem__("max_epochs", "ten"), ["train.max_epochs", "wrong type", "integer"]),
    (lambda c: c["fig5"].update(lrs=[0.1, -0.2], lrs_relative=None), ["fig5.lrs[1]", "must be > 0"]),
    (lambda c: c["fig5"].update(lrs=[0.0], lrs_relative=None), ["fig5.lrs[0]", "must be > 0"]),
    (lambda c: c["fig5"].update(lrs=[], lrs_relative=None), ["fig5.lrs", "at least 1"]),
    (lambda c: c["fig5"].__setitem__("lrs_relative", [0.5, -1]), ["fig5.lrs_relative[1]", "must be > 0"]),
    (lambda c: c["fig5"].__setitem__("lrs", [0.1, 0.2]), ["fig5", "both lrs and lrs_relative", "null"]),
    (lambda c: c["fig5"].__setitem__("lrs_relative", None), ["fig5", "no learning rates", "lrs_relative"]),
    (lambda c: c["fig5"].__setitem__("lr_unit", "mean"), ["fig5.lr_unit", "seed", "median"]),
    (lambda c: c["fig5"].__setitem__("seeds", []), ["fig5.seeds", "at least 1"]),
    (lambda c: c["settings"]["fmnist_mlp"].__setitem__("dataset", "mnist"),
     ["settings.fmnist_mlp.dataset", "'mnist'", "fashion-mnist", "cifar10"]),
    (lambda c: c["settings"]["fmnist_mlp"]["model"].__setitem__("arch", "resnet"),
     ["settings.fmnist_mlp.model.arch", "mlp", "cnn", "vgg"]),
    (lambda c: c["settings"]["fmnist_mlp"].__setitem__("loss", "hinge"), ["settings.fmnist_mlp.loss", "ce", "mse"]),
    (lambda c: c.__setitem__("device", "tpu"), ["device", "auto", "cpu", "cuda"]),
    (lambda c: c["fig5"].__setitem__("settings", ["nope"]), ["fig5.settings[0]", "nope", "fmnist_mlp"]),
    (lambda c: c["settings"]["fmnist_mlp"]["model"].__setitem__("blocks", 3), ["settings.fmnist_mlp.model", "blocks", "widths"]),
])
def test_bad_config_names_key(cfg, mutate, expected):
    bad = copy.deepcopy(cfg)
    mutate(bad)
    with pytest.raises(ConfigError) as e:
        validate_config(bad)
    for word in expected:
        assert word in str(e.value), (word, str(e.value))


def test_malformed_yaml_names_file(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("settings:\n  a: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(p)


def test_lr_tag_is_canonical():
    assert lr_tag(0.1) == lr_tag("0.1") == lr_tag(1e-1) == "0.1"
    assert lr_tag(3.2) == "3.2" and lr_tag(1e-5) == "1e-05" and lr_tag(2) == "2"


def test_check_config_cli_names_file_and_line(tmp_path, capsys):
    from eosflow.__main__ import main

    bad = tmp_path / "mine.yaml"
    bad.write_text("fig5:\n  lrs: [0.1, 0.2\n")
    assert main(["check-config", str(bad), "--default", str(ROOT / "config/config.yaml")]) == 1
    err = capsys.readouterr().err
    assert "mine.yaml: not valid YAML" in err and "line" in err
    neg = tmp_path / "neg.yaml"
    neg.write_text("fig5:\n  lrs: [-1]\n")
    assert main(["check-config", str(neg), "--default", str(ROOT / "config/config.yaml")]) == 1
    assert "fig5.lrs[0]" in capsys.readouterr().err
    assert main(["check-config", str(ROOT / "config/paper.yaml"), "--default", str(ROOT / "config/config.yaml")]) == 0


def test_sweep_lr_tags_name_runs_by_multiple_or_value():
    from eosflow.config import parse_lr_tag, sweep_lr_tags

    assert sweep_lr_tags({"lrs_relative": [0.5, 1.0, 1.41], "lrs": None}) == ["x0.5", "x1", "x1.41"]
    assert sweep_lr_tags({"lrs": [0.1, 0.02], "lrs_relative": None}) == ["0.1", "0.02"]
    assert parse_lr_tag("x1.41") == (1.41, True) and parse_lr_tag("0.02") == (0.02, False)


def test_in_loop_sharpness_is_one_predicate_and_only_it_adds_the_tracker_keys():
    """A run tracks S(θ) in its loop when sharpness_every > 0 or under a clamp; only then does its
    training job depend on a tolerance and an iteration cap, its own (the run's InloopSpec): the
    hessian block's tol, or train.clamp_tol for a clamped run, chosen once."""
    assert tracks_sharpness({"sharpness_every": 10, "clamp": None})
    assert tracks_sharpness({"sharpness_every": 0, "clamp": 0.95})
    assert not tracks_sharpness({"sharpness_every": 0, "clamp": None})
    cfg = load_config(ROOT / "config/config.yaml")
    assert cfg["train"]["clamp_margin"] == 0  # the exact clamp by default
    cfg["train"]["clamp_tol"], cfg["train"]["clamp_margin"] = 1e-2, 0.02
    plain = run_spec(cfg, "sweep", "fmnist_mlp", "x1", 0)
    assert plain.inloop == InloopSpec(tol=1e-3, max_iter=100, clamped=False)
    assert plain.record()["inloop_sharpness"] == {"tol": 1e-3, "max_iter": 100} and "hessian" not in plain.record()
    twin = run_spec(cfg, "ablation", "fmnist_mlp", "x1.4", 0)  # the clamped twins: every step, to clamp_tol
    assert twin.clamp == 0.95 and twin.inloop == InloopSpec(tol=1e-2, max_iter=100, clamped=True, margin=0.02)
    assert twin.record()["inloop_sharpness"] == {"tol": 1e-2, "max_iter": 100, "every": 1, "margin": 0.02}
    assert InloopSpec.from_record(twin.record()["inloop_sharpness"]) == twin.inloop
    cfg["train"]["sharpness_every"] = 0
    assert run_spec(cfg, "sweep", "fmnist_mlp", "x1", 0).inloop is None
    assert "inloop_sharpness" not in run_spec(cfg, "sweep", "fmnist_mlp", "x1", 0).record()
    assert run_spec(cfg, "ablation", "fmnist_mlp", "x1", 0).inloop is not None
