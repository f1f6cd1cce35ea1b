"""Full-batch gradient descent with η schedules, stopping rules, divergence detection,
parameter snapshots and atomic, resumable checkpoints.

One step is one epoch (full batch). Metrics at step ``t`` describe ``θ_t`` (before its update).
A run ends ``converged`` (training accuracy reached ``acc_goal``; ``None``: never), ``max_epochs`` (the cap), or
``diverged`` (a training loss that is NaN/inf or above ``diverge_loss``); a diverged run is a
result, not an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .io import save_torch
from .objective import Objective

log = logging.getLogger(__name__)
STATUSES = ("converged", "max_epochs", "diverged")
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "grad_norm", "lr", "sharpness_inloop")


def lr_at(step: int, lr0: float, schedule: dict | None = None) -> float:
    """η at ``step``: constant ``lr0``, or ``{"kind": "switch", "epoch": e, "lr_small": η_small}``
    (``lr0`` for steps ``< e``, then ``η_small``)."""
    if not schedule or schedule.get("kind", "constant") == "constant":
        return lr0
    if schedule["kind"] == "switch":
        return lr0 if step < schedule["epoch"] else schedule["lr_small"]
    raise ValueError(f"unknown schedule kind {schedule['kind']!r}; allowed: ['constant', 'switch']")


@dataclass
class TrainConfig:
    lr: float
    acc_goal: float | None = 0.999
    max_epochs: int = 3000
    diverge_loss: float = 1e3
    eval_every: int = 10
    snapshot_every: int = 100
    checkpoint_every: int = 500
    sharpness_every: int = 0
    schedule: dict | None = None

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.__dict__, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class TrainResult:
    status: str
    metrics: dict[str, np.ndarray]          # each of length n_steps, indexed by ``steps``
    steps: np.ndarray
    snapshots: Tensor                       # (n_snapshots, P), float
    snapshot_steps: np.ndarray
    theta: Tensor


class _StopRequest:
    """Turns SIGTERM (e.g. ``scancel``, Snakemake stopping) into a checkpoint-and-exit."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        self.requested = True

    @contextlib.contextmanager
    def installed(self):
        try:
            old = signal.signal(signal.SIGTERM, self)
        except ValueError:  # not in the main thread
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, old)


def train(objective: Objective, theta0: Tensor, cfg: TrainConfig, test: tuple[Tensor, Tensor] | None = None,
          checkpoint: str | Path | None = None, sharpness_fn=None, progress: bool | object = True,
          desc: str = "train", start: dict | None = None) -> TrainResult:
    """Run full-batch GD from ``theta0``; resume from ``checkpoint`` when it exists and matches.

    ``start``: fork from another run instead of step 0: ``{"step": t, "theta": θ_t, "metrics":
    {name: values of steps 0..t-1}}`` (the parent's history; snapshots start at ``t``). A run
    forked from a parent with the same η schedule up to ``t`` equals one trained from scratch.

    ``sharpness_fn(theta) -> float`` is called every ``cfg.sharpness_every`` steps when given.
    ``progress``: False, True (tqdm to stderr) or a file object for tqdm (a rule's log).
    """
    metrics = {m: [] for m in METRICS}
    snaps, snap_steps = [], []
    theta, t = theta0.detach().clone(), 0
    fp = cfg.fingerprint()
    if start is not None:
        t, theta = int(start["step"]), start["theta"].detach().to(theta.device, theta.dtype).clone()
        metrics = {m: [float(x) for x in start["metrics"][m][:t]] for m in METRICS}
        if any(len(v) != t for v in metrics.values()):
            raise ValueError(f"start: the parent history must cover steps 0..{t - 1}")
        log.info("forked from a parent run at step %d", t)
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=theta.device, weights_only=False)
        if state.get("fingerprint") == fp and state["theta"].shape == theta.shape:
            theta, t = state["theta"].to(theta.dtype), state["step"]
            metrics = {m: list(state["metrics"][m]) for m in METRICS}
            snaps, snap_steps = [s.to(theta.device) for s in state["snapshots"]], list(state["snapshot_steps"])
            log.info("resumed from checkpoint %s at step %d", ckpt, t)
        else:
            log.warning("checkpoint %s belongs to another configuration; starting afresh", ckpt)

    def save_checkpoint():
        if ckpt is not None:
            save_torch({"fingerprint": fp, "step": t, "theta": theta.cpu(), "metrics": metrics,
                        "snapshots": [s.cpu() for s in snaps], "snapshot_steps": snap_steps}, ckpt)

    file = progress if progress not in (True, False) else sys.stderr
    bar = tqdm(total=cfg.max_epochs, initial=t, desc=desc, disable=progress is False, file=file,
               mininterval=1.0 if file is sys.stderr else 15.0, dynamic_ncols=False)
    stop = _StopRequest()
    status = None
    with stop.installed():
        while True:
            loss, acc, g = objective.loss_grad_acc(theta)
            lr = lr_at(t, cfg.lr, cfg.schedule)
            diverged = not math.isfinite(loss) or loss > cfg.diverge_loss or not bool(torch.isfinite(g).all())
            if diverged:
                status = "diverged"
            elif cfg.acc_goal is not None and acc >= cfg.acc_goal:
                status = "converged"
            elif t >= cfg.max_epochs:
                status = "max_epochs"
            metrics["train_loss"].append(loss)
            metrics["train_acc"].append(acc)
            metrics["grad_norm"].append(float(g.norm()))
            metrics["lr"].append(lr)
            if test is not None and (t % cfg.eval_every == 0 or status is not None):
                tl, ta = objective.evaluate(theta, *test)
            else:
                tl, ta = math.nan, math.nan
            metrics["test_loss"].append(tl)
            metrics["test_acc"].append(ta)
            s = math.nan
            if sharpness_fn is not None and cfg.sharpness_every and t % cfg.sharpness_every == 0 and not diverged:
                s = float(sharpness_fn(theta))
            metrics["sharpness_inloop"].append(s)
            if (t % cfg.snapshot_every == 0 or status is not None) and bool(torch.isfinite(theta).all()):
                snaps.append(theta.clone())
                snap_steps.append(t)
            if status is not None:
                break
            theta = theta - lr * g
            t += 1
            bar.update(1)
            if t % 50 == 0:
                bar.set_postfix(loss=f"{loss:.4g}", acc=f"{acc:.3f}", refresh=False)
            if t % cfg.checkpoint_every == 0 or stop.requested:
                save_checkpoint()
                if stop.requested:
                    bar.close()
                    log.warning("SIGTERM: checkpoint written at step %d; exiting", t)
                    raise SystemExit(128 + signal.SIGTERM)
    bar.close()
    steps = np.arange(t + 1)
    log.info("run ended at step %d: %s (train loss %.4g, train acc %.4f)", t, status, loss, acc)
    return TrainResult(status=status, metrics={m: np.asarray(v, dtype=np.float64) for m, v in metrics.items()},
                       steps=steps,
                       snapshots=torch.stack(snaps) if snaps else theta.new_zeros((0, theta.numel())),
                       snapshot_steps=np.asarray(snap_steps, dtype=np.int64), theta=theta)


def schedule_tag(schedule: dict | None) -> str:
    """Path-safe name of a schedule: ``const`` or ``e{epoch}to{lr_small:g}``."""
    if not schedule or schedule.get("kind", "constant") == "constant":
        return "const"
    return f"e{int(schedule['epoch'])}to{float(schedule['lr_small']):g}"


def schedule_from_tag(tag: str) -> dict:
    """Inverse of :func:`schedule_tag`."""
    if tag == "const":
        return {"kind": "constant"}
    if tag.startswith("e") and "to" in tag:
        epoch, lr_small = tag[1:].split("to", 1)
        return {"kind": "switch", "epoch": int(epoch), "lr_small": float(lr_small)}
    raise ValueError(f"unknown schedule tag {tag!r}; expected 'const' or 'e<epoch>to<lr_small>'")
