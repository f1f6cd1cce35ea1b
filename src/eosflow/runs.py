"""What one run is, from the validated config: its objective, its training configuration, its
in-loop sharpness, and the record stored with its results.

:func:`build_objective` is the one place a run's network and data become an
:class:`~eosflow.objective.Objective` (the train, group, hessian and slice jobs all call it).
"""

from __future__ import annotations

import torch

from .device import resolve_device
from .models import build_model
from .objective import Objective
from .spectral import SpectrumTracker
from .training import TrainConfig

__all__ = ["build_objective", "train_config", "inloop_sharpness", "run_record"]


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
    model = build_model(s["model"], tuple(x.shape[1:]), int(data["n_classes"]), seed).to(device, dtype)
    return Objective(model, x.to(device, dtype), y.to(device), s["loss"], chunk_size or s["chunk_size"])


def train_config(cfg: dict, lr: float, schedule: dict | None) -> TrainConfig:
    """The :class:`~eosflow.training.TrainConfig` of one run from the config's ``train`` block."""
    return TrainConfig(lr=float(lr), schedule=schedule, **{k: v for k, v in cfg["train"].items() if k != "dtype"})


def inloop_sharpness(cfg: dict, objective: Objective):
    """``θ ↦ S(θ)`` for ``train.sharpness_every``: the top Hessian eigenvalue, warm-started from the
    previous measurement, to the ``hessian`` block's ``tol`` and ``max_iter``; None when the config
    asks for no in-loop sharpness."""
    if not cfg["train"]["sharpness_every"]:
        return None
    tracker = SpectrumTracker(k=1, tol=cfg["hessian"]["tol"], max_iter=cfg["hessian"]["max_iter"])
    return lambda theta: float(tracker.measure(objective, theta).eigvals[0])


def run_record(cfg: dict, setting: str, lr: float, seed: int, schedule: dict | None) -> dict:
    """What a run depends on, stored as the cube's ``config`` attribute (JSON); the hessian rule
    adds its ``hessian`` block. A run that tracks its sharpness in the loop also records the
    tracker's ``tol`` and ``max_iter`` (``inloop_sharpness``)."""
    record = {"setting": setting, **cfg["settings"][setting], "lr": float(lr), "seed": int(seed),
              "schedule": schedule or {"kind": "constant"}, "train": cfg["train"], "device": cfg["device"]}
    if cfg["train"]["sharpness_every"]:
        record["inloop_sharpness"] = {k: cfg["hessian"][k] for k in ("tol", "max_iter")}
    return record
