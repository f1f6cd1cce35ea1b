"""ext/spectrum: the statistics from constructed SLQ measures (λ_max, the quantile width, the claims'
direction), the spectrum_density job's NetCDF on a tiny model against a dense Hessian, and the
workflow target on tiny.yaml."""
import json
import math
import time

import numpy as np
import pytest
import torch
import xarray as xr
from test_pipeline import fake_data, small_config, spec
from test_workflow import copy_workflow, snakemake

from eosflow.figures.spectrum import (lambda_max, make_spectrum, probe_measure, quantile_width, seed_values,
                                      spectrum_claims)
from eosflow.jobs.spectrum import POINTS, run_spectrum_density
from eosflow.jobs.train import run_train
from eosflow.models import build_model
from eosflow.objective import Objective

Q = (0.05, 0.95)


def test_probe_measure_averages_the_probes_and_drops_padding():
    nodes = np.array([[0.0, 1.0, np.nan], [2.0, 3.0, 4.0]])
    weights = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    x, w = probe_measure(nodes, weights)
    np.testing.assert_allclose(x, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(w, [0.25, 0.25, 0.1, 0.15, 0.25])
    assert lambda_max(nodes, weights) == 4.0
    assert math.isnan(lambda_max(np.full((1, 2), np.nan), np.zeros((1, 2))))


def test_quantile_width_of_a_known_measure():
    # 100 equal atoms at 0..99 (one probe): the 5 % quantile is 4 (cumulative 0.05), the 95 % is 94
    nodes = np.arange(100.0)[None, :]
    weights = np.full((1, 100), 0.01)
    assert quantile_width(nodes, weights, *Q) == pytest.approx(90.0)
    # an outlier carrying 1 % of the mass moves λ_max, not the width
    nodes2 = np.r_[np.linspace(-1, 1, 99), 50.0][None, :]
    weights2 = np.full((1, 100), 0.01)
    assert lambda_max(nodes2, weights2) == 50.0
    assert quantile_width(nodes2, weights2, *Q) == pytest.approx(nodes2[0, 94] - nodes2[0, 4])
    # two probes of the same measure: the same width
    assert quantile_width(np.repeat(nodes, 2, 0), np.repeat(weights, 2, 0), *Q) == pytest.approx(90.0)


def seed_dataset(tops, widths, losses=None, probes=2, n=40):
    """A density file of one seed: per instability, (onset, peak, end) measures of ``n`` atoms spread
    evenly over [-width/2, width/2] plus an outlier at the top (1 % of the mass)."""
    tops, widths = np.asarray(tops, float), np.asarray(widths, float)
    k = tops.shape[0]
    nodes = np.zeros((k, 3, probes, n + 1))
    weights = np.zeros_like(nodes)
    for i in range(k):
        for j in range(3):
            nodes[i, j, :, :n] = np.linspace(-widths[i, j] / 2, widths[i, j] / 2, n)
            nodes[i, j, :, n] = tops[i, j]
            weights[i, j, :, :n], weights[i, j, :, n] = 0.99 / n, 0.01
    loss = np.ones((k, 3)) if losses is None else np.asarray(losses, float)
    grid = np.linspace(-5, 20, 200)
    dens = np.exp(-0.5 * grid**2)[None, None, :].repeat(k, 0).repeat(3, 1)
    return xr.Dataset({"density": (("instability", "point", "grid"), dens),
                       "slq_nodes": (("instability", "point", "probe", "node"), nodes),
                       "slq_weights": (("instability", "point", "probe", "node"), weights),
                       "loss": (("instability", "point"), loss),
                       "step": (("instability", "point"), np.arange(3 * k).reshape(k, 3) * 5 + 10)},
                      coords={"instability": np.arange(1, k + 1), "point": list(POINTS), "grid": grid},
                      attrs={"probes": np.int64(probes), "steps": np.int64(n + 1), "sigma": 0.1, "distribution": "rademacher",
                             "probe_seed": 0})


def plan(seed):
    return {"seed": seed, "lr": 0.14}


def test_seed_values_follow_the_registry_statistics():
    ds = seed_dataset([[10, 16, 8], [12, 20, 12]], [[1.0, 1.5, 1.2], [2.0, 2.0, 1.0]])
    v = seed_values(ds, plan(3), *Q)
    r1, r2 = v["instabilities"]
    assert r1["onset"]["lambda_max"] == 10 and r1["end"]["lambda_max"] == 8
    assert r1["top"] == pytest.approx(math.log(0.8)) and r2["top"] == pytest.approx(0.0)
    w = [r1[p]["width"] for p in ("onset", "end")]
    assert r1["bulk"] == pytest.approx(abs(math.log(w[1] / w[0])))
    assert w[1] / w[0] == pytest.approx(1.2, rel=0.03)  # the width scales with the bulk's
    assert r2["bulk"] == pytest.approx(math.log(2.0), rel=0.03)
    assert v["top"] == pytest.approx((math.log(0.8) + 0.0) / 2)  # the mean over the seed's instabilities
    assert v["bulk"] == pytest.approx((r1["bulk"] + r2["bulk"]) / 2)
    # a non-finite loss at the onset or the end counts against both claims; at the peak it does not
    bad = seed_values(seed_dataset([[10, 16, 8]], [[1, 1, 1]], losses=[[1, 1, np.inf]]), plan(0), *Q)
    assert bad["top"] == math.inf and bad["bulk"] == math.inf
    peak = seed_values(seed_dataset([[10, 16, 8]], [[1, 1, 1]], losses=[[1, np.nan, 1]]), plan(0), *Q)
    assert peak["top"] == pytest.approx(math.log(0.8))


def test_claims_direction_over_seeds(tmp_path):
    """Seven seeds whose top falls and whose bulk stays: both hold; the top rising and the bulk
    doubling: both fail. A seed without chosen instabilities drops out with a note."""
    falls = [seed_dataset([[10, 15, 7 + 0.1 * s]], [[1, 1.2, 1.02]]) for s in range(7)]
    values = [seed_values(ds, plan(s), *Q) for s, ds in enumerate(falls)]
    top, bulk = spectrum_claims(values)
    assert (top.verdict, bulk.verdict) == ("holds", "holds")
    assert top.value < 0 and bulk.value < 0.2231 and len(top.values) == 7
    rises = [seed_dataset([[10, 15, 12 + 0.1 * s]], [[1, 1.2, 2.0]]) for s in range(7)]
    values = [seed_values(ds, plan(s), *Q) for s, ds in enumerate(rises)]
    empty = seed_dataset(np.zeros((0, 3)), np.zeros((0, 3)))
    values.append(seed_values(empty, plan(9), *Q))
    top, bulk = spectrum_claims(values)
    assert (top.verdict, bulk.verdict) == ("fails", "fails")
    assert "left out (no chosen instability): seeds [9]" in top.note
    claims = make_spectrum(rises + [empty], [plan(s) for s in range(8)], tmp_path / "s.pdf", tmp_path / "s.png",
                           tmp_path / "s.json")
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["figure"] == "ext/spectrum" and [c["id"] for c in data["claims"]] == [
        "spectrum.top_falls", "spectrum.bulk_stays"]
    assert [c.verdict for c in claims] == ["fails", "fails"] and data["drawn_seed"] == 0
    assert (tmp_path / "s.pdf").read_bytes()[:4] == b"%PDF"


def test_the_job_writes_densities_at_the_planned_points(tmp_path):
    data = fake_data(tmp_path / "d.pt", 40, 10, 3, 3, seed=2)
    cfg = small_config({"arch": "mlp", "widths": [4], "activation": "tanh"}, "ce",
                       train={"max_epochs": 12, "snapshot_every": 1, "acc_goal": None, "dtype": "float64"})
    run_train(spec(cfg, 0.5, 0), tmp_path / "d.pt", tmp_path / "m.nc", tmp_path / "s.pt", progress=False)
    chosen = [{"onset": 2, "peak": 4, "end": 6}, {"onset": 8, "peak": 9, "end": 11}]
    sc = {"seeds": None, "probes": 3, "steps": 60, "distribution": "rademacher", "seed": 1, "grid": 300,
          "sigma": None, "sigma_relative": 0.02}
    out = tmp_path / "density.nc"
    run_spectrum_density(cfg, sc, "s", tmp_path / "d.pt", tmp_path / "m.nc", tmp_path / "s.pt",
                         {"seed": 0, "chosen": chosen}, out, progress=False)
    ds = xr.load_dataset(out)
    assert dict(ds["density"].sizes) == {"instability": 2, "point": 3, "grid": 300}
    assert list(ds["point"].values) == ["onset", "peak", "end"]
    assert ds["step"].values.tolist() == [[2, 4, 6], [8, 9, 11]]
    assert ds["slq_nodes"].dims == ("instability", "point", "probe", "node")
    metrics = xr.load_dataset(tmp_path / "m.nc")
    np.testing.assert_allclose(ds["loss"].values, metrics["train_loss"].sel(step=ds["step"].values.ravel())
                               .values.reshape(2, 3), rtol=1e-6)  # metrics: float32 on disk
    # each density integrates to about 1 over the shared grid
    mass = np.trapezoid(ds["density"].values, ds["grid"].values, axis=-1)
    np.testing.assert_allclose(mass, 1.0, atol=1e-3)
    # steps >= the dimension: every probe's quadrature is exact, λ_max the dense Hessian's top eigenvalue
    theta = torch.load(tmp_path / "s.pt")["theta"][6].double()
    model = build_model(cfg["settings"]["s"]["model"], (1, 3, 3), 3, seed=0).double()
    obj = Objective(model, data["x_train"].double(), data["y_train"], "ce")
    H = torch.func.hessian(lambda t: obj.sum_loss(t, obj.x, obj.y) / obj.n)(theta)
    top = float(torch.linalg.eigvalsh(H)[-1])
    assert lambda_max(ds["slq_nodes"].sel(instability=1, point="end").values,
                      ds["slq_weights"].sel(instability=1, point="end").values) == pytest.approx(top, rel=1e-6)
    assert ds.attrs["probes"] == 3 and json.loads(ds.attrs["config"])["spectrum"]["seed"] == 1


@pytest.mark.workflow
def test_workflow_builds_the_spectrum_target(tmp_path):
    wd = copy_workflow(tmp_path)
    start = time.time()
    snakemake(wd, "figures/ext/spectrum.pdf")
    elapsed = time.time() - start
    assert (wd / "figures/ext/spectrum.pdf").read_bytes()[:4] == b"%PDF"
    data = json.loads((wd / "figures/ext/spectrum.claims.json").read_text())
    assert [c["id"] for c in data["claims"]] == ["spectrum.top_falls", "spectrum.bulk_stays"]
    seeds = [v["seed"] for v in data["seeds"]]
    assert seeds == [0, 1]  # tiny.yaml's fig2 seeds (spectrum.seeds null: all of them)
    for s in seeds:
        ds = xr.load_dataset(wd / f"results/figures/spectrum/seed{s}/density.nc")
        plan = json.loads((wd / f"results/figures/fig2/seed{s}/plan.json").read_text())
        assert ds.sizes["instability"] == len(plan["chosen"]) and ds.sizes["point"] == 3
        assert (wd / f"results/logs/figures/spectrum_density_seed{s}.log").exists()
    assert elapsed < 240, elapsed
    # a seed that is not one of fig2's fails with the key's name
    (wd / "bad.yaml").write_text("spectrum:\n  seeds: [7]\n")
    out = snakemake(wd, "-n", "-F", "figures/ext/spectrum.pdf", check=False, configs=("tiny.yaml", "bad.yaml"))
    assert out.returncode != 0 and "spectrum.seeds" in out.stdout + out.stderr
