"""What one run is, from the validated config: its objective, its training configuration, its
in-loop sharpness, and the record stored with its results.

:func:`build_objective` is the one place a run's network and data become an
:class:`~eosflow.objective.Objective` (the train, group, hessian and slice jobs all call it).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .config import tracks_sharpness
from .device import resolve_device
from .models import build_model
from .objective import Objective
from .spectral import SpectrumTracker, top_eigenpairs
from .training import TrainConfig

__all__ = ["build_objective", "train_config", "inloop_sharpness", "InloopSharpness", "run_record", "eta_eos_at_init",
           "relative_lr",
           "UNIT_TOL"]

#: Relative residual to which S(θ₀) is computed when it sets η₀ (a relative grid's unit), and
#: the most Hessian-vector products spent on it.
UNIT_TOL = 1e-6
UNIT_MAX_ITER = 1000
log = logging.getLogger(__name__)


def build_objective(cfg: dict, setting: str, data: dict, seed: int, *, n: int | None = None,
                    chunk_size: int | None = None, device=None) -> Objective:
    """The objective of ``setting``'s network, initialised with ``seed``, on the prepared ``data``
    (:func:`eosflow.data.load_prepared`): its first ``n`` training examples (None: all), in chunks
    of ``chunk_size`` (None: the setting's), on ``device`` (None: the config's ``device``) in the
    config's ``train.dtype``. ``objective.flatten()`` is the run's θ₀."""
    s = cfg["settings"][setting]
    device = resolve_device(cfg["device"]) if device is None else device
    dtype = getattr(torch, cfg["train"]["dtype"])
    x, y = data["x_train"], data["y_train"]
    if n is not None:
        x, y = x[:n], y[:n]
    model = build_model(s["model"], tuple(x.shape[1:]), int(data["n_classes"]), seed,
                        perturb=cfg.get("perturb_theta0", 0.0)).to(device, dtype)
    return Objective(model, x.to(device, dtype), y.to(device), s["loss"], chunk_size or s["chunk_size"])


def eta_eos_at_init(cfg: dict, setting: str, data: dict, seed: int) -> float:
    """``2 / S(θ₀)`` of ``setting``'s network initialised with ``seed``, on the loss GD trains on
    (the setting's training subset and chunks), with S to relative residual :data:`UNIT_TOL`."""
    obj = build_objective(cfg, setting, data, seed)
    res = top_eigenpairs(obj, obj.flatten(), 1, tol=UNIT_TOL, max_iter=UNIT_MAX_ITER)
    if not res.converged:
        log.warning("S(theta_0) of %s seed %d: residual %.2g after %d products (asked %g)", setting, seed,
                    float(res.residuals[0]), res.n_matvec, UNIT_TOL)
    return 2.0 / float(res.eigvals[0])


def relative_lr(cfg: dict, setting: str, data: dict, seed: int, ratio: float, unit: str,
                seeds: list[int], cache: dict | None = None) -> tuple[float, dict]:
    """η₀ of a run named by its multiple ``ratio`` of the stability limit, and what to record:
    ``unit`` ``"seed"``: the run's own seed's ``η_eos(θ₀)``; ``"median"``: the median over
    ``seeds`` (every seed's ``θ₀`` is measured). Returns ``(η₀, record)``. ``cache``: a dict
    that keeps each seed's limit between calls (a group of runs measures each seed once)."""
    if unit not in ("seed", "median"):
        raise ValueError(f"unknown lr unit {unit!r}; allowed: ['seed', 'median']")
    cache = {} if cache is None else cache
    over = [int(seed)] if unit == "seed" else [int(s) for s in seeds]
    for s in over:
        if s not in cache:
            cache[s] = eta_eos_at_init(cfg, setting, data, s)
    limits = {s: cache[s] for s in over}
    value = limits[int(seed)] if unit == "seed" else float(np.median(list(limits.values())))
    record = {"lr_relative": float(ratio), "lr_unit": unit, "eta_eos_unit": value,
              "eta_eos_by_seed": {str(s): v for s, v in limits.items()}}
    return float(ratio) * value, record


def train_config(cfg: dict, lr: float, schedule: dict | None, seed: int = 0) -> TrainConfig:
    """The :class:`~eosflow.training.TrainConfig` of one run from the config's ``train`` block;
    ``seed`` (the run's) fixes a minibatch optimizer's data order."""
    return TrainConfig(lr=float(lr), schedule=schedule, order_seed=int(seed),
                       **{k: v for k, v in cfg["train"].items() if k != "dtype"})


def inloop_sharpness(cfg: dict, objective: Objective) -> InloopSharpness | None:
    """``θ ↦ S(θ)`` for ``train.sharpness_every`` and ``train.clamp`` (:class:`InloopSharpness`):
    to the ``hessian`` block's ``tol`` (a clamped run: ``train.clamp_tol``) and ``max_iter``; None
    when the config asks for no in-loop sharpness."""
    t = cfg["train"]
    if not tracks_sharpness(t):
        return None
    clamped = t.get("clamp") is not None
    return InloopSharpness(objective, t["clamp_tol"] if clamped else cfg["hessian"]["tol"],
                           cfg["hessian"]["max_iter"], clamped)


class InloopSharpness:
    """A run's in-loop sharpness: ``S(θ)``, the top Hessian eigenvalue of ``objective`` to relative
    residual ``tol``, warm-started from the span of the two previous measurements' eigenvectors and
    one guard vector (:class:`~eosflow.spectral.SpectrumTracker` with ``warm_subspace``). Its warm start is part of the run's
    checkpoint (:meth:`state_dict`), so a resumed run measures, and a clamped one steps, exactly as
    an uninterrupted one. A clamped run's measurement that stops short of ``tol`` is logged: its
    clamp bound then rests on a looser estimate."""

    def __init__(self, objective: Objective, tol: float, max_iter: int, clamped: bool = False):
        self.objective, self.tol, self.clamped = objective, tol, clamped
        self.tracker = SpectrumTracker(k=1, tol=tol, max_iter=max_iter, n_guard=1, warm_subspace=True)
        self.last = None  # the latest measurement's EigResult (costs, residual, product)

    def __call__(self, theta) -> float:
        res = self.last = self.tracker.measure(self.objective, theta)
        if self.clamped and not res.converged:
            log.warning("clamp: S(theta) measurement %d stopped at residual %.2g (asked %g) after %d products",
                        self.tracker.n_measured, float(res.residuals[0]), self.tol, res.n_matvec)
        return float(res.eigvals[0])

    def state_dict(self) -> dict:
        return self.tracker.state_dict()

    def load_state_dict(self, state: dict, device=None) -> None:
        self.tracker.load_state_dict(state, device)


def run_record(cfg: dict, setting: str, lr: float, seed: int, schedule: dict | None) -> dict:
    """What a run depends on, stored as the cube's ``config`` attribute (JSON); the hessian rule
    adds its ``hessian`` block. A run that tracks its sharpness in the loop also records the
    tracker's ``tol`` and ``max_iter`` (``inloop_sharpness``)."""
    record = {"setting": setting, **cfg["settings"][setting], "lr": float(lr), "seed": int(seed),
              "schedule": schedule or {"kind": "constant"}, "train": cfg["train"], "device": cfg["device"]}
    if cfg.get("perturb_theta0"):
        record["perturb_theta0"] = float(cfg["perturb_theta0"])
    if tracks_sharpness(cfg["train"]):
        record["inloop_sharpness"] = {k: cfg["hessian"][k] for k in ("tol", "max_iter")}
        if cfg["train"].get("clamp") is not None:
            record["inloop_sharpness"].update(every=1, tol=cfg["train"]["clamp_tol"])
    return record
