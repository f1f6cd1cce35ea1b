"""fig2's branch runs: a switch-schedule run that starts from its parent's snapshot at the switch
epoch instead of retraining the large-η phase (the same result, cheaper). The parent is the run
with the same setting, η₀ and seed under a constant schedule; the train job takes the start
:func:`fork_state` gives (:func:`eosflow.jobs.train.run_train`'s ``fork``)."""

from __future__ import annotations

from ..cubes import load_netcdf
from ..files import load_torch
from ..training import METRICS
from .spec import RunSpec

__all__ = ["fork_state", "branch_start"]


def fork_state(parent_metrics, parent_snapshots, step: int, device="cpu") -> dict:
    """The state of a parent run at ``step`` for :func:`eosflow.training.train`'s ``start``: its
    parameters there (from its snapshots) and its metrics before. Errors name the files."""
    snaps = load_torch(parent_snapshots, "parent run snapshots", map_location=device)
    steps = snaps["steps"].tolist()
    if step not in steps:
        raise ValueError(f"parent snapshots {parent_snapshots} have no step {step} (they hold {len(steps)} "
                         f"steps, {steps[:3]}...{steps[-3:]}); fork at a snapshot step or set the parent's "
                         "train.snapshot_every to 1")
    m = load_netcdf(parent_metrics, "parent run metrics")
    names = {"lr": "lr_step"}
    metrics = {k: m[names.get(k, k)].values[:step] for k in METRICS}
    return {"step": step, "theta": snaps["theta"][steps.index(step)], "metrics": metrics}


def branch_start(spec: RunSpec, fork, device) -> dict:
    """Where the branch run ``spec`` starts: its parent's state at the switch epoch, the parent's
    files being ``fork = (metrics, snapshots)``."""
    if spec.schedule.get("kind") != "switch":
        raise ValueError("fork needs a switch schedule: the run starts at its switch epoch")
    return fork_state(*fork, int(spec.schedule["epoch"]), device=device)
