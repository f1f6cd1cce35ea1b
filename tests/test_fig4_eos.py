"""fig4's S_max statistic and claims (the flattening protocol's blocked rank claims); the edge-of-stability
check's statistic and claims."""
import json

import numpy as np
import pytest
import xarray as xr

from eosflow.figures.eos import make_eos, second_half_ratio
from eosflow.figures.fig4 import fig4_claims, make_fig4, s_max_after
from eosflow.figures.flattening import block_rho, blocks
from eosflow.similarity import spearman


def cube(lr, hsteps, sharp, n_steps=None, status="max_epochs", eta_eos=0.1, seed=0):
    n = n_steps if n_steps is not None else int(hsteps[-1])
    return xr.Dataset({"sharpness": ("hstep", np.asarray(sharp, float)),
                       "test_acc": ("step", np.linspace(0.5, 0.8, n + 1))},
                      coords={"hstep": np.asarray(hsteps), "step": np.arange(n + 1), "lr": lr, "seed": seed},
                      attrs={"status": status, "eta_eos": eta_eos})


def test_s_max_after_the_switch():
    c = cube(0.2, [0, 10, 20, 30], [50.0, 9.0, 20.0, np.nan])
    # strictly after the switch: the switch point is the large-eta phase's last iterate
    assert s_max_after(c, 0) == 20.0 and s_max_after(c, 9) == 20.0 and np.isnan(s_max_after(c, 20))
    c = cube(0.2, [0, 10, 20, 30], [5.0, 90.0, 20.0, 30.0])
    assert s_max_after(c, 10) == 30.0 and s_max_after(c, 9) == 90.0


def fig4_runs(flattening: bool, seeds=(0, 1, 2), lrs=(0.1, 0.2), epochs=(0, 50, 100)):
    runs = []
    for seed in seeds:
        for lr0 in lrs:
            for e in epochs:
                peak = 100.0 / (1 + (e / 50) * (lr0 / 0.1)) if flattening else 10.0 + e * lr0
                peak *= 1 + 0.05 * seed
                sharp = [5, peak / 2, peak, peak * 0.9, peak]
                runs.append({"lr0": lr0, "epoch": e, "seed": seed, "cube": cube(0.01, [0, 50, 100, 150, 200], sharp)})
    return runs


@pytest.mark.parametrize("flattening", [True, False])
def test_fig4_claims(tmp_path, flattening):
    """Rank claims decide at 3 seeds: every block at -1 (+1) holds (fails) both. Phase length: one block
    of 3 switch epochs per (eta0, seed), p = (1/6)^3 per eta0; eta0: one block of the 3 eta0 per seed
    (S_max averaged over its e > 0), p = (1/6)^3."""
    claims = make_fig4(fig4_runs(flattening, lrs=(0.1, 0.2, 0.4)), 0.01, tmp_path / "f.pdf", tmp_path / "f.png",
                       tmp_path / "c.json")
    assert [c.id for c in claims] == ["flattening.phase_length", "flattening.eta0"]
    assert [c.verdict for c in claims] == [("holds" if flattening else "fails")] * 2
    assert all(c.evidence == {"seeds": 3} and c.interval is not None and c.kind == "rank" for c in claims)
    sign = -1.0 if flattening else 1.0
    phase, eta0 = claims
    assert phase.values == [sign] * 3 and set(phase.family["options"]) == {"0.1", "0.2", "0.4"}
    assert all(o["verdict"] == phase.verdict and o["n"] == 3 for o in phase.family["options"].values())
    assert phase.family["rule"] == "every"
    # the family's p-values: "every" needs every eta0 (no correction toward holds) and fails on one eta0
    # after Holm's correction over the 3 eta0 (p_fails x 3)
    assert (phase.p_holds if flattening else phase.p_fails) == pytest.approx((1 if flattening else 3) / 216)
    assert eta0.values == [sign] * 3 and (eta0.p_holds if flattening else eta0.p_fails) == pytest.approx(1 / 216)
    data = json.loads((tmp_path / "c.json").read_text())
    assert len(data["runs"]) == 27 and set(data["spearman_e_per_eta0"]) == {"0.1", "0.2", "0.4"}
    assert data["spearman_e_per_eta0"]["0.1"] == pytest.approx(sign)  # the seed-mean record stays
    assert "seed-mean per eta0: 0.1: " in data["claims"][0]["note"]
    assert [b["runs"] for b in data["blocks"]["phase_length"]] == [3] * 9
    assert [(b["seed"], b["epochs"], b["runs"]) for b in data["blocks"]["eta0"]] == [
        (s, [50, 100], 3) for s in (0, 1, 2)]
    assert data["families"][phase.name]["rule"] == "every"


def test_fig4_one_seed_is_undetermined(tmp_path):
    claims = make_fig4(fig4_runs(True, seeds=(0,)), 0.01, tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "c.json")
    assert [c.verdict for c in claims] == ["undetermined"] * 2 and claims[0].value == -1.0
    assert claims[0].reason == "too little evidence: seeds 1 < 3" and claims[0].needed >= 3
    assert (tmp_path / "f.png").stat().st_size > 0


def test_block_rho():
    assert block_rho([1, 2], [5.0, 3.0]) == (-1.0, 2) and block_rho([1, 2], [3.0, 5.0]) == (1.0, 2)
    assert np.isnan(block_rho([1, 2], [3.0, 3.0])[0]) and np.isnan(block_rho([1, 2, 3], [np.nan, np.nan, 1.0])[0])
    assert block_rho([0, 50, 100, 200], [9.0, np.nan, 4.0, 1.0]) == (-1.0, 3)
    assert block_rho([1, 2, 3], [1.0, 3.0, 2.0]) == (pytest.approx(0.5), 3)


def grid(s_max, seeds=(0, 1, 2), lrs=(1.4, 2.0, 2.8), epochs=(0, 50, 100, 200, 400)):
    """Rows as :func:`summarize` gives them, with ``s_max(seed, lr0, e)`` (e = 0: the shared run)."""
    return [{"lr0": lr, "epoch": e, "seed": seed, "s_max": float(s_max(seed, lr, e)), "status": "max_epochs"}
            for seed in seeds for lr in lrs for e in epochs]


def test_phase_length_fails_when_one_eta0_rises():
    """"For every eta0" is a family: one eta0 whose S_max clearly rises with e in every seed makes it fail
    (that eta0 fails at alpha/3, Holm), though the other two hold."""
    def s_max(seed, lr, e):
        step = {0: 0, 50: 1, 100: 2, 200: 3, 400: 4}[e]
        return 50.0 * (1 + 0.1 * seed) * (1 + 0.1 * step if lr == 1.4 else 1 - 0.15 * step)
    phase = fig4_claims(grid(s_max))[0][0]
    opts = phase.family["options"]
    assert phase.verdict == "fails" and phase.family["deciding"] == "1.4"
    assert opts["1.4"]["verdict"] == "fails" and opts["2"]["verdict"] == opts["2.8"]["verdict"] == "holds"
    assert opts["1.4"]["p_fails"] == pytest.approx(1 / 120 ** 3) and phase.value == pytest.approx(1.0)

    # one eta0 with no trend in e leaves the family short of "every": undetermined, not holds
    def flat_one(seed, lr, e):
        if lr != 1.4 or e == 0:
            return s_max(seed, 2.0, e)
        return 40.0 + {50: 1, 100: -1, 200: 2, 400: -2}[e] * (-1) ** seed
    phase = fig4_claims(grid(flat_one))[0][0]
    assert phase.verdict == "undetermined" and phase.family["deciding"] == "1.4"
    assert phase.family["options"]["2"]["verdict"] == "holds"


def test_eta0_blocks_on_e_not_the_pooled_design():
    """S_max depends on e only (100 / (1 + e/50) per seed, 1 % noise whose order in eta0 alternates with
    e), and the 2.8 eta0 runs switched at e = 50 and 100 have no finite S_max. The old statistic, the
    per-seed Spearman(eta0, S_max) pooled over every (eta0, e > 0), is -0.26 in every seed (2.8 appears
    only at the late, flat switch epochs), so the old code said "S_max falls with eta0" **holds** (mean
    -0.26, bootstrap interval [-0.26, -0.26]). Averaged over the switch epochs every eta0 of the seed
    has (200 and 400), the same for each eta0, the effect of e drops out: -0.5 in each seed (the
    noise), undetermined at 3 seeds."""
    noise = {50: {1.4: 1.01, 2.0: 0.99}, 100: {1.4: 0.99, 2.0: 1.01},
             200: {1.4: 1.01, 2.0: 0.99, 2.8: 1.005}, 400: {1.4: 0.99, 2.0: 1.01, 2.8: 0.995}}

    def s_max(seed, lr, e):
        return 100.0 / (1 + e / 50) * (1 + 0.05 * seed) * (noise[e].get(lr, np.nan) if e else 1.0)
    rows = grid(s_max)
    for seed in (0, 1, 2):  # the old statistic
        late = [r for r in rows if r["seed"] == seed and r["epoch"] > 0]
        assert spearman([r["lr0"] for r in late], [r["s_max"] for r in late]) == pytest.approx(-0.2595, abs=1e-3)
    eta0 = fig4_claims(rows)[0][1]
    assert eta0.values == pytest.approx([-0.5] * 3) and eta0.verdict == "undetermined"
    assert eta0.evidence == {"seeds": 3} and eta0.p_holds > 0.025
    assert [(b["epochs"], b["runs"]) for b in blocks(rows)["eta0"]] == [([200, 400], 3)] * 3
    # the same design with S_max falling in eta0 inside every (seed, e): holds at 3 seeds
    falls = fig4_claims(grid(lambda seed, lr, e: s_max(seed, 1.4, e) / lr if e else s_max(seed, lr, e)))[0][1]
    assert falls.verdict == "holds" and falls.values == [-1.0] * 3


def test_second_half_ratio_uses_the_second_half():
    c = cube(0.1, [0, 25, 50, 75, 100], [1.0, 1.0, 20.0, 18.0, 22.0])
    assert second_half_ratio(c) == pytest.approx(0.1 * 20.0 / 2)


def _seeds(make, n):
    return [c for seed in range(n) for c in make(seed)]


def _edge(seed):
    at_edge = cube(0.2, np.arange(0, 101, 10), [5] * 5 + [10.0, 9.5, 10.5, 10.0, 9.8, 10.2 + seed], seed=seed)
    below = cube(0.02, np.arange(0, 101, 10), np.linspace(5, 40 + seed, 11), seed=seed)   # 2/η = 100
    return [at_edge, below]


def _past(seed):
    # "below the limit" runs that sit at 2/η fail the third claim; runs above far past it fail the second
    return [cube(0.2, [0, 50, 100], [5, 40 + seed, 40], seed=seed),
            cube(0.02, [0, 50, 100], [5, 101 + seed, 101 + seed], seed=seed)]


def test_eos_claims(tmp_path):
    claims = make_eos(_seeds(_edge, 6), tmp_path / "e.pdf", tmp_path / "e.png", tmp_path / "e.json")
    assert [c.id for c in claims] == ["eos.lower", "eos.upper", "eos.below_stable"]
    assert [c.verdict for c in claims] == ["holds"] * 3 and all(c.kind == "median" for c in claims)
    assert claims[0].values == pytest.approx([1.0] * 6) and claims[0].evidence == {"seeds": 6}
    assert claims[2].values == pytest.approx([0.01 * np.median(np.linspace(5, 40 + s, 11)[5:]) for s in range(6)])
    claims = make_eos(_seeds(_past, 6), tmp_path / "e.pdf", tmp_path / "e.png", tmp_path / "e.json")
    assert [c.verdict for c in claims] == ["holds", "fails", "fails"]
    runs = json.loads((tmp_path / "e.json").read_text())["runs"]
    assert [r["above_limit"] for r in runs] == [False] * 6 + [True] * 6  # sorted by (eta, seed)


def test_eos_three_seeds_are_undetermined_with_needed(tmp_path):
    """The sign test cannot decide at 3 seeds (smallest p 1/8): every claim is undetermined, each with the
    seeds that would decide it (the old mean with a bootstrap interval said holds x 3, and holds, fails,
    fails)."""
    for make in (_edge, _past):
        claims = make_eos(_seeds(make, 3), tmp_path / "e.pdf", tmp_path / "e.png", tmp_path / "e.json")
        assert [c.verdict for c in claims] == ["undetermined"] * 3
        assert all(c.needed == 12 and "3 seeds cannot reach" in c.reason for c in claims)  # 3 of 3 agree
    # one seed: undetermined, with its values; a diverged run counts against the claim (it left the edge
    # of stability for good): +inf against "at most 1.2", -inf against "at least 0.8"; the old code left
    # it out, which favoured "at most", then counted it +inf, which favoured "at least")
    claims = make_eos(_edge(0), tmp_path / "e.pdf", tmp_path / "e.png", tmp_path / "e.json")
    assert [c.verdict for c in claims] == ["undetermined"] * 3 and all(c.value is not None for c in claims)
    gone = [cube(0.2, [0, 50, 100], [5, 400, 400], status="diverged"), _edge(0)[1]]
    claims = make_eos(gone, tmp_path / "e.pdf", tmp_path / "e.png", tmp_path / "e.json")
    assert claims[0].values == [-np.inf] and claims[1].values == [np.inf] and claims[2].values != []


def test_s_max_over_a_common_window_after_the_switch():
    """S keeps rising after every switch until the fixed end: the largest S after the switch up to the
    end is then lower the later the switch (fewer epochs left to sharpen), which looked like flattening.
    Over the same number of epochs after every switch there is nothing left to see."""
    from eosflow.figures.flattening import summarize

    def rising_after(e, end=400):
        h = np.arange(0, end + 1, 10)
        return cube(0.01, h, np.where(h > e, 10.0 + (h - e) * 0.1, 10.0), n_steps=end)

    runs = [{"lr0": 1.4, "epoch": e, "seed": 0, "cube": rising_after(e)} for e in (0, 50, 100, 200)]
    rows = summarize(runs)
    assert all(r["window"] == 200 for r in rows)
    assert len({r["s_max"] for r in rows}) == 1  # the same rise over the same window
    assert spearman([r["epoch"] for r in runs], [s_max_after(r["cube"], r["epoch"]) for r in runs]) == -1.0
