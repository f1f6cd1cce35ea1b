"""Runs of other optimizers than full-batch GD (minibatch SGD, Adam, RMSprop, Clipped-Ada) for the
figures of the follow-up paper (arXiv 2511.12558): the job that trains a run and measures its
spectra (what each run is and where it lives: :mod:`eosflow.optimizer_config`, re-exported here).

A run lives in ``results/runs/<figure>/<setting>/<opt>/lr<η>/seed<seed>/cube.nc``: ``<figure>``
is the config block that asks for it (``sgd_flattening``, ``clipped_ada``: its ``train`` and
``hessian`` overrides apply), ``<opt>`` names the optimizer (:func:`opt_tag`, e.g. ``sgd_b50``,
``adam_m0.9_b64``, ``clipped_rmsprop_c0.1_b64``; full-batch GD is ``gd``). One job per run
trains it (resumable: optimizer state and data-order position are in the checkpoint) and then,
at every ``hessian.every``-th snapshot, measures the top-k Hessian eigenvalues and, for adaptive
optimizers, the preconditioned sharpness ``λ_max(P^(-1/2) H P^(-1/2))`` with the ``P`` the run
recorded there (:mod:`eosflow.spectral.preconditioned`). Both are in the one cube:
``sharpness``/``eigval`` as for GD runs, ``precond_sharpness`` and ``precond_residual`` beside
them, the attribute ``stability_threshold`` (the limit of ``λ_max(P⁻¹H)``,
:func:`eosflow.training.optimizers.stability_threshold`; ``2/η`` of ``S`` for SGD).
Training and spectra share one job: a job's start (Python, torch) costs about as much as a
small run's spectra.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .cubes import build_cube, metrics_dataset, provenance, spectra_dataset, write_netcdf
from .data import load_prepared
from .optimizer_config import (  # noqa: F401 (re-exported: what a run is)
    ADAPTIVE, OPT_FIGURES, OPT_KEYS, clipped_ada_runs, opt_tag, optimizer_config_problems, optimizer_run_config,
    parse_opt_tag, rounded_lr, sgd_flattening_runs, stability_threshold,
)
from .runs import build_objective, run_record, train_config
from .spectral import SpectrumTracker
from .spectral.preconditioned import preconditioned_eigenpairs
from .training import train

__all__ = ["OPT_FIGURES", "OPT_KEYS", "opt_tag", "parse_opt_tag", "rounded_lr", "sgd_flattening_runs",
           "clipped_ada_runs", "optimizer_run_config", "optimizer_config_problems", "run_optimizer"]

log = logging.getLogger(__name__)


# -- the job ---------------------------------------------------------------------------------------

def _measure(obj, result, hc: dict, threshold: float | None, progress, desc: str) -> tuple:
    """Top-k Hessian eigenpairs and (adaptive optimizers) the preconditioned sharpness at every
    ``hessian.every``-th snapshot and the last."""
    steps_all = [int(s) for s in result.snapshot_steps]
    keep = [i for i in range(len(steps_all)) if i % hc["every"] == 0 or i == len(steps_all) - 1]
    k = min(hc["k"], obj.dim)
    tracker = SpectrumTracker(k=k, tol=hc["tol"], max_iter=hc["max_iter"])
    records = (result.optimizer or {}).get("preconditioner", {})
    eig, res_, iters, pre, pre_res, pre_iters, warm = [], [], [], [], [], [], None
    file = progress if progress not in (True, False) else None
    for i in tqdm(keep, desc=f"spectra {desc}", disable=progress is False, file=file,
                  mininterval=15.0 if file else 1.0):
        theta = result.snapshots[i].to(obj.device, obj.dtype)
        r = tracker.measure(obj, theta)
        eig.append(r.eigvals.double().cpu().numpy())
        res_.append(r.residuals.double().cpu().numpy())
        iters.append(r.iterations)
        p = records.get(steps_all[i])
        if p is None or not bool(torch.isfinite(p).all()):
            pre.append(math.nan), pre_res.append(math.nan), pre_iters.append(0)
            continue
        q = preconditioned_eigenpairs(obj, theta, p, 1, warm=warm, tol=hc["tol"], max_iter=hc["max_iter"],
                                      seed=len(pre))
        warm = q.eigvecs
        pre.append(float(q.eigvals[0])), pre_res.append(float(q.residuals[0])), pre_iters.append(q.iterations)
        log.info("step %d: S %.4g, lambda_max(P^-1 H) %.4g (threshold %.4g, residual %.1g)", steps_all[i],
                 eig[-1][0], pre[-1], threshold or math.nan, pre_res[-1])
    return [steps_all[i] for i in keep], k, eig, res_, iters, pre, pre_res, pre_iters


def run_optimizer(cfg: dict, fig: str, setting: str, tag: str, lr: float, seed: int, data_path, out_cube,
                  checkpoint=None, progress=True) -> str:
    """Train one optimizer run (``cfg``: :func:`optimizer_run_config`'s), measure its spectra and
    write its cube; returns its status. Resumes from ``checkpoint``; removes it at the end."""
    data = load_prepared(data_path)
    obj = build_objective(cfg, setting, data, seed)
    tc = train_config(cfg, lr, None, seed)
    log.info("optimizer run %s/%s %s lr=%g seed=%d on %s: %d parameters, %d training examples", fig, setting, tag,
             lr, seed, obj.device, obj.dim, obj.n)
    test = (data["x_test"].to(obj.device, obj.dtype), data["y_test"].to(obj.device))
    result = train(obj, obj.flatten(), tc, test=test, checkpoint=checkpoint, progress=progress,
                   desc=f"{tag} lr={lr:g} seed={seed}")
    hc = cfg["hessian"]
    hobj = build_objective(cfg, setting, data, seed, n=hc["n_samples"], chunk_size=hc["chunk_size"],
                           device=obj.device)
    adaptive = tc.optimizer in ADAPTIVE
    threshold = stability_threshold(tc.optimizer, lr, tc.beta1)
    hsteps, k, eig, res_, iters, pre, pre_res, pre_iters = _measure(hobj, result, hc, threshold if adaptive else None,
                                                                   progress, f"{tag} seed={seed}")
    record = run_record(cfg, setting, lr, seed, None)
    record.update(figure=fig, optimizer_tag=tag, hessian=hc)
    attrs = {"setting": setting, "n_parameters": obj.dim, "optimizer": tc.optimizer, "optimizer_tag": tag,
             "batch_size": tc.batch_size or obj.n, "stability_threshold": threshold,
             "stability_threshold_of": "precond_sharpness" if adaptive else "sharpness"}
    metrics = metrics_dataset(result, lr, seed, record, extra_attrs=attrs)
    spectra = spectra_dataset(hsteps, np.array(eig).reshape(len(hsteps), k), np.array(res_).reshape(len(hsteps), k),
                              iters)
    spectra["precond_sharpness"] = ("hstep", np.asarray(pre, dtype=np.float64))
    spectra["precond_residual"] = ("hstep", np.asarray(pre_res, dtype=np.float64))
    spectra["precond_lanczos_iters"] = ("hstep", np.asarray(pre_iters, dtype=np.int32))
    spectra["precond_sharpness"].attrs.update(
        long_name="preconditioned sharpness lambda_max(P^-1 H), P = diag(min(sqrt(v_hat), clip) + eps) of the step "
                  "out of theta_t (NaN: no preconditioner, e.g. SGD or step 0 of a minibatch method)", units="1",
        stability_threshold=threshold)
    spectra["precond_residual"].attrs.update(long_name="relative residual of the preconditioned eigenpair", units="1")
    spectra["precond_lanczos_iters"].attrs.update(long_name="Lanczos iterations (preconditioned)", units="1")
    cube = build_cube(metrics, spectra)
    cube.attrs.update(provenance("rule optimizer_run"))
    cube.attrs["config"] = json.dumps(record, sort_keys=True, default=str)
    write_netcdf(cube, out_cube)
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)
    log.info("run %s lr=%g seed=%d: %s after %d epochs", tag, lr, seed, result.status, int(result.steps[-1]))
    return result.status
