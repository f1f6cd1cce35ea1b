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
from eosflow.claims import REGISTRY
from eosflow.figures.fig9 import (
    COLLAPSE_ACC, diverged_per_lr, fig9_claims, make_fig9, outcome, run_rows, seed_table,
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
PEAKED = [0.70, 0.71, 0.72, 0.75, 0.78, 0.74, 0.60, 0.1, 0.1]  # best at 0.4; 1.6 is 0.13 below the others' median
LOW = [0.76, 0.78, 0.75, 0.74, 0.72, 0.70, 0.69, 0.1, 0.1]  # best at 0.05
SIX = range(6)


def by_id(claims):
    return {c.id: c for c in claims}


def test_collapse_threshold_is_the_registrys():
    assert COLLAPSE_ACC == REGISTRY.param("fig9.falls", "collapse_acc") == REGISTRY.param("fig9.peak", "collapse_acc")


def test_peak_above_the_limit_and_fall_before_divergence_hold(tmp_path):
    """Six seeds peaked above their limits (0.1 or 0.05) and falling before divergence at 3.2: both
    claims hold by the sign test (6 of 6: p = 1/64)."""
    eos = {s: 0.05 if s == 2 else 0.1 for s in SIX}
    ds = summary({s: PEAKED for s in SIX}, eos, {s: 3.2 for s in SIX})
    table = seed_table(run_rows(ds))
    assert [t["eta_best"] for t in table] == [0.4] * 6
    assert [t["log2_best_over_eos"] for t in table] == pytest.approx([2.0, 2.0, 3.0, 2.0, 2.0, 2.0])
    assert [t["eta_last"] for t in table] == [1.6] * 6 and [t["eta_first_failed"] for t in table] == [3.2] * 6
    assert [t["acc_others_median"] for t in table] == pytest.approx([0.73] * 6)  # median of 0.70-0.78
    assert [t["fall"] for t in table] == pytest.approx([-0.13] * 6)
    c = by_id(fig9_claims(run_rows(ds)))
    peak, fall = c["fig9.peak"], c["fig9.falls"]
    assert peak.verdict == "holds" and peak.value == pytest.approx(2.0) and peak.p_holds == pytest.approx(1 / 64)
    assert fall.verdict == "holds" and fall.value == pytest.approx(-0.13) and fall.interval[1] < 0
    assert peak.kind == fall.kind == "median" and peak.evidence == fall.evidence == {"seeds": 6}
    assert "6 of 6 seeds have their best eta above their limit" == peak.note
    assert fall.note.startswith("6 of 6 seeds: the last trained eta before failure is below")
    assert diverged_per_lr(run_rows(ds))[-2:] == [{"lr": 3.2, "runs": 6, "diverged": 6, "collapsed": 0},
                                                  {"lr": 6.4, "runs": 6, "diverged": 6, "collapsed": 0}]
    claims, fig = make_fig9(ds, tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "f.json", keep_open=True)
    assert "fmnist_cnn" in fig._suptitle.get_text()
    out = json.loads((tmp_path / "f.json").read_text())
    assert out["figure"] == "fig9" and out["verdicts"]["holds"] == 2 and len(out["runs"]) == 54
    assert [t["fall"] for t in out["seeds"]] == pytest.approx([-0.13] * 6) and out["collapse_acc"] == 0.15
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"


def test_three_seeds_cannot_decide():
    """The sign test's smallest p at 3 seeds is 1/8: the same profiles are undetermined, with the seeds
    that would decide them (the old mean with a bootstrap interval said both hold)."""
    ds = summary({0: PEAKED, 1: PEAKED, 2: PEAKED}, {0: 0.1, 1: 0.1, 2: 0.05}, {0: 3.2, 1: 3.2, 2: 3.2})
    for c in fig9_claims(run_rows(ds)):
        assert c.verdict == "undetermined" and c.needed == 12 and "3 seeds cannot reach" in c.reason
    two = summary({0: PEAKED, 1: PEAKED}, {0: 0.1, 1: 0.1}, {0: 3.2, 1: 3.2})
    for claim in fig9_claims(run_rows(two)):
        assert claim.verdict == "undetermined" and "seeds 2 < 3" in claim.reason


def test_a_collapsed_run_fails_like_a_diverged_one():
    # seed 0 collapses to chance at 1.6 (status max_epochs) and diverges from 3.2; seed 1 collapses at
    # 1.6-6.4 and never diverges: for both, the last run before failure is 0.8 (0.74; the others' median 0.72)
    collapsing = PEAKED[:6] + [0.1, 0.1, 0.1]
    ds = summary({0: collapsing, 1: collapsing, 2: PEAKED}, {0: 0.1, 1: 0.1, 2: 0.1}, {0: 3.2, 2: 3.2})
    ds["status"].values[ds["final_train_acc"].values <= 0.1] = "diverged"
    ds["status"].values[(ds["seed"].values == 1) | ((ds["lr"].values == 1.6) & (ds["seed"].values == 0))] = \
        "max_epochs"
    rows = run_rows(ds)
    assert [outcome(r) for r in rows if r["seed"] == 1][-3:] == ["collapsed"] * 3
    table = seed_table(rows)
    assert [t["eta_last"] for t in table] == [0.8, 0.8, 1.6] and [t["n_trained"] for t in table] == [6, 6, 7]
    assert [t["fall"] for t in table] == pytest.approx([0.02, 0.02, -0.13])
    counts = {d["lr"]: (d["diverged"], d["collapsed"]) for d in diverged_per_lr(rows)}
    assert counts[1.6] == (0, 2) and counts[3.2] == (2, 1) and counts[0.8] == (0, 0)
    fall = by_id(fig9_claims(rows))["fig9.falls"]
    assert fall.evidence == {"seeds": 3} and fall.value == pytest.approx(0.02) and fall.verdict == "undetermined"


def test_peak_below_the_limit_fails_and_a_falling_profile_falls():
    # best at 0.05, limits 0.1-0.2: log2 ratios -1 or -2 in all six seeds; accuracy falls steadily, so
    # the last trained run (1.6, 0.69) is below the others' median (0.745)
    eos = {s: 0.1 if s % 2 else 0.2 for s in SIX}
    c = by_id(fig9_claims(run_rows(summary({s: LOW for s in SIX}, eos, {s: 3.2 for s in SIX}))))
    assert c["fig9.peak"].verdict == "fails" and c["fig9.peak"].values == pytest.approx([-2.0, -1.0] * 3)
    assert c["fig9.falls"].verdict == "holds" and c["fig9.falls"].value == pytest.approx(0.69 - 0.745)


def test_no_divergence_leaves_falls_undetermined():
    trained = PEAKED[:7] + [0.5, 0.4]
    ds = summary({s: trained for s in SIX}, {s: 0.1 for s in SIX})  # nothing failed
    c = by_id(fig9_claims(run_rows(ds)))
    fall = c["fig9.falls"]
    assert fall.verdict == "undetermined" and fall.value is None and "divergence not reached" in fall.note
    assert fall.reason == "too little evidence: seeds 0 < 3"
    assert c["fig9.peak"].verdict == "holds"


def test_no_run_above_the_limit_fails_the_peak():
    """Limits of 10 (past the grid): every seed's best lies below its limit, so the peak claim fails at 6
    seeds (the old code counted no seed and said undetermined)."""
    ds = summary({s: PEAKED for s in SIX}, {s: 10.0 for s in SIX}, {s: 3.2 for s in SIX})
    peak = by_id(fig9_claims(run_rows(ds)))["fig9.peak"]
    assert peak.verdict == "fails" and peak.values == pytest.approx([np.log2(0.4 / 10)] * 6)
    assert peak.note == "0 of 6 seeds have their best eta above their limit"


def test_peak_counts_the_seeds_that_diverge_right_above_their_limit():
    """Bias fixed: four seeds peak above their limits (log2 ratios 2, 2, 3, 2); two (limit 0.15) diverge
    from 0.2, right above their limit, so their best trained eta (0.1) lies below it (log2 -0.58). The old
    code counted only seeds with a trained run above their own limit: it dropped those two and said the
    peak claim **holds** (mean 2.25 over 4 seeds, bootstrap interval within [2, 3]). Every seed counts now:
    4 of 6 above, sign test p = 22/64: undetermined."""
    eos = {0: 0.1, 1: 0.1, 2: 0.05, 3: 0.1, 4: 0.15, 5: 0.15}
    ds = summary({s: PEAKED for s in SIX}, eos, {0: 3.2, 1: 3.2, 2: 3.2, 3: 3.2, 4: 0.2, 5: 0.2})
    rows = run_rows(ds)
    table = seed_table(rows)
    # what the old code kept: seeds with a trained run above 1.01 x their limit
    kept = [t["seed"] for t in table if any(r["seed"] == t["seed"] and outcome(r) == "trained"
                                            and r["lr"] > 1.01 * t["eta_eos"] for r in rows)]
    assert kept == [0, 1, 2, 3] and np.mean([table[s]["log2_best_over_eos"] for s in kept]) == pytest.approx(2.25)
    peak = by_id(fig9_claims(rows))["fig9.peak"]
    assert peak.values == pytest.approx([2, 2, 3, 2, np.log2(0.1 / 0.15), np.log2(0.1 / 0.15)])
    assert peak.verdict == "undetermined" and peak.p_holds == pytest.approx(22 / 64) and peak.evidence == {"seeds": 6}


def test_a_flat_profile_does_not_fall():
    """Bias fixed: accuracy flat in eta (0.75 plus noise from one set of seven offsets, each seed's last
    trained run, at 1.6, a different one of them; divergence from 3.2). The old statistic, peak minus the
    last run's accuracy, is >= 0 by construction: here 0.011-0.04 > 0.01 in every seed, so the old code
    said "accuracy falls before divergence" **holds** (mean 0.024, bootstrap interval within [0.011,
    0.04]). The last run against the median of the seed's other runs: 3 of 6 below, 3 above:
    undetermined."""
    offsets = [-0.02, -0.012, -0.004, 0.0, 0.003, 0.009, 0.02]
    accs = {}
    for s in SIX:
        rest = [d for d in offsets if d != offsets[s]]
        rest = rest[s:] + rest[:s]  # a different order per seed
        accs[s] = [0.75 + d for d in rest + [offsets[s]]] + [0.1, 0.1]
    rows = run_rows(summary(accs, {s: 0.1 for s in SIX}, {s: 3.2 for s in SIX}))
    table = seed_table(rows)
    old = [t["peak_acc"] - t["acc_last"] for t in table]
    assert all(d > 0.01 for d in old) and np.mean(old) == pytest.approx(0.024)
    fall = by_id(fig9_claims(rows))["fig9.falls"]
    assert fall.values == pytest.approx([-0.0215, -0.0135, -0.0055, 0.0005, 0.005, 0.011])
    assert fall.verdict == "undetermined" and fall.p_holds == pytest.approx(42 / 64)


def test_fig12_plan_is_fig3s_for_fig3s_block():
    cube, _ = trace_cube()
    fig2_plan = plan_fig2(cube, FIG2, FIG3)
    block = {**{k: FIG2[k] for k in ("setting", "lr", "lr_relative", "seeds", "min_rise", "instabilities")}, **FIG3}
    plan = plan_slices(cube, block)
    assert plan["slice_steps"] == fig2_plan["fig3_steps"] and plan["slice_steps"]
    for key in ("chosen", "instabilities", "lr", "seed", "lr_relative", "eta_eos", "last_step", "min_rise"):
        assert plan[key] == fig2_plan[key], key
    seed3, _ = trace_cube(seed=3)  # eta and seed are the run's own (the training job placed eta)
    assert plan_slices(seed3, block)["seed"] == 3 and plan["lr"] == float(cube["lr"])
    assert plan["slice_instability"] == fig2_plan["fig3_instability"] == 2
    assert plan_slices(cube, {**block, "instability": 3})["slice_steps"] == []  # only 2 chosen


def test_fig12_block_checks():
    base = {"settings": {"s": {"dataset": "fashion-mnist", "n_train": 10, "n_test": 10, "loss": "ce",
                               "model": {"arch": "mlp", "widths": [4], "activation": "tanh"}}}}
    with pytest.raises(ConfigError, match="fig12.instability"):
        validate_config({**base, "fig12": {"instabilities": 1, "instability": 2}})
    with pytest.raises(ConfigError, match="fig12.train.snapshot_every"):
        validate_config({**base, "fig12": {"train": {"snapshot_every": 5}}})
    # eta given exactly once: a multiple of each seed's limit (the default, 5) or an absolute lr
    assert validate_config({**base, "fig12": {"setting": "s"}})["fig12"]["lr_relative"] == 5.0
    assert validate_config({**base, "fig12": {"setting": "s", "lr": 0.5, "lr_relative": None}})["fig12"]["lr"] == 0.5
    with pytest.raises(ConfigError, match="config key fig12: both lr and lr_relative are set"):
        validate_config({**base, "fig12": {"lr": 0.5}})
    with pytest.raises(ConfigError, match="config key fig12: no learning rate; set fig12.lr"):
        validate_config({**base, "fig12": {"lr_relative": None}})
    with pytest.raises(ConfigError, match=r"config key fig12: unknown key\(s\) \['seed'\].*'seeds'"):
        validate_config({**base, "fig12": {"seed": 0}})


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
    plan = json.loads((d / "results/figures/fig12/seed0/plan.json").read_text())
    slices = xr.load_dataset(d / "results/figures/fig12/seed0/slices.nc")
    assert list(slices["step"].values) == plan["slice_steps"] and slices.attrs["setting"] == "fmnist_cnn"
    assert dict(slices.sizes) == {"snapshot": 2, "point": 5}
    # tiny.yaml gives fig12 an absolute eta (fig2 there takes the relative one)
    assert (d / "results/runs/fig12/fmnist_cnn/const/lr1/seed0/cube.nc").exists()
    assert plan["lr"] == 1.0 and plan["lr_relative"] is None and plan["seed"] == 0
    f12 = json.loads((d / "figures/fig12.claims.json").read_text())
    assert f12["figure"] == "fig12" and f12["setting"] == "fmnist_cnn" and len(f12["snapshots"]) == 2
    assert f12["drawn_seed"] == 0 and [c["id"] for c in f12["claims"]] == ["slices.flatter", "slices.stable_again"]
    for c in f12["claims"]:  # one seed: too little evidence, the registry's minimum of seeds
        assert c["verdict"] == "undetermined" and c["evidence"] == {"seeds": 1} and c["minimum"] == {"seeds": 3}
