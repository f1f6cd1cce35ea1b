"""A user's setting end to end through snakemake, in a temporary copy of the workflow: a network
from the user's own factory file, data from an ``.npz`` file, a torch.nn loss with keyword
arguments. fig5, the instability ablation and the generalization map build on it; the cubes record
the factory's provenance; a factory that does not fit its data stops the workflow before any job
with the key named."""
import hashlib
import json

import numpy as np
import pytest
import xarray as xr
import yaml

from test_user_config import FACTORY  # a residual MLP with LayerNorm: make(input_shape, n_classes, width)
from test_workflow import copy_workflow, snakemake

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def user_workdir(tmp_path_factory):
    d = copy_workflow(tmp_path_factory.mktemp("wfu"))
    (d / "mymodels.py").write_text(FACTORY)
    rng = np.random.default_rng(0)
    (d / "data").mkdir()
    n_classes, shape = 4, (1, 6, 6)
    centres = rng.normal(size=(n_classes, *shape))

    def split(n):
        y = np.arange(n) % n_classes
        return (centres[y] + 0.8 * rng.normal(size=(n, *shape))).astype(np.float32), y.astype(np.int64)

    (xtr, ytr), (xte, yte) = split(80), split(40)
    np.savez(d / "data" / "mine.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    cfg = yaml.safe_load((d / "tiny.yaml").read_text())
    cfg["settings"]["mine"] = {"dataset": "data/mine.npz", "n_train": 60, "n_test": 40,
                               "model": {"factory": "mymodels.py:make", "kwargs": {"width": 8}},
                               "loss": {"name": "CrossEntropyLoss", "label_smoothing": 0.05}, "chunk_size": 30}
    cfg["fig5"] = {**cfg["fig5"], "settings": ["mine"], "lrs": None, "lrs_relative": [0.5, 2.0]}
    cfg["ablation"] = {**cfg.get("ablation", {}), "setting": "mine", "lrs_relative": [2.0]}
    cfg["generalization_map"] = {**cfg["generalization_map"], "settings": ["mine"], "lrs_relative": [0.5, 2.0],
                                 "ablation": ["mine"]}
    (d / "user.yaml").write_text(yaml.safe_dump(cfg))
    bad = yaml.safe_load(yaml.safe_dump(cfg))
    bad["settings"]["mine"]["model"]["kwargs"] = {"width": 8, "n_classes": 3}
    (d / "bad.yaml").write_text(yaml.safe_dump(bad))
    return d


def test_a_factory_that_does_not_fit_its_data_stops_before_any_job(user_workdir):
    out = snakemake(user_workdir, "figures/fig5.pdf", check=False, configs=("bad.yaml",))
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "config key settings.mine.model: the network has 3 outputs but settings.mine.dataset has 4 classes" in text
    assert not (user_workdir / "results").exists() or not list((user_workdir / "results").rglob("*.pt"))


def test_fig5_ablation_and_map_build_on_a_user_factory_and_npz(user_workdir):
    targets = ["figures/fig5.pdf", "figures/ext/instability_ablation.pdf", "figures/ext/generalization_map.pdf"]
    snakemake(user_workdir, *targets, configs=("user.yaml",))
    for t in targets:
        assert (user_workdir / t).stat().st_size > 0, t
    cubes = sorted((user_workdir / "results/runs/sweep/mine").glob("const/*/seed0/cube.nc"))
    assert len(cubes) == 2
    sha = hashlib.sha256((user_workdir / "mymodels.py").read_bytes()).hexdigest()[:16]
    for c in cubes:
        attrs = xr.open_dataset(c).attrs
        assert attrs["model_factory"] == "mymodels.py:make" and attrs["model_source_sha256"] == sha
        run = json.loads(attrs["config"])
        assert run["loss"] == {"name": "CrossEntropyLoss", "label_smoothing": 0.05}
        assert run["dataset"] == "data/mine.npz" and "init" not in run["model"]
    claims = json.loads((user_workdir / "figures/fig5.claims.json").read_text())
    assert claims["claims"]
    assert list((user_workdir / "results/runs/ablation/mine").rglob("cube.nc"))
