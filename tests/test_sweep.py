"""Batched sweeps: train_group against train() run by run, checkpoint/resume, and run_train_group's
files against run_train's."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from eosflow.models import build_model
from eosflow.objective import Objective
from eosflow.jobs.spec import RunSpec, run_spec
from eosflow.jobs.train import run_train, run_train_group
from eosflow.training import METRICS, BatchedStepper, TrainConfig, train, train_group
from tests.test_pipeline import fake_data, small_config

pytestmark = pytest.mark.usefixtures("one_thread")


SPEC = {"arch": "mlp", "widths": [8], "activation": "tanh"}
SWITCH = {"kind": "switch", "epoch": 10, "lr_small": 0.05}


def problem(dtype, seeds=(0, 1, 2)):
    """48 training and 20 test images (1x3x3, 3 classes), summed in chunks of 20 (20+20+8)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 1, 3, 3, generator=g).to(dtype), torch.arange(48) % 3
    xt, yt = torch.randn(20, 1, 3, 3, generator=g).to(dtype), torch.arange(20) % 3
    models = {s: build_model(SPEC, (1, 3, 3), 3, s).to(dtype) for s in seeds}
    obj = Objective(models[seeds[0]], x, y, "ce", chunk_size=20)
    theta0 = {s: obj.flatten(m) for s, m in models.items()}
    return obj, theta0, (xt, yt)


def group_spec():
    """(seed, TrainConfig, expected status, expected last step) of a group with every way to end."""
    base = dict(max_epochs=40, acc_goal=1.0, eval_every=3, snapshot_every=7, checkpoint_every=10_000)
    return [
        (0, TrainConfig(lr=0.5, **base), "max_epochs", 40),
        (0, TrainConfig(lr=2.0, **base), "converged", 25),                        # stops early
        (0, TrainConfig(lr=100.0, **{**base, "diverge_loss": 20.0}), "diverged", None),
        (1, TrainConfig(lr=0.5, **{**base, "max_epochs": 15, "eval_every": 4, "snapshot_every": 4}),
         "max_epochs", 15),
        (2, TrainConfig(lr=5.0, **{**base, "schedule": SWITCH}), None, None),   # η 5 → 0.05 at epoch 10
        (1, TrainConfig(lr=1.0, **{**base, "acc_goal": 0.6}), "converged", None),
    ]


def assert_same(res, ref, rtol, exact=False):
    assert res.status == ref.status
    np.testing.assert_array_equal(res.steps, ref.steps)
    np.testing.assert_array_equal(res.snapshot_steps, ref.snapshot_steps)
    for m in METRICS:
        a, b = res.metrics[m], ref.metrics[m]
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=m)
        if exact:
            np.testing.assert_array_equal(a, b, err_msg=m)
        else:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * 1e-3, err_msg=m)
    if exact:
        assert torch.equal(res.snapshots, ref.snapshots) and torch.equal(res.theta, ref.theta)
    else:
        # parameter vectors: relative to each vector's norm (single entries may be near zero)
        a, b = torch.cat([res.snapshots, res.theta[None]]), torch.cat([ref.snapshots, ref.theta[None]])
        assert a.shape == b.shape
        assert float(((a - b).norm(dim=1) / b.norm(dim=1)).max()) <= rtol


def test_group_equals_single_runs_float64(monkeypatch):
    obj, theta0, test = problem(torch.float64)
    spec = group_spec()
    thetas = torch.stack([theta0[s] for s, *_ in spec])
    cfgs = [c for _, c, *_ in spec]
    stack_sizes = []
    inner = BatchedStepper.loss_grad_acc
    monkeypatch.setattr(BatchedStepper, "loss_grad_acc",
                        lambda self, th: stack_sizes.append(th.shape[0]) or inner(self, th))
    results = train_group(obj, thetas, cfgs, test=test, progress=False)
    monkeypatch.undo()
    for (seed, cfg, status, last), res in zip(spec, results):
        ref = train(obj, theta0[seed], cfg, test=test, progress=False)
        assert_same(res, ref, rtol=1e-12)
        if status is not None:
            assert res.status == status
        if last is not None:
            assert res.steps[-1] == last
    ends = [int(r.steps[-1]) for r in results]
    assert len(set(ends)) >= 4 and results[2].steps[-1] < 15  # the diverged run ends first
    assert results[5].steps[-1] < 25                          # acc_goal 0.6 is reached early
    np.testing.assert_array_equal(results[4].metrics["lr"][[9, 10, 11]], [5.0, 0.05, 0.05])
    # a run that ended left the stack: the batch at step t holds exactly the runs still going
    assert stack_sizes == [sum(e >= t for e in ends) for t in range(max(ends) + 1)]


def test_group_float32_close_to_single_runs():
    """float32: the batched products round differently, so close (not bitwise) to train()."""
    obj, theta0, test = problem(torch.float32)
    spec = [s for i, s in enumerate(group_spec()) if i in (0, 1, 3, 4)]
    results = train_group(obj, torch.stack([theta0[s] for s, *_ in spec]), [c for _, c, *_ in spec], test=test,
                          progress=False)
    for (seed, cfg, *_), res in zip(spec, results):
        assert_same(res, train(obj, theta0[seed], cfg, test=test, progress=False), rtol=2e-4)


def _killer(at_call):
    """A sharpness function that sends this process SIGTERM on its ``at_call``-th call (returns 1.0)."""
    calls = []

    def fn(theta):
        calls.append(1)
        if len(calls) == at_call:
            os.kill(os.getpid(), signal.SIGTERM)
        return 1.0
    return fn


def test_sigterm_checkpoint_and_resume_identical(tmp_path):
    obj, theta0, test = problem(torch.float64)
    spec = group_spec()
    thetas = torch.stack([theta0[s] for s, *_ in spec])
    cfgs = [c for _, c, *_ in spec]
    cfgs[0] = TrainConfig(**{**cfgs[0].__dict__, "sharpness_every": 1})
    ref = train_group(obj, thetas, cfgs, test=test, sharpness_fns=[lambda th: 1.0] + [None] * 5, progress=False)
    ckpt = tmp_path / "group.ckpt"
    # SIGTERM during step 20, after the diverged and the short runs ended: checkpoint at 21, exit 143
    with pytest.raises(SystemExit) as exc:
        train_group(obj, thetas, cfgs, test=test, checkpoint=ckpt, sharpness_fns=[_killer(21)] + [None] * 5,
                    progress=False)
    assert exc.value.code == 128 + signal.SIGTERM
    state = torch.load(ckpt, weights_only=False)
    status = [r["status"] for r in state["runs"]]
    assert state["step"] == 21 and status[2] == "diverged" and status[3] == "max_epochs"
    assert status[0] is None
    resumed = train_group(obj, thetas, cfgs, test=test, checkpoint=ckpt, sharpness_fns=[lambda th: 1.0] + [None] * 5,
                          progress=False)
    for a, b in zip(resumed, ref):
        assert_same(a, b, rtol=0, exact=True)


def test_periodic_checkpoint_resume_after_crash(tmp_path, monkeypatch):
    """A crash (as after SIGKILL) leaves the last periodic checkpoint; resuming from it is exact.
    The checkpoint of another group (other θ₀) is ignored."""
    obj, theta0, test = problem(torch.float64)
    thetas = torch.stack([theta0[0], theta0[1], theta0[2]])
    cfgs = [TrainConfig(lr=lr, max_epochs=30, acc_goal=1.0, checkpoint_every=7, eval_every=5) for lr in (0.5, 1.0, 2.0)]
    ref = train_group(obj, thetas, cfgs, test=test, progress=False)
    ckpt = tmp_path / "g.ckpt"
    calls, inner = [], BatchedStepper.loss_grad_acc

    def crashing(self, th):
        calls.append(1)
        if len(calls) == 18:  # step 17
            raise RuntimeError("node lost")
        return inner(self, th)
    monkeypatch.setattr(BatchedStepper, "loss_grad_acc", crashing)
    with pytest.raises(RuntimeError, match="node lost"):
        train_group(obj, thetas, cfgs, test=test, checkpoint=ckpt, progress=False)
    monkeypatch.undo()
    assert torch.load(ckpt, weights_only=False)["step"] == 14
    resumed = train_group(obj, thetas, cfgs, test=test, checkpoint=ckpt, progress=False)
    for a, b in zip(resumed, ref):
        assert_same(a, b, rtol=0, exact=True)
    # a checkpoint of another group (the rows in another order) is not resumed from
    other = train_group(obj, thetas[[1, 0, 2]], [cfgs[1], cfgs[0], cfgs[2]], test=test, checkpoint=ckpt,
                        progress=False)
    for a, b in zip(other, [ref[1], ref[0], ref[2]]):
        assert_same(a, b, rtol=1e-12)


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 2e-4)])
def test_run_train_group_files_equal_run_train(tmp_path, dtype, rtol):
    fake_data(tmp_path / "d.pt", 40, 12, 3, 3, seed=4)
    cfg = small_config({"arch": "mlp", "widths": [6], "activation": "tanh"},
                       train={"max_epochs": 30, "snapshot_every": 10, "eval_every": 4, "acc_goal": 1.0,
                              "diverge_loss": 5.0, "dtype": dtype, "sharpness_every": 10 if dtype == "float64" else 0})
    runs = [(0.5, 0, None), (0.5, 1, None), (3.0, 0, SWITCH), (60.0, 2, {"kind": "constant"})]
    outs = [(tmp_path / f"g{i}.nc", tmp_path / f"g{i}.pt") for i in range(len(runs))]
    specs = [RunSpec.from_settings(cfg, "s", lr, seed, sched) for lr, seed, sched in runs]
    statuses = run_train_group(specs, tmp_path / "d.pt", outs, checkpoint=tmp_path / "g.ckpt", progress=False)
    assert not (tmp_path / "g.ckpt").exists()
    assert "diverged" in statuses and "max_epochs" in statuses
    for i, (spec, (m_path, s_path)) in enumerate(zip(specs, outs)):
        status = run_train(spec, tmp_path / "d.pt", tmp_path / f"r{i}.nc", tmp_path / f"r{i}.pt", progress=False)
        assert status == statuses[i]
        a, b = xr.load_dataset(m_path), xr.load_dataset(tmp_path / f"r{i}.nc")
        assert a.attrs == b.attrs
        assert set(a.variables) == set(b.variables) and a.sizes == b.sizes
        for name in a.variables:
            assert a[name].attrs == b[name].attrs and a[name].dtype == b[name].dtype, name
            x, y = a[name].values, b[name].values
            if x.dtype.kind == "f":
                np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * 1e-3, equal_nan=True, err_msg=name)
            else:
                np.testing.assert_array_equal(x, y, err_msg=name)
        sa, sb = torch.load(s_path), torch.load(tmp_path / f"r{i}.pt")
        assert sa["status"] == sb["status"] and torch.equal(sa["steps"], sb["steps"])
        assert sa["theta"].dtype == sb["theta"].dtype and sa["theta"].shape == sb["theta"].shape
        err = (sa["theta"] - sb["theta"]).norm(dim=1) / sb["theta"].norm(dim=1)
        assert float(err.max()) <= rtol


# -- the rule's script in a subprocess: SIGTERM -> checkpoint + exit 143, then resume ---------------

SCRIPT = """
import json, runpy, sys
from types import SimpleNamespace as NS
d = sys.argv[1]
specs = json.load(open(f"{d}/specs.json"))
out = [f"{d}/{k}{i}.{ext}" for i in range(len(specs)) for k, ext in (("m", "nc"), ("s", "pt"))]
sm = NS(params=NS(specs=specs, checkpoint=f"{d}/group.ckpt"), input=NS(data=f"{d}/d.pt"),
        output=out,
        log=[f"{d}/group.log"], threads=1, wildcards=NS(setting="s"))
runpy.run_path(sys.argv[2], init_globals={"snakemake": sm}, run_name="__main__")
"""


def test_rule_script_sigterm_resume(tmp_path):
    fake_data(tmp_path / "d.pt", 64, 16, 4, 4, seed=5)
    cfg = small_config({"arch": "mlp", "widths": [16], "activation": "tanh"},
                       train={"max_epochs": 2500, "checkpoint_every": 20, "snapshot_every": 250, "eval_every": 5,
                              "acc_goal": 1.0, "diverge_loss": 10.0})
    runs = [("0.5", 0, "const"), ("0.2", 1, "e100to0.05"), ("200", 0, "const")]
    specs = [run_spec(cfg, "sweep", "s", lr, seed, sched) for lr, seed, sched in runs]
    (tmp_path / "specs.json").write_text(json.dumps([s.record() for s in specs]))  # as the rule passes them
    script = Path(__file__).parents[1] / "workflow" / "scripts" / "train_group.py"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(p) for p in sys.path if p])}
    cmd = [sys.executable, "-c", SCRIPT, str(tmp_path), str(script)]
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.time() + 120
    while not (tmp_path / "group.ckpt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the group finished before it could be killed; raise max_epochs"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    step = torch.load(tmp_path / "group.ckpt", weights_only=False)["step"]
    assert 0 < step < 2500 and not (tmp_path / "m0.nc").exists()
    subprocess.run(cmd, check=True, env=env, timeout=300)  # resumes
    assert not (tmp_path / "group.ckpt").exists()
    log = (tmp_path / "group.log").read_text()
    assert "resumed from checkpoint" in log and "of 3 runs still running" in log
    # against an uninterrupted group in this process (one thread, like the script)
    ref = tmp_path / "ref"
    statuses = run_train_group(specs, tmp_path / "d.pt", [(ref / f"m{i}.nc", ref / f"s{i}.pt") for i in range(3)],
                               progress=False)
    assert statuses[2] == "diverged"
    for i in range(3):
        xr.testing.assert_identical(xr.load_dataset(tmp_path / f"m{i}.nc"), xr.load_dataset(ref / f"m{i}.nc"))
        sa, sb = torch.load(tmp_path / f"s{i}.pt"), torch.load(ref / f"s{i}.pt")
        assert sa["status"] == sb["status"] and torch.equal(sa["steps"], sb["steps"])
        assert torch.equal(sa["theta"], sb["theta"])


@pytest.mark.parametrize("spec", [{"arch": "cnn", "channels": [4]},
                                  {"arch": "vgg", "blocks": 1, "base_width": 4, "batch_norm": True}])
def test_group_conv_and_batchnorm_nets(spec):
    """vmap over functional_call also batches convolutions and (chunk-statistics) BatchNorm."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 3, 8, 8, generator=g).double(), torch.arange(24) % 3
    models = [build_model(spec, (3, 8, 8), 3, s).double() for s in range(2)]
    obj = Objective(models[0], x, y, "ce", chunk_size=12)
    thetas = torch.stack([obj.flatten(m) for m in models])
    cfgs = [TrainConfig(lr=lr, max_epochs=8, acc_goal=1.0, eval_every=3) for lr in (0.1, 0.5)]
    for i, res in enumerate(train_group(obj, thetas, cfgs, test=(x[:10], y[:10]), progress=False)):
        assert_same(res, train(obj, thetas[i], cfgs[i], test=(x[:10], y[:10]), progress=False), rtol=1e-12)
