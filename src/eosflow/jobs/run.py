"""What every job does with a run's :class:`~eosflow.jobs.spec.RunSpec`: its objective, its η₀
placed by the stability limit, its training configuration, its in-loop sharpness, and the files
of a finished run.

:func:`build_objective` is the one place a run's network and data become an
:class:`~eosflow.objective.Objective` (the train, group, branch, hessian, slice and optimizer jobs
all call it).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..cubes import metrics_dataset, write_netcdf
from ..device import resolve_device
from ..files import save_torch
from ..losses import resolve_loss
from ..models import build_model, model_provenance
from ..objective import Objective
from ..spectral import SpectrumTracker, hvp_operator, top_eigenpairs
from ..training import TrainConfig
from ..training.clamp import DEFAULT_CLAMP_MARGIN, ClampBound
from .spec import InloopSpec, RunSpec

__all__ = ["UNIT_TOL", "UNIT_MAX_ITER", "build_objective", "eta_eos_at_init", "place_lr", "train_config",
           "InloopSharpness", "inloop_sharpness", "validation_set", "write_run_outputs", "remove_checkpoint",
           "progress_bar"]

#: Relative residual to which S(θ₀) is computed when it sets η₀ (a relative grid's unit), and
#: the most Hessian-vector products spent on it.
UNIT_TOL = 1e-6
UNIT_MAX_ITER = 1000
log = logging.getLogger(__name__)


def build_objective(spec: RunSpec, data: dict, *, n: int | None = None, chunk_size: int | None = None,
                    device=None) -> Objective:
    """The objective of the run's network, initialised with its seed, on the prepared ``data``
    (:func:`eosflow.data.load_prepared`): its first ``n`` training examples (None: all), in chunks
    of ``chunk_size`` (None: the setting's), on ``device`` (None: the run's ``device``) in the
    run's ``train.dtype``. ``objective.flatten()`` is the run's θ₀."""
    device = resolve_device(spec.device) if device is None else device
    dtype = getattr(torch, spec.train["dtype"])
    x, y = data["x_train"], data["y_train"]
    if n is not None:
        x, y = x[:n], y[:n]
    model = build_model(dict(spec.model), tuple(x.shape[1:]), int(data["n_classes"]), spec.seed,
                        perturb=spec.perturb).to(device, dtype)
    loss = resolve_loss(spec.loss if isinstance(spec.loss, str) else dict(spec.loss),
                        what=f"config key settings.{spec.setting}.loss")
    return Objective(model, x.to(device, dtype), y.to(device), loss, chunk_size or spec.data["chunk_size"],
                     batch_norm=spec.data.get("batch_norm", "batch"))


def eta_eos_at_init(spec: RunSpec, data: dict) -> float:
    """``2 / S(θ₀)`` of the run's network initialised with its seed, on the loss GD trains on (the
    setting's training subset and chunks), with S to relative residual :data:`UNIT_TOL`."""
    obj = build_objective(spec, data)
    res = top_eigenpairs(obj, obj.flatten(), 1, tol=UNIT_TOL, max_iter=UNIT_MAX_ITER)
    if not res.converged:
        log.warning("S(theta_0) of %s seed %d: residual %.2g after %d products (asked %g)", spec.setting, spec.seed,
                    float(res.residuals[0]), res.n_matvec, UNIT_TOL)
    return 2.0 / float(res.eigvals[0])


def place_lr(spec: RunSpec, data: dict, cache: dict | None = None) -> RunSpec:
    """The run with η₀ placed: a relative η₀ is its multiple × the stability limit of its unit
    (``seed``: its own seed's η_eos(θ₀); ``median``: the median over the unit's seeds, each
    measured); an absolute one is unchanged. ``cache``: a dict that keeps each seed's limit between
    calls (a group of runs measures each seed once)."""
    if not spec.lr.is_relative or spec.lr.value is not None:
        return spec
    cache = {} if cache is None else cache
    for s in spec.lr.limits:
        if s not in cache:
            cache[s] = eta_eos_at_init(spec.with_seed(s), data)
    spec = spec.placed(cache)
    lr = spec.lr
    log.info("eta0 = %g x eta_eos (%s) = %g x %.6g = %.6g", lr.multiple, lr.unit, lr.multiple, lr.eta_eos, lr.value)
    return spec


def train_config(spec: RunSpec) -> TrainConfig:
    """The :class:`~eosflow.training.TrainConfig` of the run (its seed also fixes a minibatch
    optimizer's data order)."""
    return TrainConfig(lr=float(spec.lr.value), schedule=dict(spec.schedule), order_seed=spec.seed,
                       **{k: v for k, v in spec.train.items() if k != "dtype"})


class InloopSharpness:
    """A run's in-loop sharpness: ``S(θ)``, the top Hessian eigenvalue of ``objective`` to relative
    residual ``tol``, warm-started from the span of the two previous measurements' eigenvectors and
    one guard vector (:class:`~eosflow.spectral.SpectrumTracker` with ``warm_subspace``).

    A clamped run (``clamped``) calls it at every step; ``bound`` is then the ``U_t ≥ λ_max(θ_t)``
    its clamp steps with (:meth:`eosflow.training.state.RunState.clamped_lr`): after a full solve
    ``S · (1 + tol)``; between full solves the bound :class:`~eosflow.training.clamp.ClampBound`
    predicts from the measured change of S, within ``margin`` (0: a full solve at every step). A
    step without a solve returns NaN (not measured). The warm start and the bound's state are part
    of the run's checkpoint (:meth:`state_dict`), so a resumed run measures, and a clamped one
    steps, exactly as an uninterrupted one. A clamped run's measurement that stops short of ``tol``
    is logged (its clamp bound then rests on a looser estimate), and so is a missed prediction.
    A clamped GD run takes the gradient of a step with a full solve from that solve's primal pass
    (:meth:`loss_grad_acc`): one forward and backward for both."""

    def __init__(self, objective: Objective, tol: float, max_iter: int, clamped: bool = False,
                 margin: float = DEFAULT_CLAMP_MARGIN):
        self.objective, self.tol, self.clamped = objective, tol, clamped
        self.tracker = SpectrumTracker(k=1, tol=tol, max_iter=max_iter, n_guard=1, warm_subspace=True)
        self.bounds = ClampBound(tol, margin) if clamped else None
        self.calls = 0  # steps seen (a clamped run calls at every step)
        self.bound: float | None = None  # the clamp's U_t of the latest call
        self.last = None  # the latest measurement's EigResult (costs, residual, product); None: predicted
        self._shared = None  # (θ, its Hessian operator) whose primal passes gave this step's gradient
        self._due: tuple[int, bool] | None = None  # (call, whether it solves): asked once per call

    @classmethod
    def of(cls, objective: Objective, spec: InloopSpec) -> InloopSharpness:
        """The in-loop sharpness a run's :class:`~eosflow.jobs.spec.InloopSpec` describes."""
        return cls(objective, spec.tol, spec.max_iter, spec.clamped, spec.margin)

    def loss_grad_acc(self, theta):
        """A clamped run's ``(L(θ), accuracy, ∇L(θ))`` at the step whose full solve is due (the next
        call), from that solve's own primal passes (:meth:`eosflow.spectral.rop.RopHVP.loss_grad_acc`,
        equal to the objective's to rounding), kept for the solve: the GD step and the solve share one
        forward and backward pass. None (the caller computes them) for a run that is not clamped, a
        step without a solve, or an operator that cannot (:func:`eosflow.spectral.hvp_operator`'s
        other kinds)."""
        self._shared = None
        if not self.clamped or not self._solves(self.calls):
            return None
        op = hvp_operator(self.objective, theta)
        if not hasattr(op, "loss_grad_acc"):
            return None
        out = op.loss_grad_acc()
        self._shared = (theta, op)
        return out

    def _solves(self, t: int) -> bool:
        """Whether call ``t`` makes a full solve (:meth:`ClampBound.due`, asked once per call)."""
        if self.bounds is None:
            return True
        if self._due is None or self._due[0] != t:
            self._due = (t, self.bounds.due(t))
        return self._due[1]

    def __call__(self, theta) -> float:
        t, self.calls = self.calls, self.calls + 1
        shared, self._shared = self._shared, None
        if not self._solves(t):
            self.bound, self.last = self.bounds.predicted(t), None
            return math.nan
        op = shared[1] if shared is not None and shared[0] is theta else None
        res = self.last = self.tracker.measure(self.objective, theta, operator=op)
        s = float(res.eigvals[0])
        if self.clamped and not res.converged:
            log.warning("clamp: S(theta) measurement %d stopped at residual %.2g (asked %g) after %d products",
                        self.tracker.n_measured, float(res.residuals[0]), self.tol, res.n_matvec)
        if self.bounds is not None:
            self.bound, miss = self.bounds.solved(t, s)
            if miss:
                log.warning("clamp: S(theta) = %.6g at call %d rose above the predicted bound; safety now %g "
                            "(%d misses)", s, t, self.bounds.safety, self.bounds.misses)
        return s

    def state_dict(self) -> dict:
        state = self.tracker.state_dict()
        if self.bounds is not None:
            state = {**state, "calls": self.calls, "bounds": self.bounds.state_dict()}
        return state

    def load_state_dict(self, state: dict, device=None) -> None:
        self.tracker.load_state_dict(state, device)
        self._due = None
        if self.bounds is not None and "bounds" in state:
            self.calls = int(state["calls"])
            self.bounds.load_state_dict(state["bounds"])


def inloop_sharpness(spec: RunSpec, objective: Objective) -> InloopSharpness | None:
    """``θ ↦ S(θ)`` for ``train.sharpness_every`` and ``train.clamp`` (:class:`InloopSharpness`), as the
    run's ``inloop`` says; None when the run measures no sharpness in its loop."""
    return None if spec.inloop is None else InloopSharpness.of(objective, spec.inloop)


def validation_set(data: dict, obj: Objective) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation (test subset) examples on the objective's device and dtype."""
    return data["x_test"].to(obj.device, obj.dtype), data["y_test"].to(obj.device)


def write_run_outputs(spec: RunSpec, result, n_parameters: int, out_metrics, out_snapshots) -> None:
    """The train rule's files of one finished run: metrics NetCDF (its record as the ``config``
    attribute; a relative η₀ also as the attributes ``lr_relative``, ``lr_unit`` and
    ``eta_eos_unit``) and parameter snapshots."""
    attrs = {"setting": spec.setting, "n_parameters": n_parameters, **model_provenance(dict(spec.model))}
    if not isinstance(spec.loss, str) or ":" in spec.loss:
        rec = resolve_loss(spec.loss if isinstance(spec.loss, str) else dict(spec.loss)).record()
        attrs.update({f"loss_{k}": v for k, v in rec.items() if k in ("qualname", "source_sha256") and v})
    if spec.lr.is_relative:
        attrs.update({k: v for k, v in spec.lr.record().items() if k != "eta_eos_by_seed"})
    ds = metrics_dataset(result, spec.lr.value, spec.seed, spec.record(), extra_attrs=attrs)
    save_torch({"steps": torch.as_tensor(result.snapshot_steps), "theta": result.snapshots.cpu(),
                "status": result.status}, out_snapshots)
    write_netcdf(ds, out_metrics)


def remove_checkpoint(checkpoint) -> None:
    """A finished job's checkpoint goes (None: there is none)."""
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)


def progress_bar(iterable, progress, desc: str, total=None):
    """tqdm over ``iterable`` for a job's ``progress``: True (the terminal), False (none) or an open
    file (a rule's log, where the bar is written every 15 s)."""
    file = progress if progress not in (True, False) else None
    return tqdm(iterable, desc=desc, total=total, disable=progress is False, file=file,
                mininterval=15.0 if file else 1.0)
