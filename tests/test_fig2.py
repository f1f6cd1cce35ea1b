"""fig2's plan (spikes -> vector epochs, branch epochs, fig3 steps) and its figure and claims."""
import json

import numpy as np
import pytest
import xarray as xr
from test_instability import LR, synthetic_trace

from eosflow.figures.fig2 import make_fig2
from eosflow.plans import plan_fig2, snapshot_steps

FIG2 = {"setting": "s", "lr": LR, "seed": 0, "min_rise": 0.2, "instabilities": 2,
        "vectors": {"before": 2, "after": 3},
        "branch": {"instability": 1, "at": [0.0, 0.5, 1.0], "lr_small": 0.01, "epochs": 5}}
FIG3 = {"instability": 2, "snapshots": 4}


def trace_cube(n=300):
    loss, sharp, truth = synthetic_trace(n=n)
    steps = np.arange(n)
    return xr.Dataset({"train_loss": ("step", loss), "lr_step": ("step", np.full(n, LR)),
                       "sharpness": ("hstep", sharp)}, coords={"step": steps, "hstep": steps},
                      attrs={"status": "max_epochs"}), truth


def test_plan_picks_the_largest_returned_spikes_in_time_order():
    cube, truth = trace_cube()
    plan = plan_fig2(cube, FIG2, FIG3)
    assert len(plan["instabilities"]) == 3
    assert [s["onset"] for s in plan["instabilities"]] == [s.onset for s in truth]
    rises = [s["rise"] for s in plan["instabilities"]]
    assert len(set(rises)) == 3  # distinct, so "the largest two" is well defined
    largest = sorted(np.argsort(rises)[-2:])
    assert [c["onset"] for c in plan["chosen"]] == [truth[i].onset for i in largest]
    first, second = plan["chosen"]
    assert plan["branch"]["epochs"] == [first["onset"], round((first["onset"] + first["end"]) / 2), first["end"]]
    steps = set(plan["vector_steps"])
    for c in plan["chosen"]:
        assert set(range(c["onset"] - 2, c["end"] + 4)) <= steps
    assert set(range(first["onset"], first["end"] + 6)) <= steps  # the branches' window
    assert max(steps) < 300
    assert plan["fig3_steps"] == snapshot_steps(second["onset"], second["end"], 4)
    assert plan["fig3_steps"][0] == second["onset"] + 1 and plan["fig3_steps"][-1] == second["end"]
    json.dumps(plan)  # the checkpoint writes it as JSON


def test_plan_without_spikes_is_empty_not_an_error():
    cube, _ = trace_cube()
    cube["sharpness"][:] = 1.0  # stable everywhere
    plan = plan_fig2(cube, FIG2, FIG3)
    assert plan["chosen"] == [] and plan["branch"]["epochs"] == [] and plan["vector_steps"] == []
    assert plan["fig3_steps"] == []


def _rotating(steps, onset, rate, P=12, k=3):
    """Orthonormal k-frames turning from e_1..e_k towards e_{k+1}..e_{2k} by ``rate·|t − onset|``."""
    eye = np.eye(P)
    out = {}
    for t in steps:
        a = min(rate * abs(t - onset), np.pi / 2)
        out[int(t)] = np.stack([np.cos(a) * eye[i] + np.sin(a) * eye[i + k] for i in range(k)])
    return out


def _frame(a, P=12, k=3):
    """The k-frame turned by angle ``a`` from e_1..e_k towards e_{k+1}..e_{2k}."""
    return _rotating([1], 0, a, P, k)[1]


def _vector_ds(vecs):
    steps = sorted(vecs)
    return xr.Dataset({"eigvec": (("vstep", "eig", "param"), np.stack([vecs[t] for t in steps]).astype(np.float32))},
                      coords={"vstep": steps})


@pytest.mark.parametrize("turning", ["away", "back"])
def test_fig2_claims_follow_the_vectors(tmp_path, turning):
    cube, _ = trace_cube()
    plan = plan_fig2(cube, {**FIG2, "instabilities": 3}, FIG3)  # the rotation claim needs >= 3 spikes
    onset = plan["chosen"][0]["onset"]
    if turning == "away":  # rotation grows during the spikes, branches turn back
        vecs = {}
        for c in plan["chosen"]:
            vecs.update(_rotating(range(c["onset"], c["end"] + 4), c["onset"], 0.05))
        vecs.update({t: v for t, v in _rotating(plan["vector_steps"], onset, 0.05).items() if t not in vecs})
        branches = [_vector_ds({e + j: _frame(0.05 * (e - onset + 1) * (1 - j / 5)) for j in range(5)})
                    for e in plan["branch"]["epochs"]]
    else:  # similarity rises during spikes, branches keep turning away
        vecs = {t: _frame(max(0.0, 1.5 - 0.05 * (t - onset))) for t in plan["vector_steps"]}
        for c in plan["chosen"]:
            vecs[c["onset"]] = _frame(0.0)
            for t in range(c["onset"] + 1, c["end"] + 1):
                vecs[t] = _frame(max(0.0, 1.2 - 0.05 * (t - c["onset"])))
        branches = [_vector_ds({e + j: _frame(0.1 * (j + 1)) for j in range(5)}) for e in plan["branch"]["epochs"]]
    claims = make_fig2(cube, _vector_ds(vecs), branches, plan, tmp_path / "f.pdf", tmp_path / "f.png",
                       tmp_path / "c.json")
    holds = {c.name: c.holds for c in claims}
    assert holds["the run goes through at least 3 instabilities"] is True
    verdicts = {c.name: c.verdict for c in claims}
    expect = "holds" if turning == "away" else "fails"
    assert verdicts["eigenvectors rotate steadily during an instability"] == expect
    assert verdicts["stable training undoes the rotation (branches revert)"] == expect
    # with two spikes drawn the rotation claim cannot decide
    plan2 = plan_fig2(cube, FIG2, FIG3)
    two = make_fig2(cube, _vector_ds(vecs), branches, plan2, tmp_path / "f.pdf", tmp_path / "f.png",
                    tmp_path / "c2.json")
    assert two[1].verdict == "undetermined" and two[1].reason == "too little evidence: instabilities 2 < 3"
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["figure"] == "fig2" and len(data["branch_reverts"]) == 3
    assert (tmp_path / "f.pdf").stat().st_size > 0 and (tmp_path / "f.png").stat().st_size > 0


def test_required_spike_count_follows_the_config(tmp_path):
    """The first claim asks for as many spikes as the figure draws (fig2.instabilities)."""
    cube, _ = trace_cube()  # 3 spikes
    for n, holds in ((3, True), (4, False)):
        plan = plan_fig2(cube, {**FIG2, "instabilities": n}, FIG3)
        claims = make_fig2(cube, xr.Dataset(), [], plan, tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "c.json")
        assert claims[0].name == f"the run goes through at least {n} instabilities"
        assert claims[0].holds is holds and claims[0].threshold == f">= {n}"


def test_fig2_without_spikes_draws_and_reports(tmp_path):
    cube, _ = trace_cube()
    cube["sharpness"][:] = 1.0
    plan = plan_fig2(cube, FIG2, FIG3)
    claims = make_fig2(cube, xr.Dataset(), [], plan, tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "c.json")
    assert not any(c.holds for c in claims)
    assert claims[1].value is None and "no instability" in claims[1].note
