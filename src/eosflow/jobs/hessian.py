"""The hessian rule: top-k Hessian eigenpairs at a run's parameter snapshots, joined with its
metrics into the run cube. The run is the one its metrics record (:class:`~eosflow.jobs.spec.RunSpec`,
read back from the ``config`` attribute); the job adds only the ``hessian`` block it measures with.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from ..cubes import build_cube, load_netcdf, spectra_dataset, write_netcdf
from ..data import load_prepared
from ..files import load_torch
from ..spectral import SpectrumTracker
from .run import build_objective, progress_bar
from .spec import RunSpec

__all__ = ["run_hessian", "measured_snapshots"]

log = logging.getLogger(__name__)


def measured_snapshots(hc, steps_all: list[int], steps=None, snapshots_path=None) -> list[int]:
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

    ``cfg``: a config whose ``hessian`` block this job measures with; all else (the network, its
    seed, dtype, device, training) is the run's record in its metrics, whose ``setting`` must be
    ``setting``. ``steps``: measure only the snapshots at these steps (``hessian.every`` then does
    not apply; ``hessian.eigvec_every`` counts among them). Steps without a snapshot are an error.
    ``hessian.eigvec_ends``: also store the vectors of the first and the last measurement (the
    rotation 1 − ρ of :func:`eosflow.similarity.rotation`).
    """
    metrics = load_netcdf(metrics_path, "run metrics")
    spec = RunSpec.from_record(json.loads(metrics.attrs["config"])).with_hessian(cfg["hessian"])
    if spec.setting != setting:
        raise ValueError(f"run metrics {metrics_path} are of setting {spec.setting!r}, not {setting!r}")
    hc = spec.hessian
    obj = build_objective(spec, load_prepared(data_path), n=hc["n_samples"], chunk_size=hc["chunk_size"])
    snaps = load_torch(snapshots_path, "run snapshots", map_location=obj.device)
    steps_all, thetas = snaps["steps"].tolist(), snaps["theta"]
    keep = measured_snapshots(hc, steps_all, steps, snapshots_path)
    k = min(hc["k"], obj.dim)
    tracker = SpectrumTracker(k=k, tol=hc["tol"], max_iter=hc["max_iter"])
    eigvals, residuals, iters, vecs, vsteps = [], [], [], [], []
    for j, i in enumerate(progress_bar(keep, progress, f"hessian {setting}")):
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
    cube.attrs["config"] = json.dumps(spec.record(), sort_keys=True, default=str)
    # which Hessian-vector product the engine picked for this architecture ("rop", "cached", ...)
    cube.attrs["hvp_product"] = ",".join(sorted({r["product"] or "?" for r in tracker.records})) or "none"
    write_netcdf(cube, out_cube, eigvec_bits=hc.get("eigvec_bits"))
