"""The slices rules (fig3, fig12): 1-D slices of the loss landscape along the gradient direction.

At a gradient-descent step ``θ_t = θ_{t−1} − η ∇L(θ_{t−1})`` both the previous and the current
parameters lie on the line ``θ_{t−1} + α d`` with the normalised descent direction
``d = −∇L(θ_{t−1}) / ‖∇L(θ_{t−1})‖``: the previous at ``α = 0``, the current at the step length
``α = s = η ‖∇L(θ_{t−1})‖``. :func:`gradient_slice` evaluates ``L(θ)`` and ``S(θ)`` (top Hessian
eigenvalue by Lanczos, warm-started from point to point in order of ``α``) on an evenly spaced grid
of offsets centred between the two points, and at the two points themselves (returned
separately: ``*_prev`` at ``α = 0``, ``*_cur`` at ``α = s``; the grid need not contain them).
The current point is evaluated at ``θ_{t−1} − η∇L(θ_{t−1})`` exactly, as GD computes it.

:func:`run_slices` does this at several snapshots of a run (the fig2 run) and writes one NetCDF
file with dims ``(snapshot, point)`` (the snapshots of one instability are chosen by
:func:`eosflow.plans.snapshot_steps`).
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from ..cubes import provenance, write_netcdf
from ..data import load_prepared
from ..files import load_torch
from ..spectral import SpectrumTracker
from .run import build_objective, progress_bar
from .spec import RunSpec

log = logging.getLogger(__name__)

__all__ = ["gradient_slice", "slices_dataset", "run_slices", "slice_offsets"]

#: per-snapshot scalars of a slice (besides ``step``), as stored in the NetCDF file
SNAPSHOT_VARS = ("step_length", "grad_norm", "loss_prev", "loss_cur", "sharpness_prev", "sharpness_cur",
                 "residual_prev", "residual_cur", "step_mismatch")
#: per-point arrays of a slice
POINT_VARS = ("alpha", "loss", "sharpness", "residual")

_ATTRS = {
    "alpha": ("offset along d = -grad L(theta_prev) / ||grad L(theta_prev)|| from theta_prev", "1"),
    "loss": ("training loss L(theta) on the slice", "1"),
    "sharpness": ("sharpness S(theta) on the slice: largest Hessian eigenvalue (Lanczos)", "1"),
    "residual": ("relative residual ||H v - S v|| / |S| of the top eigenpair", "1"),
    "step_length": ("GD step length s = lr ||grad L(theta_prev)||: the current parameters are at alpha = s", "1"),
    "grad_norm": ("gradient norm ||grad L(theta_prev)||", "1"),
    "loss_prev": ("L at the previous parameters theta_{t-1} (alpha = 0)", "1"),
    "loss_cur": ("L at the current parameters theta_t = theta_{t-1} - lr grad L (alpha = s)", "1"),
    "sharpness_prev": ("S at the previous parameters (alpha = 0)", "1"),
    "sharpness_cur": ("S at the current parameters (alpha = s)", "1"),
    "residual_prev": ("Lanczos relative residual at the previous parameters", "1"),
    "residual_cur": ("Lanczos relative residual at the current parameters", "1"),
    "step_mismatch": ("||theta_{t-1} - lr grad L - theta_t(snapshot)|| / ||theta_t(snapshot) - theta_{t-1}||: "
                      "whether the slice's step reproduces the run's (NaN: not checked)", "1"),
}


def slice_offsets(step_length: float, points: int = 41, span: float = 1.5) -> np.ndarray:
    """The grid ``linspace(s/2 − span·s, s/2 + span·s, points)`` of offsets along the direction."""
    if points < 2:
        raise ValueError(f"points must be ≥ 2, got {points}")
    if not span > 0:
        raise ValueError(f"span must be > 0, got {span}")
    s = float(step_length)
    return np.linspace(s / 2 - span * s, s / 2 + span * s, int(points))


def gradient_slice(objective, theta_prev: Tensor, lr: float, *, points: int = 41, span: float = 1.5,
                   tol: float = 1e-3, max_iter: int = 100, seed: int = 0, progress=False,
                   desc: str = "slice") -> dict:
    """``L`` and ``S`` along the normalised negative gradient through ``theta_prev``.

    ``objective`` needs ``loss_grad(theta) -> (L, ∇L)``, ``loss(theta)`` and what
    :class:`~eosflow.spectral.SpectrumTracker` uses (``hvp``, ``hvp_batch``, ``dim``). The grid is
    :func:`slice_offsets`; the previous (``α = 0``) and current (``α = s``) points are evaluated too,
    inside the same ordered sweep (so the Lanczos warm start runs through them), and returned
    separately. A point whose loss is not finite gets ``S = NaN`` and restarts the warm start.

    Returns a dict: ``alpha``, ``loss``, ``sharpness``, ``residual`` (numpy ``(points,)`` float64),
    ``step_length`` s, ``grad_norm``, ``loss_prev``, ``loss_cur``, ``sharpness_prev``,
    ``sharpness_cur``, ``residual_prev``, ``residual_cur`` (floats), ``lanczos_iters`` (numpy, per
    grid point) and ``theta_cur`` (the tensor ``theta_prev − lr ∇L(theta_prev)``).
    Raises ``ValueError`` when the gradient at ``theta_prev`` is zero or not finite (no direction).
    """
    theta_prev = theta_prev.detach()
    loss_prev, g = objective.loss_grad(theta_prev)
    g = g.detach()
    gnorm = float(torch.linalg.vector_norm(g))
    if not math.isfinite(gnorm) or gnorm == 0.0:
        raise ValueError(f"gradient norm at theta_prev is {gnorm}: the gradient direction is undefined")
    d = -g / gnorm
    lr = float(lr)
    s = lr * gnorm
    theta_cur = theta_prev - lr * g
    grid = slice_offsets(s, points, span)
    # the sweep: grid points and the two marked points, in order of alpha (ties: marked first)
    order = sorted([(float(a), 1, i) for i, a in enumerate(grid)] + [(0.0, 0, -1), (s, 0, -2)])
    tracker = SpectrumTracker(k=1, tol=tol, max_iter=max_iter, seed=seed)
    n = len(grid)
    out = {name: np.full(n, np.nan) for name in ("loss", "sharpness", "residual")}
    iters = np.zeros(n, dtype=np.int64)
    marked = {}
    for a, _, i in progress_bar(order, progress, desc):
        theta = theta_prev if i == -1 else theta_cur if i == -2 else theta_prev + a * d
        L = float(loss_prev) if i == -1 else float(objective.loss(theta))
        S, r, it = math.nan, math.nan, 0
        if math.isfinite(L):
            res = tracker.measure(objective, theta)
            S, r, it = float(res.eigvals[0]), float(res.residuals[0]), int(res.iterations)
        if not math.isfinite(S):
            tracker.reset()
        if i < 0:
            marked[i] = (L, S, r)
        else:
            out["loss"][i], out["sharpness"][i], out["residual"][i], iters[i] = L, S, r, it
    (lp, sp, rp), (lc, sc, rc) = marked[-1], marked[-2]
    return {"alpha": grid, **out, "lanczos_iters": iters, "step_length": s, "grad_norm": gnorm,
            "loss_prev": lp, "loss_cur": lc, "sharpness_prev": sp, "sharpness_cur": sc,
            "residual_prev": rp, "residual_cur": rc, "theta_cur": theta_cur}


def slices_dataset(slices: list[dict], steps, lr: float, setting: str = "", config: dict | None = None,
                   made_by: str = "rule fig3_slices") -> xr.Dataset:
    """One dataset from the slices of :func:`gradient_slice` (one per step): dims ``(snapshot, point)``,
    coordinate ``step`` (dim ``snapshot``), the per-point arrays and per-snapshot scalars, attributes
    ``lr``, ``setting``, ``config`` (JSON) and provenance."""
    steps = [int(t) for t in steps]
    if len(slices) != len(steps):
        raise ValueError(f"{len(slices)} slices for {len(steps)} steps")
    if not slices:
        raise ValueError("no slices")
    points = {len(sl["alpha"]) for sl in slices}
    if len(points) != 1:
        raise ValueError(f"slices differ in their number of points: {sorted(points)}")
    data = {}
    for name in POINT_VARS:
        data[name] = (("snapshot", "point"), np.stack([np.asarray(sl[name], dtype=np.float64) for sl in slices]))
    for name in SNAPSHOT_VARS:
        data[name] = ("snapshot", np.array([float(sl.get(name, math.nan)) for sl in slices], dtype=np.float64))
    ds = xr.Dataset(data, coords={"step": ("snapshot", np.array(steps, dtype=np.int64))})
    for name, (long_name, units) in _ATTRS.items():
        ds[name].attrs.update(long_name=long_name, units=units)
    ds["step"].attrs.update(long_name="GD step t of the current parameters (the slice starts at t - 1)")
    ds.attrs.update(provenance(made_by))
    ds.attrs.update(lr=float(lr), setting=str(setting),
                    config=json.dumps(config or {}, sort_keys=True, default=str),
                    description="1-D slices of L and S along the normalised negative gradient at theta_{t-1}")
    return ds


def _snapshot_index(steps: list[int], t: int, path) -> int:
    if t not in steps:
        raise ValueError(f"snapshots file {path} has no step {t} (it holds {len(steps)} steps: "
                         f"{steps[:3]}...{steps[-3:]}); fig3 needs the run's snapshot at every epoch "
                         "(train.snapshot_every: 1)")
    return steps.index(t)


def run_slices(cfg: dict, setting: str, data_path, snapshots_path, steps: list[int], lr: float, out_nc,
               fig3cfg: dict, *, seed: int, progress=True, block: str = "fig3") -> xr.Dataset:
    """Slices at the given steps of a run → one NetCDF file (see :func:`slices_dataset`).

    For each ``t`` in ``steps`` (each ≥ 1) the slice starts at the snapshot of ``t − 1`` with
    ``η = lr`` (the run's constant learning rate); when the snapshot of ``t`` exists too, the
    relative mismatch between it and ``θ_{t−1} − η∇L(θ_{t−1})`` is stored (``step_mismatch``).
    ``cfg``: the whole validated config (the setting, ``train.dtype``, ``hessian.tol`` and
    ``max_iter``, ``device``); ``seed``: the run's seed (builds the same network structure);
    ``fig3cfg``: ``points``, ``span`` (``snapshots`` and ``instability`` only go to the record);
    ``block``: the figure whose config block ``fig3cfg`` is (``fig3`` or ``fig12``): its record key
    and the ``made_by`` of the file (rule ``{block}_slices``).
    The objective is the full training set of the setting, the loss GD trained on.
    """
    steps = [int(t) for t in steps]
    if not steps:
        raise ValueError("run_slices: no steps given")
    bad = [t for t in steps if t < 1]
    if bad:
        raise ValueError(f"run_slices: steps must be ≥ 1 (the slice starts at t - 1), got {bad}")
    hc = cfg["hessian"]
    points, span = int(fig3cfg.get("points", 41)), float(fig3cfg.get("span", 1.5))
    spec = RunSpec.from_settings(cfg, setting, float(lr), int(seed))
    obj = build_objective(spec, load_prepared(data_path))
    device, dtype = obj.device, obj.dtype
    snaps = load_torch(snapshots_path, "run snapshots", map_location=device)
    snap_steps, thetas = [int(t) for t in snaps["steps"].tolist()], snaps["theta"]
    idx_prev = [_snapshot_index(snap_steps, t - 1, snapshots_path) for t in steps]
    log.info("fig3 slices of %s (lr=%g, seed=%d) at steps %s: %d points, span %g step lengths, %d parameters",
             setting, lr, seed, steps, points, span, obj.dim)
    slices = []
    for t, i in zip(progress_bar(steps, progress, f"fig3 slices {setting}"), idx_prev):
        theta_prev = thetas[i].to(device, dtype)
        sl = gradient_slice(obj, theta_prev, lr, points=points, span=span, tol=hc["tol"],
                            max_iter=hc["max_iter"], seed=int(seed))
        sl["step_mismatch"] = math.nan
        if t in snap_steps:
            theta_t = thetas[snap_steps.index(t)].to(device, dtype)
            moved = float(torch.linalg.vector_norm(theta_t - theta_prev))
            diff = float(torch.linalg.vector_norm(sl["theta_cur"] - theta_t))
            sl["step_mismatch"] = diff / moved if moved > 0 else (0.0 if diff == 0 else math.inf)
            if not sl["step_mismatch"] <= 1e-3:
                log.warning("step %d: the slice's GD step differs from the run's snapshot by %.3g (relative); "
                            "was the run trained with another lr, schedule or objective?", t, sl["step_mismatch"])
        log.info("step %d: s=%.4g, L prev/cur %.5g/%.5g, S prev/cur %.5g/%.5g (2/lr=%.5g), max residual %.2g, "
                 "step mismatch %.2g", t, sl["step_length"], sl["loss_prev"], sl["loss_cur"], sl["sharpness_prev"],
                 sl["sharpness_cur"], 2 / lr, np.nanmax(np.r_[sl["residual"], sl["residual_prev"], sl["residual_cur"]]),
                 sl["step_mismatch"])
        slices.append(sl)
    record = {**spec.base_record(), "hessian": {"tol": hc["tol"], "max_iter": hc["max_iter"]}}
    record[block] = dict(fig3cfg)
    record["steps"] = steps
    ds = slices_dataset(slices, steps, lr, setting, record, made_by=f"rule {block}_slices")
    write_netcdf(ds, out_nc, float32=False)
    return ds
