"""Instability detection: loss spikes of gradient descent beyond its stability limit.

A step ``t`` is *unstable* when ``η_t · S(θ_t) > 2``. An **instability** (a spike) starts at an
unstable step whose next loss is higher (the *onset*), lasts while the training loss stays above
the onset's loss, and ends at the first later step whose loss is back at or below it (the *end*).
Its *peak* is the step of the highest loss in between. Small rises are the period-two
oscillations of the edge of stability, not spikes: a spike counts only when its peak loss exceeds
the onset's by the relative margin ``min_rise``. A NaN/inf loss peaks a spike (``rise = inf``). A spike still open at the last step has
``returned = False`` and ends there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Instability", "detect_instabilities", "align_sharpness", "branch_epochs"]


@dataclass(frozen=True)
class Instability:
    """One loss spike, in training steps (epochs). ``rise`` = loss[peak] / loss[onset] − 1."""

    onset: int
    peak: int
    end: int
    rise: float
    returned: bool

    def as_dict(self) -> dict:
        return asdict(self)


def align_sharpness(steps, sharp_steps, sharpness) -> np.ndarray:
    """Sharpness at every step of ``steps``: the latest measurement at or before it (NaN before the
    first). For Hessians measured at a coarser cadence than the metrics."""
    steps, sharp_steps = np.asarray(steps), np.asarray(sharp_steps)
    sharpness = np.asarray(sharpness, dtype=float)
    if sharp_steps.size == 0:
        return np.full(steps.shape, np.nan)
    idx = np.searchsorted(sharp_steps, steps, side="right") - 1
    out = sharpness[np.clip(idx, 0, None)]
    return np.where(idx >= 0, out, np.nan)


def detect_instabilities(loss, sharpness, lr, steps=None, *, min_rise: float = 0.2) -> list[Instability]:
    """Loss spikes of a GD run (see the module docstring).

    ``loss``, ``sharpness`` and ``lr`` are per step (``lr`` may be a scalar; ``sharpness`` may hold
    NaN where it was not measured: such steps never start a spike). ``steps`` labels them
    (default ``0..n-1``); the returned onsets, peaks and ends are those labels.
    """
    loss = np.asarray(loss, dtype=float)
    n = loss.size
    sharpness = np.asarray(sharpness, dtype=float)
    lr = np.broadcast_to(np.asarray(lr, dtype=float), (n,))
    if sharpness.shape != (n,):
        raise ValueError(f"sharpness has shape {sharpness.shape}, the loss {(n,)}: align them "
                         "first (eosflow.instability.align_sharpness)")
    if min_rise < 0:
        raise ValueError(f"min_rise must be >= 0, got {min_rise}")
    labels = np.arange(n) if steps is None else np.asarray(steps)
    with np.errstate(invalid="ignore"):
        unstable = lr * sharpness > 2.0
    found = []
    i = 0
    while i < n - 1:
        if not (unstable[i] and np.isfinite(loss[i]) and loss[i + 1] > loss[i]):
            i += 1
            continue
        base = loss[i]
        j = i + 1
        while j < n and not loss[j] <= base:  # NaN/inf losses stay inside the spike
            j += 1
        seg = loss[i:j]
        bad = ~np.isfinite(seg)
        if bad.any():  # the loss blew up: the spike peaks at the first non-finite loss
            peak, rise = i + int(np.argmax(bad)), float("inf")
        else:
            peak = i + int(np.argmax(seg))
            rise = float(loss[peak] / base - 1.0) if base > 0 else float("inf")
        if rise >= min_rise:
            returned = j < n
            found.append(Instability(onset=int(labels[i]), peak=int(labels[peak]),
                                     end=int(labels[min(j, n - 1)]), rise=rise, returned=returned))
            i = j
        else:
            i += 1
    return found


def branch_epochs(inst: Instability, fractions) -> list[int]:
    """Switch epochs inside one instability: ``onset + f · (end − onset)`` for each fraction
    ``f`` in [0, 1], rounded, deduplicated and sorted."""
    out = set()
    for f in fractions:
        if not 0.0 <= float(f) <= 1.0:
            raise ValueError(f"branch fraction {f} is outside [0, 1]")
        out.add(int(round(inst.onset + float(f) * (inst.end - inst.onset))))
    return sorted(out)
