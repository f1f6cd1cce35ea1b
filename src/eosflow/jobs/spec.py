"""What one run is: :class:`RunSpec`, built once from the config and the run's wildcards
(:func:`run_spec`, :func:`optimizer_run_spec`), handed to its jobs as its record, stored in its
cube as the ``config`` attribute (JSON) and read back from there by the jobs that come after
(:meth:`RunSpec.from_record`). No torch: the workflow builds specs while it parses the Snakefile.

A run's record is exactly :meth:`RunSpec.record`: the setting's keys (``dataset``, ``model``,
``loss``, ...), ``lr`` (η₀), ``seed``, ``schedule``, ``train``, ``device``; ``inloop_sharpness``
(``tol``, ``max_iter`` and, clamped, ``every: 1``) when the run measures S(θ) in its loop;
``relative`` (``lr_relative``, ``lr_unit``, ``eta_eos_unit``, ``eta_eos_by_seed``) when η₀ is a
multiple of the stability limit; ``hessian`` once its spectra are measured; ``figure`` and
``optimizer_tag`` for the optimizer runs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np

from ..config.experiments import relative_unit, run_settings, tracks_sharpness
from ..config.optimizers import optimizer_run_config
from ..config.tags import parse_lr_tag, schedule_from_tag

__all__ = ["UNITS", "LearningRate", "InloopSpec", "RunSpec", "run_spec", "optimizer_run_spec"]

#: The units of a relative η₀: the run's own seed's η_eos(θ₀), or the median over several seeds'.
UNITS = ("seed", "median")
#: The record's keys that are not the setting's (what is left of a record is the setting's data keys).
_RUN_KEYS = ("setting", "model", "loss", "lr", "seed", "schedule", "train", "device", "inloop_sharpness",
             "relative", "hessian", "figure", "optimizer_tag", "perturb_theta0")


def _frozen(block: Mapping) -> Mapping:
    """A read-only copy of a config block."""
    return MappingProxyType(copy.deepcopy(dict(block)))


def _plain(block: Mapping) -> dict:
    """A config block as a plain (JSON-ready) dict."""
    return copy.deepcopy(dict(block))


@dataclass(frozen=True)
class LearningRate:
    """η₀ of a run. Absolute: ``value``. Relative: ``multiple`` × the stability limit η_eos(θ₀) in
    ``unit`` ``seed`` (the run's own seed's) or ``median`` (the median over the seeds of ``limits``).
    ``limits`` maps those seeds to their η_eos(θ₀): None until the training job measures them and
    places η₀ (:meth:`place`); then ``eta_eos`` is the unit's limit and ``value`` = ``multiple`` ×
    ``eta_eos``, computed there once and read from the record ever after."""

    value: float | None
    multiple: float | None = None
    unit: str | None = None
    eta_eos: float | None = None
    limits: Mapping[int, float | None] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def relative(cls, multiple, unit: str, seeds) -> LearningRate:
        """``multiple`` × η_eos(θ₀) in ``unit`` over ``seeds`` (``seed``: the run's own seed alone)."""
        if unit not in UNITS:
            raise ValueError(f"unknown lr unit {unit!r}; allowed: {list(UNITS)}")
        return cls(None, float(multiple), unit, None, MappingProxyType({int(s): None for s in seeds}))

    @classmethod
    def from_tag(cls, tag: str, unit: str | None = None, seeds=()) -> LearningRate:
        """η₀ as its path name writes it (:func:`eosflow.config.tags.lr_tag`, ``relative_tag``)."""
        value, relative = parse_lr_tag(tag)
        if not relative:
            return cls(value)
        if unit is None:
            raise ValueError(f"lr{tag} is a multiple of the stability limit, but no unit was given")
        return cls.relative(value, unit, seeds)

    @property
    def is_relative(self) -> bool:
        return self.multiple is not None

    def place(self, limits: Mapping[int, float]) -> LearningRate:
        """This η₀ placed by the measured ``limits`` (η_eos(θ₀) of at least this unit's seeds)."""
        measured = {s: float(limits[s]) for s in self.limits}
        eta = next(iter(measured.values())) if self.unit == "seed" else float(np.median(list(measured.values())))
        return LearningRate(float(self.multiple) * eta, self.multiple, self.unit, eta, MappingProxyType(measured))

    def limit(self, seed) -> float | None:
        """η_eos(θ₀) of ``seed`` as the training job measured it (None: not measured)."""
        return self.limits.get(int(seed))

    def record(self) -> dict:
        """The ``relative`` entry of the run's record (for a relative η₀)."""
        return {"lr_relative": self.multiple, "lr_unit": self.unit, "eta_eos_unit": self.eta_eos,
                "eta_eos_by_seed": {str(s): v for s, v in self.limits.items()}}

    @classmethod
    def from_record(cls, record: Mapping) -> LearningRate:
        """η₀ of a run's record (:meth:`RunSpec.record`)."""
        rel = record.get("relative")
        if rel is None:
            return cls(record.get("lr"))
        limits = MappingProxyType({int(s): v for s, v in rel["eta_eos_by_seed"].items()})
        return cls(record.get("lr"), rel["lr_relative"], rel["lr_unit"], rel["eta_eos_unit"], limits)


@dataclass(frozen=True)
class InloopSpec:
    """A run's in-loop sharpness S(θ): to relative residual ``tol`` in at most ``max_iter`` products,
    every ``train.sharpness_every`` epochs, or at every step under a stability clamp (``clamped``:
    then to ``train.clamp_tol``, full solves as ``train.clamp_margin`` allows; otherwise to the
    ``hessian`` block's ``tol``)."""

    tol: float
    max_iter: int
    clamped: bool = False
    margin: float = 0.0

    @classmethod
    def of(cls, train: Mapping, hessian: Mapping) -> InloopSpec | None:
        """What a run with these blocks measures in its loop; None when it measures nothing."""
        if not tracks_sharpness(train):
            return None
        clamped = train.get("clamp") is not None
        return cls(train["clamp_tol"] if clamped else hessian["tol"], hessian["max_iter"], clamped,
                   float(train.get("clamp_margin", 0.0)) if clamped else 0.0)

    def record(self) -> dict:
        return {"tol": self.tol, "max_iter": self.max_iter,
                **({"every": 1, "margin": self.margin} if self.clamped else {})}

    @classmethod
    def from_record(cls, record: Mapping) -> InloopSpec:
        return cls(record["tol"], record["max_iter"], record.get("every") == 1, float(record.get("margin", 0.0)))


@dataclass(frozen=True)
class RunSpec:
    """One run: its setting (``model``, ``loss``, ``data``: the setting's other keys), ``seed``, η₀
    (``lr``), ``schedule``, the ``train`` block, ``device``, its in-loop sharpness (``inloop``), and,
    once measured, the ``hessian`` block of its spectra; ``perturb``: the relative perturbation of its
    θ₀ (the config's ``perturb_theta0``; recorded only when set). Blocks are read-only."""

    setting: str
    model: Mapping
    loss: str | Mapping
    data: Mapping
    seed: int
    lr: LearningRate
    schedule: Mapping
    train: Mapping
    device: str
    inloop: InloopSpec | None
    hessian: Mapping | None = None
    figure: str | None = None
    optimizer_tag: str | None = None
    perturb: float = 0.0

    @classmethod
    def from_settings(cls, cfg: Mapping, setting: str, lr, seed: int, schedule: Mapping | None = None) -> RunSpec:
        """A run of ``setting`` under ``cfg``: a validated config, or :func:`eosflow.config.run_settings`'
        part of one (``device``, ``settings``, ``train``, ``hessian``). ``lr``: η₀ (a number) or a
        :class:`LearningRate`; ``schedule``: None for a constant η."""
        s = dict(cfg["settings"][setting])
        model, loss = s.pop("model"), s.pop("loss")
        loss = loss if isinstance(loss, str) else _frozen(loss)
        lr = lr if isinstance(lr, LearningRate) else LearningRate(float(lr))
        return cls(setting, _frozen(model), loss, _frozen(s), int(seed), lr, _frozen(schedule or {"kind": "constant"}),
                   _frozen(cfg["train"]), cfg["device"], InloopSpec.of(cfg["train"], cfg["hessian"]),
                   perturb=float(cfg.get("perturb_theta0") or 0.0))

    @property
    def clamp(self) -> float | None:
        """The stability clamp of the ``train`` block (None: plain GD)."""
        return self.train.get("clamp")

    def with_hessian(self, hessian: Mapping) -> RunSpec:
        """This run with the ``hessian`` block its spectra are measured with."""
        return replace(self, hessian=_frozen(hessian))

    def with_seed(self, seed: int) -> RunSpec:
        """The same run from another initialisation."""
        return replace(self, seed=int(seed))

    def placed(self, limits: Mapping[int, float]) -> RunSpec:
        """This run with its relative η₀ placed by the measured stability ``limits``."""
        return replace(self, lr=self.lr.place(limits))

    def base_record(self) -> dict:
        """The network, data and training of the run: the setting's keys, η₀, seed, train block, device."""
        return {"setting": self.setting, **_plain(self.data), "model": _plain(self.model),
                "loss": self.loss if isinstance(self.loss, str) else _plain(self.loss),
                "lr": self.lr.value, "seed": self.seed, "train": _plain(self.train), "device": self.device}

    def record(self) -> dict:
        """The run's record (see the module docstring): what is needed to rerun it."""
        out = {**self.base_record(), "schedule": _plain(self.schedule)}
        if self.inloop is not None:
            out["inloop_sharpness"] = self.inloop.record()
        if self.lr.is_relative:
            out["relative"] = self.lr.record()
        if self.hessian is not None:
            out["hessian"] = _plain(self.hessian)
        out.update({k: getattr(self, k) for k in ("figure", "optimizer_tag") if getattr(self, k) is not None})
        if self.perturb:
            out["perturb_theta0"] = self.perturb
        return out

    @classmethod
    def from_record(cls, record: Mapping) -> RunSpec:
        """The run a record describes (the inverse of :meth:`record`)."""
        r = record
        data = {k: v for k, v in r.items() if k not in _RUN_KEYS}
        inloop = InloopSpec.from_record(r["inloop_sharpness"]) if "inloop_sharpness" in r else None
        hessian = _frozen(r["hessian"]) if "hessian" in r else None
        loss = r["loss"] if isinstance(r["loss"], str) else _frozen(r["loss"])
        return cls(r["setting"], _frozen(r["model"]), loss, _frozen(data), int(r["seed"]),
                   LearningRate.from_record(r), _frozen(r.get("schedule") or {"kind": "constant"}), _frozen(r["train"]),
                   r["device"], inloop, hessian, r.get("figure"), r.get("optimizer_tag"),
                   float(r.get("perturb_theta0", 0.0)))


def run_spec(cfg: dict, exp: str, setting: str, lr: str, seed, sched: str = "const") -> RunSpec:
    """The run at ``results/runs/{exp}/{setting}/{sched}/lr{lr}/seed{seed}`` (its wildcards: ``lr``
    and ``sched`` are path tags) under the validated config ``cfg``; a relative ``lr`` takes its
    group's unit (:func:`eosflow.config.experiments.relative_unit`). Without its ``hessian`` block:
    that is the hessian job's."""
    schedule = schedule_from_tag(sched)
    unit, seeds = relative_unit(cfg, exp) if parse_lr_tag(lr)[1] else (None, ())
    eta = LearningRate.from_tag(lr, unit, [seed] if unit == "seed" else seeds)
    return RunSpec.from_settings(run_settings(cfg, exp, setting, schedule), setting, eta, seed, schedule)


def optimizer_run_spec(cfg: dict, fig: str, setting: str, opt: str, lr: str, seed) -> RunSpec:
    """The optimizer run at ``results/runs/{fig}/{setting}/{opt}/lr{lr}/seed{seed}`` (``opt``: an
    optimizer tag), with the ``hessian`` block its job measures with."""
    blocks = optimizer_run_config(cfg, fig, setting, opt)
    spec = RunSpec.from_settings(blocks, setting, LearningRate.from_tag(lr), seed)
    return replace(spec.with_hessian(blocks["hessian"]), figure=fig, optimizer_tag=opt)
