"""The train rule and the train_group rule: GD runs → each run's metrics NetCDF and parameter
snapshots.

:func:`run_train`: one run (fig2's branch runs start from their parent's snapshot,
:mod:`eosflow.jobs.branches`). :func:`run_train_group`: several runs of one setting in one
process (``vmap`` over stacked parameters), the same files run by run. A relative η₀ is placed
here, once (:func:`eosflow.jobs.run.place_lr`), and recorded with the run.
"""

from __future__ import annotations

import logging

import torch

from ..data import load_prepared
from ..training import train, train_group
from .branches import branch_start
from .run import (
    build_objective, inloop_sharpness, place_lr, remove_checkpoint, train_config, validation_set, write_run_outputs,
)
from .spec import RunSpec

__all__ = ["run_train", "run_train_group"]

log = logging.getLogger(__name__)


def run_train(spec: RunSpec, data_path, out_metrics, out_snapshots, checkpoint=None, progress=True,
              fork=None) -> str:
    """Train one run; returns its status. Resumes from ``checkpoint`` if present; removes it at the end.

    ``fork = (parent_metrics, parent_snapshots)``: a switch-schedule run starts from its parent's
    snapshot at the switch epoch instead of retraining the large-η phase (same result, cheaper).
    """
    data = load_prepared(data_path)
    spec = place_lr(spec, data)
    lr = spec.lr.value
    obj = build_objective(spec, data)
    log.info("run %s lr=%g seed=%d on %s: %d parameters, %d training examples", spec.setting, lr, spec.seed,
             obj.device, obj.dim, obj.n)
    start = None if fork is None else branch_start(spec, fork, obj.device)
    result = train(obj, obj.flatten(), train_config(spec), test=validation_set(data, obj), checkpoint=checkpoint,
                   sharpness_fn=inloop_sharpness(spec, obj), progress=progress,
                   desc=f"{spec.setting} lr={lr:g} seed={spec.seed}", start=start)
    write_run_outputs(spec, result, obj.dim, out_metrics, out_snapshots)
    remove_checkpoint(checkpoint)
    return result.status


def run_train_group(specs: list[RunSpec], data_path, outputs: list[tuple], checkpoint=None,
                    progress=True) -> list[str]:
    """Train the runs ``specs`` of one setting as one group; write run ``i``'s metrics NetCDF and
    snapshot file to ``outputs[i] = (metrics_path, snapshots_path)`` exactly as :func:`run_train`
    does for that run. Returns the statuses. Resumes from ``checkpoint`` if present; removes it at
    the end."""
    if len(outputs) != len(specs) or not specs:
        raise ValueError(f"{len(specs)} runs but {len(outputs)} output pairs")
    settings = sorted({s.setting for s in specs})
    if len(settings) != 1:
        raise ValueError(f"a group trains runs of one setting; got {settings}")
    data = load_prepared(data_path)
    limits: dict = {}  # each seed's eta_eos(theta_0), measured once for the group
    specs = [place_lr(s, data, limits) for s in specs]
    theta0, obj = {}, None
    for spec in specs:  # the model is the same for every seed; only θ₀ differs
        if spec.seed not in theta0:
            o = build_objective(spec, data, device=None if obj is None else obj.device)
            obj = o if obj is None else obj
            theta0[spec.seed] = o.flatten()
    theta0s = torch.stack([theta0[s.seed] for s in specs])
    log.info("group of %d runs of %s on %s: %d parameters each, %d training examples; %s", len(specs), settings[0],
             obj.device, obj.dim, obj.n, ", ".join(f"lr={s.lr.value:g} seed={s.seed}" for s in specs))
    results = train_group(obj, theta0s, [train_config(s) for s in specs], test=validation_set(data, obj),
                          checkpoint=checkpoint, sharpness_fns=[inloop_sharpness(s, obj) for s in specs],
                          progress=progress, desc=f"{settings[0]} group of {len(specs)}")
    for spec, result, (out_metrics, out_snapshots) in zip(specs, results, outputs):
        write_run_outputs(spec, result, obj.dim, out_metrics, out_snapshots)
    remove_checkpoint(checkpoint)
    return [r.status for r in results]
