"""The layer_spectra rule: the top-k eigenvalues of each layer's diagonal Hessian block at a run's
parameter snapshots (:func:`eosflow.spectral.layers.layer_spectra`), for ``figures/ext/layers.pdf``.

The run is the one its cube records (:class:`~eosflow.jobs.spec.RunSpec`, read back from the
``config`` attribute): its network, seed, dtype, device, and the ``hessian`` block's ``n_samples``
and ``chunk_size`` (the blocks are of the loss whose S(θ) the cube holds). The groups are one per
module that owns parameters (:func:`~eosflow.spectral.layers.parameter_groups`); the output layer is
the last ``nn.Linear`` among them. A diverged run's snapshots from its blow-up on (its training loss
non-finite or above ``train.diverge_loss``, or non-finite parameters) are not measured: the file
names them (``skipped_steps``) and carries the run's ``status``.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np

from ..cubes import load_netcdf, provenance, write_netcdf
from ..data import load_prepared
from ..files import load_torch
from ..summary import run_summary
from .run import build_objective, progress_bar
from .spec import RunSpec

__all__ = ["LAYER_DEFAULTS", "run_layer_spectra", "output_layer", "blown_up_steps", "layer_snapshots"]

log = logging.getLogger(__name__)

#: The measurement keys of the config's ``layers`` block (config/config.yaml documents them).
LAYER_DEFAULTS = {"every": 1, "k": 3, "tol": 1.0e-3, "max_iter": 100}


def output_layer(model, groups: dict[str, list[str]]) -> str | None:
    """The output layer's group: the last group whose module is an ``nn.Linear`` (None without one)."""
    from torch import nn

    modules = dict(model.named_modules())
    linear = [g for g in groups if isinstance(modules.get("" if g == "<root>" else g), nn.Linear)]
    return linear[-1] if linear else None


def blown_up_steps(steps: list[int], thetas, train_loss: dict[int, float], diverge_loss: float) -> list[int]:
    """The snapshot steps from the first blown-up one on: a non-finite parameter, or a training loss at
    that step non-finite or above ``diverge_loss`` (the train rule's divergence test)."""
    for i, t in enumerate(steps):
        loss = train_loss.get(int(t), 0.0)
        if not bool(np.isfinite(thetas[i].cpu().numpy()).all()) or not math.isfinite(loss) or loss > diverge_loss:
            return [int(s) for s in steps[i:]]
    return []


def layer_snapshots(n: int, every: int) -> list[int]:
    """Indices of ``n`` snapshots to measure: every ``every``-th and the last."""
    return [i for i in range(n) if i % every == 0 or i == n - 1]


def run_layer_spectra(cfg: dict, setting: str, data_path, cube_path, snapshots_path, out_path, progress=True) -> None:
    """Per measured snapshot of a run, the top-``k`` eigenvalues of every layer's Hessian block,
    written atomically to ``out_path``: ``layer_eigval(step, layer, eig)`` (descending; NaN where a
    layer has fewer than k parameters), ``layer_residual(step, layer, eig)`` (relative residuals),
    ``layer_n_matvec(step, layer)`` and ``n_matvec(step)`` (full Hessian-vector products),
    ``layer_dim(layer)``, ``layer_type(layer)``; scalar coordinates ``lr`` and ``seed``; attributes
    ``status``, ``eta_eos`` (the run's limit as fig5's summary takes it), ``lr_relative``,
    ``output_layer``, ``skipped_steps`` (a JSON list), ``setting``, ``config`` (the ``layers`` block used).

    ``cfg``: the ``layers`` block's ``every``, ``k``, ``tol``, ``max_iter``."""
    from ..spectral.layers import layer_spectra, parameter_groups

    lc = {**LAYER_DEFAULTS, **{k: cfg[k] for k in LAYER_DEFAULTS if k in cfg}}
    cube = load_netcdf(cube_path, "run cube", require=("train_loss",))
    spec = RunSpec.from_record(json.loads(cube.attrs["config"]))
    if spec.setting != setting:
        raise ValueError(f"run cube {cube_path} is of setting {spec.setting!r}, not {setting!r}")
    hc = dict(spec.hessian or {})
    obj = build_objective(spec, load_prepared(data_path), n=hc.get("n_samples"), chunk_size=hc.get("chunk_size"))
    groups = parameter_groups(obj)
    out_layer = output_layer(obj.model, groups)
    modules = dict(obj.model.named_modules())
    snaps = load_torch(snapshots_path, "run snapshots", map_location=obj.device)
    steps_all, thetas = [int(s) for s in snaps["steps"].tolist()], snaps["theta"]
    losses = dict(zip(cube["step"].values.tolist(), cube["train_loss"].values.astype(float).tolist()))
    skipped = blown_up_steps(steps_all, thetas, losses, float(spec.train["diverge_loss"]))
    n_valid = len(steps_all) - len(skipped)
    keep = layer_snapshots(n_valid, int(lc["every"]))
    names, k = list(groups), int(lc["k"])
    ev = np.full((len(keep), len(names), k), np.nan)
    rs = np.full_like(ev, np.nan)
    nm = np.zeros((len(keep), len(names)), dtype=np.int64)
    dims = None
    for j, i in enumerate(progress_bar(keep, progress, f"layer spectra {setting}")):
        res = layer_spectra(obj, thetas[i].to(obj.dtype), groups, k=k, tol=float(lc["tol"]),
                            max_iter=int(lc["max_iter"]))
        ds = res.to_dataset()
        ev[j, :, :] = ds["layer_eigval"].values
        rs[j, :, :] = ds["layer_residual"].values
        nm[j, :] = ds["layer_n_matvec"].values
        dims = ds["layer_dim"].values
        log.info("step %d: top block eigenvalues %s (%d products)", steps_all[i],
                 ", ".join(f"{g} {v:.4g}" for g, v in zip(names, ev[j, :, 0])), res.n_matvec)
    if dims is None:
        from ..spectral.layers import group_indices

        dims = np.array([int(v.numel()) for v in group_indices(obj, groups).values()])
    if skipped:
        log.info("run %s: snapshots at steps %s not measured (blown up)", cube.attrs.get("status"), skipped)
    summary = run_summary(cube)
    out = _dataset([steps_all[i] for i in keep], names, ev, rs, nm, dims,
                   [type(modules.get("" if g == "<root>" else g)).__name__ for g in names])
    out = out.assign_coords(lr=float(cube["lr"]), seed=int(cube["seed"]))
    out.attrs.update(status=str(cube.attrs.get("status", "unknown")), eta_eos=float(summary["eta_eos"]),
                     lr_relative=float(cube.attrs.get("lr_relative", math.nan)), output_layer=out_layer or "",
                     skipped_steps=json.dumps(skipped), setting=setting,
                     config=json.dumps(lc, sort_keys=True), k=k, **provenance("rule layer_spectra"))
    write_netcdf(out, out_path, float32=False)


def _dataset(steps, names, ev, rs, nm, dims, types):
    import xarray as xr

    ds = xr.Dataset(
        {"layer_eigval": (("step", "layer", "eig"), ev,
                          {"long_name": "top eigenvalues of the layer's diagonal Hessian block", "units": "1"}),
         "layer_residual": (("step", "layer", "eig"), rs,
                            {"long_name": "relative residual ||H v - lambda v|| / |lambda|", "units": "1"}),
         "layer_n_matvec": (("step", "layer"), nm,
                            {"long_name": "Hessian-vector products of the layer's solve", "units": "1"}),
         "n_matvec": ("step", nm.sum(axis=1), {"long_name": "Hessian-vector products at the step", "units": "1"}),
         "layer_dim": ("layer", np.asarray(dims, dtype=np.int64), {"long_name": "parameters of the layer", "units": "1"}),
         "layer_type": ("layer", np.asarray(types, dtype=str), {"long_name": "the module's class"})},
        coords={"step": np.asarray(steps, dtype=np.int64), "layer": np.asarray(names, dtype=str),
                "eig": np.arange(1, ev.shape[2] + 1)})
    ds["step"].attrs.update(long_name="gradient descent step of the snapshot", units="1")
    ds["layer"].attrs.update(long_name="module owning the parameters (eosflow.spectral.parameter_groups)")
    ds["eig"].attrs.update(long_name="eigenvalue index, 1 = largest", units="1")
    return ds
