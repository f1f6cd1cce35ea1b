"""fig5's claims on synthetic sweeps whose answer is known."""
import json

import numpy as np
from matplotlib.collections import PathCollection
import pytest
import xarray as xr

from eosflow.figures.fig5 import make_fig5, seed_means


def summary(acc_of_ratio, eos=(0.1, 0.2, 0.15), lrs=(0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)):
    rows = [(lr, seed, e) for seed, e in enumerate(eos) for lr in lrs]
    lr = np.array([r[0] for r in rows])
    e = np.array([r[2] for r in rows])
    acc = np.array([acc_of_ratio(r) for r in lr / e])
    status = np.where(np.isnan(acc), "diverged", "converged")
    return xr.Dataset({"final_test_acc": ("run", acc), "status": ("run", status), "eta_eos": ("run", e)},
                      coords={"lr": ("run", lr), "seed": ("run", [r[1] for r in rows]),
                              "setting": ("run", ["s"] * len(rows))})


def run(tmp_path, ds):
    claims = make_fig5(ds, tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "c.json")
    data = json.loads((tmp_path / "c.json").read_text())
    assert (tmp_path / "f.pdf").read_bytes()[:4] == b"%PDF"
    assert [c["holds"] for c in data["claims"]] == [c.holds for c in claims]
    return {c.name.split(": ", 1)[1]: c for c in claims}


def test_goldilocks_sweep_holds(tmp_path):
    # accuracy jumps past the limit, peaks at 2-4x, diverges beyond 10x
    c = run(tmp_path, summary(lambda r: np.nan if r > 10 else 0.7 + 0.1 * (r > 1) - 0.05 * (r > 4)))
    gain = c["validation accuracy improves past the stability limit"]
    assert gain.value == pytest.approx(0.1) and gain.verdict == "holds" and gain.evidence == {"seeds": 3}
    assert gain.interval == pytest.approx([0.1, 0.1])
    assert c["the best eta0 lies above the stability limit"].verdict == "holds"
    assert c["too-large eta0 falls off (Goldilocks zone)"].verdict == "holds"


def test_diverged_runs_are_drawn_and_listed_and_no_nan_reaches_an_axis(tmp_path):
    ds = summary(lambda r: np.nan if r > 10 else 0.75)
    claims, fig = make_fig5(ds, tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "c.json", keep_open=True)
    data = json.loads((tmp_path / "c.json").read_text())
    n_div = int((ds["status"].values == "diverged").sum())
    assert n_div > 0 and len(data["diverged_runs"]) == n_div and data["runs"]["diverged"] == n_div
    plot_axes = fig.axes[:-1]  # the last one is the colour bar
    # the scatter markers (the seed-spread band is a PolyCollection, not a point)
    points = [pc.get_offsets() for ax in plot_axes for pc in ax.collections
              if isinstance(pc, PathCollection) and len(pc.get_offsets())]
    points = np.concatenate(points)
    assert np.isfinite(points).all()
    assert len(points) == 3 * ds.sizes["run"]  # every run in (a), (b) and (c), diverged included
    # no in-loop sharpness in this summary: every run is "unmeasured" in (c) and in the counts
    assert data["measured_stability"]["below_limit"] == {"stable": 0, "unstable": 0, "unmeasured": 8}
    for ax in fig.axes:
        assert np.isfinite(ax.get_xlim()).all() and np.isfinite(ax.get_ylim()).all()


def test_measured_class_is_counted_on_each_side_of_the_limit(tmp_path):
    ds = summary(lambda r: 0.75)
    ratio = ds["lr"].values / ds["eta_eos"].values
    # progressive sharpening: runs from half the limit up measured unstable
    ds["stability"] = ("run", np.where(ratio >= 0.5, "unstable", "stable"))
    make_fig5(ds, tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "c.json")
    counts = json.loads((tmp_path / "c.json").read_text())["measured_stability"]
    assert counts["above_limit"] == {"stable": 0, "unstable": 11, "unmeasured": 0}
    assert counts["at_limit"] == {"stable": 0, "unstable": 2, "unmeasured": 0}
    assert counts["below_limit"] == {"stable": 5, "unstable": 3, "unmeasured": 0}


def test_monotone_decline_fails_first_two(tmp_path):
    c = run(tmp_path, summary(lambda r: 0.8 - 0.01 * np.log2(r + 1)))
    assert c["validation accuracy improves past the stability limit"].verdict == "fails"
    assert c["the best eta0 lies above the stability limit"].verdict == "fails"
    assert c["the best eta0 lies above the stability limit"].value < 1


def CLEAR(r):
    return 0.7 + 0.1 * (r > 1)


def test_two_seeds_are_undetermined(tmp_path):
    c = run(tmp_path, summary(CLEAR, eos=(0.1, 0.2)))
    gain = c["validation accuracy improves past the stability limit"]
    assert gain.value == pytest.approx(0.1) and gain.verdict == "undetermined"
    assert gain.reason == "too little evidence: seeds 2 < 3"


def test_one_run_above_the_limit_is_undetermined(tmp_path):
    # the grid reaches past each seed's limit with one run only: no seed contributes
    c = run(tmp_path, summary(CLEAR, eos=(0.1, 0.12, 0.14), lrs=(0.01, 0.02, 0.04, 0.06, 0.2)))
    gain = c["validation accuracy improves past the stability limit"]
    assert gain.value is None and gain.verdict == "undetermined" and gain.evidence == {"seeds": 0}
    assert "0 of 3 seeds contribute" in gain.note and "seed 2: 4/1" in gain.note


def test_runs_at_the_limit_count_on_neither_side(tmp_path):
    ds = summary(CLEAR, eos=(0.1, 0.2, 0.15), lrs=(0.025, 0.05, 0.1, 0.2, 0.4, 0.8))
    ds["eta_eos"][:] = np.where(ds["seed"].values == 0, 0.1 / 1.005, ds["eta_eos"].values)  # lr 0.1: at the limit
    c = run(tmp_path, ds)
    assert "seed 0: 2/3" in c["validation accuracy improves past the stability limit"].note


def test_seed_means_and_spread_over_seeds():
    """The per-setting panel's line and band: mean and sample sd over seeds per grid point, a
    diverged run at chance (1 / 10 classes)."""
    ds = summary(lambda r: 0.7)
    acc = ds["final_test_acc"].values.copy()
    acc[ds["lr"].values == 0.025] = [0.6, 0.7, 0.8]  # the three seeds at the smallest eta_0
    acc[ds["lr"].values == 1.6] = [0.5, np.nan, 0.5]  # seed 1 diverges there
    ds["final_test_acc"] = ("run", acc)
    ds["status"] = ("run", np.where(np.isnan(acc), "diverged", "converged"))
    grid, mean, sd = seed_means(ds)
    assert grid == pytest.approx([0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6])
    assert mean[0] == pytest.approx(0.7) and sd[0] == pytest.approx(0.1)
    assert mean[-1] == pytest.approx(1.1 / 3) and sd[-1] == pytest.approx(np.std([0.5, 0.1, 0.5], ddof=1))
    assert sd[1:-1] == pytest.approx(0.0)
