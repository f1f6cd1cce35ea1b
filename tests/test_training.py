"""GD: stability on a quadratic, divergence as a status, schedules, checkpoint/resume."""
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
import xarray as xr

from eosflow.config.tags import schedule_from_tag, schedule_tag
from eosflow.training import TrainConfig, lr_at, train


class Quadratic:
    """L(θ) = ½ λ ‖θ‖²: GD contracts by |1 − ηλ| per step, stable iff η < 2/λ.
    'Accuracy' is 1 once the loss is below 1e-10, so runs that converge stop as converged."""

    def __init__(self, lam):
        self.lam = lam

    def loss_grad_acc(self, theta):
        loss = 0.5 * self.lam * float(theta @ theta)
        return loss, float(loss < 1e-10), self.lam * theta

    def evaluate(self, theta, x=None, y=None):
        loss = 0.5 * self.lam * float(theta @ theta)
        return loss, float(loss < 1e-10)


@pytest.mark.parametrize("eta_factor, status", [(0.5, "converged"), (1.9, "converged"), (2.1, "diverged"),
                                                (4.0, "diverged")])
def test_quadratic_stability_limit(eta_factor, status):
    lam = 10.0
    theta0 = torch.ones(3, dtype=torch.float64)
    cfg = TrainConfig(lr=eta_factor * 2 / lam / 2, max_epochs=10_000, diverge_loss=1e6, eval_every=1,
                      acc_goal=1.0)
    cfg.lr = eta_factor / lam  # η = factor/λ: stable iff factor < 2
    res = train(Quadratic(lam), theta0, cfg, progress=False)
    assert res.status == status
    if status == "converged":
        # the loss contracts exactly by (1 − ηλ)² per step
        ratio = res.metrics["train_loss"][1] / res.metrics["train_loss"][0]
        assert ratio == pytest.approx((1 - cfg.lr * lam) ** 2, rel=1e-12)
    else:
        assert res.metrics["train_loss"][-1] > 1e6 or not math.isfinite(res.metrics["train_loss"][-1])
        assert torch.isfinite(res.snapshots).all()  # only finite parameters are kept as snapshots


def test_max_epochs_status_and_snapshots():
    cfg = TrainConfig(lr=0.001, max_epochs=30, snapshot_every=10, eval_every=7, acc_goal=1.0)
    res = train(Quadratic(1.0), torch.ones(2, dtype=torch.float64), cfg, test=(None, None), progress=False)
    assert res.status == "max_epochs"
    assert list(res.steps) == list(range(31))
    assert list(res.snapshot_steps) == [0, 10, 20, 30]
    evaluated = np.flatnonzero(np.isfinite(res.metrics["test_loss"]))
    assert list(evaluated) == [0, 7, 14, 21, 28, 30]


def test_schedules():
    sched = {"kind": "switch", "epoch": 5, "lr_small": 0.01}
    assert [lr_at(t, 0.5, sched) for t in (0, 4, 5, 9)] == [0.5, 0.5, 0.01, 0.01]
    assert lr_at(100, 0.5, None) == 0.5
    assert schedule_from_tag(schedule_tag(sched)) == sched
    assert schedule_tag(None) == "const" and schedule_from_tag("const") == {"kind": "constant"}
    with pytest.raises(ValueError, match="unknown schedule"):
        schedule_from_tag("cosine")


def test_checkpoint_of_another_initialisation_is_not_resumed(tmp_path, caplog):
    """A checkpoint belongs to its configuration *and* its θ₀ (e.g. another seed's run written to
    the same path): only a matching one is resumed from."""
    caplog.set_level(logging.INFO, logger="eosflow")
    cfg = TrainConfig(lr=0.05, max_epochs=20, checkpoint_every=5, acc_goal=None)
    ckpt = tmp_path / "c.ckpt"
    a, b = torch.ones(3, dtype=torch.float64), torch.full((3,), 2.0, dtype=torch.float64)
    ref_a = train(Quadratic(1.0), a, cfg, checkpoint=ckpt, progress=False)
    assert torch.load(ckpt, weights_only=True)["step"] == 20
    ref_b = train(Quadratic(1.0), b, cfg, progress=False)
    got_b = train(Quadratic(1.0), b, cfg, checkpoint=ckpt, progress=False)
    assert "belongs to another configuration" in caplog.text
    assert (tmp_path / "c.ckpt.bad").exists()  # moved aside, not resumed from
    np.testing.assert_array_equal(got_b.metrics["train_loss"], ref_b.metrics["train_loss"])
    caplog.clear()
    train(Quadratic(1.0), a, cfg, checkpoint=ckpt, progress=False)  # rewrites the checkpoint for a
    again = train(Quadratic(1.0), a, cfg, checkpoint=ckpt, progress=False)
    assert "resumed from checkpoint" in caplog.text
    np.testing.assert_array_equal(again.metrics["train_loss"], ref_a.metrics["train_loss"])
    assert torch.equal(again.theta, ref_a.theta)


@pytest.mark.parametrize("damage", ["truncated", "random", "code"])
def test_damaged_checkpoint_is_set_aside_and_the_run_starts_afresh(tmp_path, caplog, damage, code_marker):
    """A checkpoint that cannot be read (cut short, random bytes, or a pickle that would run code)
    is moved to <name>.bad with a warning naming it; the run starts afresh and ends as if there had
    been none. No code runs."""
    caplog.set_level(logging.INFO, logger="eosflow")
    cfg = TrainConfig(lr=0.05, max_epochs=30, checkpoint_every=5, acc_goal=None)
    theta0 = torch.ones(3, dtype=torch.float64)
    ref = train(Quadratic(1.0), theta0, cfg, progress=False)
    ckpt, (payload, marker) = tmp_path / "c.ckpt", code_marker
    train(Quadratic(1.0), theta0, TrainConfig(**{**cfg.__dict__, "max_epochs": 10}), checkpoint=ckpt, progress=False)
    good = ckpt.read_bytes()
    if damage == "truncated":
        ckpt.write_bytes(good[: len(good) // 2])
    elif damage == "random":
        ckpt.write_bytes(np.random.default_rng(0).bytes(len(good)))
    else:
        torch.save({"fingerprint": payload, "step": 5}, ckpt)
    res = train(Quadratic(1.0), theta0, cfg, checkpoint=ckpt, progress=False)
    assert not marker.exists()
    assert (tmp_path / "c.ckpt.bad").exists() and "moved aside to" in caplog.text and "cannot be read" in caplog.text
    np.testing.assert_array_equal(res.metrics["train_loss"], ref.metrics["train_loss"])
    assert torch.equal(res.theta, ref.theta)


# -- kill and resume through the real pipeline, in a subprocess --------------------------------

SCRIPT = textwrap.dedent("""
    import sys, torch
    from eosflow.files import save_torch
    from eosflow.jobs.spec import RunSpec
    from eosflow.jobs.train import run_train
    from eosflow.config import validate_config
    torch.set_num_threads(1)
    d, tag, max_epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    g = torch.Generator().manual_seed(0)
    save_torch({"x_train": torch.randn(64, 1, 4, 4, generator=g), "y_train": torch.arange(64) % 4,
                "x_test": torch.randn(32, 1, 4, 4, generator=g), "y_test": torch.arange(32) % 4,
                "n_classes": 4}, f"{d}/data.pt")
    cfg = validate_config({"device": "cpu",
        "settings": {"s": {"dataset": "fashion-mnist", "n_train": 64, "n_test": 32,
                           "model": {"arch": "mlp", "widths": [16], "activation": "tanh"}, "loss": "ce"}},
        "train": {"max_epochs": max_epochs, "checkpoint_every": 20, "snapshot_every": 25, "eval_every": 5,
                  "acc_goal": None}})  # no early stop: runs all max_epochs, so the kill lands inside the loop
    run_train(RunSpec.from_settings(cfg, "s", 0.5, 0), f"{d}/data.pt", f"{d}/{tag}.nc", f"{d}/{tag}.pt",
              checkpoint=f"{d}/{tag}.ckpt", progress=False)
""")


def _run(tmp_path, tag, max_epochs, kill=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(p) for p in sys.path if p])}
    cmd = [sys.executable, "-c", SCRIPT, str(tmp_path), tag, str(max_epochs)]
    if kill is None:
        subprocess.run(cmd, check=True, env=env, timeout=300)
        return None
    proc = subprocess.Popen(cmd, env=env)
    ckpt = tmp_path / f"{tag}.ckpt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; raise max_epochs"
    proc.send_signal(kill)
    return proc.wait(timeout=120)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_run_resumes_to_identical_cube(tmp_path, sig):
    max_epochs = 4000
    _run(tmp_path, "ref", max_epochs)
    rc = _run(tmp_path, "run", max_epochs, kill=sig)
    assert rc != 0
    ckpt = torch.load(tmp_path / "run.ckpt", weights_only=False)
    assert 0 < ckpt["step"] < max_epochs
    if sig == signal.SIGTERM:
        assert rc == 128 + signal.SIGTERM  # wrote a checkpoint, then exited
    assert not (tmp_path / "run.nc").exists()
    _run(tmp_path, "run", max_epochs)  # resumes from the checkpoint
    assert not (tmp_path / "run.ckpt").exists()
    a, b = xr.load_dataset(tmp_path / "ref.nc"), xr.load_dataset(tmp_path / "run.nc")
    for v in ("train_loss", "train_acc", "test_loss", "test_acc", "grad_norm"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
    sa, sb = torch.load(tmp_path / "ref.pt"), torch.load(tmp_path / "run.pt")
    assert torch.equal(sa["theta"], sb["theta"]) and torch.equal(sa["steps"], sb["steps"])
