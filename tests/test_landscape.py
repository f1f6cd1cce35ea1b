"""Gradient-direction slices (fig3) against closed forms: a quadratic and the DLN toy model."""
import json
import math

import numpy as np
import pytest
import torch
import xarray as xr

from eosflow import dln
from eosflow.config import validate_config
from eosflow.files import save_torch
from eosflow.jobs.slices import gradient_slice, run_slices, slice_offsets, slices_dataset
from eosflow.plans import snapshot_steps
from eosflow.models import build_model
from eosflow.objective import Objective
from eosflow.jobs.spec import RunSpec
from eosflow.jobs.train import run_train


pytestmark = pytest.mark.usefixtures("one_thread")


class FuncObjective:
    """The parts of :class:`eosflow.objective.Objective` that a slice uses, for a scalar function."""

    def __init__(self, f, dim):
        self.f, self.dim, self.n = f, dim, 1

    def loss(self, theta):
        return self.f(theta).detach()

    def loss_grad(self, theta):
        g, v = torch.func.grad_and_value(self.f)(theta)
        return v.detach(), g.detach()

    def grad(self, theta):
        return self.loss_grad(theta)[1]

    def hvp(self, theta, v):
        return torch.func.jvp(torch.func.grad(self.f), (theta,), (v,))[1].detach()

    def hvp_batch(self, theta, vs):
        return torch.stack([self.hvp(theta, v) for v in vs])


def quadratic(P=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    lam = torch.tensor([5.0, 2.5, 1.0, 0.3, -0.4, -2.0], dtype=torch.float64)[:P]
    A = Q @ torch.diag(lam) @ Q.T
    A = (A + A.T) / 2
    b = torch.randn(P, generator=g, dtype=torch.float64)
    theta = torch.randn(P, generator=g, dtype=torch.float64)
    return A, b, theta, float(torch.linalg.eigvalsh(A).max())


def test_quadratic_slice_matches_closed_form():
    A, b, theta, lam_max = quadratic()
    obj = FuncObjective(lambda t: 0.5 * t @ A @ t + b @ t, 6)
    lr = 0.37
    out = gradient_slice(obj, theta, lr, points=41, span=1.5, tol=1e-10, max_iter=50)
    An, bn, th = A.numpy(), b.numpy(), theta.numpy()
    g = An @ th + bn
    s = lr * np.linalg.norm(g)
    d = -g / np.linalg.norm(g)
    assert out["grad_norm"] == pytest.approx(np.linalg.norm(g), rel=1e-12)
    assert out["step_length"] == pytest.approx(s, rel=1e-12)
    np.testing.assert_allclose(out["alpha"], np.linspace(s / 2 - 1.5 * s, s / 2 + 1.5 * s, 41), rtol=1e-14)
    pts = th[None, :] + out["alpha"][:, None] * d[None, :]
    closed = 0.5 * np.einsum("ni,ij,nj->n", pts, An, pts) + pts @ bn
    np.testing.assert_allclose(out["loss"], closed, rtol=1e-10, atol=1e-12)
    # the current parameters are the GD step itself, and they lie at alpha = s on the line
    expected_cur = theta - lr * (A @ theta + b)
    assert torch.equal(out["theta_cur"], expected_cur)
    np.testing.assert_allclose(out["theta_cur"].numpy(), th + s * d, rtol=1e-12, atol=1e-14)
    cur = expected_cur.numpy()
    assert out["loss_cur"] == pytest.approx(0.5 * cur @ An @ cur + bn @ cur, rel=1e-12)
    assert out["loss_prev"] == pytest.approx(0.5 * th @ An @ th + bn @ th, rel=1e-12)
    # constant Hessian: S is lambda_max(A) everywhere (not the largest |eigenvalue| either)
    np.testing.assert_allclose(out["sharpness"], lam_max, rtol=1e-9)
    assert out["sharpness_prev"] == pytest.approx(lam_max, rel=1e-9)
    assert out["sharpness_cur"] == pytest.approx(lam_max, rel=1e-9)
    assert np.all(out["residual"] <= 1e-10)


@pytest.mark.parametrize("theta0,lr", [((-0.1, 10.0), 0.011), ((0.7, -1.3), 0.05), ((2.0, 0.5), 0.2)])
def test_dln_sharpness_varies_along_the_line_as_the_closed_form(theta0, lr):
    obj = FuncObjective(lambda t: (t[0] * t[1]) ** 2, 2)
    theta = torch.tensor(theta0, dtype=torch.float64)
    out = gradient_slice(obj, theta, lr, points=41, span=1.5, tol=1e-12, max_iter=10)
    th = np.array(theta0)
    g = dln.grad(th)
    d = -g / np.linalg.norm(g)
    pts = th[None, :] + out["alpha"][:, None] * d[None, :]
    closed = np.linalg.eigvalsh(dln.hessian_closed_form(pts))[:, -1]
    assert np.ptp(closed) > 1e-3 * np.abs(closed).max()  # the Hessian does change along the line
    np.testing.assert_allclose(out["sharpness"], closed, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(out["loss"], dln.loss(pts), rtol=1e-10, atol=1e-14)
    cur = th - lr * g
    assert out["sharpness_cur"] == pytest.approx(np.linalg.eigvalsh(dln.hessian_closed_form(cur))[-1], rel=1e-8)
    assert out["sharpness_prev"] == pytest.approx(np.linalg.eigvalsh(dln.hessian_closed_form(th))[-1], rel=1e-8)
    np.testing.assert_allclose(out["theta_cur"].numpy(), cur, rtol=1e-14)


def test_zero_gradient_has_no_direction():
    obj = FuncObjective(lambda t: (t ** 2).sum(), 3)
    with pytest.raises(ValueError, match="gradient direction is undefined"):
        gradient_slice(obj, torch.zeros(3, dtype=torch.float64), 0.1)


def test_non_finite_loss_on_the_line_gives_nan_sharpness_not_a_crash():
    A, b, theta, lam_max = quadratic()
    base = FuncObjective(lambda t: 0.5 * t @ A @ t + b @ t, 6)
    g = A @ theta + b
    d = -g / g.norm()

    cutoff = 1.01 * 0.2 * float(g.norm())  # just beyond the current point (alpha = s)

    class Holed(FuncObjective):
        def loss(self, t):  # "diverged" beyond the cutoff
            return torch.tensor(math.nan) if float((t - theta) @ d) > cutoff else super().loss(t)

    obj = Holed(base.f, 6)
    out = gradient_slice(obj, theta, 0.2, points=21, tol=1e-10, max_iter=50)
    beyond = out["alpha"] > cutoff
    assert beyond.any() and (~beyond).any()
    assert np.isnan(out["sharpness"][beyond]).all() and np.isnan(out["loss"][beyond]).all()
    np.testing.assert_allclose(out["sharpness"][~beyond], lam_max, rtol=1e-9)
    assert out["sharpness_cur"] == pytest.approx(lam_max, rel=1e-9)


def test_snapshot_steps():
    assert snapshot_steps(10, 20, 6) == [11, 13, 15, 16, 18, 20]
    assert snapshot_steps(0, 3, 6) == [1, 2, 3]  # deduplicated
    assert snapshot_steps(-5, 4, 2) == [1, 4]  # at least 1
    assert snapshot_steps(7, 8, 1) == [8]
    with pytest.raises(ValueError):
        snapshot_steps(10, 10, 3)


def test_offsets_are_centred_between_previous_and_current():
    a = slice_offsets(2.0, 5, 1.0)
    np.testing.assert_allclose(a, [-1.0, 0.0, 1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        slice_offsets(1.0, 1)


def test_slices_dataset_rejects_ragged_slices():
    one = {"alpha": np.zeros(3), "loss": np.zeros(3), "sharpness": np.zeros(3), "residual": np.zeros(3)}
    two = {k: np.zeros(4) for k in one}
    with pytest.raises(ValueError, match="number of points"):
        slices_dataset([one, two], [1, 2], 0.1)


def test_run_slices_on_a_trained_run(tmp_path):
    g = torch.Generator().manual_seed(1)
    data = {"x_train": torch.randn(30, 1, 3, 3, generator=g), "y_train": torch.arange(30) % 3,
            "x_test": torch.randn(6, 1, 3, 3, generator=g), "y_test": torch.arange(6) % 3, "n_classes": 3}
    save_torch(data, tmp_path / "d.pt")
    model_cfg = {"arch": "mlp", "widths": [4], "activation": "tanh"}
    cfg = validate_config({"device": "cpu", "settings": {"s": {
        "dataset": "fashion-mnist", "n_train": 10, "n_test": 10, "loss": "mse", "model": model_cfg}},
        "train": {"max_epochs": 8, "snapshot_every": 1, "acc_goal": 1.0, "dtype": "float64"},
        "hessian": {"tol": 1e-9, "max_iter": 80}})
    lr, seed = 0.4, 2
    run_train(RunSpec.from_settings(cfg, "s", lr, seed), tmp_path / "d.pt", tmp_path / "m.nc", tmp_path / "s.pt",
              progress=False)
    fig3cfg = {"snapshots": 3, "points": 9, "span": 1.5, "instability": 1}
    steps = [1, 4, 8]
    ds = run_slices(cfg, "s", tmp_path / "d.pt", tmp_path / "s.pt", steps, lr, tmp_path / "sl.nc", fig3cfg,
                    seed=seed, progress=False)
    back = xr.load_dataset(tmp_path / "sl.nc")
    assert dict(back.sizes) == {"snapshot": 3, "point": 9}
    assert list(back["step"].values) == steps and back.attrs["lr"] == lr and back.attrs["setting"] == "s"
    assert back["sharpness"].dtype == np.float64 and back["loss"].dtype == np.float64
    record = json.loads(back.attrs["config"])
    assert record["seed"] == seed and record["fig3"]["points"] == 9 and record["steps"] == steps
    np.testing.assert_array_equal(back["sharpness"].values, ds["sharpness"].values)
    # the slice reproduces the run's own GD step, and its loss at theta_{t-1}
    assert (back["step_mismatch"].values < 1e-10).all()
    metrics = xr.load_dataset(tmp_path / "m.nc")
    np.testing.assert_allclose(back["loss_prev"].values, metrics["train_loss"].values[[t - 1 for t in steps]],
                               rtol=1e-6)
    np.testing.assert_allclose(back["loss_cur"].values, metrics["train_loss"].values[steps], rtol=1e-6)
    # S at the previous parameters against a dense Hessian
    snaps = torch.load(tmp_path / "s.pt")
    model = build_model(model_cfg, (1, 3, 3), 3, seed=seed).double()
    obj = Objective(model, data["x_train"].double(), data["y_train"], "mse")
    for j, t in enumerate(steps):
        th = snaps["theta"][snaps["steps"].tolist().index(t - 1)].double()
        H = torch.func.hessian(lambda p: obj.sum_loss(p, obj.x, obj.y) / obj.n)(th)
        assert back["sharpness_prev"].values[j] == pytest.approx(float(torch.linalg.eigvalsh(H).max()), rel=1e-7)
    # a step whose previous snapshot is missing: a clear error naming the file
    with pytest.raises(ValueError, match="s.pt has no step 99"):
        run_slices(cfg, "s", tmp_path / "d.pt", tmp_path / "s.pt", [100], lr, tmp_path / "x.nc", fig3cfg,
                   seed=seed, progress=False)
    with pytest.raises(ValueError, match="≥ 1"):
        run_slices(cfg, "s", tmp_path / "d.pt", tmp_path / "s.pt", [0], lr, tmp_path / "x.nc", fig3cfg,
                   seed=seed, progress=False)
