"""Plans: what a figure's later jobs need from an earlier run, decided once its data exist.

fig2 and fig12 train one run per seed (``seeds``), at an absolute ``lr`` or at ``lr_relative``
times that seed's own stability limit (:func:`block_lr_tag`: the run's path name). fig2's
checkpoint rule (``fig2_instabilities``, one job per seed) reads a seed's baseline cube and writes
:func:`plan_fig2`'s plan (``results/figures/fig2/seed<s>/plan.json``): the loss spikes
(:mod:`eosflow.instability`), the largest ones drawn, the epochs whose eigenvectors are stored,
the branch runs' switch epochs and fig3's snapshot steps (:func:`snapshot_steps`). Snakemake grows
the DAG from those plans. fig12 slices runs of its own the same way (checkpoint ``fig12_plan``):
:func:`plan_slices` (the same spike choice, :func:`chosen_instabilities` and :func:`slice_steps`,
with fig12's block as the parameters). A plan takes the run's η and seed from its cube. No torch
here.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .config import lr_tag, relative_tag
from .instability import align_sharpness, branch_epochs, detect_instabilities

__all__ = ["block_lr_tag", "chosen_instabilities", "cube_instabilities", "plan_fig2", "plan_slices", "run_fields",
           "slice_steps", "snapshot_steps"]


def block_lr_tag(block: dict) -> str:
    """The path name of a one-η block's runs (fig2, fig12): ``x1.05`` for ``lr_relative`` 1.05 (the
    multiple of each seed's own η_eos(θ₀)), ``0.14`` for an absolute ``lr``."""
    if block.get("lr_relative") is not None:
        return relative_tag(block["lr_relative"])
    return lr_tag(block["lr"])


def run_fields(cube: xr.Dataset) -> dict:
    """What a plan records of its run: η (the cube's ``lr``, placed by the training job), the seed,
    the multiple of the stability limit and that limit when the run was named by a multiple (else
    None), the last step and the status."""
    rel = cube.attrs.get("lr_relative")
    eos = cube.attrs.get("eta_eos_unit")
    return {"lr": float(cube["lr"].values), "seed": int(cube["seed"].values),
            "lr_relative": None if rel is None else float(rel), "eta_eos": None if eos is None else float(eos),
            "last_step": int(cube["step"].values[-1]), "status": cube.attrs.get("status")}


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
    """What a slices job needs from its run's cube (a JSON-able dict): fig12's plan of one seed.
    ``block`` holds ``setting``, ``min_rise``, ``instabilities`` (the largest spikes chosen from),
    ``instability`` (which of them, in time order) and ``snapshots``; η and the seed are the cube's
    (:func:`run_fields`). The spikes are chosen as fig2 chooses them (:func:`chosen_instabilities`)
    and sliced as fig3 slices them (:func:`slice_steps`): ``slice_steps`` is empty when the run has
    too few spikes."""
    found = cube_instabilities(cube, block["min_rise"])
    chosen = chosen_instabilities(found, block["instabilities"])
    which = int(block["instability"])
    return {"setting": block["setting"], **run_fields(cube),
            "min_rise": block["min_rise"], "n_instabilities": int(block["instabilities"]),
            "instabilities": [s.as_dict() for s in found], "chosen": [s.as_dict() for s in chosen],
            "slice_instability": which, "slice_steps": slice_steps(chosen, which, block["snapshots"])}


def plan_fig2(cube: xr.Dataset, fig2: dict, fig3: dict) -> dict:
    """What fig2's and fig3's later jobs need from one seed's baseline cube (a JSON-able dict); η and
    the seed are the cube's (:func:`run_fields`).

    ``n_instabilities`` is the number of spikes the figure draws (``fig2.instabilities``); the first
    claim counts every spike found (``instabilities``) against the registry's bound.
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
    return {"setting": fig2["setting"], **run_fields(cube), "min_rise": fig2["min_rise"],
            "n_instabilities": int(fig2["instabilities"]),
            "instabilities": [s.as_dict() for s in found], "chosen": [s.as_dict() for s in chosen],
            "branch": branch, "vector_steps": sorted(vector_steps), "fig3_instability": f3,
            "fig3_steps": steps3}
