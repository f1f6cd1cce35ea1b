"""The instability ablation and the generalization map on synthetic summaries whose answer is known."""
import json

import numpy as np
import pytest
import xarray as xr

from eosflow.claims import bootstrap_interval
from eosflow.figures.ablation import make_ablation, pair_runs, paired_claim
from eosflow.figures.generalization_map import make_map, measured_claim

RATIOS = (0.5, 0.7, 1.4, 2.0, 2.8)
EOS = {0: 0.1, 1: 0.2, 2: 0.15, 3: 0.12}


def summary(setting="s", seeds=(0, 1, 2), acc=lambda r, seed: 0.8, sharp=lambda r, seed: 10.0,
            rot=lambda r, seed: 0.1, cls=lambda r, seed: "unstable" if r > 1 else "stable", clamp=0.0,
            status=lambda r, seed: "converged", lr_scale=1.0):
    rows = [(r, s) for s in seeds for r in RATIOS]
    lr = np.array([r * EOS[s] * lr_scale for r, s in rows])
    st = np.array([status(r, s) for r, s in rows])
    return xr.Dataset(
        {"final_test_acc": ("run", [acc(r, s) for r, s in rows]), "status": ("run", st),
         "eta_eos": ("run", [EOS[s] for _, s in rows]), "lr_relative": ("run", [r for r, _ in rows]),
         "sharpness_final": ("run", [sharp(r, s) for r, s in rows]), "rotation": ("run", [rot(r, s) for r, s in rows]),
         "max_ratio": ("run", [0.9 * r for r, _ in rows]), "clamp_fraction": ("run", np.full(len(rows), clamp)),
         "stability": ("run", [cls(r, s) for r, s in rows])},
        coords={"lr": ("run", lr), "seed": ("run", [s for _, s in rows]), "setting": ("run", [setting] * len(rows))})


def test_bootstrap_interval_covers_a_known_mean_difference():
    rng = np.random.default_rng(1)
    diffs = 0.05 + rng.normal(0, 0.01, size=40)
    lo, hi = bootstrap_interval(diffs)
    assert lo < 0.05 < hi and lo > 0.04 and hi < 0.06  # about ±1.96 × 0.01 / √40
    lo, hi = bootstrap_interval(rng.normal(0, 0.01, size=40))
    assert lo < 0 < hi


def test_ablation_where_instabilities_help(tmp_path):
    plain = summary(acc=lambda r, s: 0.8 + 0.02 * (r > 1) + 0.001 * s, sharp=lambda r, s: 5.0 / r,
                    rot=lambda r, s: 0.3 if r > 1 else 0.1)
    clamped = summary(acc=lambda r, s: 0.8 + 0.001 * s, sharp=lambda r, s: 9.0, rot=lambda r, s: 0.1,
                      cls=lambda r, s: "stable", clamp=0.5)
    claims, fig = make_ablation(plain, clamped, 0.95, tmp_path / "a.pdf", tmp_path / "a.png", tmp_path / "a.json",
                                keep_open=True)
    acc, flat, rot = claims
    assert acc.verdict == "holds" and acc.value == pytest.approx(0.02) and acc.evidence == {"seeds": 3}
    assert acc.interval == pytest.approx([0.02, 0.02])
    assert flat.verdict == "holds" and flat.value < 0
    assert rot.verdict == "holds" and rot.value == pytest.approx(0.2)
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["figure"] == "ext/instability_ablation" and len(data["pairs"]) == 15
    assert (tmp_path / "a.pdf").read_bytes()[:4] == b"%PDF"
    assert len(fig.axes) == 6


def test_ablation_where_the_clamp_changes_nothing_is_undetermined_or_fails(tmp_path):
    rng = np.random.default_rng(0)
    noise = {(r, s): rng.normal(0, 0.01) for r in RATIOS for s in range(3)}
    plain = summary(acc=lambda r, s: 0.8 + noise[(r, s)])
    clamped = summary(acc=lambda r, s: 0.8)
    c = make_ablation(plain, clamped, 0.95, tmp_path / "a.pdf", tmp_path / "a.png", tmp_path / "a.json")[0]
    assert c.verdict in ("undetermined", "fails")
    worse = summary(acc=lambda r, s: 0.75 + 0.001 * s)  # plain loses everywhere above the limit
    c = paired_claim("x", pair_runs(worse, summary(acc=lambda r, s: 0.8 + 0.002 * s)))
    assert c.verdict == "fails" and c.value == pytest.approx(-0.05 - 0.001)


def test_ablation_counts_a_diverged_plain_run_at_chance_and_drops_it_from_sharpness():
    plain = summary(acc=lambda r, s: 0.9, status=lambda r, s: "diverged" if r == 2.8 else "converged",
                    sharp=lambda r, s: 1.0)
    clamped = summary(acc=lambda r, s: 0.8, sharp=lambda r, s: 2.0)
    pairs = pair_runs(plain, clamped)
    acc = paired_claim("acc", pairs)
    assert acc.value == pytest.approx(np.mean([0.1, 0.1, 0.1 - 0.8]))  # 3 pairs a seed: 0.1, 0.1, -0.7
    sharp = paired_claim("s", pairs, "sharpness_final", "<")
    assert sharp.value == pytest.approx(-1.0) and "seed 0: 2" in sharp.note


def test_twins_with_another_eta0_are_an_error():
    with pytest.raises(ValueError, match="differs from its plain run"):
        pair_runs(summary(), summary(lr_scale=1.01))


def test_too_few_seeds_is_undetermined():
    c = paired_claim("x", pair_runs(summary(seeds=(0, 1), acc=lambda r, s: 0.9), summary(seeds=(0, 1))))
    assert c.verdict == "undetermined" and "seeds 2 < 3" in c.reason


def test_map_cells(tmp_path):
    good = summary("good", acc=lambda r, s: 0.8 + 0.03 * (r > 1) + 0.001 * s)
    # every run crossed its limit: no stable run, the measured statistic cannot be decided
    sharp_all = summary("all_unstable", acc=lambda r, s: 0.8 - 0.01 * r + 0.001 * s, cls=lambda r, s: "unstable")
    plain = xr.concat([good, sharp_all], dim="run")
    clamped = summary("good", acc=lambda r, s: 0.8 + 0.001 * s, cls=lambda r, s: "stable")
    claims, fig = make_map(plain, clamped, tmp_path / "m.pdf", tmp_path / "m.png", tmp_path / "m.json",
                           keep_open=True)
    cells = json.loads((tmp_path / "m.json").read_text())["cells"]
    g, u = cells["good"], cells["all_unstable"]
    assert g["gain"]["verdict"] == "holds" and g["gain"]["value"] == pytest.approx(0.03)
    assert g["measured_gain"]["verdict"] == "holds" and g["best_ratio"]["value"] > 1
    assert g["ablation"]["verdict"] == "holds" and g["ablation"]["value"] == pytest.approx(0.03)
    assert u["gain"]["verdict"] == "fails" and u["ablation"] is None
    assert u["measured_gain"]["verdict"] == "undetermined"
    c = measured_claim("all_unstable", sharp_all)
    assert "no run of this cell stayed stable" in c.reason
    assert len(claims) == 7 and (tmp_path / "m.pdf").read_bytes()[:4] == b"%PDF"


def test_clamp_fraction_counts_clamped_steps_not_float32_rounding():
    from eosflow.summary import run_summary

    lr0 = float(np.float32(0.1)) + 1e-10  # its float32 step size rounds below it
    n = 20
    lr_step = np.full(n, lr0, dtype=np.float32)
    lr_step[10:] = 0.05  # the clamp binds on the second half
    cube = xr.Dataset({"train_loss": ("step", np.linspace(1, 0.1, n)), "train_acc": ("step", np.linspace(0.1, 1, n)),
                       "test_acc": ("step", np.full(n, 0.8)), "lr_step": ("step", lr_step),
                       "sharpness_inloop": ("step", np.full(n, np.nan))},
                      coords={"step": np.arange(n), "lr": lr0, "seed": 0}, attrs={"status": "converged"})
    assert float(lr_step[0]) < lr0
    row = run_summary(cube)
    assert row["clamp_fraction"] == 0.5 and row["stability"] == "unmeasured"
