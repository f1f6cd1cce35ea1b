"""The DLN toy model: autograd Hessian vs closed form, the growth factors vs real GD iterates,
divergence handling, and the NetCDF cube."""
import numpy as np
import pytest

from eosflow import dln
from eosflow.cubes import write_netcdf

LRS = (0.001, 0.0095, 0.011, 0.013)


def test_hessian_autograd_matches_closed_form():
    h_auto = dln.hessian_autograd(dln.THETA0)
    np.testing.assert_allclose(h_auto, [[200.0, -4.0], [-4.0, 0.02]], rtol=0, atol=1e-12)
    np.testing.assert_allclose(dln.hessian_closed_form(dln.THETA0), h_auto, rtol=0, atol=1e-12)
    rng = np.random.default_rng(0)
    for theta in rng.normal(scale=3.0, size=(5, 2)):
        np.testing.assert_allclose(dln.hessian_closed_form(theta), dln.hessian_autograd(theta),
                                   rtol=1e-12, atol=1e-12)


def test_grad_matches_autograd():
    import torch

    theta = np.array([0.7, -2.3])
    t = torch.tensor(theta, dtype=torch.float64)
    g = torch.func.grad(lambda p: (p[0] * p[1]) ** 2)(t).numpy()
    np.testing.assert_allclose(dln.grad(theta), g, rtol=1e-13)


def test_sharpness_and_eta_eos():
    assert dln.sharpness(dln.THETA0) == pytest.approx(200.0800, abs=1e-4)
    assert dln.eta_eos() == pytest.approx(0.009996, abs=1e-6)
    v = dln.top_eigvec(dln.THETA0)
    h = dln.hessian_closed_form(dln.THETA0)
    np.testing.assert_allclose(h @ v, dln.sharpness(dln.THETA0) * v, rtol=1e-12)
    assert v[0] > 0 and np.linalg.norm(v) == pytest.approx(1.0)


@pytest.mark.parametrize("lr", LRS)
def test_growth_factors_match_gd_iterates(lr):
    """Closed forms, evaluated at the current θ_t, equal the measured one-step ratios."""
    th = dln.gd_trajectory(lr, steps=10)["theta"]
    for t, t_next in zip(th[:-1], th[1:]):
        x, k = dln.g_of(t) * lr, dln.k_of(t)
        big, big_next = t[0] * t[1], t_next[0] * t_next[1]
        diff, diff_next = t[1] ** 2 - t[0] ** 2, t_next[1] ** 2 - t_next[0] ** 2
        np.testing.assert_allclose(big_next / big, dln.gamma_Theta(x, k), rtol=1e-10)
        np.testing.assert_allclose(abs(diff_next / diff), dln.gamma_diff(x), rtol=1e-10)
        np.testing.assert_allclose(dln.beta_of(t_next) / dln.beta_of(t), dln.gamma_beta(x, k), rtol=1e-10)


def test_gamma_beta_regimes():
    k = float(dln.k_of(dln.THETA0))
    xl, xa = dln.limit_x(k), dln.asymptote_x(k)
    assert xa == pytest.approx(1 / k, rel=1e-3) and dln.gamma_Theta(xa, k) == pytest.approx(0, abs=1e-12)
    assert dln.gamma_beta(xl, k) == pytest.approx(1.0, abs=1e-12)
    eps = 1e-4
    assert dln.gamma_beta(xl + eps, k) < 1 < dln.gamma_beta(xl - eps, k)
    x = np.linspace(xl + eps, 0.04, 50)
    assert np.all(dln.gamma_beta(x, k) < 1)  # balancing beyond the limit
    x = np.linspace(1e-6, xl - eps, 50)
    assert np.all(dln.gamma_beta(x, k) > 1)  # below the limit the imbalance ratio grows


def test_divergence_recorded_not_raised():
    r = dln.gd_trajectory(1.0, steps=50)
    assert r["status"] == "diverged" and r["steps_run"] < 50
    assert np.isnan(r["theta"][-1]).all() and np.isnan(r["loss"][-1])
    assert dln.gd_trajectory(0.001, steps=3000)["status"] == "converged"


def test_simulate_dims_and_netcdf_roundtrip(tmp_path):
    import xarray as xr

    ds = dln.simulate([0.001, 0.011, 1.0], steps=200)
    assert dict(ds.sizes) == {"lr": 3, "step": 201, "component": 2}
    for v in ("theta1", "theta2", "loss", "sharpness"):
        assert ds[v].dims == ("lr", "step")
    assert ds["eigvec"].dims == ("lr", "step", "component")
    assert ds["status"].dims == ("lr",)
    for v in list(ds.data_vars) + list(ds.coords):
        assert {"long_name", "units"} <= set(ds[v].attrs), v
    assert ds.attrs["Conventions"] == "CF-1.12"
    meanings = ds["status"].attrs["flag_meanings"].split()
    assert meanings[int(ds["status"].sel(lr=1.0))] == "diverged"
    path = tmp_path / "dln.nc"
    write_netcdf(ds, path, float32=False)
    back = xr.load_dataset(path)
    xr.testing.assert_identical(back[list(ds.data_vars)].reset_coords(drop=True),
                                ds[list(ds.data_vars)].reset_coords(drop=True))
    assert back.attrs["eta_eos"] == pytest.approx(ds.attrs["eta_eos"])
    np.testing.assert_array_equal(back.attrs["theta0"], dln.THETA0)
    assert back["theta1"].encoding.get("zlib")
    assert not list(tmp_path.glob(".dln.nc.*"))  # no temp file left behind
