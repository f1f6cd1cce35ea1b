"""Run cubes: the spec's names, CF attributes, atomic writes, clear errors."""
import json

import numpy as np
import pytest
import torch
import xarray as xr

from eosflow.cubes import CubeError, build_cube, metrics_dataset, open_cube, spectra_dataset, write_netcdf
from eosflow.summary import summarize_runs
from eosflow.training import TrainResult


def fake_cube(lr=0.1, seed=0, status="converged", s0=20.0):
    steps = np.arange(11)
    m = {k: np.linspace(1, 0, 11) for k in ("train_loss", "train_acc", "test_loss", "test_acc", "grad_norm", "lr",
                                            "sharpness_inloop")}
    m["test_acc"] = np.where(steps % 5 == 0, 0.8, np.nan)
    res = TrainResult(status, m, steps, torch.zeros(3, 4), np.array([0, 5, 10]), torch.zeros(4))
    metrics = metrics_dataset(res, lr, seed, {"lr": lr, "seed": seed})
    spectra = spectra_dataset([0, 5, 10], [[s0, 1.0], [s0 + 1, 2.0], [s0 + 2, 3.0]], np.full((3, 2), 1e-4),
                              [12, 8, 7], eigvecs=np.ones((3, 2, 4)) / 2, vsteps=[0, 5, 10])
    return build_cube(metrics, spectra)


def test_cube_names_and_attributes(tmp_path):
    cube = fake_cube()
    p = tmp_path / "run" / "cube.nc"
    write_netcdf(cube, p)
    assert not [f for f in p.parent.iterdir() if f.name.startswith(".")]  # no temporary left
    ds = open_cube(p)
    assert ds["eigval"].dims == ("hstep", "eig") and ds["residual"].dims == ("hstep", "eig")
    assert ds["eigvec"].dims == ("vstep", "eig", "param")
    assert ds["train_loss"].dims == ("step",)
    np.testing.assert_array_equal(ds["sharpness"].values, ds["eigval"].values[:, 0])
    assert float(ds["lr"]) == 0.1 and int(ds["seed"]) == 0
    assert ds.attrs["status"] == "converged" and ds.attrs["Conventions"] == "CF-1.12"
    assert ds.attrs["eta_eos"] == pytest.approx(2 / 20.0)
    assert json.loads(ds.attrs["config"]) == {"lr": 0.1, "seed": 0}
    for v in ds.data_vars:
        assert "long_name" in ds[v].attrs and "units" in ds[v].attrs, v
    assert ds["eigval"].dtype == np.float64 and ds["train_loss"].dtype == np.float32
    enc = xr.open_dataset(p)["train_loss"].encoding
    assert enc["zlib"] and enc["shuffle"]


def test_write_is_atomic_on_failure(tmp_path):
    p = tmp_path / "cube.nc"
    write_netcdf(fake_cube(), p)
    before = p.read_bytes()
    bad = fake_cube()
    bad["train_loss"].attrs["bogus"] = {"not": "serialisable"}
    with pytest.raises(Exception):
        write_netcdf(bad, p)
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["cube.nc"]


def test_open_cube_errors_name_the_file(tmp_path):
    p = tmp_path / "lr0.1" / "cube.nc"
    with pytest.raises(CubeError, match="lr0.1/cube.nc does not exist"):
        open_cube(p)
    write_netcdf(fake_cube().drop_vars("residual"), p)
    with pytest.raises(CubeError, match=r"lr0.1/cube.nc lacks variable\(s\) \['residual'\]"):
        open_cube(p)


def test_summary_counts_every_run_including_diverged(tmp_path):
    paths = []
    for i, (lr, status) in enumerate([(0.1, "converged"), (1.0, "max_epochs"), (10.0, "diverged")]):
        p = tmp_path / f"{i}.nc"
        write_netcdf(fake_cube(lr=lr, status=status), p)
        paths.append(p)
    s = summarize_runs({"a": paths})
    assert s.sizes["run"] == 3
    assert list(s["status"].values) == ["converged", "max_epochs", "diverged"]
    np.testing.assert_allclose(s["eta_eos"].values, 0.1)
    np.testing.assert_allclose(s["final_test_acc"].values, 0.8)  # last finite evaluation
    np.testing.assert_allclose(s["sharpness_final"].values, 22.0)


def test_summary_reads_eta_eos_from_the_runs_record(tmp_path):
    """η_eos is computed once, by the training job that placed a relative η₀, and read from the run's
    record; a run without one (an absolute η₀) falls back to 2 / S(θ₀) of its hessian measurement."""
    relative = fake_cube(lr=0.14, seed=1)
    relative.attrs["config"] = json.dumps({"lr": 0.14, "seed": 1, "relative": {
        "lr_relative": 1.4, "lr_unit": "median", "eta_eos_unit": 0.1, "eta_eos_by_seed": {"0": 0.09, "1": 0.1004}}})
    write_netcdf(relative, tmp_path / "rel.nc")
    write_netcdf(fake_cube(lr=0.14, seed=1), tmp_path / "abs.nc")
    s = summarize_runs({"a": [tmp_path / "rel.nc", tmp_path / "abs.nc"]})
    np.testing.assert_array_equal(s["eta_eos"].values, [0.1004, 2 / 20.0])  # the run's own seed's limit


def test_eigvec_quantisation_bounds_the_error_and_shrinks_the_file(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.standard_normal((20, 3, 4000)).astype(np.float32)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    ds = xr.Dataset({"eigvec": (("vstep", "eig", "param"), v)}, coords={"vstep": np.arange(20)})
    write_netcdf(ds, tmp_path / "exact.nc")
    write_netcdf(ds, tmp_path / "q12.nc", eigvec_bits=12)
    exact, q12 = xr.load_dataset(tmp_path / "exact.nc")["eigvec"].values, xr.load_dataset(tmp_path / "q12.nc")["eigvec"].values
    np.testing.assert_array_equal(exact, v)
    rel = np.abs(q12 - v) / np.abs(v)
    assert rel.max() <= 2.0 ** -12 and rel.max() > 0
    assert (tmp_path / "q12.nc").stat().st_size < 0.8 * (tmp_path / "exact.nc").stat().st_size
    cos = np.abs((q12 * v).sum(-1)) / np.linalg.norm(q12, axis=-1)
    np.testing.assert_allclose(cos, 1.0, atol=1e-6)
