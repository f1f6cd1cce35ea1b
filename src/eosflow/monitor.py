"""Instruments for a training loop of your own: :class:`SharpnessMonitor` records the top Hessian
eigenvalues along it and writes a run cube in eosflow's schema; :class:`StabilityClamp` caps the
learning rate at the stability limit, a scheduler in ``torch.optim.lr_scheduler``'s protocol;
:func:`preconditioned_sharpness` is ``λ_max(P⁻¹H)`` of an adaptive optimizer's next step.

A loop with ``torch.optim`` (full-batch GD here; minibatches work the same way)::

    monitor = SharpnessMonitor(model, (x, y), nn.CrossEntropyLoss(), every=10, path="run.nc",
                               optimizer=opt)
    clamp = StabilityClamp(opt, monitor, c=0.95)     # optional
    for step in range(n_steps):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        clamp.step()                                  # after backward, before opt.step()
        monitor.step(loss=loss)                       # records θ_t (before opt.step())
        opt.step()
    monitor.close()                                   # writes run.nc (also: ``with monitor:``)

**What is measured**: ``S(θ_t)``, the top ``k`` eigenvalues of the Hessian of the loss over the
*whole* ``data`` (:class:`~eosflow.objective.Objective`: exact whatever the batching), by block
Lanczos to relative residual ``tol``, warm-started from the previous measurement's eigenvectors and
one guard vector (:class:`~eosflow.spectral.SpectrumTracker`). ``monitor.step()`` records the
parameters the model has *now* as step ``t`` (the number of earlier calls): call it before
``optimizer.step()``. Measurements are cached on the parameters' version counters, so the clamp and
the monitor share one measurement per step.

**The clamp's guarantee**: before each optimizer step every parameter group's lr is set to
``min(η_group, c·τ/(λ̂·(1 + tol)))``, ``λ̂`` the Ritz value measured at the current parameters to
relative residual ``tol`` (a Ritz value is never above ``λ_max``; once its relative residual is at
most ``tol`` it is within the factor ``1 + tol`` of the eigenvalue it approximates), ``τ`` the
method's threshold (:func:`clamp_threshold`). So ``η_t·λ_max(θ_t) ≤ c·τ`` at every step, with
``λ_max`` of ``H`` (SGD) or of ``P⁻¹H`` (Adam, AdamW, RMSprop, ``P`` the exact denominator of the
coming step), as long as the Ritz value has converged to the top eigenvalue (a warm start close to
a lower eigenvector could, in principle, converge there first: the guard vector is there to catch
an eigenvalue rising past the tracked one). ``η_group`` is the lr the group had before the clamp
wrote it (another scheduler may keep setting it: the clamp then caps that).
"""

from __future__ import annotations

import copy
import json
import logging
import math
from types import SimpleNamespace

import numpy as np
import torch
from torch import Tensor, nn

from .objective import Objective
from .spectral import SpectrumTracker, hvp_operator
from .spectral.krylov import EigResult

__all__ = ["SharpnessMonitor", "StabilityClamp", "preconditioned_sharpness", "optimizer_preconditioner",
           "clamp_threshold", "ADAPTIVE_OPTIMIZERS"]

log = logging.getLogger(__name__)

#: The ``torch.optim`` classes whose stability is that of ``P⁻¹H`` (:func:`optimizer_preconditioner`).
ADAPTIVE_OPTIMIZERS = ("Adam", "AdamW", "RMSprop")


def _kind(optimizer) -> str:
    name = type(optimizer).__name__
    if isinstance(optimizer, torch.optim.SGD):
        return "SGD"
    for cls in (torch.optim.AdamW, torch.optim.Adam, torch.optim.RMSprop):
        if isinstance(optimizer, cls):
            return cls.__name__
    raise TypeError(f"optimizer: {name} is not supported; the stability limit is known for torch.optim.SGD "
                    f"(GD, momentum, Nesterov) and {list(ADAPTIVE_OPTIMIZERS)}")


def clamp_threshold(optimizer, group: dict) -> float:
    """``τ``: the optimizer is stable while ``η·λ_max < τ`` (``λ_max`` of ``H`` for SGD, of ``P⁻¹H``
    for the adaptive methods). SGD: ``2`` (GD), ``(2 + 2μ)/(1 − dampening)`` with heavy-ball momentum
    ``μ``, ``(2 + 2μ)/((1 + 2μ)(1 − dampening))`` with Nesterov's; Adam, AdamW: ``(2 + 2β₁)/(1 − β₁)``
    (Cohen et al. 2022, EMA momentum; the bias correction of the first moment, which tends to 1, is
    left out as there); RMSprop: ``2 + 2μ`` with its momentum ``μ``."""
    kind = _kind(optimizer)
    if kind == "SGD":
        mu, damp = float(group.get("momentum", 0.0)), float(group.get("dampening", 0.0))
        if mu == 0:
            return 2.0
        return (2 + 2 * mu) / ((1 + 2 * mu) if group.get("nesterov") else 1.0) / (1 - damp)
    if kind in ("Adam", "AdamW"):
        b1 = float(group["betas"][0])
        return (2 + 2 * b1) / (1 - b1)
    return 2 + 2 * float(group.get("momentum", 0.0))


def _positions(objective: Objective, model: nn.Module, optimizer) -> dict[int, tuple[int, int]]:
    """``id(parameter) -> (offset, size)`` in the objective's flat θ; every parameter the optimizer
    steps must be one of the model's."""
    pos, off = {}, 0
    for p in model.parameters():
        pos[id(p)] = (off, p.numel())
        off += p.numel()
    for gi, g in enumerate(optimizer.param_groups):
        for p in g["params"]:
            if id(p) not in pos:
                raise ValueError(f"optimizer: param_groups[{gi}] holds a parameter of shape {tuple(p.shape)} that is "
                                 "not one of the monitored model's parameters")
    return pos


def _next_denominator(kind: str, group: dict, state: dict, g: Tensor) -> Tensor:
    """The exact denominator ``P`` of the coming step for one parameter whose gradient (weight decay
    of the L2 kind included) is ``g``, from the optimizer's state before the step."""
    if kind == "RMSprop":
        a, eps = float(group["alpha"]), float(group["eps"])
        sq = state.get("square_avg")
        v = (a * sq if sq is not None else 0.0) + (1 - a) * g * g
        if group.get("centered"):
            ga = state.get("grad_avg")
            m = (a * ga if ga is not None else 0.0) + (1 - a) * g
            v = v - m * m
        return v.sqrt() + eps
    b2, eps = float(group["betas"][1]), float(group["eps"])
    v_old = state.get("exp_avg_sq")
    k = int(float(state["step"])) if "step" in state else 0
    v = (b2 * v_old if v_old is not None else 0.0) + (1 - b2) * g * g
    if group.get("amsgrad") and state.get("max_exp_avg_sq") is not None:
        v = torch.maximum(state["max_exp_avg_sq"], v)
    return v.sqrt() / math.sqrt(1 - b2 ** (k + 1)) + eps


def optimizer_preconditioner(optimizer, model: nn.Module, objective: Objective | None = None):
    """``(P, wd, moved)``, flat over the model's parameters: the denominator ``P`` the optimizer's
    *next* step divides by (Adam, AdamW: ``√v̂ + ε`` with ``v`` updated by the current gradient and
    bias-corrected by the next step count ``k + 1``; ``amsgrad``'s running maximum; RMSprop:
    ``√v + ε``, centered if so), the L2 weight decay that enters the gradient (Adam's and RMSprop's
    ``weight_decay``: the Hessian becomes ``H + wd·I``; AdamW's decoupled decay is a contraction by
    ``1 − η·wd`` that the threshold leaves out), and which coordinates the step moves (a parameter
    without a gradient, or in no group, does not move: its ``P⁻¹`` is 0). The current gradients are
    the parameters' ``.grad``: call it after ``backward()``, before ``optimizer.step()``."""
    kind = _kind(optimizer)
    if kind == "SGD":
        raise TypeError("optimizer: SGD has no preconditioner; its stability is that of S(θ) itself")
    params = list(model.parameters())
    ref = params[0]
    dim = sum(p.numel() for p in params)
    pos = _positions(objective, model, optimizer)
    P = torch.ones(dim, dtype=ref.dtype, device=ref.device)
    wd = torch.zeros_like(P)
    moved = torch.zeros(dim, dtype=torch.bool, device=ref.device)
    with torch.no_grad():
        for group in optimizer.param_groups:
            decay = float(group.get("weight_decay", 0.0)) if kind != "AdamW" else 0.0
            for p in group["params"]:
                if p.grad is None:
                    continue
                off, n = pos[id(p)]
                g = p.grad.detach()
                if decay:
                    g = g + decay * p.detach()
                P[off:off + n] = _next_denominator(kind, group, optimizer.state.get(p, {}), g).reshape(-1)
                wd[off:off + n] = decay
                moved[off:off + n] = True
    return P, wd, moved


class _PreconditionedHessian:
    """``v ↦ D (H + diag(wd)) D v`` with ``D = P^(-1/2)`` (0 where nothing moves), offered as an
    objective's ``hvp``/``hvp_batch`` so that :class:`~eosflow.spectral.SpectrumTracker` solves it;
    the Hessian operator is built once at ``θ``."""

    def __init__(self, objective: Objective, theta: Tensor, P: Tensor, wd: Tensor, moved: Tensor, hvp: str = "auto"):
        self.op = hvp_operator(objective, theta, hvp)
        dt = self.op.dtype
        self.d = torch.where(moved, P.to(dt).rsqrt(), torch.zeros((), dtype=dt, device=P.device)).to(self.op.device)
        self.wd = wd.to(self.op.device, dt)
        self.dim = objective.dim

    def hvp(self, theta: Tensor, v: Tensor) -> Tensor:
        u = self.d * v
        return self.d * (self.op.matvec(u) + self.wd * u)

    def hvp_batch(self, theta: Tensor, V: Tensor) -> Tensor:
        U = V * self.d
        return self.d * (self.op.matvec_batch(U) + self.wd * U)


def preconditioned_sharpness(optimizer, model: nn.Module, data=None, loss="ce", *, objective: Objective | None = None,
                             k: int = 1, tol: float = 1e-3, max_iter: int = 200, tracker: SpectrumTracker | None = None,
                             seed: int = 0, hvp: str = "auto") -> EigResult:
    """Top-``k`` eigenvalues of ``P⁻¹(H + wd)`` (as those of ``P^(-1/2) (H + wd) P^(-1/2)``) for the
    *next* step of ``optimizer`` (Adam, AdamW, RMSprop: :func:`optimizer_preconditioner`), ``H`` the
    Hessian of ``loss`` over ``data`` (or of ``objective``) at the model's current parameters, to
    relative residual ``tol``. Compare ``η·λ_max`` with :func:`clamp_threshold`. ``tracker``: a
    :class:`~eosflow.spectral.SpectrumTracker` to warm-start from (and update) along a trajectory."""
    if objective is None:
        if data is None:
            raise TypeError("data: give the data (tensors x, y or a DataLoader) or an objective")
        objective = Objective(model, data, loss=loss)
    P, wd, moved = optimizer_preconditioner(optimizer, model, objective)
    theta = objective.flatten(model)
    op = _PreconditionedHessian(objective, theta, P, wd, moved, hvp)
    tracker = tracker if tracker is not None else SpectrumTracker(k=k, tol=tol, max_iter=max_iter, seed=seed)
    return tracker.measure(op, theta)


def _param_key(model: nn.Module) -> tuple:
    """Identifies the model's current parameters: optimizers, ``load_state_dict`` and any in-place
    change bump a tensor's version counter."""
    return tuple((id(p), p._version) for p in model.parameters())


def _scalar(v) -> float:
    if v is None:
        return math.nan
    return float(v.detach()) if isinstance(v, Tensor) else float(v)


_NAN_ROW = ("train_loss", "train_acc", "test_loss", "test_acc", "grad_norm", "sharpness_inloop", "lr")


class SharpnessMonitor:
    """Sharpness along a training loop of your own, written as a run cube (see the module docstring).

    Parameters
    ----------
    model: the ``nn.Module`` being trained (the monitor reads its parameters, never changes them).
    data: the data the loss averages over: tensors ``(x, y)`` or a re-iterable of batches (a
        ``DataLoader`` with ``shuffle=False``); ``loss``: anything :class:`~eosflow.objective.Objective`
        takes (``"ce"``, a ``torch.nn`` loss, a function). ``chunk_size``, ``batch_norm``: the objective's.
    k, tol, max_iter: top-``k`` eigenvalues to relative residual ``tol`` in at most ``max_iter`` products.
    every: measure at the steps it divides (0: only when the clamp asks or :meth:`measure` is called).
    path: where :meth:`close` writes the run cube (None: nowhere; :meth:`dataset` returns it).
    optimizer: whose first group's lr is recorded as ``lr_step`` (or pass ``lr=`` to :meth:`step`).
    validation: tensors ``(x, y)`` or batches, evaluated at measured steps (``test_loss``, ``test_acc``).
    seed, name: the cube's ``seed`` coordinate and ``setting`` attribute; seed also seeds Lanczos.
    progress: a tqdm bar (``total`` steps if known); each measurement also logs one line (INFO).
    eigvecs: ``"ends"`` stores the first and last measurement's eigenvectors (the rotation 1 − ρ that
        fig7 draws), ``None`` none.
    """

    def __init__(self, model: nn.Module, data, loss="ce", *, k: int = 1, every: int = 10, path=None,
                 tol: float = 1e-3, max_iter: int = 200, optimizer=None, validation=None, seed: int = 0,
                 name: str = "user", chunk_size: int | None = None, batch_norm: str = "batch",
                 progress: bool = True, total: int | None = None, eigvecs: str | None = "ends"):
        if int(every) < 0:
            raise ValueError(f"every: must be ≥ 0, got {every}")
        if eigvecs not in ("ends", None):
            raise ValueError(f"eigvecs: {eigvecs!r} is not allowed; allowed: ['ends', None]")
        self.model, self.optimizer, self.path = model, optimizer, path
        self.objective = Objective(model, data, loss=loss, chunk_size=chunk_size, batch_norm=batch_norm)
        self.k, self.every, self.tol, self.seed, self.name = int(k), int(every), float(tol), int(seed), str(name)
        self.tracker = SpectrumTracker(k=self.k, tol=self.tol, max_iter=int(max_iter), seed=self.seed, n_guard=1)
        self.validation, self.store_eigvecs = validation, eigvecs
        self.t = 0
        self.rows: dict[str, list[float]] = {c: [] for c in _NAN_ROW}
        self.spectra: dict[str, list] = {"hstep": [], "eigval": [], "residual": [], "iters": []}
        self.ends: dict[int, np.ndarray] = {}
        self.status, self.clamp, self.closed = "max_epochs", None, False
        self._cache = None  # (parameter key, EigResult, step it was recorded at or None)
        self._row_key = None
        self._bar = None
        if progress:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=total, desc=f"eosflow monitor ({self.name})", leave=True, mininterval=1.0)

    # -- measuring ----------------------------------------------------------------------------------
    def measure(self, model: nn.Module | None = None) -> EigResult:
        """The top-``k`` eigenpairs at the model's current parameters, warm-started; computed once per
        parameter version (the clamp and :meth:`step` share it)."""
        model = model or self.model
        key = _param_key(model)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        theta = self.objective.flatten(model)
        if not bool(torch.isfinite(theta).all()):
            raise FloatingPointError(f"monitor: the parameters at step {self.t} are not finite (the run diverged)")
        res = self.tracker.measure(self.objective, theta, step=self.t)
        if not res.converged:
            log.warning("monitor: S(theta) at step %d stopped at residual %.2g (asked %g) after %d products",
                        self.t, float(res.residuals.max()), self.tol, res.n_matvec)
        self._cache = (key, res)
        return res

    def _lr(self, lr, optimizer) -> float:
        if lr is not None:
            return float(lr)
        opt = optimizer or self.optimizer
        return float(opt.param_groups[0]["lr"]) if opt is not None else math.nan

    @staticmethod
    def _grad_norm(model: nn.Module) -> float:
        gs = [p.grad.detach() for p in model.parameters() if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gs]))) if gs else math.nan

    def step(self, model: nn.Module | None = None, *, loss=None, lr=None, optimizer=None) -> float | None:
        """Record the model's current parameters as step ``t`` and advance ``t``: ``loss`` (your loop's
        loss at them, if given), the gradient norm (of ``.grad``, if set), the lr (``lr``, else the
        optimizer's first group's), and at measured steps ``S(θ_t)``, the top-``k`` eigenvalues, and the
        exact loss and accuracy over the monitor's data (and validation). Returns ``S(θ_t)`` when measured."""
        model = model or self.model
        loss_v = _scalar(loss)
        key = _param_key(model)
        measured = self._cache is not None and self._cache[0] == key  # the clamp measured these parameters
        due = self.every > 0 and self.t % self.every == 0
        s = None
        if (due or measured) and math.isfinite(loss_v if loss is not None else 0.0):
            try:
                s = self._record_measurement(model, key)
            except FloatingPointError:
                self.status = "diverged"
        row = self._measured_row(model, s) if s is not None else {"train_loss": loss_v}
        if loss is not None:
            row["train_loss"] = loss_v
        if not math.isfinite(row.get("train_loss", 0.0)):
            self.status = "diverged"
        row.update(grad_norm=self._grad_norm(model), lr=self._lr(lr, optimizer))
        for c in _NAN_ROW:
            self.rows[c].append(row.get(c, math.nan))
        self._row_key = key
        self.t += 1
        if self._bar is not None:
            self._bar.update(1)
        return s

    def _record_measurement(self, model, key) -> float:
        res = self.measure(model)
        ev = res.eigvals.detach().cpu().double().numpy()
        self.spectra["hstep"].append(self.t)
        self.spectra["eigval"].append(ev)
        self.spectra["residual"].append(res.residuals.detach().cpu().double().numpy())
        self.spectra["iters"].append(int(res.iterations))
        if self.store_eigvecs == "ends":
            vec = res.eigvecs.detach().cpu().float().numpy()
            if not self.ends:
                self.ends[self.t] = vec
            self.ends = {min(self.ends): self.ends[min(self.ends)], self.t: vec}
        return float(ev[0])

    def _measured_row(self, model, s: float) -> dict:
        theta = self.objective.flatten(model)
        tl, ta = self.objective.evaluate(theta)
        row = {"train_loss": tl, "train_acc": ta, "sharpness_inloop": s}
        if self.validation is not None:
            vx, vy = self.validation if isinstance(self.validation, (tuple, list)) else (self.validation, None)
            row["test_loss"], row["test_acc"] = self.objective.evaluate(theta, vx, vy)
        lr = self._lr(None, None)
        log.info("step %d: loss %.5g, accuracy %.4g, S %.5g%s", self.t, tl, ta, s,
                 f", eta*S/2 {lr * s / 2:.4g}" if math.isfinite(lr) else "")
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{tl:.4g}", S=f"{s:.4g}", refresh=False)
        return row

    def _clamped(self, key, lr: float, extra: dict) -> None:
        """The clamp set ``lr`` for the step out of the parameters ``key``: the row of those
        parameters, if already recorded, takes it."""
        if self._row_key == key and self.rows["lr"]:
            self.rows["lr"][-1] = float(lr)

    # -- the run cube -------------------------------------------------------------------------------
    def record(self) -> dict:
        """The run's record (the cube's ``config`` attribute)."""
        f = self.objective.loss_fn
        rec = {"source": "eosflow.SharpnessMonitor", "setting": self.name, "seed": self.seed,
               "model": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
               "loss": getattr(f, "name", str(f)), "n_train": self.objective.n, "k": self.k, "every": self.every,
               "tol": self.tol, "optimizer": type(self.optimizer).__name__ if self.optimizer is not None else None,
               "lr": self._lr0()}
        if self.clamp is not None:
            rec["clamp"] = {"c": self.clamp.c, "tol": self.clamp.tol, "kind": self.clamp.kind}
        return rec

    def _lr0(self) -> float:
        lrs = [v for v in self.rows["lr"] if math.isfinite(v)]
        return float(self.clamp.base_lrs[0]) if self.clamp is not None else (lrs[0] if lrs else math.nan)

    def dataset(self):
        """The run cube so far (:mod:`eosflow.cubes`' schema: :func:`~eosflow.cubes.metrics_dataset`
        joined with :func:`~eosflow.cubes.spectra_dataset`, CF and provenance attributes)."""
        from .cubes import build_cube, metrics_dataset, provenance, spectra_dataset

        if not self.t:
            raise ValueError("monitor: no step recorded yet; call monitor.step() in the loop")
        metrics = {c: np.asarray(v, dtype=np.float64) for c, v in self.rows.items()}
        result = SimpleNamespace(metrics=metrics, steps=np.arange(self.t), status=self.status)
        attrs = {"setting": self.name, "n_parameters": int(self.objective.dim), "recorded_by": "eosflow.SharpnessMonitor"}
        md = metrics_dataset(result, self._lr0(), self.seed, self.record(), extra_attrs=attrs)
        sp = self.spectra
        ev = np.array(sp["eigval"]).reshape(len(sp["hstep"]), -1) if sp["hstep"] else np.zeros((0, self.k))
        res = np.array(sp["residual"]).reshape(ev.shape)
        vsteps = sorted(self.ends)
        sd = spectra_dataset(sp["hstep"], ev, res, sp["iters"], [self.ends[s] for s in vsteps] if vsteps else None,
                             vsteps if vsteps else None)
        cube = build_cube(md, sd)
        cube.attrs.update(provenance("eosflow.SharpnessMonitor"))
        cube.attrs["config"] = json.dumps(self.record(), sort_keys=True, default=str)
        return cube

    def close(self, status: str | None = None) -> None:
        """End the run: write the cube to ``path`` (atomically) and close the progress bar.
        ``status``: ``"converged"``, ``"max_epochs"`` (default) or ``"diverged"`` (set by itself
        when a loss or the parameters went non-finite)."""
        if status is not None:
            if status not in ("converged", "max_epochs", "diverged"):
                raise ValueError(f"status: {status!r}; allowed: ['converged', 'max_epochs', 'diverged']")
            self.status = status
        if self._bar is not None:
            self._bar.close()
        if self.path is not None and self.t and not self.closed:
            from .cubes import write_netcdf
            write_netcdf(self.dataset(), self.path)
            log.info("monitor: %d steps, %d measurements written to %s", self.t, len(self.spectra["hstep"]), self.path)
        self.closed = True

    def __enter__(self) -> SharpnessMonitor:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return False

    # -- resume -------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything the rest of the run depends on (records, the warm start), on the CPU."""
        return {"t": self.t, "rows": copy.deepcopy(self.rows), "spectra": copy.deepcopy(self.spectra),
                "ends": dict(self.ends), "status": self.status, "tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.t, self.status = int(state["t"]), state["status"]
        self.rows, self.spectra = copy.deepcopy(state["rows"]), copy.deepcopy(state["spectra"])
        self.ends = dict(state["ends"])
        self.tracker.load_state_dict(state["tracker"], self.objective.device)
        self._cache = self._row_key = None
        if self._bar is not None:
            self._bar.update(self.t - self._bar.n)


class StabilityClamp:
    """Caps every parameter group's lr at ``c·τ/(λ̂·(1 + tol))`` before each optimizer step (module
    docstring): ``λ̂`` the top eigenvalue of ``H + wd`` (SGD, measured by ``monitor``, every step) or
    of ``P⁻¹(H + wd)`` (Adam, AdamW, RMSprop: :func:`preconditioned_sharpness`, warm-started), ``τ``
    :func:`clamp_threshold`, ``tol`` the monitor's. A scheduler in ``torch.optim.lr_scheduler``'s
    protocol (``step``, ``get_last_lr``, ``state_dict``, ``load_state_dict``), but called *before*
    ``optimizer.step()`` (after ``backward()``: the adaptive methods' next ``P`` needs the gradient).
    A hook puts the uncapped lr back after each optimizer step, so other schedulers compose: the
    clamp caps whatever they set.
    ``history``: per step the uncapped and capped lr, ``λ̂``, its residual and the products spent."""

    def __init__(self, optimizer, monitor: SharpnessMonitor, c: float = 0.95):
        if not 0 < float(c):
            raise ValueError(f"c: must be > 0, got {c}")
        self.kind = _kind(optimizer)
        self.optimizer, self.monitor, self.c, self.tol = optimizer, monitor, float(c), monitor.tol
        if monitor.optimizer is None:
            monitor.optimizer = optimizer
        _positions(monitor.objective, monitor.model, optimizer)
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self._uncapped, self._written = list(self.base_lrs), list(self.base_lrs)
        self._last_lr = list(self.base_lrs)
        self.last_epoch = 0
        self.history: list[dict] = []
        if self.kind == "SGD":
            monitor.tracker.warm_subspace = True  # measured at every step: period-two warm start
            self.tracker = None
        else:
            self.tracker = SpectrumTracker(k=1, tol=self.tol, max_iter=monitor.tracker.max_iter,
                                           seed=monitor.seed + 7919, n_guard=1, warm_subspace=True)
        monitor.clamp = self
        # after each optimizer step the groups get their uncapped lr back, so that a chainable
        # scheduler (StepLR, ExponentialLR, ...) stepping next scales the uncapped lr, not the cap
        self._hook = optimizer.register_step_post_hook(self._restore)

    def _restore(self, optimizer, args, kwargs) -> None:
        for i, g in enumerate(optimizer.param_groups):
            if g["lr"] == self._written[i]:
                g["lr"] = self._written[i] = self._uncapped[i]

    def _sharpness(self) -> EigResult:
        if self.kind == "SGD":
            return self.monitor.measure()
        m = self.monitor
        return preconditioned_sharpness(self.optimizer, m.model, objective=m.objective, tracker=self.tracker)

    def _decay(self, group: dict) -> float:
        return float(group.get("weight_decay", 0.0)) if self.kind == "SGD" else 0.0

    def step(self) -> list[float]:
        """Measure at the current parameters and set every group's lr; returns them."""
        res = self._sharpness()
        lam = float(res.eigvals[0])
        wd = max([self._decay(g) for g in self.optimizer.param_groups] + [0.0])
        lam_eff = lam + wd  # λ_max(H + diag(wd)) ≤ λ_max(H) + max wd (equal for one decay)
        for i, g in enumerate(self.optimizer.param_groups):
            if g["lr"] != self._written[i]:  # another scheduler set it since
                self._uncapped[i] = float(g["lr"])
            cap = self.c * clamp_threshold(self.optimizer, g) / (lam_eff * (1 + self.tol)) if lam_eff > 0 else math.inf
            g["lr"] = min(self._uncapped[i], cap)
            self._written[i] = g["lr"]
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]
        self.history.append({"step": self.monitor.t, "lr": self._last_lr[0], "lr_uncapped": self._uncapped[0],
                             "sharpness": lam, "residual": float(res.residuals[0]), "n_matvec": int(res.n_matvec)})
        self.last_epoch += 1
        self.monitor._clamped(_param_key(self.monitor.model), self._last_lr[0], self.history[-1])
        return self._last_lr

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    def state_dict(self) -> dict:
        return {"c": self.c, "tol": self.tol, "kind": self.kind, "base_lrs": list(self.base_lrs),
                "uncapped": list(self._uncapped), "written": list(self._written), "last_lr": list(self._last_lr),
                "last_epoch": self.last_epoch, "history": copy.deepcopy(self.history),
                "tracker": self.tracker.state_dict() if self.tracker is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if state["kind"] != self.kind:
            raise ValueError(f"clamp state of {state['kind']} cannot resume a clamp of {self.kind}")
        self.c, self.tol = float(state["c"]), float(state["tol"])
        self.base_lrs, self._uncapped = list(state["base_lrs"]), list(state["uncapped"])
        self._written, self._last_lr = list(state["written"]), list(state["last_lr"])
        self.last_epoch, self.history = int(state["last_epoch"]), copy.deepcopy(state["history"])
        if self.tracker is not None and state["tracker"] is not None:
            self.tracker.load_state_dict(state["tracker"], self.monitor.objective.device)
