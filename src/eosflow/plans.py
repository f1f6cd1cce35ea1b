"""Plans: what a figure's later jobs need from an earlier run, decided once its data exist.

fig2's checkpoint rule (``fig2_instabilities``) reads the baseline run's cube and writes
:func:`plan_fig2`'s plan: the loss spikes (:mod:`eosflow.instability`), the largest ones drawn,
the epochs whose eigenvectors are stored, the branch runs' switch epochs and fig3's snapshot
steps (:func:`snapshot_steps`). Snakemake grows the DAG from that plan. fig12 slices a run of its
own the same way: :func:`plan_slices` (the same spike choice, :func:`chosen_instabilities` and
:func:`slice_steps`, with fig12's block as the parameters). No torch here.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .instability import align_sharpness, branch_epochs, detect_instabilities

__all__ = ["chosen_instabilities", "cube_instabilities", "plan_fig2", "plan_slices", "slice_steps",
           "snapshot_steps"]


def cube_instabilities(cube: xr.Dataset, min_rise: float):
    """The loss spikes of a run cube (its training loss, η per step and measured sharpness)."""
    steps = cube["step"].values
    sharp = align_sharpness(steps, cube["hstep"].values, cube["sharpness"].values)
    return detect_instabilities(cube["train_loss"].values, sharp, cube["lr_step"].values, steps, min_rise=min_rise)


def snapshot_steps(onset: int, end: int, n: int) -> list[int]:
    """``n`` evenly spaced integer steps from ``onset + 1`` to ``end`` inclusive (rounded,
    deduplicated, each ≥ 1, ascending): the snapshots of one instability for fig3."""
    onset, end, n = int(onset), int(end), int(n)
    lo = max(onset + 1, 1)
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    if end < lo:
        raise ValueError(f"no step in ({onset}, {end}]: need end ≥ max(onset + 1, 1)")
    return sorted({int(v) for v in np.rint(np.linspace(lo, end, n))})


def chosen_instabilities(found, n: int) -> list:
    """The ``n`` largest spikes (by rise) of ``found`` that returned to their onset's loss, in time order."""
    returned = [s for s in found if s.returned]
    return sorted(sorted(returned, key=lambda s: -s.rise)[:int(n)], key=lambda s: s.onset)


def slice_steps(chosen: list, which: int, n: int) -> list[int]:
    """The snapshot steps of the ``which``-th (1 = first in time) chosen spike
    (:func:`snapshot_steps`), or ``[]`` when fewer spikes were chosen."""
    if len(chosen) < which:
        return []
    inst = chosen[which - 1]
    return snapshot_steps(inst.onset, inst.end, n)


def plan_slices(cube: xr.Dataset, block: dict) -> dict:
    """What a slices job needs from its run's cube (a JSON-able dict): fig12's plan. ``block`` holds
    ``setting``, ``lr``, ``seed``, ``min_rise``, ``instabilities`` (the largest spikes chosen from),
    ``instability`` (which of them, in time order) and ``snapshots``. The spikes are chosen as fig2
    chooses them (:func:`chosen_instabilities`) and sliced as fig3 slices them (:func:`slice_steps`):
    ``slice_steps`` is empty when the run has too few spikes."""
    found = cube_instabilities(cube, block["min_rise"])
    chosen = chosen_instabilities(found, block["instabilities"])
    which = int(block["instability"])
    return {"setting": block["setting"], "lr": float(block["lr"]), "seed": int(block["seed"]),
            "last_step": int(cube["step"].values[-1]), "status": cube.attrs.get("status"),
            "min_rise": block["min_rise"], "n_instabilities": int(block["instabilities"]),
            "instabilities": [s.as_dict() for s in found], "chosen": [s.as_dict() for s in chosen],
            "slice_instability": which, "slice_steps": slice_steps(chosen, which, block["snapshots"])}


def plan_fig2(cube: xr.Dataset, fig2: dict, fig3: dict) -> dict:
    """What fig2's and fig3's later jobs need from the baseline cube (a JSON-able dict).

    ``n_instabilities`` is the number of spikes the figure draws (``fig2.instabilities``), which
    is also the number its first claim requires.
    """
    found = cube_instabilities(cube, fig2["min_rise"])
    last = int(cube["step"].values[-1])
    chosen = chosen_instabilities(found, fig2["instabilities"])
    vec = fig2["vectors"]
    vector_steps: set[int] = set()
    for s in chosen:
        vector_steps.update(range(max(0, s.onset - vec["before"]), min(last, s.end + vec["after"]) + 1))
    branch = {"instability": None, "epochs": [], "lr_small": fig2["branch"]["lr_small"]}
    b = fig2["branch"]["instability"]
    if len(chosen) >= b:
        inst = chosen[b - 1]
        epochs = [e for e in branch_epochs(inst, fig2["branch"]["at"]) if e < last]
        branch.update(instability=b, epochs=epochs)
        if epochs:  # the baseline's own curve over the branches' window
            vector_steps.update(range(inst.onset, min(last, max(epochs) + fig2["branch"]["epochs"]) + 1))
    f3 = fig3["instability"]
    steps3 = slice_steps(chosen, f3, fig3["snapshots"])
    return {"setting": fig2["setting"], "lr": float(fig2["lr"]), "seed": int(fig2["seed"]), "last_step": last,
            "status": cube.attrs.get("status"), "min_rise": fig2["min_rise"],
            "n_instabilities": int(fig2["instabilities"]),
            "instabilities": [s.as_dict() for s in found], "chosen": [s.as_dict() for s in chosen],
            "branch": branch, "vector_steps": sorted(vector_steps), "fig3_instability": f3,
            "fig3_steps": steps3}
