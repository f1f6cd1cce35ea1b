"""Run cubes: one NetCDF file per run, with the names of ``docs/figures.md``.

Variables: ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc``, ``grad_norm``,
``lr_step`` (η used at each step), ``sharpness_inloop`` (dim ``step``); ``eigval``,
``residual`` (dims ``hstep``, ``eig``), ``lanczos_iters`` (dim ``hstep``), ``sharpness`` =
``eigval[:, 0]``; ``eigvec`` (``vstep``, ``eig``, ``param``) only when stored. Scalar coords
``lr`` and ``seed``; attributes ``status``, ``config`` (JSON), CF-1.12 metadata, ``source``
(package version and git commit) and ``history``. Written once, atomically, with zlib.
"""

from __future__ import annotations

import functools
import json

import subprocess
from pathlib import Path

import numpy as np
import xarray as xr

from . import __version__
from .files import UnreadableFile, atomic_path

SPEC_VARIABLES = ("train_loss", "train_acc", "test_loss", "test_acc", "eigval", "residual", "sharpness")
_LONG_NAMES = {
    "train_loss": ("training loss L(theta)", "1"),
    "train_acc": ("training accuracy", "1"),
    "test_loss": ("validation (test subset) loss", "1"),
    "test_acc": ("validation (test subset) accuracy", "1"),
    "grad_norm": ("gradient norm ||grad L(theta)||", "1"),
    "lr_step": ("learning rate used at this step", "1"),
    "sharpness_inloop": ("top Hessian eigenvalue measured inside the training loop", "1"),
    "eigval": ("top-k Hessian eigenvalues (Lanczos), descending", "1"),
    "residual": ("relative residual ||H v - lambda v|| / |lambda|", "1"),
    "lanczos_iters": ("Lanczos iterations", "1"),
    "sharpness": ("sharpness S(theta): largest Hessian eigenvalue", "1"),
    "eigvec": ("top-k Hessian eigenvectors (unit norm, sign arbitrary)", "1"),
}


class CubeError(UnreadableFile):
    """A NetCDF file (run cube, metrics, summary, ...) that a job cannot use; the message names the
    file and the fix."""


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(made_by: str = "rules train, hessian") -> dict:
    import torch

    # No wall-clock time here: the same config and seed give byte-identical cubes on a CPU
    # (the file's mtime says when it was made).
    return {
        "Conventions": "CF-1.12",
        "source": f"eosflow {__version__} (git {git_commit()}); torch {torch.__version__}; xarray {xr.__version__}",
        "history": f"created by eosflow {__version__} ({made_by})",
    }


def _annotate(ds: xr.Dataset) -> xr.Dataset:
    for name, var in ds.data_vars.items():
        if name in _LONG_NAMES:
            var.attrs.setdefault("long_name", _LONG_NAMES[name][0])
            var.attrs.setdefault("units", _LONG_NAMES[name][1])
    return ds


def metrics_dataset(result, lr: float, seed: int, config: dict, extra_attrs: dict | None = None) -> xr.Dataset:
    """The train rule's output: per-step metrics of a :class:`~eosflow.training.TrainResult`."""
    m = result.metrics
    data = {k: ("step", m[k]) for k in ("train_loss", "train_acc", "test_loss", "test_acc", "grad_norm",
                                           "sharpness_inloop")}
    data["lr_step"] = ("step", m["lr"])
    ds = xr.Dataset(data, coords={"step": result.steps, "lr": float(lr), "seed": int(seed)})
    ds["step"].attrs.update(long_name="gradient descent step (= epoch, full batch)", units="1")
    ds["lr"].attrs.update(long_name="initial learning rate eta_0", units="1")
    ds.attrs.update(status=result.status, config=json.dumps(config, sort_keys=True, default=str),
                    n_steps=int(result.steps[-1]), **(extra_attrs or {}))
    return _annotate(ds)


def spectra_dataset(hsteps, eigvals, residuals, iterations, eigvecs=None, vsteps=None) -> xr.Dataset:
    """The hessian rule's output: eigenpairs per measured step."""
    eigvals = np.asarray(eigvals, dtype=np.float64)
    k = eigvals.shape[1] if eigvals.ndim == 2 else 0
    ds = xr.Dataset({"eigval": (("hstep", "eig"), eigvals),
                     "residual": (("hstep", "eig"), np.asarray(residuals, dtype=np.float64)),
                     "lanczos_iters": ("hstep", np.asarray(iterations, dtype=np.int32))},
                    coords={"hstep": np.asarray(hsteps, dtype=np.int64), "eig": np.arange(1, k + 1)})
    ds["sharpness"] = ds["eigval"].isel(eig=0, drop=True) if k else ("hstep", np.zeros(0))
    ds["hstep"].attrs.update(long_name="step at which the Hessian was measured", units="1")
    ds["eig"].attrs.update(long_name="eigenpair index, 1 = largest", units="1")
    if eigvecs is not None:
        ds["eigvec"] = (("vstep", "eig", "param"), np.asarray(eigvecs, dtype=np.float32))
        ds = ds.assign_coords(vstep=np.asarray(vsteps, dtype=np.int64))
        ds["vstep"].attrs.update(long_name="step at which eigenvectors were stored", units="1")
    return _annotate(ds)


def build_cube(metrics: xr.Dataset, spectra: xr.Dataset) -> xr.Dataset:
    """Join a run's metrics and spectra into its cube, with CF and provenance attributes."""
    cube = xr.merge([metrics, spectra], compat="no_conflicts", join="outer", combine_attrs="override")
    cube.attrs.update(metrics.attrs)
    cube.attrs.update(provenance())
    if spectra.sizes.get("hstep", 0) and int(spectra["hstep"][0]) == 0 and float(spectra["sharpness"][0]) > 0:
        s0 = float(spectra["sharpness"][0])
        cube.attrs["sharpness_init"] = s0
        cube.attrs["eta_eos"] = 2.0 / s0
    return _annotate(cube)


def write_netcdf(ds: xr.Dataset, path, float32: bool = True, eigvec_bits: int | None = None) -> None:
    """Write ``ds`` atomically with zlib + shuffle on every float variable.

    ``float32``: store floats as float32 on disk, except the eigenvalue data, which keeps float64
    (the tests compare eigenvalues to 1e-6 relative); ``False`` keeps every float's dtype.
    ``eigvec_bits``: keep this many significant mantissa bits of ``eigvec`` (netCDF BitRound
    quantisation: relative error ≤ 2^-bits per element, so zlib compresses it; 12 bits: about 1.7x
    smaller for fig2's vectors, |cos| unchanged to 1e-7); ``None``: lossless float32.
    """
    enc = {}
    for name, var in ds.data_vars.items():
        if var.dtype.kind == "f":
            keep = not float32 or name in ("eigval", "residual", "sharpness")
            enc[name] = {"zlib": True, "complevel": 4, "shuffle": True, "dtype": var.dtype.str if keep else "float32"}
            if name == "eigvec" and eigvec_bits is not None:
                enc[name].update(significant_digits=int(eigvec_bits), quantize_mode="BitRound")
    with atomic_path(path, suffix=".nc") as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", encoding=enc)


def load_netcdf(path, what: str = "NetCDF file", require=()) -> xr.Dataset:
    """Load a NetCDF file into memory and check that it has the ``require``d variables; a missing,
    truncated or damaged file, or one without them, is a :class:`CubeError` that names the file
    (as ``what``) and the fix."""
    path = Path(path)
    if not path.exists():
        raise CubeError(f"{what} {path} does not exist; rebuild it with snakemake {path}")
    try:
        ds = xr.load_dataset(path, engine="netcdf4")
    except Exception as e:  # netCDF4/HDF5 report damage as OSError, RuntimeError, ValueError...
        raise CubeError(f"{what} {path} cannot be read ({type(e).__name__}: {str(e)[:200]}): it is truncated or "
                        "damaged; delete it and rerun snakemake, which rebuilds it") from None
    missing = [v for v in require if v not in ds.variables]
    if missing:
        raise CubeError(f"{what} {path} lacks variable(s) {missing}; it was made by another version — "
                        f"delete it and rerun snakemake to rebuild it")
    return ds


def open_cube(path, require=SPEC_VARIABLES) -> xr.Dataset:
    """Open a run cube and check that it has ``require``d variables; errors name the file."""
    return load_netcdf(path, "run cube", require)
