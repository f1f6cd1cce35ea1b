"""The instability ablation and the generalization map on synthetic summaries whose answer is known."""
import json

import numpy as np
import pytest
import xarray as xr

from eosflow.claims import decide
from eosflow.figures.ablation import make_ablation, pair_runs, paired_claim
from eosflow.figures.generalization_map import _cell_text, make_map, measured_claim, measured_table

RATIOS = (0.5, 0.7, 1.4, 2.0, 2.8)
EOS = {0: 0.1, 1: 0.2, 2: 0.15, 3: 0.12, 4: 0.18, 5: 0.11}
SIX = tuple(range(6))


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


def test_ablation_where_instabilities_help(tmp_path):
    plain = summary(seeds=SIX, acc=lambda r, s: 0.8 + 0.02 * (r > 1) + 0.001 * s, sharp=lambda r, s: 5.0 / r,
                    rot=lambda r, s: 0.3 if r > 1 else 0.1)
    clamped = summary(seeds=SIX, acc=lambda r, s: 0.8 + 0.001 * s, sharp=lambda r, s: 9.0, rot=lambda r, s: 0.1,
                      cls=lambda r, s: "stable", clamp=0.5)
    claims, fig = make_ablation(plain, clamped, 0.95, tmp_path / "a.pdf", tmp_path / "a.png", tmp_path / "a.json",
                                keep_open=True)
    acc, flat, rot = claims
    assert [c.id for c in claims] == ["ablation.accuracy", "ablation.flatter", "ablation.rotation"]
    assert acc.verdict == "holds" and acc.value == pytest.approx(0.02) and acc.evidence == {"seeds": 6}
    assert acc.interval == pytest.approx([0.02, 0.02]) and acc.kind == "paired"
    assert flat.verdict == "holds" and flat.value < 0
    assert rot.verdict == "holds" and rot.value == pytest.approx(0.2)
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["figure"] == "ext/instability_ablation" and len(data["pairs"]) == 30
    assert (tmp_path / "a.pdf").read_bytes()[:4] == b"%PDF"
    assert len(fig.axes) == 6
    # (e): per eta_0 the mean over the 6 seeds with the sign-flip interval (an error bar: 3 lines)
    assert "none" not in fig.axes[4].get_title()
    assert sum(len(c.get_segments()) for c in fig.axes[4].collections if hasattr(c, "get_segments")) >= 5


def test_three_seeds_are_undetermined_with_needed_and_no_bar(tmp_path):
    plain = summary(acc=lambda r, s: 0.8 + 0.02 * (r > 1) + 0.001 * s * (r > 1))
    claims, fig = make_ablation(plain, summary(acc=lambda r, s: 0.8), 0.95, tmp_path / "a.pdf", tmp_path / "a.png",
                                tmp_path / "a.json", keep_open=True)
    acc = claims[0]
    assert acc.verdict == "undetermined" and acc.interval is None and acc.needed == 6
    assert "none: < 6 seeds" in fig.axes[4].get_title()
    assert not [c for c in fig.axes[4].collections if type(c).__name__ == "LineCollection"]


def test_ablation_where_the_clamp_changes_nothing_is_not_holds(tmp_path):
    rng = np.random.default_rng(0)
    noise = {(r, s): rng.normal(0, 0.01) for r in RATIOS for s in SIX}
    plain = summary(seeds=SIX, acc=lambda r, s: 0.8 + noise[(r, s)])
    clamped = summary(seeds=SIX, acc=lambda r, s: 0.8)
    c = make_ablation(plain, clamped, 0.95, tmp_path / "a.pdf", tmp_path / "a.png", tmp_path / "a.json")[0]
    assert c.verdict == "undetermined"
    worse = summary(seeds=SIX, acc=lambda r, s: 0.75 + 0.001 * s)  # plain loses everywhere above the limit
    c = paired_claim("ablation.accuracy", pair_runs(worse, summary(seeds=SIX, acc=lambda r, s: 0.8 + 0.002 * s)))
    assert c.verdict == "fails" and c.value == pytest.approx(-0.05 - 0.001 * 2.5)


def test_ablation_counts_a_diverged_plain_run_at_chance_and_as_not_flat():
    """A diverged plain run counts at chance accuracy, and as not flat: its S_final is +inf, so its seed
    counts against "plain ends flatter" (the old code dropped the pair, which favoured the claim); the
    rotation, which a diverged run has none of, leaves the pair out."""
    plain = summary(acc=lambda r, s: 0.9, status=lambda r, s: "diverged" if r == 2.8 else "converged",
                    sharp=lambda r, s: 1.0)
    clamped = summary(acc=lambda r, s: 0.8, sharp=lambda r, s: 2.0)
    pairs = pair_runs(plain, clamped)
    acc = paired_claim("ablation.accuracy", pairs)
    assert acc.value == pytest.approx(np.mean([0.1, 0.1, 0.1 - 0.8]))  # 3 pairs a seed: 0.1, 0.1, -0.7
    sharp = paired_claim("ablation.flatter", pairs)
    assert sharp.values == [np.inf] * 3 and sharp.kind == "median" and "seed 0: 3" in sharp.note
    rot = paired_claim("ablation.rotation", pairs)
    assert "seed 0: 2" in rot.note and "left out" in rot.note


def test_a_seed_with_one_pair_counts():
    """Fixed (issue 23): a seed with a single pair above its limit without a diverged run was left out of
    "plain rotates more" (2 pairs a seed were needed), so one diverged run decided whether the claim had
    2 or 3 seeds. The registry's min_pairs is 1: every seed with a pair counts."""
    plain = summary(seeds=SIX, status=lambda r, s: "diverged" if s == 1 and r > 1.5 else "converged",
                    rot=lambda r, s: 0.5)
    rot = paired_claim("ablation.rotation", pair_runs(plain, summary(seeds=SIX, rot=lambda r, s: 0.2)))
    assert "seed 1: 1" in rot.note and rot.evidence == {"seeds": 6} and rot.verdict == "holds"


def test_twins_with_another_eta0_are_an_error():
    with pytest.raises(ValueError, match="differs from its plain run"):
        pair_runs(summary(), summary(lr_scale=1.01))


def test_too_few_seeds_is_undetermined():
    c = paired_claim("ablation.accuracy", pair_runs(summary(seeds=(0, 1), acc=lambda r, s: 0.9), summary(seeds=(0, 1))))
    assert c.verdict == "undetermined" and "seeds 2 < 3" in c.reason


def test_map_cells(tmp_path):
    good = summary("good", seeds=SIX, acc=lambda r, s: 0.8 + 0.03 * (r > 1) + 0.001 * s)
    # every run crossed its limit: no stable run, the measured statistic cannot be decided
    sharp_all = summary("all_unstable", seeds=SIX, acc=lambda r, s: 0.8 - 0.01 * r + 0.001 * s,
                        cls=lambda r, s: "unstable")
    three = summary("three_seeds", acc=lambda r, s: 0.8 + 0.03 * (r > 1) + 0.001 * s)
    plain = xr.concat([good, sharp_all, three], dim="run")
    clamped = summary("good", seeds=SIX, acc=lambda r, s: 0.8 + 0.001 * s, cls=lambda r, s: "stable")
    claims, fig = make_map(plain, clamped, tmp_path / "m.pdf", tmp_path / "m.png", tmp_path / "m.json",
                           keep_open=True)
    data = json.loads((tmp_path / "m.json").read_text())
    cells = data["cells"]
    g, u, t = cells["good"], cells["all_unstable"], cells["three_seeds"]
    # RATIOS: 2 below, 3 above the limit: k = 2, the best of 1.4 and 2.0 minus the best of 0.5 and 0.7
    assert g["gain"]["verdict"] == "holds" and g["gain"]["value"] == pytest.approx(0.03)
    assert g["measured_gain"]["verdict"] == "holds" and g["measured_gain"]["value"] == pytest.approx(0.03)
    assert g["best_ratio"]["verdict"] == "holds" and g["best_ratio"]["value"] == pytest.approx(1.4)
    assert g["ablation"]["verdict"] == "holds" and g["ablation"]["value"] == pytest.approx(0.03)
    assert u["gain"]["verdict"] == "fails" and u["ablation"] is None
    assert u["measured_gain"]["verdict"] == "undetermined"
    assert t["gain"]["verdict"] == "undetermined" and t["gain"]["needed"] == 6 and t["gain"]["interval"] is None
    c = measured_claim("all_unstable", sharp_all)
    assert "no run of this cell stayed stable" in c.reason
    assert len(claims) == 10 and (tmp_path / "m.pdf").read_bytes()[:4] == b"%PDF"
    assert [r["k"] for r in data["measured_gain_seeds"]["good"]] == [2] * 6
    title = fig.axes[0].get_title()
    assert "bootstrap" not in title and "sign-flip" in title
    texts = [x.get_text() for x in fig.axes[0].texts]
    three_gain = next(x for x in claims if x.name == "three_seeds: validation accuracy improves past the stability limit")
    assert _cell_text(three_gain) == "+0.030\nno interval: < 6 seeds\nundetermined\nneeded: 6 seeds"
    assert _cell_text(three_gain) in texts


def test_measured_gain_compares_as_many_runs_of_each_class():
    """Bias fixed (issue 23): best-of-all-unstable minus best-of-all-stable favours the larger class.

    Accuracy ignores the class (the same five values in another order on each seed); each seed has one
    measured-stable run (its smallest eta_0) and four unstable ones. The old statistic (best of the 4
    unstable minus the one stable) was positive on all 6 seeds: its mean's bootstrap interval lay above 0,
    "holds" (the sign-flip test on it would say holds too). The new one compares k = 1 run of each class, the
    unstable run of smallest eta_0 against the stable run of largest eta_0: its sign is noise, undetermined."""
    # per seed in RATIOS order: the stable run 0.80, then the unstable runs (0.82 always among them)
    rows = {0: (0.80, 0.81, 0.78, 0.82, 0.79), 1: (0.80, 0.81, 0.82, 0.79, 0.78), 2: (0.80, 0.81, 0.79, 0.78, 0.82),
            3: (0.80, 0.79, 0.82, 0.81, 0.78), 4: (0.80, 0.79, 0.78, 0.82, 0.81), 5: (0.80, 0.79, 0.81, 0.78, 0.82)}
    ds = summary(seeds=SIX, acc=lambda r, s: rows[s][RATIOS.index(r)],
                 cls=lambda r, s: "stable" if r == RATIOS[0] else "unstable")
    acc = ds["final_test_acc"].values.reshape(6, 5)
    old = acc[:, 1:].max(1) - acc[:, 0]
    assert (old > 0).all() and decide(old, ">", 0, "paired").verdict == "holds"
    table = measured_table(ds)
    assert [r["k"] for r in table] == [1] * 6
    new = [r["gain"] for r in table]
    assert new == pytest.approx(acc[:, 1] - acc[:, 0]) and 0 < sum(v > 0 for v in new) < 6
    assert measured_claim("s", ds).verdict == "undetermined"


def test_a_diverged_run_is_measured_unstable_at_chance():
    ds = summary(seeds=SIX, acc=lambda r, s: 0.8, cls=lambda r, s: "stable" if r < 1 else "unstable",
                 status=lambda r, s: "diverged" if r == 1.4 else "converged")
    ds["stability"].values[ds["status"].values == "diverged"] = "stable"  # whatever the summary says
    table = measured_table(ds)
    assert [(r["stable"], r["unstable"], r["k"]) for r in table] == [(2, 3, 2)] * 6
    # the 2 unstable runs of smallest eta_0: 1.4 (diverged, at chance 0.1) and 2.0 (0.8)
    assert [r["gain"] for r in table] == pytest.approx([0.0] * 6)


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
