"""The optimizer_run rule: runs of other optimizers than full-batch GD (minibatch SGD, Adam, RMSprop,
Clipped-Ada) for the figures of the follow-up paper (arXiv 2511.12558): the job that trains a run
and measures its spectra (what each run is and where it lives: :mod:`eosflow.config.optimizers`).

A run lives in ``results/runs/<figure>/<setting>/<opt>/lr<η>/seed<seed>/cube.nc``: ``<figure>``
is the config block that asks for it (``sgd_flattening``, ``clipped_ada``: its ``train`` and
``hessian`` overrides apply), ``<opt>`` names the optimizer (:func:`~eosflow.config.tags.opt_tag`, e.g. ``sgd_b50``,
``adam_m0.9_b64``, ``clipped_rmsprop_c0.1_b64``; full-batch GD is ``gd``). One job per run
trains it (resumable: optimizer state and data-order position are in the checkpoint) and then,
at every ``hessian.every``-th snapshot, measures the top-k Hessian eigenvalues and, for adaptive
optimizers, the preconditioned sharpness ``λ_max(P^(-1/2) H P^(-1/2))`` with the ``P`` the run
recorded there (:mod:`eosflow.spectral.preconditioned`). Both are in the one cube:
``sharpness``/``eigval`` as for GD runs, ``precond_sharpness`` and ``precond_residual`` beside
them, the attribute ``stability_threshold`` (the limit of ``λ_max(P⁻¹H)``,
:func:`eosflow.config.optimizers.stability_threshold`; ``2/η`` of ``S`` for SGD).
Training and spectra share one job: a job's start (Python, torch) costs about as much as a
small run's spectra.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import torch

from ..config.optimizers import ADAPTIVE, stability_threshold
from ..cubes import build_cube, metrics_dataset, provenance, spectra_dataset, write_netcdf
from ..data import load_prepared
from ..spectral import SpectrumTracker
from ..spectral.preconditioned import preconditioned_eigenpairs
from ..training import train
from .hessian import measured_snapshots
from .run import build_objective, inloop_sharpness, progress_bar, remove_checkpoint, train_config, validation_set
from .spec import RunSpec

__all__ = ["run_optimizer"]

log = logging.getLogger(__name__)


def _measure(obj, result, hc: dict, threshold: float | None, progress, desc: str) -> tuple:
    """Top-k Hessian eigenpairs and (adaptive optimizers) the preconditioned sharpness at every
    ``hessian.every``-th snapshot and the last."""
    steps_all = [int(s) for s in result.snapshot_steps]
    keep = measured_snapshots(hc, steps_all)
    k = min(hc["k"], obj.dim)
    tracker = SpectrumTracker(k=k, tol=hc["tol"], max_iter=hc["max_iter"])
    records = (result.optimizer or {}).get("preconditioner", {})
    eig, res_, iters, pre, pre_res, pre_iters, warm = [], [], [], [], [], [], None
    for i in progress_bar(keep, progress, f"spectra {desc}"):
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


def run_optimizer(spec: RunSpec, data_path, out_cube, checkpoint=None, progress=True) -> str:
    """Train one optimizer run (``spec``: :func:`eosflow.jobs.spec.optimizer_run_spec`'s, with its
    ``hessian`` block), measure its spectra and write its cube; returns its status. Resumes from
    ``checkpoint``; removes it at the end."""
    data = load_prepared(data_path)
    obj = build_objective(spec, data)
    tc = train_config(spec)
    tag, lr, seed = spec.optimizer_tag, spec.lr.value, spec.seed
    log.info("optimizer run %s/%s %s lr=%g seed=%d on %s: %d parameters, %d training examples", spec.figure,
             spec.setting, tag, lr, seed, obj.device, obj.dim, obj.n)
    result = train(obj, obj.flatten(), tc, test=validation_set(data, obj), checkpoint=checkpoint,
                   sharpness_fn=inloop_sharpness(spec, obj), progress=progress, desc=f"{tag} lr={lr:g} seed={seed}")
    hc = spec.hessian
    hobj = build_objective(spec, data, n=hc["n_samples"], chunk_size=hc["chunk_size"], device=obj.device)
    adaptive = tc.optimizer in ADAPTIVE
    threshold = stability_threshold(tc.optimizer, lr, tc.beta1)
    hsteps, k, eig, res_, iters, pre, pre_res, pre_iters = _measure(hobj, result, hc, threshold if adaptive else None,
                                                                   progress, f"{tag} seed={seed}")
    record = spec.record()
    attrs = {"setting": spec.setting, "n_parameters": obj.dim, "optimizer": tc.optimizer, "optimizer_tag": tag,
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
    remove_checkpoint(checkpoint)
    log.info("run %s lr=%g seed=%d: %s after %d epochs", tag, lr, seed, result.status, int(result.steps[-1]))
    return result.status
