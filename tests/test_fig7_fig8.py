"""fig7 and fig8 (from the fig5 sweep): the rotation ρ, the rank correlations and their claims on synthetic
summaries with known answers, both figures drawn, and one tiny workflow run."""
import json
import math

import numpy as np
import pytest
import xarray as xr

from eosflow.claims import decide
from eosflow.figures import sweep_stats as st
from eosflow.figures.fig7 import correlation_table, make_fig7, table_cells
from eosflow.figures.fig8 import make_fig8
from eosflow.similarity import rotation
from eosflow.summary import run_summary

RATIOS = (0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0)


def summary(acc, rot=lambda r, s: 0.1 * r, sharp=lambda r, s: 2.0 / r, diverged=lambda r, s: False,
            seeds=(0, 1, 2), settings=("a",), ratios=RATIOS, relative=True):
    """A fig5-like summary: per setting and seed, runs at ``ratios`` x that seed's eta_eos; the
    quantities are functions of (ratio, seed); diverged runs get NaN accuracy and chance-level junk."""
    rows = []
    for name in settings:
        for s in seeds:
            eos = 0.1 + 0.02 * s
            for r in ratios:
                d = diverged(r, s)
                rows.append({"setting": name, "seed": s, "lr": r * eos, "lr_relative": r if relative else math.nan,
                             "eta_eos": eos, "status": "diverged" if d else "converged",
                             # a diverged run's numbers are junk that would flip every correlation if used
                             "final_test_acc": 0.99 if d else acc(r, s), "rotation": 0.0 if d else rot(r, s),
                             "sharpness_final": 1e9 if d else sharp(r, s)})
    data = ("lr_relative", "eta_eos", "status", "final_test_acc", "rotation", "sharpness_final")
    return xr.Dataset({k: ("run", np.array([r[k] for r in rows])) for k in data},
                      coords={c: ("run", [r[c] for r in rows]) for c in ("lr", "seed", "setting")})


def rising(r, s):
    return 0.7 + 0.02 * np.log2(r)


# -- ρ: the spec's rotation, known answers -------------------------------------------------------------

def _basis(P, k, seed):
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((P, k)))[0].T  # (k, P) orthonormal rows


def turned(angles, P=40, seed=0):
    """Two 3-dim subspaces (rows) with principal angles ``angles``, the second in a scrambled basis."""
    Q = _basis(P, 6, seed)
    A = Q[:3]
    B = np.stack([math.cos(a) * Q[i] + math.sin(a) * Q[3 + i] for i, a in enumerate(angles)])
    return A, np.array([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0], [0.5, 0.0, 1.0]]) @ B


@pytest.mark.parametrize("angles", [(0.0, 0.0, 0.0), (0.2, 0.5, 0.9), (math.pi / 2,) * 3, (0.0, 0.0, math.pi / 2)])
def test_rotation_of_subspaces_at_known_principal_angles(angles):
    A, B = turned(angles)
    expected = 1.0 - math.cos(math.sqrt(sum(a * a for a in angles)) / math.sqrt(3))  # the spec's 1 - rho
    assert rotation(A, B) == pytest.approx(expected, abs=1e-12)
    assert rotation(B, A) == pytest.approx(expected, abs=1e-12)


def test_summary_rotation_is_first_vs_last_measurement():
    """run_summary's 1 - rho compares the first and the last stored eigenvectors, not the ones between."""
    A, B = turned((0.3, 0.6, 1.2))
    _, middle = turned((1.5, 1.5, 1.5), seed=0)
    vec = np.stack([A, middle, B])
    n = 5
    cube = xr.Dataset({"train_loss": ("step", np.linspace(2, 1, n)), "train_acc": ("step", np.full(n, 0.5)),
                       "test_acc": ("step", np.full(n, 0.4)), "sharpness": ("hstep", [10.0, 8.0, 7.0]),
                       "eigvec": (("vstep", "eig", "param"), vec)},
                      coords={"step": np.arange(n), "hstep": [0, 2, 4], "vstep": [0, 2, 4], "lr": 0.1, "seed": 0},
                      attrs={"status": "converged"})
    row = run_summary(cube)
    assert row["rotation"] == pytest.approx(1 - math.cos(math.sqrt(0.09 + 0.36 + 1.44) / math.sqrt(3)), abs=1e-12)
    assert row["sharpness_final"] == 7.0 and row["sharpness_init"] == 10.0


# -- correlations, known answers -----------------------------------------------------------------------

def test_seed_spearman_known_value_and_diverged_runs_excluded():
    # seed 0: accuracy ranks 2,1,4,3,5 against S_final ranks 1..5: Spearman = 1 - 6*4/(5*24) = 0.8;
    # seed 1: one run too few after the diverged ones are excluded
    order = {0.5: 2, 1.0: 1, 1.4: 4, 2.0: 3, 2.8: 5}
    ds = summary(lambda r, s: 0.5 + 0.01 * order[r], sharp=lambda r, s: r, ratios=tuple(order), seeds=(0, 1),
                 diverged=lambda r, s: s == 1 and r > 1.2)
    rows = st.seed_spearman(ds, "sharpness_final", min_runs=4)
    assert rows[0] == {"seed": 0, "runs": 5, "diverged": 0, "diverged_counted": "excluded",
                       "spearman": pytest.approx(0.8), "contributes": True}
    assert rows[1] == {"seed": 1, "runs": 2, "diverged": 3, "diverged_counted": "excluded", "spearman": None,
                       "contributes": False}
    # with the diverged runs at chance accuracy (fig8's eta0), seed 1 keeps all 5 runs: 2 rising, 3 at chance
    at_chance = st.seed_spearman(ds, "lr", min_runs=4, chance=0.1)
    assert at_chance[1]["runs"] == 5 and at_chance[1]["diverged_counted"] == "at chance"
    # the three tied runs at chance are ranked in a fixed random order (a block's ties are broken so that
    # the rank test's untied null is exact): between -1 and midranks' -0.89
    from eosflow.claims.procedures import block_spearman
    rho = at_chance[1]["spearman"]
    assert rho == block_spearman([0.5, 1.0, 1.4, 2.0, 2.8], [0.52, 0.51, 0.1, 0.1, 0.1], 1)[0]
    assert -1.0 <= rho <= -0.7
    # a run without a rotation drops out of that correlation only
    ds["rotation"].values[1] = np.nan
    assert st.seed_spearman(ds, "rotation", min_runs=4)[0]["runs"] == 4
    assert st.seed_spearman(ds, "sharpness_final", min_runs=4)[0]["runs"] == 5


def test_rank_claim_decides_on_per_seed_correlations_with_their_block_sizes():
    rows = [{"seed": s, "runs": m, "diverged": 0, "diverged_counted": "excluded", "spearman": r, "contributes": True}
            for s, (m, r) in enumerate([(9, 0.9), (8, 0.8), (9, 0.85)])]
    rows.append({"seed": 3, "runs": 3, "diverged": 6, "diverged_counted": "excluded", "spearman": None,
                 "contributes": False})
    c = st.rank_claim("fig7.rotation", rows, "mlp")
    assert c.kind == "rank" and c.values == pytest.approx([0.9, 0.8, 0.85]) and c.evidence == {"seeds": 3}
    assert c.value == pytest.approx(0.85) and c.verdict == "holds" and c.name.startswith("mlp: ")
    ref = decide([0.9, 0.8, 0.85], ">", 0, "rank", sizes=[9, 8, 9])
    assert c.p_holds == pytest.approx(ref.p_holds) and c.interval == pytest.approx(list(ref.interval))
    assert "3 of 4 seeds count" in c.note
    # the same correlations as blocks of 4 runs are weaker evidence (the exact null of 4 runs is wide)
    weak = [dict(r, runs=4) for r in rows[:3]]
    assert st.rank_claim("fig7.rotation", weak, "mlp").p_holds > c.p_holds


def test_rho_table_per_multiple_of_the_limit():
    ds = summary(rising, rot=lambda r, s: 0.1 * r + 0.01 * s, ratios=(0.5, 2.0), diverged=lambda r, s: r > 1 and s == 2)
    rows = st.rho_table(ds)
    assert [r["grid"] for r in rows] == [0.5, 2.0] and all(r["relative"] for r in rows)
    low, high = rows
    assert low["rho_mean"] == pytest.approx(1 - 0.06) and low["rho_sd"] == pytest.approx(0.01)
    assert (low["runs"], low["diverged"]) == (3, 0)
    assert high["rho_mean"] == pytest.approx(1 - 0.205) and high["rho_sd"] == pytest.approx(0.01 / math.sqrt(2))
    assert (high["runs"], high["diverged"]) == (2, 1)
    assert (low["lr_min"], low["lr_max"]) == pytest.approx((0.05, 0.07))  # eta_eos 0.1, 0.12, 0.14
    labels, cells = table_cells(rows)
    assert labels[0] == "η₀/η_eos" and cells[0][:3] == ["0.5", "0.05–0.07", "0.940 ± 0.010"]
    # an absolute grid: rows per eta_0, with the range of eta_0 / eta_eos over the seeds
    absolute = st.rho_table(summary(rising, ratios=(1.0,), relative=False, seeds=(0,)))
    assert absolute[0]["relative"] is False and absolute[0]["rho_sd"] is None
    assert table_cells(absolute)[0][0] == "η₀"


# -- claims verdicts on constructed summaries ----------------------------------------------------------

def by_name(claims):
    return {c.name.split(": ", 1)[1]: c for c in claims}


def draw(tmp_path, ds, fig):
    make = make_fig7 if fig == "fig7" else make_fig8
    claims = make(ds, tmp_path / f"{fig}.pdf", tmp_path / f"{fig}.png", tmp_path / f"{fig}.json")
    data = json.loads((tmp_path / f"{fig}.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"{c} in the claims JSON"))
    assert [c["verdict"] for c in data["claims"]] == [c.verdict for c in claims]
    return by_name(claims), data


FLAT = "flatter generalizes better: accuracy falls as S_final rises"
ROT = "accuracy rises with the eigenspace rotation 1 - rho"
ETA = "accuracy rises with eta0"


def test_fig8_claims_hold_at_three_seeds(tmp_path):
    # accuracy rises with eta0 and 1 - rho and falls with S_final, on every seed: a strong effect decides at 3 seeds
    c, data = draw(tmp_path, summary(rising), "fig8")
    for name, cid in ((FLAT, "fig8.sharpness"), (ROT, "fig8.rotation"), (ETA, "fig8.eta0")):
        assert c[name].id == cid and c[name].kind == "rank"
        assert c[name].verdict == "holds" and c[name].evidence == {"seeds": 3} and c[name].minimum == {"seeds": 3}
    assert c[ETA].value == pytest.approx(1.0) and c[FLAT].value == pytest.approx(-1.0)
    assert c[ETA].interval_kind == "null band" and c[ETA].interval[0] < 0 < c[ETA].interval[1]
    assert [r["runs"] for r in data["correlations"]["a"]["lr"]] == [9, 9, 9]


def test_fig8_counts_diverged_runs_at_chance_in_the_eta0_claim(tmp_path):
    """Bias fixed (issue 23): fig8 left diverged runs out of "accuracy rises with eta0", which favours it.

    Accuracy rises with eta0 over each seed's six smaller eta0 and the three largest diverge. The old code,
    diverged runs left out, had Spearman +1 on every seed: "holds" (its bootstrap interval [1, 1], and the
    rank test on those values holds too). Counted at chance accuracy, as fig5 counts them, the three largest
    eta0 rank last: about -0.39 per seed, and the claim does not hold. S_final and 1 - rho still leave the
    diverged runs out (no final state)."""
    ds = summary(rising, diverged=lambda r, s: r > 1.9)  # 2, 2.8 and 4 x eta_eos
    c, data = draw(tmp_path, ds, "fig8")
    old = data["eta0_with_diverged_excluded"]["a"]
    assert old["mean"] == pytest.approx(1.0)
    assert decide(list(old["per_seed"].values()), ">", 0, "rank", sizes=[6, 6, 6]).verdict == "holds"
    from eosflow.claims.procedures import block_spearman
    per_seed = [block_spearman(RATIOS, [rising(r, s) for r in RATIOS[:6]] + [0.1] * 3, s)[0] for s in (0, 1, 2)]
    expected = float(np.mean(per_seed))
    assert expected < 0 and all(v < 0 for v in per_seed)
    eta = c[ETA]
    assert eta.verdict != "holds" and eta.value == pytest.approx(expected)
    assert [r["runs"] for r in data["correlations"]["a"]["lr"]] == [9, 9, 9]
    assert "at chance" in eta.note
    # S_final and 1 - rho: the 6 runs that did not diverge, junk left out
    assert [r["runs"] for r in data["correlations"]["a"]["sharpness_final"]] == [6, 6, 6]
    assert c[FLAT].verdict == "holds" and c[FLAT].value == pytest.approx(-1.0) and c[ROT].verdict == "holds"
    assert len(data["diverged_runs"]) == 9 and data["runs"]["diverged"] == 9


def test_fig8_claims_fail_when_accuracy_falls(tmp_path):
    c, _ = draw(tmp_path, summary(lambda r, s: 0.9 - 0.05 * r), "fig8")
    assert c[ETA].verdict == "fails"
    assert c[ROT].verdict == "fails"
    assert c[FLAT].verdict == "fails"


def test_fig8_undetermined_when_seeds_disagree_or_are_too_few(tmp_path):
    # seed 0 rises, seeds 1 and 2 fall: mean -1/3, inside the null band of 3 blocks of 9 runs
    c, _ = draw(tmp_path, summary(lambda r, s: 0.7 + (0.02 if s == 0 else -0.02) * r), "fig8")
    eta = c[ETA]
    assert eta.verdict == "undetermined" and eta.value == pytest.approx(-1 / 3)
    assert "above 0.025" in eta.reason and eta.needed is not None and eta.needed > 3
    # two seeds, or seeds left with fewer than min_runs usable runs: too little evidence
    c, _ = draw(tmp_path, summary(rising, seeds=(0, 1)), "fig8")
    assert {x.verdict for x in c.values()} == {"undetermined"}
    assert all("seeds 2 < 3" in x.reason for x in c.values())
    c, _ = draw(tmp_path, summary(rising, diverged=lambda r, s: s == 2 and r > 0.5), "fig8")
    assert "seeds 2 < 3" in c[FLAT].reason and "seeds 2 < 3" in c[ROT].reason
    assert c[ETA].evidence == {"seeds": 3}  # at chance, seed 2 keeps its 9 runs in the eta0 correlation


def test_fig7_claims_and_settings(tmp_path):
    ds = summary(rising, settings=("mlp", "cnn"), rot=lambda r, s: 0.1 * r + 0.05 * s)
    ds["rotation"].values[ds["setting"].values == "cnn"] *= -1  # cnn: turns less at larger eta0
    claims = make_fig7(ds, tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "c.json")
    c = {x.name: x for x in claims}
    turns = c["mlp: a larger eta0 turns the top-k eigenspace more"]
    assert turns.verdict == "holds" and turns.value == pytest.approx(1.0)  # per seed: the offset does not matter
    assert turns.id == "fig7.rotation" and turns.kind == "rank" and turns.evidence == {"seeds": 3}
    assert c["cnn: a larger eta0 turns the top-k eigenspace more"].verdict == "fails"
    assert c["mlp: a larger eta0 ends flatter"].verdict == "holds"
    assert c["mlp: a larger eta0 ends flatter"].value == pytest.approx(-1.0)
    data = json.loads((tmp_path / "c.json").read_text())
    assert set(data["rho_tables"]) == {"mlp", "cnn"} and len(data["rho_tables"]["mlp"]) == len(RATIOS)
    c2 = {x.name: x for x in make_fig7(summary(rising, seeds=(0,)), tmp_path / "f.pdf", tmp_path / "f.png",
                                       tmp_path / "c.json")}
    assert {x.verdict for x in c2.values()} == {"undetermined"}
    assert all("seeds 1 < 3" in x.reason for x in c2.values())
    assert "bootstrap" not in (tmp_path / "c.json").read_text()


def test_figures_draw_every_usable_run(tmp_path):
    from test_workflow import check_claims

    ds = summary(rising, settings=("mlp", "cnn"), diverged=lambda r, s: r > 3)
    ds["rotation"].values[0] = np.nan  # a run without eigenvectors: not drawn in 3-D, still in fig8's S_final
    claims, fig = make_fig7(ds, tmp_path / "fig7.pdf", tmp_path / "fig7.png", tmp_path / "fig7.claims.json",
                            k=3, keep_open=True)
    panels = [ax for ax in fig.axes if ax.name == "3d"]
    assert len(panels) == 2 and [ax.get_title().split(":")[0] for ax in panels] == ["mlp", "cnn"]
    drawn = [sum(len(pc.get_offsets()) for pc in ax.collections) for ax in panels]
    assert drawn == [23, 24]  # 27 runs, 3 diverged, one without 1 - rho
    assert "3 diverged not drawn" in panels[0].get_title() and "1 without" in panels[0].get_title()
    tables = [t for ax in fig.axes for t in ax.tables]
    assert len(tables) == 2 and tables[0][1, 0].get_text().get_text() == "0.25"
    for fig_name in ("fig7", "fig8"):
        if fig_name == "fig8":
            claims, fig = make_fig8(ds, tmp_path / "fig8.pdf", tmp_path / "fig8.png", tmp_path / "fig8.claims.json",
                                    keep_open=True)
            bars = [p for p in fig.axes[0].patches if p.get_height() != 0]
            assert len(bars) == 6  # 2 settings x 3 quantities
        assert (tmp_path / f"{fig_name}.pdf").read_bytes()[:4] == b"%PDF"
        assert (tmp_path / f"{fig_name}.png").stat().st_size > 10_000
        check_claims(tmp_path / f"{fig_name}.claims.json", fig_name)


@pytest.mark.workflow
def test_tiny_workflow_builds_fig7_and_fig8(tmp_path):
    """From tiny.yaml's fig5 sweep (one seed, one run diverging): both figures build, every claim is
    undetermined for want of seeds, and the diverged run is listed."""
    from test_workflow import check_claims, copy_workflow, snakemake

    workdir = copy_workflow(tmp_path)
    snakemake(workdir, "figures/fig7.pdf", "figures/fig8.pdf")
    for fig in ("fig7", "fig8"):
        assert (workdir / f"figures/{fig}.pdf").read_bytes()[:4] == b"%PDF"
        assert (workdir / f"figures/{fig}.png").stat().st_size > 10_000
        data = check_claims(workdir / f"figures/{fig}.claims.json", fig)
        assert {c["verdict"] for c in data["claims"]} == {"undetermined"}
        assert all("seeds" in c["reason"] and c["minimum"] == {"seeds": 3} for c in data["claims"])
        assert data["diverged_runs"] == [{"setting": "fmnist_mlp", "lr": 500.0, "seed": 0}]


def test_fig7_counts_diverged_runs_against_its_claims(tmp_path):
    """Bias fixed: fig7 left diverged runs out of "a larger eta0 ends flatter" and "turns more"; they sit
    at the largest eta0, so leaving them out favours both. Counted at the end that speaks against each
    claim (S_final = +inf, 1 - rho = -inf), the top two multiples diverging in every seed turn a clean
    -1 / +1 per seed into an undecided claim."""
    clean = {x.id: x for x in make_fig7(summary(rising), tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "c.json")}
    assert clean["fig7.flatter"].verdict == clean["fig7.rotation"].verdict == "holds"
    ds = summary(rising, diverged=lambda r, s: r >= RATIOS[-2])
    claims = {x.id: x for x in make_fig7(ds, tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "c.json")}
    rows = correlation_table(ds)
    assert all(r["runs"] == len(RATIOS) and "against the claim" in r["diverged_counted"] for r in rows["fig7.flatter"])
    assert claims["fig7.flatter"].verdict != "holds" and claims["fig7.rotation"].verdict != "holds"
    assert claims["fig7.flatter"].value > -1 and claims["fig7.rotation"].value < 1
