"""fig3 on synthetic slices whose claims are known: files, per-seed claim values, verdicts over
seeds, NaN safety."""
import json
import math

import numpy as np
import pytest
import xarray as xr

from eosflow.cubes import write_netcdf
from eosflow.figures.fig3 import fig3_claims, make_fig3, nothing_to_slice
from eosflow.jobs.slices import slices_dataset

LR = 0.1  # 2 / lr = 20


def synthetic(s_cur, steps=None, points=41, lr=LR, seed=0):
    """Slices whose S-curve is a parabola through S_cur at alpha = s (and S_cur + 1 at alpha = 0)."""
    steps = steps or list(range(10, 10 + len(s_cur)))
    slices = []
    for j, sc in enumerate(s_cur):
        s = 0.05 * (j + 1)
        alpha = np.linspace(s / 2 - 1.5 * s, s / 2 + 1.5 * s, points)
        sharp = sc + (alpha - s) ** 2 / s ** 2 - (alpha - s) / s
        loss = 0.5 + (alpha - s / 2) ** 2
        slices.append({"alpha": alpha, "loss": loss, "sharpness": sharp, "residual": np.full(points, 1e-4),
                       "step_length": s, "grad_norm": s / lr, "loss_prev": 0.5 + s ** 2 / 4,
                       "loss_cur": 0.5 + s ** 2 / 4, "sharpness_prev": sc + 2.0, "sharpness_cur": sc,
                       "residual_prev": 1e-4, "residual_cur": 2e-4})
    return slices_dataset(slices, steps, lr, "toy", {"seed": seed})


def seeds(*curves):
    """{seed: slices} with seed i's S_cur curve ``curves[i]``."""
    return {i: synthetic(c, seed=i) for i, c in enumerate(curves)}


def draw(tmp_path, slices, **kw):
    by_seed = {0: slices} if isinstance(slices, xr.Dataset) else slices
    loaded = {}
    for s, ds in by_seed.items():
        write_netcdf(ds, tmp_path / f"sl{s}.nc", float32=False)
        loaded[s] = xr.load_dataset(tmp_path / f"sl{s}.nc")  # as the rule's script reads it
    out = {k: tmp_path / f"fig3.{k}" for k in ("pdf", "png")}
    claims, fig = make_fig3(loaded, out["pdf"], out["png"], tmp_path / "c.json", keep_open=True, **kw)
    assert out["pdf"].read_bytes()[:4] == b"%PDF" and out["png"].read_bytes()[:4] == b"\x89PNG"
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["figure"] == kw.get("figure", "fig3") and len(doc["claims"]) == 2
    assert [c["id"] for c in doc["claims"]] == ["slices.flatter", "slices.stable_again"]
    assert [c["holds"] for c in doc["claims"]] == [c.holds for c in claims]
    for ax in fig.axes:
        assert all(math.isfinite(v) for v in (*ax.get_xlim(), *ax.get_ylim()))
    return doc, fig


FLATTENING = [25.0, 28.0, 30.0, 24.0, 18.0, 12.0]


def test_one_seed_gives_its_values_and_is_undetermined(tmp_path):
    doc, _ = draw(tmp_path, synthetic(FLATTENING))
    flatter, stable = doc["claims"]
    assert flatter["value"] == pytest.approx(12.0 / 25.0) and flatter["threshold"] == "< 1"
    assert stable["value"] == pytest.approx(LR * 12.0 / 2) and stable["value"] < 1
    assert flatter["values"] == [pytest.approx(12.0 / 25.0)]
    # the values say yes, but one seed proves little: undetermined, with the reason and what would decide
    for c in (flatter, stable):
        assert c["verdict"] == "undetermined" and not c["holds"]
        assert c["reason"] == "too little evidence: seeds 1 < 3" and c["minimum"] == {"seeds": 3}
        assert c["evidence"] == {"seeds": 1} and c["needed"] >= 3
    assert not doc["all_hold"] and doc["verdicts"] == {"holds": 0, "fails": 0, "undetermined": 2}
    assert [s["step"] for s in doc["snapshots"]] == list(range(10, 16))
    assert [s["sharpness_cur"] for s in doc["snapshots"]] == pytest.approx(FLATTENING)
    assert doc["snapshots"][0]["lr_sharpness_cur_over_2"] == pytest.approx(1.25)
    assert doc["snapshots"][0]["max_residual"] == pytest.approx(2e-4)
    assert doc["lr"] == LR and doc["stability_limit_2_over_lr"] == pytest.approx(20.0)
    assert doc["drawn_seed"] == 0 and doc["seeds"][0]["ratio"] == pytest.approx(0.48)


def test_three_seeds_are_undetermined_with_needed(tmp_path):
    """Three seeds that all agree: the sign test's smallest p is 1/8, so the claims stay undetermined
    and say how many seeds would decide them."""
    doc, _ = draw(tmp_path, seeds(FLATTENING, [30.0, 20.0, 15.0], [22.0, 21.0, 11.0]))
    for c in doc["claims"]:
        assert c["verdict"] == "undetermined" and c["evidence"] == {"seeds": 3} and len(c["values"]) == 3
        assert c["needed"] >= 6 and "cannot reach" in c["reason"]


def test_six_seeds_decide_what_one_instability_never_could(tmp_path):
    """Six seeds' slices, each flatter and back to stability at its last snapshot: both claims hold.
    The old fig3 passed an evidence count of 1 instability against a minimum of 3 written as a
    constant, so these claims were undetermined whatever the slices said."""
    curves = [FLATTENING, [30.0, 20.0, 15.0], [22.0, 21.0, 11.0], [26.0, 19.0], [40.0, 30.0, 18.0], [21.0, 9.0]]
    doc, fig = draw(tmp_path, seeds(*curves))
    flatter, stable = doc["claims"]
    assert flatter["verdict"] == "holds" and stable["verdict"] == "holds"
    ratios = [c[-1] / c[0] for c in curves]
    assert flatter["values"] == pytest.approx(ratios) and flatter["value"] == pytest.approx(np.median(ratios))
    assert stable["values"] == pytest.approx([LR * c[-1] / 2 for c in curves])
    assert flatter["evidence"] == {"seeds": 6} and flatter["p_holds"] == pytest.approx(1 / 64)
    assert "seed 5: 0.4286 (epochs 10-11)" in flatter["note"]
    assert doc["all_hold"] and [s["seed"] for s in doc["seeds"]] == list(range(6))
    assert "seed 0" in fig._suptitle.get_text() and "[0, 1, 2, 3, 4, 5]" in fig._suptitle.get_text()


def test_sharpening_fails_over_six_seeds(tmp_path):
    doc, _ = draw(tmp_path, seeds(*[[15.0, 20.0, 30.0 + i] for i in range(6)]))
    flatter, stable = doc["claims"]
    assert flatter["value"] > 1 and flatter["verdict"] == "fails"
    assert stable["value"] > 1 and stable["verdict"] == "fails"


def test_flatter_but_still_unstable(tmp_path):
    doc, _ = draw(tmp_path, seeds(*[[30.0, 26.0, 22.0 + i / 10] for i in range(6)]))
    flatter, stable = doc["claims"]
    assert flatter["value"] < 1 and flatter["verdict"] == "holds"
    assert stable["value"] == pytest.approx(LR * 22.25 / 2) and stable["verdict"] == "fails"


def test_snapshots_are_taken_in_time_order(tmp_path):
    # stored out of order: the first snapshot in time is step 10 (S_cur 12), the last step 30 (S_cur 24)
    doc, _ = draw(tmp_path, synthetic([24.0, 12.0, 18.0], steps=[30, 10, 20]))
    assert [s["step"] for s in doc["snapshots"]] == [10, 20, 30]
    assert doc["claims"][0]["value"] == pytest.approx(2.0) and not doc["claims"][0]["holds"]


def test_a_seed_with_nan_values_drops_out_with_a_note(tmp_path):
    """No S at the last snapshot although its loss is finite (the eigensolver gave nothing): the seed
    drops out with a note. A loss that is not finite there is a blown-up spike: +inf, against both."""
    bad = synthetic([25.0, 18.0, 12.0])
    bad["loss"][1, 30:] = np.inf
    bad["sharpness"][1, 30:] = np.nan
    bad["sharpness"][2, :] = np.nan
    bad["loss"][2, :] = np.nan
    bad["sharpness_cur"][2] = np.nan
    blown = bad.copy(deep=True)
    blown["loss_cur"][2] = np.nan
    assert all(c.values == [np.inf] and not c.holds for c in fig3_claims({0: blown}))
    doc, _ = draw(tmp_path, {0: bad, 1: synthetic([20.0, 10.0], seed=1)})  # the bad seed is drawn
    for c in doc["claims"]:
        assert c["values"] == [pytest.approx(0.5)] and c["evidence"] == {"seeds": 1} and not c["holds"]
        assert "left out: seed 0 (" in c["note"] and "not finite" in c["note"]
    assert doc["snapshots"][2]["sharpness_cur"] is None
    only_bad = fig3_claims({0: bad})
    assert all(c.value is None and c.verdict == "undetermined" for c in only_bad)


def test_seeds_without_a_spike_are_named_and_not_counted(tmp_path):
    doc, _ = draw(tmp_path, seeds(FLATTENING, FLATTENING), figure="fig12",
                  left_out={2: "fewer than 1 chosen loss spikes rising by 1 (0 found)"})
    for c in doc["claims"]:
        assert c["evidence"] == {"seeds": 2} and "seed 2 (no slices: fewer than 1" in c["note"]
        assert c["reason"] == "too little evidence: seeds 2 < 3"
    assert doc["left_out"] == {"2": "fewer than 1 chosen loss spikes rising by 1 (0 found)"}


def test_nothing_to_slice_names_the_keys():
    plan = {"seed": 0, "fig3_instability": 2, "min_rise": 1.0, "instabilities": [{}], "chosen": [{}], "lr": 0.14}
    msg = nothing_to_slice("fig3", "fig2", [plan, {**plan, "seed": 1}], "fig3_instability")
    assert msg.startswith("eosflow: fig3 has nothing to slice") and "seed 1: fewer than 2 chosen" in msg
    for key in ("fig2.lr_relative", "fig2.train.max_epochs", "fig2.min_rise"):
        assert key in msg


def test_a_spike_that_blew_up_counts_against_both_claims(tmp_path):
    """S at the last snapshot's current point +inf (the run blew up in the spike): before, the seed
    dropped out of both claims, which favoured them; now it counts against both (+inf)."""
    blown = synthetic([25.0, 18.0, 12.0])
    blown["sharpness_cur"][2] = np.inf
    claims = fig3_claims({0: blown, 1: synthetic([20.0, 10.0], seed=1)})
    assert all(c.evidence == {"seeds": 2} and c.values[0] == np.inf for c in claims)
