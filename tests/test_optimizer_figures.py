"""The statistics and claims of ext/sgd_flattening and ext/clipped_ada on synthetic run cubes (issues 12
and 23: verdicts from eosflow.claims' registry), and the optimizer runs' path names."""
import json
import math
import sys

import numpy as np
import pytest
import xarray as xr

from eosflow.claims import decide, decide_family
from eosflow.config import ConfigError, load_config
from eosflow.figures.clipped_ada import CHANCE, loss_spikes, make_clipped_ada
from eosflow.figures.sgd_flattening import make_sgd_flattening
from eosflow.config.optimizers import clipped_ada_runs, optimizer_run_config, sgd_flattening_runs
from eosflow.config.tags import opt_tag, parse_opt_tag


def cube(sharp, loss=None, acc=0.8, status="max_epochs", precond=None, threshold=10.0, optimizer="sgd"):
    loss = np.linspace(1.0, 0.1, 21) if loss is None else np.asarray(loss, float)
    n = loss.size - 1
    h = np.linspace(0, n, len(sharp)).astype(int)
    pre = np.full(len(sharp), np.nan) if precond is None else np.asarray(precond, float)
    return xr.Dataset({"sharpness": ("hstep", np.asarray(sharp, float)), "precond_sharpness": ("hstep", pre),
                       "train_loss": ("step", loss), "test_acc": ("step", np.full(n + 1, acc))},
                      coords={"hstep": h, "step": np.arange(n + 1)},
                      attrs={"status": status, "stability_threshold": threshold, "optimizer": optimizer})


SIX = tuple(range(6))  # the fewest seeds with which the sign-flip and sign tests can decide


def sgd_runs(effect: bool, seeds=SIX):
    rows, cubes = [], []
    for b in (1000, 100, 10):
        for eta in ("small", "large"):
            for s in seeds:
                if effect:  # the large eta is flatter everywhere, and flatter than small batches
                    final = 10.0 + s if eta == "large" else 80.0 - 0.5 * (1000 / b) + s
                else:  # the large eta ends sharper at B = 10
                    final = (10.0 + s if b > 10 else 90.0 + s) if eta == "large" else 50.0 + s
                rows.append({"batch_size": b, "eta": eta, "lr": 0.1, "seed": s})
                cubes.append(cube([5.0, 20.0, final]))
    return rows, cubes


def make_sgd(tmp_path, rows, cubes):
    claims = make_sgd_flattening(rows, cubes, tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "c.json")
    return claims, json.loads((tmp_path / "c.json").read_text())


def test_sgd_flattening_claims_hold(tmp_path):
    claims, data = make_sgd(tmp_path, *sgd_runs(True))
    assert [c.id for c in claims] == ["sgd.every_batch", "sgd.eta_vs_noise"]
    assert [c.verdict for c in claims] == ["holds", "holds"]
    fam = claims[0].family
    assert fam["rule"] == "every" and set(fam["options"]) == {"1000", "100", "10"}
    assert all(o["verdict"] == "holds" and o["p_holds"] == pytest.approx(2 ** -6) for o in fam["options"].values())
    # the claim's value and values are the deciding B's (every B has the same p here: the first)
    assert claims[0].values == pytest.approx(data["per_batch_size"][fam["deciding"]]["log_ratios"])
    assert claims[1].values == pytest.approx([np.log((30 + s) / (10 + s)) for s in SIX])  # log(S_ss / S_fl)
    assert len(data["runs"]) == 36 and set(data["per_batch_size"]) == {"1000", "100", "10"}
    b10 = data["per_batch_size"]["10"]
    assert b10["seeds"] == list(SIX) and b10["verdict"] == "holds"
    assert b10["ratios"] == pytest.approx([(10 + s) / (30 + s) for s in SIX])  # S_small = 30 + s at B = 10
    assert b10["log_ratios"] == pytest.approx(np.log(b10["ratios"]))
    assert data["families"]["at every batch size, the larger eta ends flatter"]["rule"] == "every"


def test_sgd_flattening_every_batch_fails_only_past_holm(tmp_path):
    """One batch size (B = 10) where the large eta ends sharper on every seed. At 6 seeds its p toward
    "fails" is 2^-6 = 0.016: below 2.5 % alone, but not below 2.5 % / 3 (Holm over the three batch
    sizes), so the family is undetermined; at 8 seeds (2^-8) it fails. The old code (a percentile
    bootstrap per B, the deciding B picked by hand) said fails at 3 seeds already."""
    claims, data = make_sgd(tmp_path, *sgd_runs(False))
    assert [c.verdict for c in claims] == ["undetermined", "holds"]
    assert claims[0].family["deciding"] == "10" and claims[0].family["options"]["10"]["verdict"] == "fails"
    assert "none fails at alpha/3 (Holm)" in claims[0].reason
    claims, _ = make_sgd(tmp_path, *sgd_runs(False, seeds=tuple(range(8))))
    assert [c.verdict for c in claims] == ["fails", "holds"]
    assert claims[0].family["deciding"] == "10" and claims[0].value == pytest.approx(
        np.median([np.log((90 + s) / (50 + s)) for s in range(8)]))
    assert claims[0].p_fails == pytest.approx(3 * 2 ** -8)  # the family's p: Holm over the three B


def test_sgd_flattening_three_seeds_undetermined(tmp_path):
    """Three seeds that all agree: the old percentile bootstrap's interval was about [min, max] of
    them, so both claims held; the sign-flip test cannot reach 2.5 % with 3 seeds (smallest p 1/8),
    so both are undetermined and say how many seeds would decide them."""
    claims, _ = make_sgd(tmp_path, *sgd_runs(True, seeds=(0, 1, 2)))
    assert [c.verdict for c in claims] == ["undetermined"] * 2
    for c in claims:
        assert c.needed is not None and c.needed >= 6 and "seeds" in c.needed_note
        assert c.evidence == {"seeds": 3} and c.p_holds == pytest.approx(1 / 8)


def test_sgd_flattening_one_seed_and_divergence(tmp_path):
    """A diverged large-eta run is not flat: its S_final is +inf, so its seed counts against both
    claims (the old code dropped the seed, which favoured them)."""
    rows, cubes = sgd_runs(True, seeds=(0,))
    cubes[1] = cube([5.0, 1e9, np.nan], status="diverged")  # B=1000, large eta, seed 0
    claims, data = make_sgd(tmp_path, rows, cubes)
    assert [c.verdict for c in claims] == ["undetermined"] * 2
    assert claims[1].values == [-np.inf] and claims[1].evidence == {"seeds": 1}  # log(S_ss / inf)
    assert claims[0].family["options"]["1000"]["n"] == 1 and "seeds 1 < 3" in claims[0].reason
    assert data["per_batch_size"]["1000"]["log_ratios"] == [None]  # +inf, written as null in the record
    assert data["per_batch_size"]["1000"]["seeds"] == [0]


EIGHT = tuple(range(8))  # a family "some c" over three c needs 7+ seeds to hold: 2^-7 <= 2.5 % / 3


def test_sgd_flattening_counts_every_seed(tmp_path):
    """A diverged full-batch run at the small eta (S_fs, seed 0): its S_final is +inf, so at B = 1000
    seed 0's log ratio is -inf (the large eta ends flatter than a blown-up run) and every seed still
    counts there; (b), log(S_ss / S_fl), keeps all six seeds (S_fs is not in its statistic)."""
    rows, cubes = sgd_runs(True)
    assert (rows[0]["batch_size"], rows[0]["eta"], rows[0]["seed"]) == (1000, "small", 0)
    cubes[0] = cube([5.0, 1e9, np.nan], status="diverged")
    claims, data = make_sgd(tmp_path, rows, cubes)
    assert data["per_batch_size"]["1000"]["seeds"] == list(SIX)
    assert data["per_batch_size"]["1000"]["log_ratios"][0] is None  # -inf, written as null in the record
    assert claims[0].family["options"]["1000"]["n"] == 6
    assert claims[1].evidence == {"seeds": 6} and claims[1].verdict == "holds"


def ada_runs(delta: dict, crossing: bool, seeds=SIX, base_acc=None):
    """Adam runs: unclipped and c in (0.1, 1, 10) (the default grid's); the clipped accuracy is the
    unclipped one plus ``delta[c]`` (per seed when a list)."""
    rows, cubes = [], []
    for clip in (None, 0.1, 1.0, 10.0):
        for i, s in enumerate(seeds):
            acc = (0.78 + 0.002 * s) if base_acc is None else base_acc[i]
            if clip is not None:
                d = delta.get(clip, 0.0)
                acc += d[i] if isinstance(d, (list, tuple)) else d
            ratio = (2.0 if clip is not None else 0.5) if crossing else 0.5
            loss = np.ones(21)
            if clip is not None:
                loss[5], loss[12] = 5.0, 4.0  # two spikes of the clipped runs
            rows.append({"arm": "adam", "clip": clip, "seed": s, "lr": 0.005})
            cubes.append(cube([5, 6, 7], loss=loss, acc=acc, precond=[np.nan, 3.0, ratio * 100 + s],
                              threshold=100.0, optimizer="adam" if clip is None else "clipped_adam"))
    return rows, cubes


def make_ada(tmp_path, rows, cubes):
    claims = make_clipped_ada(rows, cubes, tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "c.json")
    return claims, json.loads((tmp_path / "c.json").read_text())


@pytest.mark.parametrize("delta, crossing, seeds, verdicts", [
    ({0.1: 0.02}, True, EIGHT, ["holds", "holds"]),
    ({0.1: -0.02, 1.0: -0.01, 10.0: -0.03}, False, SIX, ["fails", "fails"])])
def test_clipped_ada_claims(tmp_path, delta, crossing, seeds, verdicts):
    claims, data = make_ada(tmp_path, *ada_runs(delta, crossing, seeds))
    assert [c.id for c in claims] == ["clipped.some_c", "clipped.crosses"]
    assert [c.verdict for c in claims] == verdicts
    assert claims[0].name.startswith("Adam: ") and claims[0].family["rule"] == "some"
    if verdicts[0] == "holds":  # c = 0.1 holds at 2^-8 <= 2.5 % / 3 (Holm over three c)
        assert claims[0].family["deciding"] == "0.1" and claims[0].value == pytest.approx(0.02)
        assert claims[0].p_holds == pytest.approx(3 * 2 ** -8)  # the family's: Holm over the three c
        assert data["per_clip"]["adam"]["1"]["verdict"] == "undetermined"  # c = 1: no difference
        assert claims[1].values == pytest.approx([min(1 + s / 100, 0.5 - s / 100) for s in seeds])
    else:
        assert {o["verdict"] for o in claims[0].family["options"].values()} == {"fails"}
    assert data["per_clip"]["adam"]["0.1"]["diffs"] == pytest.approx([delta[0.1]] * len(seeds))
    assert data["per_clip"]["adam"]["0.1"]["seeds"] == list(seeds)
    assert set(data["families"]) == {"Adam: some c improves validation accuracy over the unclipped optimizer"}
    n = len(seeds)
    assert [r["spikes"] for r in data["runs"][n - 1:n + 1]] == [0, 2]  # the last unclipped run, the first clipped


def test_clipped_ada_some_c_needs_seven_seeds_with_three_c(tmp_path):
    """c = 0.1 better on all 6 seeds: p = 2^-6 = 0.016 holds for one c named beforehand but not at
    2.5 % / 3 (Holm over the three c): undetermined, never holds."""
    claims, _ = make_ada(tmp_path, *ada_runs({0.1: 0.02}, True, SIX))
    assert claims[0].verdict == "undetermined" and claims[0].family["options"]["0.1"]["verdict"] == "holds"
    assert claims[1].verdict == "holds"  # the sign test of one median: 6 seeds suffice


def test_clipped_ada_no_difference_is_undetermined(tmp_path):
    """Identical accuracies for every c: no c holds and none fails, and more seeds do not help (the
    old code said fails: every c's bootstrap interval was [0, 0], not above 0)."""
    claims, _ = make_ada(tmp_path, *ada_runs({}, True))
    assert claims[0].verdict == "undetermined" and claims[0].value == pytest.approx(0.0)
    assert claims[0].needed is None and "more seeds do not help" in claims[0].needed_note


def test_clipped_ada_three_seeds_undetermined(tmp_path):
    """Three seeds where c = 0.1 is better on each: the old code's percentile bootstrap said holds;
    the sign-flip test cannot decide with 3 seeds and says how many would."""
    claims, _ = make_ada(tmp_path, *ada_runs({0.1: 0.02}, True, seeds=(0, 1, 2)))
    assert [c.verdict for c in claims] == ["undetermined"] * 2
    assert all(c.needed is not None and c.needed >= 6 for c in claims)


def _old_percentile_interval(values, n_boot=10_000, seed=0):
    """The removed ``claims.bootstrap_interval`` (percentile bootstrap of the mean): the old rule."""
    v = np.asarray(values, float)
    draws = v[np.random.default_rng(seed).integers(0, v.size, size=(n_boot, v.size))].mean(1)
    return float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))


def test_clipped_ada_best_c_is_not_chosen_after_the_data(tmp_path):
    """Selection bias of the old claim (a): it took the best c after seeing the data and decided on
    it alone. Here c = 0.1's differences (7 of 8 seeds up) have a sign-flip p of 3/256 = 0.012: alone,
    named beforehand, it would hold, and the old rule (its percentile bootstrap interval above 0)
    said holds. Among the three c it must reach 2.5 % / 3 (Holm) and does not: undetermined."""
    d01 = [0.012, 0.018, 0.010, 0.022, 0.015, 0.020, 0.014, -0.010]
    d1 = [0.01, -0.01, 0.005, -0.005, 0.0, 0.01, -0.01, 0.002]
    d10 = [-0.02, 0.01, -0.01, 0.0, 0.01, -0.005, 0.003, -0.004]
    base = [0.780, 0.784, 0.776, 0.790, 0.772, 0.786, 0.781, 0.779]
    assert _old_percentile_interval(d01)[0] > 0  # the old rule: holds
    assert decide(d01, ">", 0, "paired").verdict == "holds"  # one c named beforehand: holds
    claims, data = make_ada(tmp_path, *ada_runs({0.1: d01, 1.0: d1, 10.0: d10}, True, EIGHT, base))
    a = claims[0]
    assert a.verdict == "undetermined" and a.family["deciding"] == "0.1"
    assert a.p_holds == pytest.approx(3 * 3 / 256) and "Holm" in a.reason  # the family's p: 3 x 3/256
    assert a.family["options"]["0.1"]["p_holds"] == pytest.approx(3 / 256)
    assert data["per_clip"]["adam"]["0.1"]["verdict"] == "holds"  # alone; not the family's verdict


def test_clipped_ada_family_false_holds_rate(monkeypatch):
    """No effect: 8 seeds, the unclipped and three c drawn from one distribution (a run diverges at
    chance with probability 0.1, else an accuracy near 0.8). Over 2,000 trials the family "some c"
    holds at most 2.5 % + 3 Monte-Carlo standard errors; deciding on the best c alone (the old
    selection, here with the exact test) exceeds it. (``needed``, which no verdict depends on, is
    not computed: it is most of decide's time.)"""
    monkeypatch.setattr(sys.modules[decide.__module__], "needed_for", lambda *a, **k: (None, ""))
    rng = np.random.default_rng(23)
    trials, seeds, clips = 2000, 8, 3
    acc = np.where(rng.random((trials, clips + 1, seeds)) < 0.1, 0.1,
                   0.8 + 0.01 * rng.standard_normal((trials, clips + 1, seeds)))
    diffs = acc[:, 1:, :] - acc[:, :1, :]
    family = best_alone = 0
    for t in range(trials):
        per = {c: decide(diffs[t, c], ">", 0, "paired") for c in range(clips)}
        family += decide_family(per, "some")[0] == "holds"
        best_alone += min(per.values(), key=lambda d: d.p_holds).holds
    limit = 0.025 + 3 * np.sqrt(0.025 * 0.975 / trials)
    assert family / trials <= limit
    assert best_alone / trials > limit  # the test can fail: the uncorrected selection is caught


def test_loss_spikes_and_divergence_at_chance(tmp_path):
    assert loss_spikes(cube([1.0], loss=[1, 3, 1, 1, 2.5, 0.5]), 1.0) == 2
    assert loss_spikes(cube([1.0], loss=[1, 1.5, 1, 1, 1.8, 0.5]), 1.0) == 0  # rises under 100 %
    rows, cubes = ada_runs({0.1: 0.02}, True)
    cubes[6] = cube([5, np.nan, np.nan], status="diverged", acc=0.9, precond=[np.nan] * 3, threshold=100.0)
    claims, data = make_ada(tmp_path, rows, cubes)  # c = 0.1, seed 0
    run = data["runs"][6]
    assert run["final_test_acc"] == CHANCE == 0.1 and run["ratio_final"] is None  # chance; inf written as null
    assert data["per_clip"]["adam"]["0.1"]["diffs"][0] == pytest.approx(0.1 - 0.78)  # counted, at chance
    # a diverged clipped run crossed its threshold for good (r = inf): its seed counts, on the claim's side
    assert claims[1].evidence == {"seeds": 6} and "not counted" not in claims[1].note
    assert claims[1].values[0] == pytest.approx(min(math.inf - 1.0, 2.0 - 1.0, 2.0 - 1.0, 1.0 - 0.5))


def test_a_diverged_unclipped_run_counts_against_crossing(tmp_path):
    """Before, a seed with a diverged run dropped out of "the clipped runs cross where the unclipped one
    does not", though a diverged unclipped run has crossed its threshold: dropping it favoured the claim.
    Now its r is inf and the seed's margin -inf counts against the claim."""
    rows, cubes = ada_runs({0.1: 0.02}, True)
    cubes[0] = cube([5, np.nan, np.nan], status="diverged", acc=0.9, precond=[np.nan] * 3, threshold=100.0)
    claims, _ = make_ada(tmp_path, rows, cubes)
    assert claims[1].evidence == {"seeds": 6} and claims[1].values[0] == -math.inf


def test_opt_tags_round_trip():
    for args in [("gd",), ("sgd", 50), ("adam", 64, 0.9), ("adam", 64, 0.0), ("clipped_adam", 64, 0.9, 0.1),
                 ("clipped_rmsprop", None, None, 10.0), ("rmsprop", 8)]:
        tag = opt_tag(*args)
        back = parse_opt_tag(tag)
        assert opt_tag(back["optimizer"], back["batch_size"], back.get("beta1"), back["clip"]) == tag
    assert opt_tag("clipped_adam", 64, 0.9, 0.1) == "clipped_adam_c0.1_m0.9_b64"
    with pytest.raises(ValueError, match="unknown optimizer tag"):
        parse_opt_tag("lion_b4")


def test_default_grids_and_run_config():
    cfg = load_config("config/config.yaml")
    sgd = sgd_flattening_runs(cfg)
    n_sgd, n_ada = len(cfg["sgd_flattening"]["seeds"]), len(cfg["clipped_ada"]["seeds"])
    assert len(sgd) == 3 * 2 * n_sgd and {r["opt"] for r in sgd} == {"gd", "sgd_b200", "sgd_b50"}
    assert {r["lr"] for r in sgd if r["batch_size"] == 50} == {0.00195312, 0.0195312}  # 0.02 and 0.2 x 50/512
    ada = clipped_ada_runs(cfg)
    assert len(ada) == 2 * 4 * n_ada and {r["opt"] for r in ada if r["arm"] == "rmsprop"} == {
        "adam_m0_b64", "clipped_rmsprop_c0.1_b64", "clipped_rmsprop_c1_b64", "clipped_rmsprop_c10_b64"}
    run = optimizer_run_config(cfg, "clipped_ada", "fmnist_mlp", "clipped_adam_c0.1_m0.9_b64")
    assert {k: run["train"][k] for k in ("optimizer", "clip", "batch_size", "beta1", "beta2", "acc_goal")} == {
        "optimizer": "clipped_adam", "clip": 0.1, "batch_size": 64, "beta1": 0.9, "beta2": 0.99, "acc_goal": 0.999}
    with pytest.raises(ConfigError, match="unknown setting"):
        optimizer_run_config(cfg, "clipped_ada", "nope", "gd")


def test_figure_blocks_are_checked_before_any_job():
    from eosflow.config import read_yaml, validate_config
    base = read_yaml("config/config.yaml")
    for block, bad, msg in [("sgd_flattening", {"batch_sizes": [1000, 2000, 50]}, "are all full batches"),
                            ("sgd_flattening", {"lr_small": 0.3}, "must be below lr_large"),
                            ("clipped_ada", {"clips": [0.1, 0.1]}, "repeats a value"),
                            ("clipped_ada", {"setting": "nope"}, "clipped_ada.setting: unknown setting")]:
        with pytest.raises(ConfigError, match=msg):
            validate_config({**base, block: {**base[block], **bad}})
