"""Spectral density (SLQ), trace estimators (Hutchinson, Hutch++) and per-layer spectra against
exact answers: dense Hessians of small nets, synthetic matrices, and the exact Hessian diagonal of
the benchmark MLP (784-32-32-32-10 on 1,000 Fashion-MNIST images)."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from eosflow.cubes import load_netcdf, write_netcdf
from eosflow.objective import Objective
from eosflow.spectral import FunctionOperator
from eosflow.spectral.density import slq, spectral_density, wasserstein1
from eosflow.spectral.layers import RestrictedOperator, group_indices, layer_spectra, parameter_groups
from eosflow.spectral.trace import hessian_trace, hutchinson, hutchpp
from oracles import dense_hessian


def dense_op(A: torch.Tensor) -> FunctionOperator:
    return FunctionOperator(lambda v: A @ v, A.shape[0], A.dtype, matvec_batch=lambda V: V @ A)


def synthetic(kind: str, n: int = 300, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "goe":
        A = torch.randn(n, n, generator=g, dtype=torch.float64)
        return (A + A.T) / 2
    if kind == "wishart":
        X = torch.randn(n, n // 2, generator=g, dtype=torch.float64)
        return X @ X.T / n
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))  # bulk + outliers
    lam = torch.cat([0.1 * torch.randn(n - 5, generator=g, dtype=torch.float64),
                     torch.tensor([5.0, 8.0, 10.0, 20.0, 40.0], dtype=torch.float64)])
    return U @ torch.diag(lam) @ U.T


def small_mlp(act, seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), act(), nn.Linear(16, 12), act(), nn.Linear(12, 4)).double()
    x, y = torch.randn(40, 8, dtype=torch.float64), torch.randint(0, 4, (40,))
    return model, Objective(model, x, y, "ce")


# -- spectral density ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["goe", "wishart", "outliers"])
def test_slq_matches_the_eigenvalue_distribution_of_synthetic_matrices(kind):
    A = synthetic(kind)
    ev = torch.linalg.eigvalsh(A)
    res = slq(dense_op(A))  # defaults: 10 Rademacher probes, 30 steps
    x, w = res.measure()
    assert res.n_matvec == 300 and res.nodes.shape == (10, 30)
    assert wasserstein1(x, w, ev) <= 0.02 * float(ev[-1] - ev[0])
    torch.testing.assert_close(res.weights.sum(1), torch.ones(10, dtype=torch.float64))
    dx = float(res.grid[1] - res.grid[0])
    assert abs(float(res.density.sum()) * dx - 1) < 1e-3  # a probability density on the grid
    again = slq(dense_op(A))
    torch.testing.assert_close(again.nodes, res.nodes)  # seeded
    assert not torch.equal(slq(dense_op(A), seed=1).nodes, res.nodes)


@pytest.mark.parametrize("act", [nn.Tanh, nn.ReLU])
@pytest.mark.parametrize("seed", [0, 1])
def test_slq_matches_the_dense_hessian_spectrum_of_a_small_mlp(act, seed):
    model, obj = small_mlp(act, seed)
    theta = obj.flatten()
    ev = torch.linalg.eigvalsh(dense_hessian(obj, theta))
    res = spectral_density(obj, theta)
    x, w = res.measure()
    w1 = wasserstein1(x, w, ev) / float(ev[-1] - ev[0])
    assert obj.dim == 400 and w1 <= 0.02, w1  # measured 0.4-0.7 %
    g = spectral_density(obj, theta, distribution="gaussian", probes=4, steps=20)
    assert g.n_matvec == 80 and wasserstein1(*g.measure(), ev) / float(ev[-1] - ev[0]) <= 0.03


def test_slq_invariant_subspace_grid_sigma_and_dataset(tmp_path):
    lam = torch.tensor([-1.0, 2.0, 5.0], dtype=torch.float64).repeat_interleave(20)  # 3 distinct eigenvalues
    res = slq(dense_op(torch.diag(lam)), probes=3, steps=10, grid=50, sigma=0.1)
    assert res.n_matvec == 9  # each probe's Krylov space closes after 3 steps
    assert torch.isnan(res.nodes[:, 3:]).all() and (res.weights[:, 3:] == 0).all()
    torch.testing.assert_close(res.nodes[:, :3], torch.tensor([-1.0, 2.0, 5.0], dtype=torch.float64).expand(3, 3))
    x, w = res.measure()
    assert wasserstein1(x, w, lam) < 0.2 and res.grid.shape == (50,) and res.sigma == 0.1
    grid, dens = res.broaden(np.linspace(-2, 6, 9), sigma=0.5)
    assert grid.shape == dens.shape == (9,)
    ds = res.to_dataset()
    assert set(ds.data_vars) == {"density", "slq_nodes", "slq_weights"}
    assert ds["density"].dims == ("grid",) and ds["slq_nodes"].dims == ("probe", "node")
    assert ds.attrs["probes"] == 3 and ds.attrs["steps"] == 10 and ds.attrs["sigma"] == 0.1
    write_netcdf(ds, tmp_path / "density.nc", float32=False)
    back = load_netcdf(tmp_path / "density.nc", require=("density", "slq_nodes", "slq_weights"))
    np.testing.assert_array_equal(back["slq_weights"].values, res.weights.numpy())
    with pytest.raises(ValueError, match="distribution"):
        slq(dense_op(torch.diag(lam)), distribution="uniform")


def test_wasserstein1_closed_forms():
    assert wasserstein1([0.0], None, [1.0]) == pytest.approx(1.0)
    assert wasserstein1([0.0, 1.0], [3, 1], [0.0, 1.0], None) == pytest.approx(0.25)
    assert wasserstein1([0.0, 2.0], None, [1.0]) == pytest.approx(1.0)


# -- trace -----------------------------------------------------------------------------------------
def test_trace_estimators_on_synthetic_matrices():
    A = synthetic("outliers", n=400)
    exact = float(torch.trace(A))
    z = []
    for seed in range(20):
        r = hutchinson(dense_op(A), probes=50, seed=seed)
        z.append((r.estimate - exact) / r.stderr)
        assert r.n_matvec == 50 and r.samples.shape == (50,)
    assert abs(np.mean(z)) < 1.0 and 0.5 < np.std(z) < 1.6  # unbiased, s.e. calibrated
    low = synthetic("wishart", n=200)[:, :].clone()
    U, _ = torch.linalg.qr(torch.randn(200, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    low = U @ torch.diag(torch.tensor([9.0, 7, 5, 3, 2, 1], dtype=torch.float64)) @ U.T  # rank 6 ≤ sketch
    r = hutchpp(dense_op(low), matvecs=30)
    assert r.n_matvec == 30 and r.estimate == pytest.approx(27.0, rel=1e-10) and r.stderr < 1e-9
    g = hutchpp(dense_op(A), matvecs=31, distribution="gaussian", seed=3)
    assert g.n_matvec == 30 and abs(g.estimate - exact) < 5 * g.stderr
    with pytest.raises(ValueError, match="matvecs"):
        hutchpp(dense_op(A), matvecs=2)


def exact_hessian_diagonal(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The exact diagonal of the Hessian of the mean cross-entropy of a ``Sequential`` of
    ``Linear`` layers and elementwise maps (Flatten first allowed), in ``named_parameters`` order.

    ``L`` depends on a Linear layer's weight only through its pre-activations ``z_n = W a_n + b``,
    so ``∂²L/∂W_jk² = Σ_n a_nk² ∂²L/∂z_nj²``; and ``L`` is a sum over examples, so one product of
    the Hessian with respect to ``Z`` (all examples at once) with the unit ``j`` set to 1 in every
    row gives ``∂²L/∂z_nj²`` for every ``n``: one double-backward pass per unit (106 for the
    benchmark MLP instead of 27,562 Hessian-vector products)."""
    layers, n = list(model), x.shape[0]
    a, out = x, []
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Linear):
            tail = nn.Sequential(*layers[i + 1:])
            z = (a @ layer.weight.T + layer.bias).detach().requires_grad_(True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad(nn.functional.cross_entropy(tail(z), y, reduction="sum") / n, z,
                                           create_graph=True)
                dz = torch.zeros_like(z)
                for j in range(z.shape[1]):
                    e = torch.zeros_like(z)
                    e[:, j] = 1
                    dz[:, j] = torch.autograd.grad(g, z, e, retain_graph=True)[0][:, j]
            out += [((a.detach() ** 2).T @ dz).T.reshape(-1), dz.sum(0)]
        a = layer(a)
    return torch.cat(out).detach()


def test_exact_hessian_diagonal_oracle_matches_the_dense_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x, y = torch.randn(20, 1, 6, dtype=torch.float64), torch.randint(0, 3, (20,))
    obj = Objective(model, x, y, "ce")
    torch.testing.assert_close(exact_hessian_diagonal(model, x, y), torch.diagonal(dense_hessian(obj, obj.flatten())))


@pytest.fixture(scope="module")
def benchmark_mlp():
    from eosflow.bench.workloads import fashion_mnist_subset
    from eosflow.models import build_model

    model = build_model({"arch": "mlp", "widths": [32, 32, 32], "activation": "relu"}, (1, 28, 28), 10, seed=0)
    x, y, source = fashion_mnist_subset(1000)  # synthetic images of that shape without a copy on disk
    obj = Objective(model, x, y, "ce")
    theta0 = obj.flatten()
    theta = theta0.clone()
    for _ in range(200):  # 200 GD steps at lr 0.05
        theta = theta - 0.05 * obj.loss_grad(theta)[1]
    return model, obj, x, y, {"init": theta0, "trained": theta}, source


@pytest.mark.parametrize("point", ["init", "trained"])
def test_trace_within_one_percent_on_the_benchmark_mlp(benchmark_mlp, point):
    model, obj, x, y, thetas, source = benchmark_mlp
    theta = thetas[point]
    net = copy.deepcopy(model)
    net.load_state_dict(obj.unflatten(theta), strict=False)
    exact = float(exact_hessian_diagonal(net, x, y).double().sum())
    pp = hessian_trace(obj, theta)  # Hutch++, 900 products
    assert pp.method == "hutch++" and pp.n_matvec == 900
    assert abs(pp.estimate - exact) <= 0.01 * exact, (pp.estimate, exact)
    assert abs(pp.estimate - exact) <= 4 * pp.stderr + 1e-3 * exact
    h = hessian_trace(obj, theta, method="hutchinson")
    assert h.n_matvec == 900 and abs(h.estimate - exact) <= 4 * h.stderr
    if source.startswith("fashion-mnist"):  # measured: 0.30 % vs 1.15 % (init), 0.08 % vs 1.16 % (trained)
        assert pp.stderr < h.stderr / 2  # the sketch removes the top of the spectrum


# -- per-layer spectra -------------------------------------------------------------------------------
class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(5, 7)
        self.block = nn.Sequential(nn.Tanh(), nn.Linear(7, 6), nn.Tanh())
        self.head = nn.Linear(6, 3)
        self.scale = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return self.head(self.block(self.inp(x))) * self.scale


def test_parameter_groups_follow_the_owning_modules():
    assert parameter_groups(Nested()) == {"<root>": ["scale"], "inp": ["inp.weight", "inp.bias"],
                                          "block.1": ["block.1.weight", "block.1.bias"],
                                          "head": ["head.weight", "head.bias"]}
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert parameter_groups(seq) == {"0": ["0.weight", "0.bias"], "2": ["2.weight", "2.bias"]}


def test_layer_spectra_match_slices_of_the_dense_hessian(tmp_path):
    torch.manual_seed(0)
    model = Nested().double()
    x, y = torch.randn(30, 5, dtype=torch.float64), torch.randint(0, 3, (30,))
    obj = Objective(model, x, y, "ce")
    theta = obj.flatten()
    H = dense_hessian(obj, theta)
    groups = parameter_groups(obj)
    groups["weights"] = ["inp.weight", "head.weight"]  # any set of parameters
    res = layer_spectra(obj, theta, groups, k=3, eigvecs=True, tol=1e-8)
    idx = group_indices(obj, groups)
    assert res.n_matvec == sum(r.n_matvec for r in res.results.values()) > 0
    for g, r in res.results.items():
        block = H[idx[g]][:, idx[g]]
        ev = torch.linalg.eigvalsh(block).flip(0)[:min(3, len(idx[g]))]
        torch.testing.assert_close(r.eigvals, ev, rtol=1e-6, atol=1e-9)
        V = res.padded_eigvecs(g)
        torch.testing.assert_close(V @ H @ V.T, torch.diag(ev), rtol=1e-5, atol=1e-8)
    assert res.results["<root>"].eigvals.numel() == 3 and res.eigvals["inp"].shape == (3,)
    ds = res.to_dataset()
    assert ds["layer_eigval"].dims == ("group", "eig") and list(ds["group"].values) == list(groups)
    write_netcdf(ds, tmp_path / "layers.nc", float32=False)
    assert load_netcdf(tmp_path / "layers.nc", require=("layer_eigval",))["layer_dim"].sum() > 0
    default = layer_spectra(obj, theta, k=1)  # default groups, eigenvectors not kept
    assert list(default.results) == ["<root>", "inp", "block.1", "head"]
    assert default.results["head"].eigvecs is None
    with pytest.raises(ValueError, match="unknown parameter"):
        layer_spectra(obj, theta, {"x": ["nope.weight"]})


def test_restricted_operator_is_the_principal_block():
    A = synthetic("goe", n=20)
    idx = torch.tensor([1, 4, 5, 11])
    op = RestrictedOperator(dense_op(A), idx)
    V = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(op.matvec_batch(V), V @ A[idx][:, idx])
    torch.testing.assert_close(op.matvec(V[0]), A[idx][:, idx] @ V[0])
    assert op.n_matvec == 4 and op.dim == 4
