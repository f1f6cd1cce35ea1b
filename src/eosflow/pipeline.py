"""The work behind each Snakemake rule, as plain functions (the scripts only unpack paths).

``run_train``: one GD run (dataset, model, loss, η, seed, schedule) → metrics NetCDF and
parameter snapshots. ``run_hessian``: top-k eigenpairs of each snapshot → the run cube.
``summarize_runs``: one row per run cube, for the figures.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from .cubes import build_cube, metrics_dataset, open_cube, spectra_dataset, write_netcdf
from .data import load_prepared
from .device import resolve_device
from .hessian import SpectrumTracker
from .io import save_torch
from .models import build_model
from .objective import Objective
from .training import METRICS, TrainConfig, train

log = logging.getLogger(__name__)


def run_record(cfg: dict, setting: str, lr: float, seed: int, schedule: dict | None) -> dict:
    """What a run depends on, stored as the cube's ``config`` attribute (JSON); the hessian rule
    adds its ``hessian`` block."""
    return {"setting": setting, **cfg["settings"][setting], "lr": float(lr), "seed": int(seed),
            "schedule": schedule or {"kind": "constant"}, "train": cfg["train"], "device": cfg["device"]}


def _objective(cfg, setting, data, device, dtype, seed, n=None, chunk_size=None):
    s = cfg["settings"][setting]
    x, y = data["x_train"], data["y_train"]
    if n is not None:
        x, y = x[:n], y[:n]
    model = build_model(s["model"], tuple(x.shape[1:]), int(data["n_classes"]), seed).to(device, dtype)
    return Objective(model, x.to(device, dtype), y.to(device), s["loss"], chunk_size or s["chunk_size"])


def train_config(cfg: dict, lr: float, schedule: dict | None) -> TrainConfig:
    """The :class:`TrainConfig` of one run from the config's ``train`` block."""
    return TrainConfig(lr=float(lr), schedule=schedule, **{k: v for k, v in cfg["train"].items() if k != "dtype"})


def write_run_outputs(cfg: dict, setting: str, lr: float, seed: int, schedule, result, n_parameters: int,
                      out_metrics, out_snapshots) -> None:
    """The train rule's files of one finished run: metrics NetCDF and parameter snapshots."""
    ds = metrics_dataset(result, lr, seed, run_record(cfg, setting, lr, seed, schedule),
                         extra_attrs={"setting": setting, "n_parameters": n_parameters})
    save_torch({"steps": torch.as_tensor(result.snapshot_steps), "theta": result.snapshots.cpu(),
                "status": result.status}, out_snapshots)
    write_netcdf(ds, out_metrics)


def fork_state(parent_metrics, parent_snapshots, step: int, device="cpu") -> dict:
    """The state of a parent run at ``step`` for :func:`eosflow.training.train`'s ``start``: its
    parameters there (from its snapshots) and its metrics before. Errors name the files."""
    snaps = torch.load(parent_snapshots, map_location=device, weights_only=True)
    steps = snaps["steps"].tolist()
    if step not in steps:
        raise ValueError(f"parent snapshots {parent_snapshots} have no step {step} (they hold {len(steps)} "
                         f"steps, {steps[:3]}...{steps[-3:]}); fork at a snapshot step or set the parent's "
                         "train.snapshot_every to 1")
    m = xr.load_dataset(parent_metrics, engine="netcdf4")
    names = {"lr": "lr_step"}
    metrics = {k: m[names.get(k, k)].values[:step] for k in METRICS}
    return {"step": step, "theta": snaps["theta"][steps.index(step)], "metrics": metrics}


def run_train(cfg: dict, setting: str, lr: float, seed: int, data_path, out_metrics, out_snapshots,
              checkpoint=None, schedule: dict | None = None, progress=True, fork=None) -> str:
    """Train one run; returns its status. Resumes from ``checkpoint`` if present; removes it at the end.

    ``fork = (parent_metrics, parent_snapshots)``: a switch-schedule run starts from its parent's
    snapshot at the switch epoch instead of retraining the large-η phase (same result, cheaper).
    """
    device = resolve_device(cfg["device"])
    dtype = getattr(torch, cfg["train"]["dtype"])
    data = load_prepared(data_path)
    obj = _objective(cfg, setting, data, device, dtype, seed)
    tc = cfg["train"]
    tcfg = train_config(cfg, lr, schedule)
    sharpness_fn = None
    if tc["sharpness_every"]:
        tracker = SpectrumTracker(k=1, tol=1e-3, max_iter=100)
        sharpness_fn = lambda th: float(tracker.measure(obj, th).eigvals[0])  # noqa: E731
    log.info("run %s lr=%g seed=%d on %s: %d parameters, %d training examples", setting, lr, seed, device,
             obj.dim, obj.n)
    test = (data["x_test"].to(device, dtype), data["y_test"].to(device))
    start = None
    if fork is not None:
        if not schedule or schedule.get("kind") != "switch":
            raise ValueError("fork needs a switch schedule: the run starts at its switch epoch")
        start = fork_state(*fork, int(schedule["epoch"]), device=device)
    result = train(obj, obj.flatten(), tcfg, test=test, checkpoint=checkpoint, sharpness_fn=sharpness_fn,
                   progress=progress, desc=f"{setting} lr={lr:g} seed={seed}", start=start)
    write_run_outputs(cfg, setting, lr, seed, schedule, result, obj.dim, out_metrics, out_snapshots)
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)
    return result.status


def run_hessian(cfg: dict, setting: str, data_path, metrics_path, snapshots_path, out_cube, progress=True,
                steps=None) -> None:
    """Top-k Hessian eigenpairs at every snapshot of a run, joined with its metrics into the cube.

    ``steps``: measure only the snapshots at these steps (``hessian.every`` then does not apply;
    ``hessian.eigvec_every`` counts among them). Steps without a snapshot are an error.
    """
    metrics = xr.load_dataset(metrics_path, engine="netcdf4")
    seed = int(metrics["seed"])
    hc = cfg["hessian"]
    device = resolve_device(cfg["device"])
    dtype = getattr(torch, cfg["train"]["dtype"])
    data = load_prepared(data_path)
    obj = _objective(cfg, setting, data, device, dtype, seed, n=hc["n_samples"], chunk_size=hc["chunk_size"])
    snaps = torch.load(snapshots_path, map_location=device, weights_only=True)
    steps_all, thetas = snaps["steps"].tolist(), snaps["theta"]
    if steps is None:
        keep = [i for i in range(len(steps_all)) if i % hc["every"] == 0 or i == len(steps_all) - 1]
    else:
        missing = sorted(set(int(t) for t in steps) - set(steps_all))
        if missing:
            raise ValueError(f"snapshots {snapshots_path} have no steps {missing[:5]}; measure snapshot steps only")
        wanted = set(int(t) for t in steps)
        keep = [i for i, t in enumerate(steps_all) if t in wanted]
    steps = steps_all
    k = min(hc["k"], obj.dim)
    tracker = SpectrumTracker(k=k, tol=hc["tol"], max_iter=hc["max_iter"])
    eigvals, residuals, iters, vecs, vsteps = [], [], [], [], []
    file = progress if progress not in (True, False) else None
    for j, i in enumerate(tqdm(keep, desc=f"hessian {setting}", disable=progress is False, file=file,
                               mininterval=15.0 if file else 1.0)):
        res = tracker.measure(obj, thetas[i].to(dtype))
        eigvals.append(res.eigvals.double().cpu().numpy())
        residuals.append(res.residuals.double().cpu().numpy())
        iters.append(res.iterations)
        if hc["eigvec_every"] and j % hc["eigvec_every"] == 0:
            vecs.append(res.eigvecs.float().cpu().numpy())
            vsteps.append(steps[i])
        log.info("step %d: eigvals %s, residuals %s, %d iterations", steps[i],
                 np.array2string(eigvals[-1], precision=4), np.array2string(residuals[-1], precision=1), iters[-1])
    hsteps = [steps[i] for i in keep]
    spectra = spectra_dataset(hsteps, np.array(eigvals).reshape(len(hsteps), k),
                              np.array(residuals).reshape(len(hsteps), k), iters,
                              eigvecs=np.array(vecs) if vecs else None, vsteps=vsteps if vecs else None)
    cube = build_cube(metrics, spectra)
    record = json.loads(metrics.attrs["config"])
    record["hessian"] = hc
    cube.attrs["config"] = json.dumps(record, sort_keys=True, default=str)
    write_netcdf(cube, out_cube, eigvec_bits=hc.get("eigvec_bits"))


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
