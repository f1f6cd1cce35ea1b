"""fig2's plan (spikes -> vector epochs, branch epochs, fig3 steps) and its figure and claims, one
value per seed."""
import json

import numpy as np
import pytest
import xarray as xr
from test_instability import LR, synthetic_trace

from eosflow.figures.fig2 import make_fig2, seed_values
from eosflow.plans import block_lr_tag, plan_fig2, snapshot_steps

FIG2 = {"setting": "s", "lr": None, "lr_relative": 1.05, "seeds": [0], "min_rise": 0.2, "instabilities": 2,
        "vectors": {"before": 2, "after": 3},
        "branch": {"instability": 1, "at": [0.0, 0.5, 1.0], "lr_small": 0.01, "epochs": 5}}
FIG3 = {"instability": 2, "snapshots": 4}
FOUR_SPIKES = ((50, 8, 12, 1.0), (140, 5, 20, 1.5), (230, 10, 10, 0.8), (320, 6, 10, 1.2))


def trace_cube(n=300, seed=0, spikes=None):
    """A run cube of :func:`synthetic_trace` at eta = LR (= 1.05 x a limit of LR / 1.05) for ``seed``."""
    loss, sharp, truth = synthetic_trace(n=n, **({"spikes": spikes} if spikes else {}))
    steps = np.arange(n)
    return xr.Dataset({"train_loss": ("step", loss), "lr_step": ("step", np.full(n, LR)),
                       "sharpness": ("hstep", sharp)}, coords={"step": steps, "hstep": steps, "lr": LR, "seed": seed},
                      attrs={"status": "max_epochs", "lr_relative": 1.05, "eta_eos_unit": LR / 1.05}), truth


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


def test_plan_takes_eta_and_seed_from_the_cube():
    """The training job placed eta (lr_relative x the seed's own limit): the plan records the cube's."""
    cube, _ = trace_cube(seed=4)
    plan = plan_fig2(cube, FIG2, FIG3)
    assert plan["lr"] == LR and plan["seed"] == 4 and plan["last_step"] == 299
    assert plan["lr_relative"] == 1.05 and plan["eta_eos"] == pytest.approx(LR / 1.05)
    assert block_lr_tag(FIG2) == "x1.05" and block_lr_tag({**FIG2, "lr": 0.14, "lr_relative": None}) == "0.14"


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


def _vector_ds(vecs, seed=0):
    steps = sorted(vecs)
    return xr.Dataset({"eigvec": (("vstep", "eig", "param"), np.stack([vecs[t] for t in steps]).astype(np.float32))},
                      coords={"vstep": steps, "seed": seed})


def seed_run(seed, turning, spikes=None, fig2=None):
    """One seed's fig2 inputs on the synthetic trace: vectors that turn away during the spikes with
    branches turning back (``away``), or the reverse (``back``)."""
    cube, _ = trace_cube(n=400 if spikes else 300, seed=seed, spikes=spikes)
    plan = plan_fig2(cube, {**FIG2, "instabilities": 3, **(fig2 or {})}, FIG3)
    if not plan["chosen"]:
        return {"plan": plan, "vectors": xr.Dataset(), "branches": [], "baseline": cube}
    onset = plan["chosen"][0]["onset"]
    if turning == "away":  # rotation grows during the spikes, branches turn back
        vecs = {}
        for c in plan["chosen"]:
            vecs.update(_rotating(range(c["onset"], c["end"] + 4), c["onset"], 0.05))
        vecs.update({t: v for t, v in _rotating(plan["vector_steps"], onset, 0.05).items() if t not in vecs})
        branches = [_vector_ds({e + j: _frame(0.05 * (e - onset + 1) * (1 - j / 5)) for j in range(5)}, seed)
                    for e in plan["branch"]["epochs"]]
    else:  # similarity rises during spikes, branches keep turning away
        vecs = {t: _frame(max(0.0, 1.5 - 0.05 * (t - onset))) for t in plan["vector_steps"]}
        for c in plan["chosen"]:
            vecs[c["onset"]] = _frame(0.0)
            for t in range(c["onset"] + 1, c["end"] + 1):
                vecs[t] = _frame(max(0.0, 1.2 - 0.05 * (t - c["onset"])))
        branches = [_vector_ds({e + j: _frame(0.1 * (j + 1)) for j in range(5)}, seed)
                    for e in plan["branch"]["epochs"]]
    return {"plan": plan, "vectors": _vector_ds(vecs, seed), "branches": branches, "baseline": cube}


def draw(tmp_path, runs):
    claims, fig = make_fig2(runs, tmp_path / "f.pdf", tmp_path / "f.png", tmp_path / "c.json", keep_open=True)
    assert (tmp_path / "f.pdf").stat().st_size > 0 and (tmp_path / "f.png").stat().st_size > 0
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["figure"] == "fig2" and [c["id"] for c in doc["claims"]] == \
        ["fig2.instabilities", "fig2.rotation", "fig2.revert"]
    return {c.id: c for c in claims}, doc, fig


@pytest.mark.parametrize("turning", ["away", "back"])
def test_fig2_claims_over_six_seeds_follow_the_vectors(tmp_path, turning):
    runs = [seed_run(s, turning, spikes=FOUR_SPIKES) for s in range(6)]
    claims, doc, fig = draw(tmp_path, runs)
    expect = "holds" if turning == "away" else "fails"
    assert claims["fig2.rotation"].verdict == expect and claims["fig2.revert"].verdict == expect
    assert claims["fig2.instabilities"].verdict == "holds"  # 4 spikes in every seed
    assert claims["fig2.instabilities"].values == [4.0] * 6
    for c in claims.values():
        assert c.evidence == {"seeds": 6} and len(c.values) == 6
    assert len(doc["seeds"]) == 6 and doc["drawn_seed"] == 0 and len(doc["seeds"][0]["branch_reverts"]) == 3
    assert "seed 0 (drawn)" in fig.axes[0].get_title()


def test_fig2_claims_take_one_value_per_seed_not_per_spike(tmp_path):
    """One seed with three rotating spikes. The old fig2 took the three spikes of one run as its
    replicates (evidence: instabilities 3 >= 3) and said the rotation claim holds, with a bootstrap
    interval over the spikes; now one run is one value: undetermined, seeds 1 < 3."""
    one = seed_run(0, "away")
    assert len(one["plan"]["chosen"]) == 3
    claims, doc, _ = draw(tmp_path, [one])
    rot = claims["fig2.rotation"]
    spikes = doc["seeds"][0]["rotation_spearman"]
    assert len(spikes) == 3 and all(r < 0 for r in spikes)  # every spike rotates ...
    assert rot.values == [pytest.approx(np.median(spikes))]  # ... but they make one value
    assert rot.verdict == "undetermined" and rot.reason == "too little evidence: seeds 1 < 3"
    # each seed is one value however many spikes it has; seeds differ in their spikes
    runs = [seed_run(0, "away"), seed_run(1, "away", spikes=FOUR_SPIKES),
            seed_run(2, "away", fig2={"instabilities": 1})]
    claims, doc, _ = draw(tmp_path, runs)
    assert [len(s["rotation_spearman"]) for s in doc["seeds"]] == [3, 3, 1]
    assert claims["fig2.rotation"].values == pytest.approx([s["rotation"] for s in doc["seeds"]])
    assert claims["fig2.instabilities"].values == [3.0, 4.0, 3.0]
    for c in claims.values():  # three seeds: the sign test cannot decide, it says how many would
        assert c.verdict == "undetermined" and c.evidence == {"seeds": 3}


def test_seed_values_are_the_seeds_own():
    run = seed_run(3, "back")
    v = seed_values(run["vectors"], run["branches"], run["plan"])
    assert v["seed"] == 3 and v["spikes"] == 3 and v["chosen"] == 3 and v["lr"] == LR
    assert v["rotation"] == pytest.approx(np.median(v["rotation_spearman"])) and v["rotation"] > 0
    assert v["revert"] == pytest.approx(np.mean(v["branch_reverts"])) and v["revert"] < 0


def test_a_seed_without_spikes_drops_out_with_a_note(tmp_path):
    calm = seed_run(1, "away")
    calm["baseline"]["sharpness"][:] = 1.0  # stable everywhere: no spike, no branch
    calm["plan"] = plan_fig2(calm["baseline"], {**FIG2, "instabilities": 3}, FIG3)
    calm["vectors"], calm["branches"] = xr.Dataset(), []
    claims, doc, _ = draw(tmp_path, [seed_run(0, "away"), calm, seed_run(2, "away")])
    assert claims["fig2.instabilities"].values == [3.0, 0.0, 3.0]  # every seed has a spike count
    for cid in ("fig2.rotation", "fig2.revert"):
        c = claims[cid]
        assert c.evidence == {"seeds": 2} and len(c.values) == 2 and "left out (no value): seed 1" in c.note
        assert c.verdict == "undetermined" and c.reason == "too little evidence: seeds 2 < 3"


def test_fig2_without_spikes_draws_and_reports(tmp_path):
    run = seed_run(0, "away")
    run["baseline"]["sharpness"][:] = 1.0
    run["plan"] = plan_fig2(run["baseline"], FIG2, FIG3)
    run["vectors"], run["branches"] = xr.Dataset(), []
    claims, doc, fig = draw(tmp_path, [run])
    assert not any(c.holds for c in claims.values())
    assert claims["fig2.rotation"].value is None and "no chosen instability" in claims["fig2.rotation"].note
    assert "no instability to branch in" in fig.axes[-1].get_title()


def test_fig2_eta_is_given_exactly_once():
    from eosflow.config import ConfigError, validate_config

    base = {"settings": {"s": {"dataset": "fashion-mnist", "n_train": 10, "n_test": 10, "loss": "ce",
                               "model": {"arch": "mlp", "widths": [4], "activation": "tanh"}}}}
    cfg = validate_config({**base, "fig2": {"setting": "s"}})["fig2"]
    assert cfg["lr_relative"] == 1.05 and cfg["lr"] is None and cfg["seeds"] == [0, 1, 2]
    assert validate_config({**base, "fig2": {"setting": "s", "lr": 0.14, "lr_relative": None}})["fig2"]["lr"] == 0.14
    with pytest.raises(ConfigError, match="config key fig2: both lr and lr_relative are set"):
        validate_config({**base, "fig2": {"setting": "s", "lr": 0.14}})
    with pytest.raises(ConfigError, match="config key fig2: no learning rate; set fig2.lr"):
        validate_config({**base, "fig2": {"setting": "s", "lr_relative": None}})


def test_rotation_has_no_bias_when_the_eigenspace_only_jitters():
    """The onset's eigenspace is similar to itself by construction (1, the largest value): counting the
    onset made Spearman(epoch, similarity) negative with no steady rotation at all (at most 1 - 6/(m + 1)
    for m epochs after it). Over the epochs after the onset, random eigenspaces give no sign."""
    from eosflow.figures.fig2 import spike_rotation
    from eosflow.similarity import spearman, subspace_similarity

    rng = np.random.default_rng(4)
    new, old = [], []
    for _ in range(300):
        vecs = {t: np.linalg.qr(rng.standard_normal((20, 2)))[0].T for t in range(10, 19)}
        spike = {"onset": 10, "peak": 18}
        new.append(spike_rotation(vecs, spike))
        sims = [subspace_similarity(vecs[t], vecs[10]) for t in range(10, 19)]
        old.append(spearman(list(range(10, 19)), sims))
    assert abs(np.mean(new)) < 0.06 and np.mean(old) < -0.15
