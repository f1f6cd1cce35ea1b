"""One run's configuration, bookkeeping and result.

:class:`RunState` owns everything a run decides for itself, whichever driver computes its steps:
its status (``converged`` when the training accuracy reaches ``acc_goal``; ``max_epochs`` at the
cap; ``diverged`` when the training loss is NaN/inf or above ``diverge_loss``, or the gradient is
not finite: a result, not an error), the cadences of test evaluation, in-loop sharpness,
snapshots and checkpoints, its metrics, and what its checkpoint holds. Metrics at step ``t``
describe ``θ_t`` (before its update).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .clamp import DEFAULT_CLAMP_MARGIN
from .schedules import lr_at

__all__ = ["METRICS", "TrainConfig", "TrainResult", "RunState"]

log = logging.getLogger(__name__)
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "grad_norm", "lr", "sharpness_inloop")


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
    clamp: float | None = None
    clamp_tol: float = 1e-3
    # the clamp's bound between full solves may rise this much (eosflow.training.clamp; 0: a
    # full solve at every step); read by the run's in-loop sharpness, recorded here
    clamp_margin: float = DEFAULT_CLAMP_MARGIN
    # the optimizer (eosflow.training.optimizers); gd: full-batch GD; order_seed: minibatch order
    optimizer: str = "gd"
    batch_size: int | None = None
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    clip: float | None = None
    order_seed: int = 0

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
    #: adaptive optimizers: ``{"preconditioner": {step: diag P}, "threshold": limit of λ_max(P⁻¹H)}``
    optimizer: dict | None = None


class RunState:
    """The bookkeeping of one run (see the module docstring).

    ``start``: fork from another run instead of step 0: ``{"step": t, "theta": θ_t, "metrics":
    {name: values of steps 0..t-1}}`` (the parent's history; snapshots start at ``t``).
    """

    def __init__(self, cfg: TrainConfig, start: dict | None = None):
        self.cfg = cfg
        self.metrics: dict[str, list[float]] = {m: [] for m in METRICS}
        self.snapshots: list[Tensor] = []
        self.snapshot_steps: list[int] = []
        self.status: str | None = None
        self.end_step: int | None = None
        self.first_step = 0
        self._clamp_bound: float | None = None  # U_t ≥ λ_max(θ_t) given with step t's sharpness
        if start is not None:
            t = self.first_step = int(start["step"])
            self.metrics = {m: [float(x) for x in start["metrics"][m][:t]] for m in METRICS}
            if any(len(v) != t for v in self.metrics.values()):
                raise ValueError(f"start: the parent history must cover steps 0..{t - 1}")
            log.info("forked from a parent run at step %d", t)

    # -- one step ------------------------------------------------------------------------------
    def observe(self, t: int, loss: float, acc: float, grad_norm: float, grad_finite: bool) -> tuple[float, bool]:
        """Record step ``t``'s training metrics and decide whether the run ends there.
        Returns ``(η_t, diverged)``."""
        c = self.cfg
        lr = lr_at(t, c.lr, c.schedule)
        diverged = not math.isfinite(loss) or loss > c.diverge_loss or not grad_finite
        if diverged:
            self.status = "diverged"
        elif c.acc_goal is not None and acc >= c.acc_goal:
            self.status = "converged"
        elif t >= c.max_epochs:
            self.status = "max_epochs"
        m = self.metrics
        m["train_loss"].append(loss)
        m["train_acc"].append(acc)
        m["grad_norm"].append(grad_norm)
        m["lr"].append(lr)
        return lr, diverged

    def eval_due(self, t: int) -> bool:
        """Test evaluation at the cadence and at the last step."""
        return t % self.cfg.eval_every == 0 or self.status is not None

    def record_test(self, loss: float = math.nan, acc: float = math.nan) -> None:
        self.metrics["test_loss"].append(loss)
        self.metrics["test_acc"].append(acc)

    def sharpness_due(self, t: int, diverged: bool) -> bool:
        """At the cadence ``sharpness_every``; at every step for a clamped run."""
        every = 1 if self.cfg.clamp is not None else self.cfg.sharpness_every
        return bool(every) and t % every == 0 and not diverged

    def clamp_limit(self, t: int) -> float:
        """The sharpness at which the stability clamp binds at step ``t``: ``clamp · 2 / η_t`` (the
        scheduled ``η_t``; inf without a clamp)."""
        c = self.cfg
        return math.inf if c.clamp is None else c.clamp * 2.0 / lr_at(t, c.lr, c.schedule)

    def clamped_lr(self, lr: float) -> float:
        """The stability clamp: ``min(η_t, clamp · 2 / U_t)``, ``U_t ≥ λ_max(θ_t)`` the bound given
        with step t's sharpness (:meth:`record_sharpness`), by default ``S(θ_t) · (1 + clamp_tol)``
        (``η_t`` itself without a clamp, or where nothing positive was measured). The Ritz value S
        is at most λ_max and, once its relative residual is ``≤ clamp_tol``, at least
        λ_max / (1 + clamp_tol): so ``η_t · λ_max(θ_t) ≤ 2 · clamp``; between full solves the bound
        is predicted (:class:`eosflow.training.clamp.ClampBound`). A binding clamp replaces step
        t's recorded η. Where it never binds, the run is plain GD's, bit for bit."""
        c = self.cfg
        if c.clamp is None:
            return lr
        u = self._clamp_bound
        if u is None:
            s = self.metrics["sharpness_inloop"][-1]
            u = s * (1.0 + c.clamp_tol) if s > 0 else math.nan
        if not u > 0:  # nothing measured (a diverged step) or no positive curvature to clamp against
            return lr
        bound = c.clamp * 2.0 / u
        if bound < lr:
            lr = self.metrics["lr"][-1] = bound
        return lr

    def record_sharpness(self, value: float = math.nan, bound: float | None = None) -> None:
        """Step t's in-loop sharpness (NaN: not measured) and, for a clamped run, the bound
        ``U_t ≥ λ_max(θ_t)`` its clamp steps with (None: ``value · (1 + clamp_tol)``)."""
        self.metrics["sharpness_inloop"].append(value)
        self._clamp_bound = bound

    def snapshot_due(self, t: int) -> bool:
        """Snapshots at the cadence and at the last step (kept only when finite)."""
        return t % self.cfg.snapshot_every == 0 or self.status is not None

    def add_snapshot(self, t: int, theta: Tensor) -> None:
        self.snapshots.append(theta.clone())
        self.snapshot_steps.append(t)

    def checkpoint_due(self, t: int) -> bool:
        return t % self.cfg.checkpoint_every == 0

    # -- checkpoint and result -----------------------------------------------------------------
    def state_dict(self) -> dict:
        """What a checkpoint holds of this run: plain values and CPU tensors only."""
        return {"metrics": {m: list(v) for m, v in self.metrics.items()},
                "snapshots": [s.cpu() for s in self.snapshots], "snapshot_steps": list(self.snapshot_steps),
                "status": self.status, "end_step": self.end_step}

    def load_state_dict(self, state: dict, device) -> None:
        self.metrics = {m: list(state["metrics"][m]) for m in METRICS}
        self.snapshots = [s.to(device) for s in state["snapshots"]]
        self.snapshot_steps = list(state["snapshot_steps"])
        self.status, self.end_step = state["status"], state["end_step"]

    def result(self, theta: Tensor) -> TrainResult:
        """The finished run, ``theta`` its last parameters."""
        return TrainResult(
            status=self.status, metrics={m: np.asarray(v, dtype=np.float64) for m, v in self.metrics.items()},
            steps=np.arange(self.end_step + 1),
            snapshots=torch.stack(self.snapshots) if self.snapshots else theta.new_zeros((0, theta.numel())),
            snapshot_steps=np.asarray(self.snapshot_steps, dtype=np.int64), theta=theta)
