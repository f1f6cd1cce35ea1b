"""Summaries of finished runs for the sweep figures: one row per run cube (no torch needed).

:func:`summarize_runs` writes the fig5 summary cube: setting, η, seed, status, accuracies,
sharpness at θ₀ and at the end, the stability limit ``η_eos = 2 / S(θ₀)`` of each run, and its
η₀ as a multiple of the limit when a relative grid placed it (``lr_relative``; NaN otherwise).
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from .cubes import open_cube

__all__ = ["run_summary", "summarize_runs"]


def _last_finite(values) -> float:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v[-1]) if v.size else math.nan


def run_summary(cube: xr.Dataset) -> dict:
    """The numbers a sweep figure needs from one run cube."""
    sharp = cube["sharpness"].values if "sharpness" in cube else np.array([])
    return {
        "lr": float(cube["lr"]), "seed": int(cube["seed"]), "status": cube.attrs["status"],
        "final_test_acc": _last_finite(cube["test_acc"].values),
        "final_train_acc": _last_finite(cube["train_acc"].values),
        "final_train_loss": _last_finite(cube["train_loss"].values),
        "sharpness_init": float(sharp[0]) if sharp.size and int(cube["hstep"][0]) == 0 else math.nan,
        "sharpness_final": _last_finite(sharp),
        "n_steps": int(cube["step"].values[-1]),
        "lr_relative": float(cube.attrs.get("lr_relative", math.nan)),
    }


def summarize_runs(paths_by_setting: dict[str, list]) -> xr.Dataset:
    """One row (dim ``run``) per cube: setting, η, seed, status, accuracies, sharpness, η_eos."""
    rows = []
    for setting, paths in paths_by_setting.items():
        for p in paths:
            row = run_summary(open_cube(p))
            row["setting"] = setting
            rows.append(row)
    ds = xr.Dataset({k: ("run", np.array([r[k] for r in rows])) for k in rows[0] if k not in ("lr", "seed", "setting")},
                    coords={"lr": ("run", [r["lr"] for r in rows]), "seed": ("run", [r["seed"] for r in rows]),
                            "setting": ("run", [r["setting"] for r in rows])})
    # η_eos per setting and seed from S(θ₀) (identical across η for a seed: same initialisation)
    ds["eta_eos"] = 2.0 / ds["sharpness_init"]
    ds["eta_eos"].attrs.update(long_name="stability limit 2 / S(theta_0)", units="1")
    ds.attrs.update(Conventions="CF-1.12", description="one row per run cube of the sweep")
    return ds
