"""Tiny real runs of figures/ext/sgd_flattening.pdf and figures/ext/clipped_ada.pdf (issue 12):
snakemake as a subprocess in a temporary copy with tests/data/tiny.yaml."""
import json

import numpy as np
import pytest
import xarray as xr

from test_workflow import check_claims, copy_workflow, snakemake

pytestmark = pytest.mark.workflow
TARGETS = ["figures/ext/sgd_flattening.pdf", "figures/ext/clipped_ada.pdf"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("wf_opt"))


def test_tiny_run_builds_both_figures(workdir):
    snakemake(workdir, *TARGETS)
    for fig in ("ext/sgd_flattening", "ext/clipped_ada"):
        assert (workdir / f"figures/{fig}.pdf").read_bytes()[:4] == b"%PDF"
        assert (workdir / f"figures/{fig}.png").stat().st_size > 10_000
        data = check_claims(workdir / f"figures/{fig}.claims.json", fig)
        # one seed: every claim is undetermined, with its reason
        assert {c["verdict"] for c in data["claims"]} == {"undetermined"}
        assert all("seeds 1 < 3" in c["reason"] for c in data["claims"])
    sgd = sorted((workdir / "results/runs/sgd_flattening").rglob("cube.nc"))
    assert [p.parent.parent.parent.name for p in sgd] == ["gd", "gd", "sgd_b20", "sgd_b20"]
    for p in sgd:
        ds = xr.open_dataset(p)
        assert ds.attrs["stability_threshold"] == pytest.approx(2 / float(ds["lr"]))
        assert np.isnan(ds["precond_sharpness"].values).all()  # SGD: no preconditioner
        assert list(ds["hstep"].values) == [0, 4, 8, 12]
    ada = sorted((workdir / "results/runs/clipped_ada").rglob("cube.nc"))
    assert len(ada) == 4  # adam, clipped_adam c=0.1, adam beta1=0, clipped_rmsprop c=0.1
    for p in ada:
        ds = xr.open_dataset(p)
        cfg = json.loads(ds.attrs["config"])
        assert cfg["train"]["batch_size"] == 20 and cfg["train"]["beta2"] == 0.99
        assert ds.attrs["stability_threshold"] == pytest.approx(
            (2 + 2 * 0.9) / (0.1 * 0.01) if ds.attrs["optimizer"] == "adam" and cfg["train"]["beta1"] == 0.9
            else (38 / 0.01 if ds.attrs["optimizer"] == "clipped_adam" else 2 / 0.01))
        pre = ds["precond_sharpness"].values
        if ds.attrs["status"] != "diverged":
            assert np.isnan(pre[0]) and np.isfinite(pre[1:]).all()  # minibatch: no P before the first step
            assert (ds["precond_residual"].values[1:] <= 1e-3).all()
    out = snakemake(workdir, "-n", *TARGETS)
    assert "Nothing to be done" in out.stdout + out.stderr


def test_bad_optimizer_config_fails_before_any_job(workdir):
    (workdir / "bad_opt.yaml").write_text("train:\n  optimizer: clipped_adam\n")
    out = snakemake(workdir, "-n", TARGETS[0], check=False, configs=("tiny.yaml", "bad_opt.yaml"))
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "config key train.clip" in text and "Select jobs" not in text
