"""The work behind each compute rule, as plain functions (the scripts only unpack paths).

``run_train``: one GD run (dataset, model, loss, η, seed, schedule) → metrics NetCDF and
parameter snapshots. ``run_train_group``: several runs of one setting in one process, the same
files run by run. ``run_hessian``: top-k eigenpairs of each snapshot → the run cube.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .cubes import (
    build_cube,
    load_netcdf,
    metrics_dataset,
    spectra_dataset,
    write_netcdf,
)
from .data import load_prepared
from .files import load_torch, save_torch
from .runs import build_objective, inloop_sharpness, relative_lr, run_record, train_config
from .spectral import SpectrumTracker
from .training import METRICS, train, train_group

log = logging.getLogger(__name__)


def write_run_outputs(cfg: dict, setting: str, lr: float, seed: int, schedule, result, n_parameters: int,
                      out_metrics, out_snapshots, relative: dict | None = None) -> None:
    """The train rule's files of one finished run: metrics NetCDF and parameter snapshots.
    ``relative``: how a relative grid placed η₀ (:func:`eosflow.runs.relative_lr`'s record), kept
    in the run's record and, as ``lr_relative``, ``lr_unit`` and ``eta_eos_unit``, as attributes."""
    record = run_record(cfg, setting, lr, seed, schedule)
    attrs = {"setting": setting, "n_parameters": n_parameters}
    if relative is not None:
        record["relative"] = relative
        attrs.update({k: relative[k] for k in ("lr_relative", "lr_unit", "eta_eos_unit")})
    ds = metrics_dataset(result, lr, seed, record, extra_attrs=attrs)
    save_torch({"steps": torch.as_tensor(result.snapshot_steps), "theta": result.snapshots.cpu(),
                "status": result.status}, out_snapshots)
    write_netcdf(ds, out_metrics)


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


def _test_data(data: dict, obj) -> tuple[torch.Tensor, torch.Tensor]:
    return data["x_test"].to(obj.device, obj.dtype), data["y_test"].to(obj.device)


def run_train(cfg: dict, setting: str, lr: float, seed: int, data_path, out_metrics, out_snapshots,
              checkpoint=None, schedule: dict | None = None, progress=True, fork=None,
              relative: dict | None = None) -> str:
    """Train one run; returns its status. Resumes from ``checkpoint`` if present; removes it at the end.

    ``fork = (parent_metrics, parent_snapshots)``: a switch-schedule run starts from its parent's
    snapshot at the switch epoch instead of retraining the large-η phase (same result, cheaper).
    ``relative = {"unit": "seed" | "median", "seeds": [...]}``: ``lr`` is a multiple of the
    stability limit (:func:`eosflow.runs.relative_lr`); η₀ and the multiple are both recorded.
    """
    data = load_prepared(data_path)
    lr, placed = _placed_lr(cfg, setting, data, seed, lr, relative)
    obj = build_objective(cfg, setting, data, seed)
    log.info("run %s lr=%g seed=%d on %s: %d parameters, %d training examples", setting, lr, seed, obj.device,
             obj.dim, obj.n)
    start = None
    if fork is not None:
        if not schedule or schedule.get("kind") != "switch":
            raise ValueError("fork needs a switch schedule: the run starts at its switch epoch")
        start = fork_state(*fork, int(schedule["epoch"]), device=obj.device)
    result = train(obj, obj.flatten(), train_config(cfg, lr, schedule, seed), test=_test_data(data, obj),
                   checkpoint=checkpoint, sharpness_fn=inloop_sharpness(cfg, obj), progress=progress,
                   desc=f"{setting} lr={lr:g} seed={seed}", start=start)
    write_run_outputs(cfg, setting, lr, seed, schedule, result, obj.dim, out_metrics, out_snapshots, placed)
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)
    return result.status


def _placed_lr(cfg, setting, data, seed, lr, relative, cache=None) -> tuple[float, dict | None]:
    """``(η₀, record)``: ``lr`` itself, or ``lr`` × the stability limit for a relative grid."""
    if relative is None:
        return float(lr), None
    eta, record = relative_lr(cfg, setting, data, seed, lr, relative["unit"], relative.get("seeds", [seed]), cache)
    log.info("eta0 = %g x eta_eos (%s) = %g x %.6g = %.6g", lr, relative["unit"], lr, record["eta_eos_unit"], eta)
    return eta, record


def run_train_group(cfg: dict, setting: str, runs: list[tuple[float, int, dict | None]], data_path,
                    outputs: list[tuple], checkpoint=None, progress=True, relative: dict | None = None) -> list[str]:
    """Train the runs ``(lr, seed, schedule)`` of one setting as one group; write run ``i``'s metrics
    NetCDF and snapshot file to ``outputs[i] = (metrics_path, snapshots_path)`` exactly as
    :func:`run_train` does for that run. Returns the statuses. Resumes from ``checkpoint`` if
    present; removes it at the end. ``relative``: as for :func:`run_train`, for every run."""
    if len(outputs) != len(runs) or not runs:
        raise ValueError(f"{len(runs)} runs but {len(outputs)} output pairs")
    data = load_prepared(data_path)
    limits: dict = {}  # each seed's eta_eos(theta_0), measured once for the group
    placed = [_placed_lr(cfg, setting, data, int(seed), lr, relative, limits) for lr, seed, _ in runs]
    runs = [(eta, seed, schedule) for (eta, _), (_, seed, schedule) in zip(placed, runs)]
    theta0, obj = {}, None
    for _, seed, _ in runs:  # the model is the same for every seed; only θ₀ differs
        if int(seed) not in theta0:
            o = build_objective(cfg, setting, data, int(seed), device=None if obj is None else obj.device)
            obj = o if obj is None else obj
            theta0[int(seed)] = o.flatten()
    theta0s = torch.stack([theta0[int(seed)] for _, seed, _ in runs])
    cfgs = [train_config(cfg, lr, schedule, seed) for lr, seed, schedule in runs]
    sharpness_fns = [inloop_sharpness(cfg, obj) for _ in runs]
    log.info("group of %d runs of %s on %s: %d parameters each, %d training examples; %s", len(runs), setting,
             obj.device, obj.dim, obj.n, ", ".join(f"lr={float(lr):g} seed={int(s)}" for lr, s, _ in runs))
    results = train_group(obj, theta0s, cfgs, test=_test_data(data, obj), checkpoint=checkpoint,
                          sharpness_fns=sharpness_fns, progress=progress, desc=f"{setting} group of {len(runs)}")
    for (lr, seed, schedule), result, (out_metrics, out_snapshots), (_, record) in zip(runs, results, outputs, placed):
        write_run_outputs(cfg, setting, lr, seed, schedule, result, obj.dim, out_metrics, out_snapshots, record)
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)
    return [r.status for r in results]


def _measured_snapshots(hc: dict, steps_all: list[int], steps, snapshots_path) -> list[int]:
    """Indices of the snapshots to measure: every ``hessian.every``-th and the last, or ``steps``."""
    if steps is None:
        return [i for i in range(len(steps_all)) if i % hc["every"] == 0 or i == len(steps_all) - 1]
    missing = sorted(set(int(t) for t in steps) - set(steps_all))
    if missing:
        raise ValueError(f"snapshots {snapshots_path} have no steps {missing[:5]}; measure snapshot steps only")
    wanted = set(int(t) for t in steps)
    return [i for i, t in enumerate(steps_all) if t in wanted]


def run_hessian(cfg: dict, setting: str, data_path, metrics_path, snapshots_path, out_cube, progress=True,
                steps=None) -> None:
    """Top-k Hessian eigenpairs at every snapshot of a run, joined with its metrics into the cube.

    ``steps``: measure only the snapshots at these steps (``hessian.every`` then does not apply;
    ``hessian.eigvec_every`` counts among them). Steps without a snapshot are an error.
    ``hessian.eigvec_ends``: also store the vectors of the first and the last measurement (the
    rotation 1 − ρ of :func:`eosflow.similarity.rotation`).
    """
    metrics = load_netcdf(metrics_path, "run metrics")
    seed = int(metrics["seed"])
    hc = cfg["hessian"]
    obj = build_objective(cfg, setting, load_prepared(data_path), seed, n=hc["n_samples"], chunk_size=hc["chunk_size"])
    snaps = load_torch(snapshots_path, "run snapshots", map_location=obj.device)
    steps_all, thetas = snaps["steps"].tolist(), snaps["theta"]
    keep = _measured_snapshots(hc, steps_all, steps, snapshots_path)
    k = min(hc["k"], obj.dim)
    tracker = SpectrumTracker(k=k, tol=hc["tol"], max_iter=hc["max_iter"])
    eigvals, residuals, iters, vecs, vsteps = [], [], [], [], []
    file = progress if progress not in (True, False) else None
    for j, i in enumerate(tqdm(keep, desc=f"hessian {setting}", disable=progress is False, file=file,
                               mininterval=15.0 if file else 1.0)):
        res = tracker.measure(obj, thetas[i].to(obj.dtype))
        eigvals.append(res.eigvals.double().cpu().numpy())
        residuals.append(res.residuals.double().cpu().numpy())
        iters.append(res.iterations)
        if (hc["eigvec_every"] and j % hc["eigvec_every"] == 0) or (hc["eigvec_ends"] and j in (0, len(keep) - 1)):
            vecs.append(res.eigvecs.float().cpu().numpy())
            vsteps.append(steps_all[i])
        log.info("step %d: eigvals %s, residuals %s, %d iterations", steps_all[i],
                 np.array2string(eigvals[-1], precision=4), np.array2string(residuals[-1], precision=1), iters[-1])
    hsteps = [steps_all[i] for i in keep]
    spectra = spectra_dataset(hsteps, np.array(eigvals).reshape(len(hsteps), k),
                              np.array(residuals).reshape(len(hsteps), k), iters,
                              eigvecs=np.array(vecs) if vecs else None, vsteps=vsteps if vecs else None)
    cube = build_cube(metrics, spectra)
    record = json.loads(metrics.attrs["config"])
    record["hessian"] = hc
    cube.attrs["config"] = json.dumps(record, sort_keys=True, default=str)
    # which Hessian-vector product the engine picked for this architecture ("rop", "cached", ...)
    cube.attrs["hvp_product"] = ",".join(sorted({r["product"] or "?" for r in tracker.records})) or "none"
    write_netcdf(cube, out_cube, eigvec_bits=hc.get("eigvec_bits"))
