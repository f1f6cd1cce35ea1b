"""Summaries of finished runs for the sweep figures: one row per run cube (no torch needed).

:func:`summarize_runs` writes the fig5 summary cube: setting, η, seed, status, accuracies,
sharpness at θ₀ and at the end, the stability limit ``η_eos = 2 / S(θ₀)`` of each run (as its
training job measured and recorded it, to 1e-6, where a relative grid placed η₀ by it; else from
the hessian rule's first measurement), its η₀ as a multiple of the limit when a relative grid
placed it (``lr_relative``; NaN otherwise), the rotation ``1 − ρ`` of its top-k eigenspace from
the first to the last measurement, and its measured stability (:mod:`eosflow.stability`).
"""

from __future__ import annotations

import json
import math

import numpy as np
import xarray as xr

from .cubes import open_cube
from .jobs.spec import LearningRate
from .similarity import rotation
from .stability import measured_stability

__all__ = ["STABILITY_DEFAULTS", "run_summary", "summarize_runs"]

#: The ``stability`` block's defaults (config/config.yaml documents them).
STABILITY_DEFAULTS = {"min_fraction": 0.05, "min_spikes": 1, "min_rise": 0.2}


def _last_finite(values) -> float:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v[-1]) if v.size else math.nan


def _rotation(cube: xr.Dataset) -> float:
    """1 − ρ between the first and the last stored eigenvectors (NaN without two of them)."""
    if "eigvec" not in cube or cube.sizes.get("vstep", 0) < 2:
        return math.nan
    v = cube["eigvec"].values
    if not (np.isfinite(v[0]).all() and np.isfinite(v[-1]).all()):
        return math.nan
    return rotation(v[0], v[-1])


def _eta_eos(cube: xr.Dataset, sharpness_init: float) -> float:
    """η_eos(θ₀) of a run: the limit its training job measured and recorded where it placed a relative
    η₀ by it (the run's record), else ``2 / S(θ₀)`` of the hessian rule's first measurement."""
    limit = LearningRate.from_record(json.loads(cube.attrs.get("config", "{}"))).limit(int(cube["seed"]))
    return float(limit) if limit is not None else float(np.float64(2.0) / sharpness_init)


def run_summary(cube: xr.Dataset, stability: dict | None = None) -> dict:
    """The numbers a sweep figure needs from one run cube. ``stability``: the config's
    ``stability`` block, for the run's measured stability (:func:`eosflow.stability.measured_stability`;
    default: its documented defaults)."""
    sharp = cube["sharpness"].values if "sharpness" in cube else np.array([])
    lr0 = float(cube["lr"])
    lr_step = cube["lr_step"].values if "lr_step" in cube else np.full(cube.sizes["step"], lr0)
    inloop = cube["sharpness_inloop"].values if "sharpness_inloop" in cube else np.full(lr_step.shape, np.nan)
    measured = measured_stability(cube["train_loss"].values, lr_step, inloop, cube.attrs["status"],
                                  **{**STABILITY_DEFAULTS, **(stability or {})})
    s0 = float(sharp[0]) if sharp.size and int(cube["hstep"][0]) == 0 else math.nan
    return {
        "lr": float(cube["lr"]), "seed": int(cube["seed"]), "status": cube.attrs["status"],
        "final_test_acc": _last_finite(cube["test_acc"].values),
        "final_train_acc": _last_finite(cube["train_acc"].values),
        "final_train_loss": _last_finite(cube["train_loss"].values),
        "sharpness_init": s0,
        "sharpness_final": _last_finite(sharp),
        "n_steps": int(cube["step"].values[-1]),
        "lr_relative": float(cube.attrs.get("lr_relative", math.nan)),
        "rotation": _rotation(cube),
        "stability": measured.pop("stability"),
        **measured,
        # the fraction of steps taken with η_t below η₀ (a clamped run's clamp binding; 0 for plain GD at
        # a constant η), beyond the float32 rounding of the stored step sizes
        "clamp_fraction": float(np.mean(lr_step.astype(float) < lr0 * (1 - 1e-6))) if lr_step.size else math.nan,
        "eta_eos": _eta_eos(cube, s0),
    }


def summarize_runs(paths_by_setting: dict[str, list], stability: dict | None = None) -> xr.Dataset:
    """One row (dim ``run``) per cube: setting, η, seed, status, accuracies, sharpness, η_eos,
    rotation 1 − ρ and measured stability (``stability``: the config's block)."""
    rows = []
    for setting, paths in paths_by_setting.items():
        for p in paths:
            row = run_summary(open_cube(p), stability)
            row["setting"] = setting
            rows.append(row)
    if not rows:  # a group with no runs (e.g. no map cell with clamped twins)
        return xr.Dataset(coords={"lr": ("run", np.zeros(0)), "seed": ("run", np.zeros(0, dtype=int)),
                                  "setting": ("run", np.array([], dtype=str))},
                          attrs={"Conventions": "CF-1.12", "description": "no runs"})
    ds = xr.Dataset({k: ("run", np.array([r[k] for r in rows])) for k in rows[0]
                     if k not in ("lr", "seed", "setting", "eta_eos")},
                    coords={"lr": ("run", [r["lr"] for r in rows]), "seed": ("run", [r["seed"] for r in rows]),
                            "setting": ("run", [r["setting"] for r in rows])})
    # η_eos per setting and seed (identical across η for a seed: same initialisation)
    ds["eta_eos"] = ("run", np.array([r["eta_eos"] for r in rows]))
    ds["eta_eos"].attrs.update(long_name="stability limit 2 / S(theta_0)", units="1")
    ds.attrs.update(Conventions="CF-1.12", description="one row per run cube of the sweep")
    return ds
