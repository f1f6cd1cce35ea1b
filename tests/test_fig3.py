"""fig3 on synthetic slices whose claims are known: files, claim values and holds flags, NaN safety."""
import json
import math

import numpy as np
import pytest
import xarray as xr

from eosflow.claims import check
from eosflow.cubes import write_netcdf
from eosflow.figures.fig3 import fig3_claims, make_fig3
from eosflow.jobs.slices import slices_dataset

LR = 0.1  # 2 / lr = 20


def synthetic(s_cur, steps=None, points=41, lr=LR):
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
    return slices_dataset(slices, steps, lr, "toy", {"seed": 0})


def draw(tmp_path, ds):
    write_netcdf(ds, tmp_path / "sl.nc", float32=False)
    ds = xr.load_dataset(tmp_path / "sl.nc")  # as the rule's script reads it
    out = {k: tmp_path / f"fig3.{k}" for k in ("pdf", "png")}
    claims, fig = make_fig3(ds, out["pdf"], out["png"], tmp_path / "c.json", keep_open=True)
    assert out["pdf"].read_bytes()[:4] == b"%PDF" and out["png"].read_bytes()[:4] == b"\x89PNG"
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["figure"] == "fig3" and len(doc["claims"]) == 2
    assert [c["holds"] for c in doc["claims"]] == [c.holds for c in claims]
    for ax in fig.axes:
        assert all(math.isfinite(v) for v in (*ax.get_xlim(), *ax.get_ylim()))
    import matplotlib.pyplot as plt

    plt.close(fig)
    return doc


def fig3_claims_with(ds, instabilities):
    """The verdicts as they would be with slices of more instabilities (the rule, not the values)."""
    out = []
    for c in fig3_claims(ds):
        op, bound = c.threshold.split()
        out.append(check(c.name, c.statistic, c.value, op, float(bound), evidence={"instabilities": instabilities},
                         minimum=c.minimum).verdict)
    return out


def test_flattening_and_return_to_stability_values_one_spike_is_undetermined(tmp_path):
    s_cur = [25.0, 28.0, 30.0, 24.0, 18.0, 12.0]
    doc = draw(tmp_path, synthetic(s_cur))
    flatter, stable = doc["claims"]
    assert flatter["value"] == pytest.approx(12.0 / 25.0) and flatter["threshold"] == "< 1"
    assert stable["value"] == pytest.approx(LR * 12.0 / 2) and stable["value"] < 1
    # the values say yes, but one instability proves little: undetermined, with the reason
    for c in (flatter, stable):
        assert c["verdict"] == "undetermined" and not c["holds"]
        assert c["reason"] == "too little evidence: instabilities 1 < 3" and c["minimum"] == {"instabilities": 3}
    assert not doc["all_hold"] and doc["verdicts"] == {"holds": 0, "fails": 0, "undetermined": 2}
    assert [s["step"] for s in doc["snapshots"]] == list(range(10, 16))
    assert [s["sharpness_cur"] for s in doc["snapshots"]] == pytest.approx(s_cur)
    assert doc["snapshots"][0]["lr_sharpness_cur_over_2"] == pytest.approx(1.25)
    assert doc["snapshots"][0]["max_residual"] == pytest.approx(2e-4)
    assert doc["lr"] == LR and doc["stability_limit_2_over_lr"] == pytest.approx(20.0)


def test_sharpening_is_reported_as_not_holding(tmp_path):
    doc = draw(tmp_path, synthetic([15.0, 20.0, 30.0]))
    flatter, stable = doc["claims"]
    assert flatter["value"] == pytest.approx(2.0) and not flatter["holds"]
    assert stable["value"] == pytest.approx(1.5) and not stable["holds"]
    assert not doc["all_hold"]
    assert fig3_claims_with(synthetic([15.0, 20.0, 30.0]), instabilities=3) == ["fails", "fails"]


def test_flatter_but_still_unstable(tmp_path):
    doc = draw(tmp_path, synthetic([30.0, 26.0, 22.0]))
    flatter, stable = doc["claims"]
    assert flatter["value"] < 1 and stable["value"] == pytest.approx(1.1)
    assert fig3_claims_with(synthetic([30.0, 26.0, 22.0]), instabilities=3) == ["holds", "fails"]


def test_snapshots_are_taken_in_time_order(tmp_path):
    # stored out of order: the first snapshot in time is step 10 (S_cur 12), the last step 30 (S_cur 24)
    doc = draw(tmp_path, synthetic([24.0, 12.0, 18.0], steps=[30, 10, 20]))
    assert [s["step"] for s in doc["snapshots"]] == [10, 20, 30]
    assert doc["claims"][0]["value"] == pytest.approx(2.0) and not doc["claims"][0]["holds"]


def test_nan_values_never_crash_and_make_claims_not_hold(tmp_path):
    ds = synthetic([25.0, 18.0, 12.0])
    ds["loss"][1, 30:] = np.inf
    ds["sharpness"][1, 30:] = np.nan
    ds["sharpness"][2, :] = np.nan
    ds["loss"][2, :] = np.nan
    ds["sharpness_cur"][2] = np.nan
    ds["loss_cur"][2] = np.nan
    doc = draw(tmp_path, ds)
    assert all(c["value"] is None and not c["holds"] for c in doc["claims"])
    assert "not finite" in doc["claims"][0]["note"]
    assert doc["snapshots"][2]["sharpness_cur"] is None
