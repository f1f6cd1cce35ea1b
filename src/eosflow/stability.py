"""Measured stability of a run: whether it crossed its stability limit, from what it tracked.

The stability limit at initialisation, ``η_eos = 2 / S(θ₀)``, predicts little on its own:
progressive sharpening takes runs with ``η₀ < η_eos`` to the edge of stability too. A run's
*measured* stability uses its in-loop sharpness ``S(θ_t)`` (``train.sharpness_every``) and the
``η_t`` it stepped with:

- ``max_ratio``: the largest ``η_t · S(θ_t) / 2`` over the measured steps (1 = at the limit);
- ``fraction_above``: the fraction of measured steps with ``η_t · S(θ_t) > 2``;
- ``n_spikes``: loss spikes (:func:`eosflow.instability.detect_instabilities` with ``min_rise``);
- ``stability``: ``unstable`` when ``fraction_above ≥ min_fraction`` and ``n_spikes ≥ min_spikes``
  (the config's ``stability`` block, fixed before any run), or when the run diverged;
  ``stable`` otherwise; ``unmeasured`` when the run tracked no sharpness.

No torch here.
"""

from __future__ import annotations

import math

import numpy as np

from .instability import align_sharpness, detect_instabilities

__all__ = ["CLASSES", "measured_stability"]

CLASSES = ("stable", "unstable", "unmeasured")


def measured_stability(loss, lr, sharpness, status: str, *, min_fraction: float, min_spikes: int,
                       min_rise: float) -> dict:
    """The measured stability of one run (module docstring) from its per-step training ``loss``,
    step sizes ``lr`` and in-loop ``sharpness`` (NaN where not measured) and its ``status``."""
    loss = np.asarray(loss, dtype=float)
    lr = np.broadcast_to(np.asarray(lr, dtype=float), loss.shape)
    sharpness = np.asarray(sharpness, dtype=float)
    if not (loss.shape == sharpness.shape == lr.shape):
        raise ValueError(f"loss {loss.shape}, lr {lr.shape} and sharpness {sharpness.shape} must be per step")
    measured = np.flatnonzero(np.isfinite(sharpness))
    out = {"max_ratio": math.nan, "fraction_above": math.nan, "n_measured": int(measured.size), "n_spikes": 0}
    if measured.size:
        ratio = lr[measured] * sharpness[measured] / 2.0
        out["max_ratio"] = float(ratio.max())
        out["fraction_above"] = float((ratio > 1.0).mean())
        steps = np.arange(loss.size)
        aligned = align_sharpness(steps, measured, sharpness[measured])
        out["n_spikes"] = len(detect_instabilities(loss, aligned, lr, min_rise=min_rise))
    if status == "diverged":
        out["stability"] = "unstable"
    elif not measured.size:
        out["stability"] = "unmeasured"
    else:
        unstable = out["fraction_above"] >= min_fraction and out["n_spikes"] >= min_spikes
        out["stability"] = "unstable" if unstable else "stable"
    return out
