"""The spectrum_density rule (figures/ext/spectrum.pdf): the Hessian's spectral density, by stochastic
Lanczos quadrature (:func:`eosflow.spectral.spectral_density`), at the onset, peak and end of each of
a fig2 seed's chosen instabilities (its plan's ``chosen``).

The run is the one its metrics record (:class:`~eosflow.jobs.spec.RunSpec`); the Hessian averages
over the examples of fig2's ``hessian`` block (``n_samples``, ``chunk_size``: by default the whole
training subset, the loss GD trains on). Every point uses the same seeded probes, so two densities
differ by the Hessian only. The densities share one grid per seed (the smallest and largest node over
all its points, widened by 5 σ), so they can be compared point by point.

One NetCDF file per seed, written once (:func:`spectrum_dataset`): dims ``instability`` (1..n, in
time order), ``point`` (``onset``, ``peak``, ``end``), ``grid``, ``probe``, ``node``.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import torch
import xarray as xr

from ..cubes import load_netcdf, provenance, write_netcdf
from ..data import load_prepared
from ..files import load_torch
from ..spectral import spectral_density
from .run import build_objective, progress_bar
from .spec import RunSpec

__all__ = ["POINTS", "SPECTRUM_KEYS", "run_spectrum_density", "spectrum_dataset", "common_grid"]

log = logging.getLogger(__name__)

#: the points of an instability whose density is measured (keys of a plan's chosen instability)
POINTS = ("onset", "peak", "end")
#: the keys of the ``spectrum`` config block the densities depend on (``seeds`` only picks the jobs)
SPECTRUM_KEYS = ("probes", "steps", "distribution", "seed", "grid", "sigma", "sigma_relative")


def common_grid(measured: list, n_grid: int, sigma: float | None, sigma_relative: float) -> tuple[np.ndarray, float]:
    """One grid for every density of a seed: ``n_grid`` points over [smallest node − 5σ, largest
    node + 5σ] over all ``measured`` (:class:`~eosflow.spectral.SpectralDensity` or None); σ is
    ``sigma``, or ``sigma_relative`` × (largest − smallest node). Without any density: [0, 1], σ NaN."""
    nodes = [sd.nodes[torch.isfinite(sd.nodes) & (sd.weights > 0)] for sd in measured if sd is not None]
    nodes = torch.cat(nodes).double() if nodes else torch.zeros(0, dtype=torch.float64)
    if nodes.numel() == 0:
        return np.linspace(0.0, 1.0, int(n_grid)), math.nan
    lo, hi = float(nodes.min()), float(nodes.max())
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    s = float(sigma) if sigma is not None else float(sigma_relative) * span
    return np.linspace(lo - 5 * s, hi + 5 * s, int(n_grid)), s


def spectrum_dataset(steps: np.ndarray, loss: np.ndarray, measured: list, sc: dict, record: dict) -> xr.Dataset:
    """The seed's NetCDF content. ``steps``, ``loss``: (instability, point); ``measured``: one
    :class:`~eosflow.spectral.SpectralDensity` (or None: a point whose loss is not finite) per
    (instability, point), row-major; ``sc``: the spectrum block; ``record``: the run's and the block's
    record (attribute ``config``)."""
    n_inst, probes, n_steps = steps.shape[0], int(sc["probes"]), int(sc["steps"])
    grid, sigma = common_grid(measured, sc["grid"], sc["sigma"], sc["sigma_relative"])
    dens = np.full((n_inst, len(POINTS), grid.size), np.nan)
    nodes = np.full((n_inst, len(POINTS), probes, n_steps), np.nan)
    weights = np.zeros((n_inst, len(POINTS), probes, n_steps))
    matvec = np.zeros((n_inst, len(POINTS)), dtype=np.int64)
    for k, sd in enumerate(measured):
        if sd is None:
            continue
        i, j = divmod(k, len(POINTS))
        m = sd.nodes.shape[1]
        nodes[i, j, :, :m], weights[i, j, :, :m] = sd.nodes.numpy(), sd.weights.numpy()
        dens[i, j] = sd.broaden(grid, sigma)[1].numpy()
        matvec[i, j] = sd.n_matvec
    dims = ("instability", "point")
    ds = xr.Dataset(
        {"density": (dims + ("grid",), dens, {"long_name": "Hessian spectral density (Gaussian-broadened SLQ)",
                                              "units": "1"}),
         "slq_nodes": (dims + ("probe", "node"), nodes,
                       {"long_name": "SLQ Gauss quadrature nodes (Ritz values; NaN: none)", "units": "1"}),
         "slq_weights": (dims + ("probe", "node"), weights,
                         {"long_name": "SLQ Gauss quadrature weights (sum to 1 per probe)", "units": "1"}),
         "loss": (dims, loss, {"long_name": "training loss L(theta) at the point", "units": "1"}),
         "step": (dims, steps, {"long_name": "epoch of the snapshot", "units": "1"}),
         "n_matvec": (dims, matvec, {"long_name": "Hessian-vector products of the point's SLQ", "units": "1"})},
        coords={"instability": ("instability", np.arange(1, n_inst + 1), {"long_name": "chosen instability"}),
                "point": ("point", list(POINTS)),
                "grid": ("grid", grid, {"long_name": "eigenvalue lambda", "units": "1"}),
                "probe": np.arange(probes), "node": np.arange(n_steps)})
    ds.attrs.update(provenance("rule spectrum_density"))
    ds.attrs.update({"probes": probes, "steps": n_steps, "sigma": sigma, "distribution": sc["distribution"],
                     "probe_seed": int(sc["seed"]), "config": json.dumps(record, sort_keys=True, default=str)})
    return ds


def _point_epochs(plan: dict, steps_all: list[int], snapshots_path) -> np.ndarray:
    epochs = np.array([[int(s[p]) for p in POINTS] for s in plan["chosen"]], dtype=np.int64).reshape(-1, len(POINTS))
    missing = sorted(set(epochs.ravel().tolist()) - set(steps_all))
    if missing:
        raise ValueError(f"run snapshots {snapshots_path} have no epochs {missing[:5]}: fig2 keeps every epoch's "
                         "parameters (fig2.train.snapshot_every must be 1)")
    return epochs


def run_spectrum_density(cfg: dict, spectrum: dict, setting: str, data_path, metrics_path, snapshots_path,
                         plan: dict, out_nc, progress=True) -> xr.Dataset:
    """The densities of one fig2 seed (see the module docstring) → ``out_nc``.

    ``cfg``: fig2's run settings (its ``hessian`` block's ``n_samples`` and ``chunk_size`` are used);
    ``spectrum``: the ``spectrum`` config block (:data:`SPECTRUM_KEYS`); ``plan``: the seed's fig2 plan.
    A point whose loss is not finite gets no density (NaN), its loss recorded."""
    metrics = load_netcdf(metrics_path, "run metrics")
    spec = RunSpec.from_record(json.loads(metrics.attrs["config"])).with_hessian(cfg["hessian"])
    if spec.setting != setting:
        raise ValueError(f"run metrics {metrics_path} are of setting {spec.setting!r}, not {setting!r}")
    hc, sc = spec.hessian, {k: spectrum[k] for k in SPECTRUM_KEYS}
    obj = build_objective(spec, load_prepared(data_path), n=hc["n_samples"], chunk_size=hc["chunk_size"])
    snaps = load_torch(snapshots_path, "run snapshots", map_location=obj.device)
    steps_all, thetas = [int(t) for t in snaps["steps"].tolist()], snaps["theta"]
    epochs = _point_epochs(plan, steps_all, snapshots_path)
    loss, measured = np.full(epochs.shape, np.nan), []
    log.info("seed %d: %d chosen instabilities, %d parameters, %d probes x %d steps per point", spec.seed,
             epochs.shape[0], obj.dim, sc["probes"], sc["steps"])
    for k, t in enumerate(progress_bar(epochs.ravel().tolist(), progress, f"spectrum seed {spec.seed}")):
        theta = thetas[steps_all.index(t)].to(obj.dtype)
        loss.flat[k] = float(obj.loss(theta))
        sd = None
        if math.isfinite(loss.flat[k]):
            sd = spectral_density(obj, theta, probes=sc["probes"], steps=sc["steps"],
                                  distribution=sc["distribution"], seed=sc["seed"], grid=2)
            top = float(sd.nodes[torch.isfinite(sd.nodes)].max())
            log.info("epoch %d (%s): loss %.5g, largest node %.5g, %d products", t, POINTS[k % len(POINTS)],
                     loss.flat[k], top, sd.n_matvec)
        else:
            log.warning("epoch %d: loss %s is not finite: no density", t, loss.flat[k])
        measured.append(sd)
    record = {**spec.base_record(), "hessian": {"n_samples": hc["n_samples"], "chunk_size": hc["chunk_size"]},
              "spectrum": sc, "chosen": plan["chosen"]}
    ds = spectrum_dataset(epochs, loss, measured, sc, record)
    write_netcdf(ds, out_nc, float32=False)
    return ds
