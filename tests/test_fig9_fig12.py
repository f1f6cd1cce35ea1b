"""fig9 (accuracy and S_final against eta on a x2 grid, up to divergence) and fig12 (fig3's slices for the
second setting): fig9's statistics and verdicts on run tables with known answers; fig12's plan and slices
reduce to fig3's for fig3's block; one tiny workflow run building both."""
import json

import numpy as np
import pytest
import torch
import xarray as xr
from test_fig2 import FIG2, FIG3, trace_cube
from test_workflow import check_claims, copy_workflow, snakemake

from eosflow.config import ConfigError, validate_config
from eosflow.figures.fig9 import (
    DROP_MARGIN, diverged_per_lr, fig9_claims, make_fig9, outcome, run_rows, seed_table,
)
from eosflow.files import save_torch
from eosflow.jobs.slices import run_slices
from eosflow.jobs.spec import RunSpec
from eosflow.jobs.train import run_train
from eosflow.plans import plan_fig2, plan_slices

GRID = [0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4]


def summary(acc_by_seed: dict, eta_eos: dict, diverge_from: dict | None = None, setting="fmnist_cnn"):
    """A summary dataset as :func:`eosflow.summary.summarize_runs` writes it: per seed an accuracy per
    grid eta; runs at or above ``diverge_from[seed]`` are diverged (accuracy at chance, S NaN); an
    accuracy of 0.1 is a collapsed run (training accuracy at chance too)."""
    rows = []
    for seed, accs in acc_by_seed.items():
        for lr, acc in zip(GRID, accs):
            div = diverge_from is not None and lr >= diverge_from.get(seed, np.inf)
            rows.append({"lr": lr, "seed": seed, "status": "diverged" if div else "converged",
                         "final_test_acc": 0.1 if div else acc, "sharpness_final": np.nan if div else 1.9 / lr,
                         "final_train_acc": 0.1 if div or acc <= 0.1 else 1.0,
                         "eta_eos": eta_eos[seed]})
    return xr.Dataset({k: ("run", np.array([r[k] for r in rows])) for k in
                       ("status", "final_test_acc", "sharpness_final", "final_train_acc", "eta_eos")},
                      coords={"lr": ("run", [r["lr"] for r in rows]), "seed": ("run", [r["seed"] for r in rows]),
                              "setting": ("run", [setting] * len(rows))})


#           0.025 0.05  0.1   0.2   0.4   0.8   1.6   3.2   6.4
PEAKED = [0.70, 0.71, 0.72, 0.75, 0.78, 0.74, 0.60, 0.1, 0.1]  # best at 0.4; 1.6 is 0.18 below it
LOW = [0.76, 0.78, 0.75, 0.74, 0.72, 0.70, 0.69, 0.1, 0.1]  # best at 0.05


def by_name(claims):
    return {c.name: c for c in claims}


def test_peak_above_the_limit_and_fall_before_divergence_hold(tmp_path):
    ds = summary({0: PEAKED, 1: PEAKED, 2: PEAKED}, {0: 0.1, 1: 0.1, 2: 0.05}, {0: 3.2, 1: 3.2, 2: 3.2})
    table = seed_table(run_rows(ds))
    assert [t["eta_best"] for t in table] == [0.4, 0.4, 0.4]
    assert [t["log2_best_over_eos"] for t in table] == pytest.approx([2.0, 2.0, 3.0])
    assert [t["eta_last"] for t in table] == [1.6] * 3 and [t["eta_first_failed"] for t in table] == [3.2] * 3
    assert [t["drop"] for t in table] == pytest.approx([0.18] * 3)
    c = by_name(fig9_claims(run_rows(ds)))
    peak, fall = c["accuracy peaks at an eta above the stability limit"], c["accuracy falls before divergence"]
    assert peak.verdict == "holds" and peak.value == pytest.approx(7 / 3) and peak.interval[0] > 0
    assert fall.verdict == "holds" and fall.value == pytest.approx(0.18) and fall.interval[0] > DROP_MARGIN
    assert "fraction of seeds whose drop exceeds 0.01: 1 (3 seeds)" in fall.note
    assert diverged_per_lr(run_rows(ds))[-2:] == [{"lr": 3.2, "runs": 3, "diverged": 3, "collapsed": 0},
                                                  {"lr": 6.4, "runs": 3, "diverged": 3, "collapsed": 0}]
    assert sum(d["diverged"] for d in diverged_per_lr(run_rows(ds))) == 6
    claims, fig = make_fig9(ds, tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "f.json", keep_open=True)
    assert "fmnist_cnn" in fig._suptitle.get_text()
    out = json.loads((tmp_path / "f.json").read_text())
    assert out["figure"] == "fig9" and out["verdicts"]["holds"] == 2 and len(out["runs"]) == 27
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"


def test_a_collapsed_run_fails_like_a_diverged_one():
    # seed 0 collapses to chance at 1.6 (status max_epochs) and diverges from 3.2; seed 1 collapses at
    # 1.6-6.4 and never diverges: for both, the last run before failure is 0.8 (0.04 below the peak)
    collapsing = PEAKED[:6] + [0.1, 0.1, 0.1]
    ds = summary({0: collapsing, 1: collapsing, 2: PEAKED}, {0: 0.1, 1: 0.1, 2: 0.1}, {0: 3.2, 2: 3.2})
    ds["status"].values[ds["final_train_acc"].values <= 0.1] = "diverged"
    ds["status"].values[(ds["seed"].values == 1) | ((ds["lr"].values == 1.6) & (ds["seed"].values == 0))] = \
        "max_epochs"
    rows = run_rows(ds)
    assert [outcome(r) for r in rows if r["seed"] == 1][-3:] == ["collapsed"] * 3
    table = seed_table(rows)
    assert [t["eta_last"] for t in table] == [0.8, 0.8, 1.6]
    assert [t["drop"] for t in table] == pytest.approx([0.04, 0.04, 0.18])
    counts = {d["lr"]: (d["diverged"], d["collapsed"]) for d in diverged_per_lr(rows)}
    assert counts[1.6] == (0, 2) and counts[3.2] == (2, 1) and counts[0.8] == (0, 0)
    fall = by_name(fig9_claims(rows))["accuracy falls before divergence"]
    assert fall.evidence == {"seeds": 3} and fall.value == pytest.approx(0.26 / 3)


def test_peak_below_the_limit_fails_and_a_flat_top_does_not_fall():
    # best at 0.05, limits 0.1-0.2: log2 ratios -1, -1, -2; the last run before divergence (0.8, seed 0
    # diverges from 1.6) is only 0.008 below a flat top for seed 0
    flat = [0.76, 0.78, 0.775, 0.774, 0.773, 0.772, 0.1, 0.1, 0.1]
    ds = summary({0: flat, 1: LOW, 2: LOW}, {0: 0.1, 1: 0.1, 2: 0.2}, {0: 1.6, 1: 3.2, 2: 3.2})
    c = by_name(fig9_claims(run_rows(ds)))
    peak, fall = c["accuracy peaks at an eta above the stability limit"], c["accuracy falls before divergence"]
    assert peak.verdict == "fails" and peak.value == pytest.approx(-4 / 3)
    assert [t["drop"] for t in seed_table(run_rows(ds))] == pytest.approx([0.008, 0.09, 0.09])
    assert fall.value == pytest.approx((0.008 + 0.09 + 0.09) / 3)
    assert "fraction of seeds whose drop exceeds 0.01: 0.667" in fall.note


def test_no_divergence_and_too_few_seeds_are_undetermined():
    trained = PEAKED[:7] + [0.5, 0.4]
    ds = summary({0: trained, 1: trained, 2: trained}, {0: 0.1, 1: 0.1, 2: 0.1})  # nothing failed
    c = by_name(fig9_claims(run_rows(ds)))
    fall = c["accuracy falls before divergence"]
    assert fall.verdict == "undetermined" and fall.value is None and "divergence not reached" in fall.note
    assert c["accuracy peaks at an eta above the stability limit"].verdict == "holds"
    two = summary({0: PEAKED, 1: PEAKED}, {0: 0.1, 1: 0.1}, {0: 3.2, 1: 3.2})
    for claim in fig9_claims(run_rows(two)):
        assert claim.verdict == "undetermined" and "seeds 2 < 3" in claim.reason


def test_no_run_above_the_limit_is_undetermined():
    ds = summary({0: PEAKED, 1: PEAKED, 2: PEAKED}, {0: 10.0, 1: 10.0, 2: 10.0}, {0: 3.2, 1: 3.2, 2: 3.2})
    peak = by_name(fig9_claims(run_rows(ds)))["accuracy peaks at an eta above the stability limit"]
    assert peak.verdict == "undetermined" and "no trained (non-diverged, non-collapsed) run lies" in peak.note


def test_fig12_plan_is_fig3s_for_fig3s_block():
    cube, _ = trace_cube()
    fig2_plan = plan_fig2(cube, FIG2, FIG3)
    block = {**{k: FIG2[k] for k in ("setting", "lr", "seed", "min_rise", "instabilities")}, **FIG3}
    plan = plan_slices(cube, block)
    assert plan["slice_steps"] == fig2_plan["fig3_steps"] and plan["slice_steps"]
    for key in ("chosen", "instabilities", "lr", "seed", "last_step", "min_rise"):
        assert plan[key] == fig2_plan[key], key
    assert plan["slice_instability"] == fig2_plan["fig3_instability"] == 2
    assert plan_slices(cube, {**block, "instability": 3})["slice_steps"] == []  # only 2 chosen


def test_fig12_block_checks():
    base = {"settings": {"s": {"dataset": "fashion-mnist", "n_train": 10, "n_test": 10, "loss": "ce",
                               "model": {"arch": "mlp", "widths": [4], "activation": "tanh"}}}}
    with pytest.raises(ConfigError, match="fig12.instability"):
        validate_config({**base, "fig12": {"instabilities": 1, "instability": 2}})
    with pytest.raises(ConfigError, match="fig12.train.snapshot_every"):
        validate_config({**base, "fig12": {"train": {"snapshot_every": 5}}})


@pytest.mark.usefixtures("one_thread")
def test_slices_under_fig12s_name_equal_fig3s(tmp_path):
    g = torch.Generator().manual_seed(1)
    data = {"x_train": torch.randn(20, 1, 3, 3, generator=g), "y_train": torch.arange(20) % 3,
            "x_test": torch.randn(6, 1, 3, 3, generator=g), "y_test": torch.arange(6) % 3, "n_classes": 3}
    save_torch(data, tmp_path / "d.pt")
    cfg = validate_config({"device": "cpu", "settings": {"s": {
        "dataset": "fashion-mnist", "n_train": 10, "n_test": 10, "loss": "ce",
        "model": {"arch": "mlp", "widths": [4], "activation": "tanh"}}},
        "train": {"max_epochs": 4, "snapshot_every": 1, "acc_goal": None, "dtype": "float64"},
        "hessian": {"tol": 1e-9, "max_iter": 60}})
    run_train(RunSpec.from_settings(cfg, "s", 0.5, 0), tmp_path / "d.pt", tmp_path / "m.nc", tmp_path / "s.pt",
              progress=False)
    block = {"instability": 1, "snapshots": 2, "points": 5, "span": 1.5}
    a = run_slices(cfg, "s", tmp_path / "d.pt", tmp_path / "s.pt", [2, 4], 0.5, tmp_path / "a.nc", block, seed=0,
                   progress=False)
    b = run_slices(cfg, "s", tmp_path / "d.pt", tmp_path / "s.pt", [2, 4], 0.5, tmp_path / "b.nc", block, seed=0,
                   progress=False, block="fig12")
    for name in ("loss", "sharpness", "alpha", "sharpness_cur", "loss_prev"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert json.loads(b.attrs["config"])["fig12"] == block and "fig3" not in json.loads(b.attrs["config"])
    assert "fig12_slices" in str(b.attrs.values()) and "fig3_slices" in str(a.attrs.values())


@pytest.mark.workflow
def test_tiny_run_builds_fig9_and_fig12(tmp_path):
    d = copy_workflow(tmp_path)
    snakemake(d, "figures/fig9.pdf", "figures/fig12.pdf")
    for fig in ("fig9", "fig12"):
        assert (d / f"figures/{fig}.pdf").read_bytes()[:4] == b"%PDF"
        assert (d / f"figures/{fig}.png").stat().st_size > 10_000
        check_claims(d / f"figures/{fig}.claims.json", fig)
    f9 = json.loads((d / "figures/fig9.claims.json").read_text())
    assert f9["setting"] == "fmnist_cnn" and len(f9["runs"]) == 2
    assert {r["lr"]: r["diverged"] for r in f9["diverged_per_lr"]}[500.0] == 1
    assert all(c["verdict"] == "undetermined" for c in f9["claims"])  # one seed
    assert len(list((d / "results/runs/fig9/fmnist_cnn/const").glob("lr*/seed0/cube.nc"))) == 2
    plan = json.loads((d / "results/figures/fig12/plan.json").read_text())
    slices = xr.load_dataset(d / "results/figures/fig12/slices.nc")
    assert list(slices["step"].values) == plan["slice_steps"] and slices.attrs["setting"] == "fmnist_cnn"
    assert dict(slices.sizes) == {"snapshot": 2, "point": 5}
    f12 = json.loads((d / "figures/fig12.claims.json").read_text())
    assert f12["figure"] == "fig12" and f12["setting"] == "fmnist_cnn" and len(f12["snapshots"]) == 2
