"""HVPs against dense Hessians and finite differences; Lanczos against dense eigendecompositions."""

from __future__ import annotations

import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, hessian, jacrev

from eosflow.models import build_model
from eosflow.objective import Objective
from eosflow.spectral import CachedHVP, EigResult, SpectrumTracker, block_lanczos_topk, lanczos_topk, top_eigenpairs
from oracles import dense_hessian

D = torch.float64


def _data(n, shape, n_classes, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=D), torch.randint(0, n_classes, (n,), generator=g)


def _net(kind):
    """(model, x, y) in float64: tiny MLP / CNN (tanh) or tiny BatchNorm VGG (relu)."""
    if kind == "mlp":
        shape, spec = (1, 4, 4), {"arch": "mlp", "widths": [6, 5], "activation": "tanh"}
    elif kind == "cnn":
        shape, spec = (1, 6, 6), {"arch": "cnn", "channels": [2, 3], "activation": "tanh"}
    elif kind == "cnn_pool":  # the default scale's second setting: images average-pooled first
        shape, spec = (1, 8, 8), {"arch": "cnn", "channels": [2, 3], "activation": "tanh", "input_pool": 2}
    elif kind == "vgg_plain":  # the VGG without BatchNorm, the authors' dense head
        shape, spec = (3, 4, 4), {"arch": "vgg", "blocks": 1, "base_width": 2, "batch_norm": False,
                                  "activation": "tanh", "dense": 4}
    elif kind == "vgg_dense":  # paper.yaml's cifar_vgg in small: BN in the convolutions and in the head
        shape, spec = (3, 4, 4), {"arch": "vgg", "blocks": 1, "base_width": 2, "batch_norm": True,
                                  "activation": "relu", "dense": 4}
    else:
        shape, spec = (3, 4, 4), {"arch": "vgg", "blocks": 1, "base_width": 2, "batch_norm": True,
                                  "activation": "relu"}
    model = build_model(spec, shape, 3, seed=1).double()
    x, y = _data(20, shape, 3, seed=2)
    return model, x, y


def _ref_loss(model, obj, x, y, loss, chunk):
    """An independent implementation of the full-batch loss (chunks = BatchNorm batches)."""

    def f(theta):
        total = 0.0
        for i in range(0, x.shape[0], chunk):
            logits = functional_call(model, obj.unflatten(theta), (x[i:i + chunk],))
            yc = y[i:i + chunk]
            if loss == "ce":
                total = total + F.cross_entropy(logits, yc, reduction="sum")
            else:
                total = total + 0.5 * ((logits - F.one_hot(yc, 3).to(D)) ** 2).sum()
        return total / x.shape[0]

    return f


def _rel(a, b):
    a, b = a.detach(), b.detach()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def _unit(dim, seed, m=None):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(*((m,) if m else ()), dim, generator=g, dtype=D)
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)


def _fd_hvp(obj, theta, v, eps=1e-5):
    return (obj.grad(theta + eps * v) - obj.grad(theta - eps * v)) / (2 * eps)


# -- HVPs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["mlp", "cnn", "cnn_pool", "vgg_plain"])
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_hvp_matches_dense_hessian_and_fd(kind, loss):
    model, x, y = _net(kind)
    objs = {m: Objective(model, x, y, loss=loss, hvp_mode=m) for m in ("fwdrev", "revrev")}
    obj = objs["fwdrev"]
    theta = obj.flatten()
    H = hessian(_ref_loss(model, obj, x, y, loss, x.shape[0]))(theta)
    assert H.shape == (obj.dim, obj.dim) and float(H.abs().max()) > 0
    v = _unit(obj.dim, 3)
    V = _unit(obj.dim, 4, m=3)
    fd = _fd_hvp(obj, theta, v)
    assert _rel(fd, H @ v) < 1e-5
    for mode, o in objs.items():
        hv = o.hvp(theta, v)
        assert _rel(hv, H @ v) < 1e-10, mode
        assert _rel(hv, fd) < 1e-5, mode
        assert _rel(o.hvp_batch(theta, V), V @ H) < 1e-10, mode
    # the dense-Hessian helper agrees with the independent oracle
    assert _rel(dense_hessian(obj, theta), H) < 1e-10
    assert _rel(dense_hessian(obj, theta, mode="revrev"), H) < 1e-10


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_chunking_is_exact(kind, loss):
    model, x, y = _net(kind)
    v = None
    for mode in ("fwdrev", "revrev"):
        full = Objective(model, x, y, loss=loss, hvp_mode=mode)
        chunked = Objective(model, x, y, loss=loss, chunk_size=7, hvp_mode=mode)
        theta = full.flatten()
        v = _unit(full.dim, 5) if v is None else v
        V = _unit(full.dim, 6, m=2)
        l_full, g_full = full.loss_grad(theta)
        l_ch, g_ch = chunked.loss_grad(theta)
        assert abs(float(l_ch - l_full)) <= 1e-12 * abs(float(l_full))
        assert abs(float(chunked.loss(theta) - full.loss(theta))) <= 1e-12 * abs(float(l_full))
        assert abs(float(full.loss(theta) - l_full)) <= 1e-12 * abs(float(l_full))
        assert _rel(g_ch, g_full) < 1e-12
        assert _rel(chunked.hvp(theta, v), full.hvp(theta, v)) < 1e-12
        assert _rel(chunked.hvp_batch(theta, V), full.hvp_batch(theta, V)) < 1e-12


@pytest.mark.parametrize("kind", ["vgg", "vgg_dense"])
@pytest.mark.parametrize("chunk", [20, 10])
def test_batchnorm_hvp(kind, chunk):
    """BN net: the loss depends on the normalisation batches (``chunk``).

    Oracles: reverse-over-reverse ``jacrev(grad(f))`` and plain autograd double backward
    (``torch.autograd.functional.hessian``), plus finite differences. Not ``torch.func.hessian``
    nor ``jacrev(jacrev(f))``: in torch 2.14 both return a wrong, non-symmetric Hessian through
    ``F.batch_norm`` (see :func:`oracles.dense_hessian`).
    """
    model, x, y = _net(kind)
    obj = Objective(model, x, y, loss="ce", chunk_size=chunk)
    assert obj.hvp_mode == "revrev"  # "auto" picks double backward for BN
    theta = obj.flatten()
    f = _ref_loss(model, obj, x, y, "ce", chunk)
    assert abs(float(obj.loss(theta) - f(theta))) < 1e-12
    H = jacrev(grad(f))(theta).detach()  # (this composition leaks a grad_fn through BN; values are right)
    H_autograd = torch.autograd.functional.hessian(f, theta)
    assert _rel(H, H_autograd) < 1e-12 and _rel(H, H.T) < 1e-12 and float(H.abs().max()) > 0
    v = _unit(obj.dim, 7)
    V = _unit(obj.dim, 8, m=2)
    fd = _fd_hvp(obj, theta, v)
    assert _rel(fd, H @ v) < 1e-5
    for o in (obj, Objective(model, x, y, loss="ce", chunk_size=chunk, hvp_mode="fwdrev")):
        hv = o.hvp(theta, v)
        assert _rel(hv, H @ v) < 1e-10, o.hvp_mode
        assert _rel(hv, fd) < 1e-5, o.hvp_mode
        assert _rel(o.hvp_batch(theta, V), V @ H) < 1e-10, o.hvp_mode
    assert _rel(dense_hessian(obj, theta), H) < 1e-10
    assert _rel(dense_hessian(obj, theta, mode="fwdrev"), H) < 1e-10


# -- Lanczos on an explicit matrix -----------------------------------------------------------------

def _matrix(eigs, seed):
    """``U diag(eigs) Uᵀ`` with a random orthogonal U; returns (A, U) with U's columns the eigenvectors."""
    eigs = torch.as_tensor(eigs, dtype=D)
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=g, dtype=D)).Q
    return (U * eigs) @ U.T, U


def _spectrum(n=300):
    """Large negative outliers, top-5 positive outliers, a bulk in [-1, 1]."""
    bulk = torch.linspace(-1, 1, n - 10, dtype=D)
    return torch.cat([torch.tensor([-80.0, -60.0, -45.0, -30.0, -20.0], dtype=D),
                      torch.tensor([10.0, 8.0, 6.5, 5.0, 4.0], dtype=D), bulk])


def test_lanczos_algebraically_largest_on_indefinite_matrix():
    eigs = _spectrum()
    A, U = _matrix(eigs, seed=0)
    r = lanczos_topk(lambda v: A @ v, A.shape[0], 5, tol=1e-10, max_iter=300, dtype=D)
    assert isinstance(r, EigResult) and r.converged
    torch.testing.assert_close(r.eigvals, torch.tensor([10.0, 8.0, 6.5, 5.0, 4.0], dtype=D), rtol=1e-9, atol=0)
    assert bool((r.eigvals[:-1] >= r.eigvals[1:]).all())
    cos = (r.eigvecs @ U[:, 5:10]).diagonal().abs()
    assert float(cos.min()) > 1 - 1e-9
    torch.testing.assert_close(r.eigvecs @ r.eigvecs.T, torch.eye(5, dtype=D), atol=1e-10, rtol=0)
    # residuals reported are the explicit ones
    explicit = torch.linalg.vector_norm(r.eigvecs @ A - r.eigvals[:, None] * r.eigvecs, dim=1) / r.eigvals.abs()
    torch.testing.assert_close(r.residuals, explicit, rtol=1e-6, atol=1e-15)
    assert bool((r.residuals <= 1e-10).all())
    assert r.n_matvec >= r.iterations + 5


def test_lanczos_not_converged_and_matvec_count():
    A, _ = _matrix(_spectrum(), seed=1)
    calls = []

    def mv(v):
        calls.append(1)
        return A @ v

    r = lanczos_topk(mv, A.shape[0], 5, tol=1e-14, max_iter=8, dtype=D)
    assert not r.converged and r.iterations == 8
    assert r.n_matvec == len(calls) and r.n_matvec >= 8 + 5
    assert r.residuals.max() > 1e-14
    explicit = torch.linalg.vector_norm(r.eigvecs @ A - r.eigvals[:, None] * r.eigvecs, dim=1) / r.eigvals.abs()
    torch.testing.assert_close(r.residuals, explicit, rtol=1e-6, atol=1e-15)


def test_lanczos_breakdown_restart_and_small_dims():
    # 3 distinct eigenvalues: the Krylov space of one vector is 3-dimensional, so Lanczos must restart
    eigs = [4.0] * 3 + [2.0] * 3 + [1.0] * 6
    A, U = _matrix(eigs, seed=2)
    r = lanczos_topk(lambda v: A @ v, 12, 5, tol=1e-10, max_iter=50, min_iter=1, check_every=1, dtype=D)
    torch.testing.assert_close(r.eigvals, torch.tensor([4.0, 4.0, 4.0, 2.0, 2.0], dtype=D), rtol=1e-10, atol=0)
    assert r.converged and bool((r.residuals <= 1e-10).all())
    # the top-3 eigenspace is recovered exactly
    P = U[:, :3] @ U[:, :3].T
    assert _rel(r.eigvecs[:3] @ P, r.eigvecs[:3]) < 1e-9
    # k == dim: the whole spectrum
    B, _ = _matrix([3.0, -1.0, 0.5, -7.0], seed=3)
    r = lanczos_topk(lambda v: B @ v, 4, 4, tol=1e-10, dtype=D)
    torch.testing.assert_close(r.eigvals, torch.tensor([3.0, 0.5, -1.0, -7.0], dtype=D), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError):
        lanczos_topk(lambda v: B @ v, 4, 5)
    with pytest.raises(ValueError):
        lanczos_topk(lambda v: B @ v, 4, 0)


def test_lanczos_seeded_and_dtype():
    A, _ = _matrix(_spectrum(120), seed=4)
    r1 = lanczos_topk(lambda v: A @ v, 120, 3, tol=1e-8, seed=5, dtype=D)
    r2 = lanczos_topk(lambda v: A @ v, 120, 3, tol=1e-8, seed=5, dtype=D)
    assert torch.equal(r1.eigvecs, r2.eigvecs) and r1.n_matvec == r2.n_matvec
    A32 = A.float()
    r3 = lanczos_topk(lambda v: A32 @ v, 120, 3, tol=1e-4, dtype=torch.float32)
    assert r3.eigvals.dtype == torch.float32 and r3.eigvecs.dtype == torch.float32 and r3.converged
    torch.testing.assert_close(r3.eigvals.double(), r1.eigvals, rtol=1e-4, atol=0)


def test_warm_start_matrix():
    A, _ = _matrix(_spectrum(), seed=6)
    g = torch.Generator().manual_seed(7)
    E = torch.randn(A.shape, generator=g, dtype=D)
    A2 = A + 1e-3 * (E + E.T)
    prev = lanczos_topk(lambda v: A @ v, A.shape[0], 5, tol=1e-8, dtype=D)
    cold = lanczos_topk(lambda v: A2 @ v, A.shape[0], 5, tol=1e-8, dtype=D)
    warm = lanczos_topk(lambda v: A2 @ v, A.shape[0], 5, tol=1e-8, v0=prev.eigvecs)
    assert cold.converged and warm.converged
    assert warm.n_matvec < cold.n_matvec
    exact = torch.linalg.eigvalsh(A2).flip(0)[:5]
    torch.testing.assert_close(warm.eigvals, exact, rtol=1e-10, atol=0)
    torch.testing.assert_close(cold.eigvals, exact, rtol=1e-10, atol=0)


# -- Lanczos on a network Hessian ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def mlp_hessian():
    """A ~3.5k-parameter tanh MLP (float64), its dense Hessian and top-5 eigenpairs by LAPACK."""
    model = build_model({"arch": "mlp", "widths": [32, 32], "activation": "tanh"}, (1, 8, 8), 10, seed=0).double()
    x, y = _data(60, (1, 8, 8), 10, seed=1)
    obj = Objective(model, x, y, loss="ce")
    theta = obj.flatten()
    assert 3000 < obj.dim < 4000
    H = dense_hessian(obj, theta)
    w, U = scipy.linalg.eigh(H.numpy(), subset_by_index=[obj.dim - 5, obj.dim - 1])
    return obj, theta, H, torch.from_numpy(w[::-1].copy()), torch.from_numpy(U[:, ::-1].T.copy())


def test_lanczos_matches_dense_eigh_on_mlp_hessian(mlp_hessian):
    obj, theta, H, w, U = mlp_hessian
    assert float((w[:-1] - w[1:]).min()) > 1e-3 * float(w[0])  # distinct top eigenvalues: cosines are meaningful
    r = top_eigenpairs(obj, theta, 5, tol=1e-8, max_iter=400)
    assert r.converged and r.eigvecs.shape == (5, obj.dim)
    assert float(((r.eigvals - w).abs() / w.abs()).max()) < 1e-6
    assert float((r.eigvecs * U).sum(1).abs().min()) > 0.9999
    explicit = torch.linalg.vector_norm(r.eigvecs @ H - r.eigvals[:, None] * r.eigvecs, dim=1) / r.eigvals.abs()
    torch.testing.assert_close(r.residuals, explicit, rtol=1e-4, atol=1e-13)
    assert bool((r.residuals <= 1e-8).all())


def test_warm_start_hessian_and_tracker(mlp_hessian):
    obj, theta, _, w, _ = mlp_hessian
    g = torch.Generator().manual_seed(11)
    theta2 = theta + 1e-3 * torch.randn(theta.shape, generator=g, dtype=D)
    tracker = SpectrumTracker(k=5, tol=1e-6, max_iter=400)
    first = tracker.measure(obj, theta, step=0)
    warm = tracker.measure(obj, theta2, step=1)
    cold = top_eigenpairs(obj, theta2, 5, tol=1e-6, max_iter=400, seed=3)
    assert first.converged and warm.converged and cold.converged
    assert warm.n_matvec < cold.n_matvec
    torch.testing.assert_close(warm.eigvals, cold.eigvals, rtol=1e-9, atol=0)
    assert float(((first.eigvals - w).abs() / w).max()) < 1e-9
    assert [rec["step"] for rec in tracker.records] == [0, 1]
    assert tracker.records[1]["n_matvec"] == warm.n_matvec and torch.equal(tracker.eigvecs, warm.eigvecs)


# -- block Lanczos with stored products, cached-graph HVPs ----------------------------------------------

def _explicit(A, r):
    return torch.linalg.vector_norm(r.eigvecs @ A - r.eigvals[:, None] * r.eigvecs, dim=1) / r.eigvals.abs()


@pytest.mark.parametrize("b", [1, 2, 5])
def test_block_lanczos_matches_dense_on_indefinite_matrix(b):
    eigs = _spectrum()
    A, U = _matrix(eigs, seed=0)
    calls = []

    def mvb(V):
        calls.append(V.shape[0])
        return V @ A

    r = block_lanczos_topk(lambda v: A @ v, A.shape[0], 5, tol=1e-10, max_iter=300, block_size=b, dtype=D,
                           matvec_batch=mvb)
    assert r.converged and r.eigvecs.shape == (5, 300)
    torch.testing.assert_close(r.eigvals, torch.tensor([10.0, 8.0, 6.5, 5.0, 4.0], dtype=D), rtol=1e-9, atol=0)
    assert float((r.eigvecs @ U[:, 5:10]).diagonal().abs().min()) > 1 - 1e-9
    torch.testing.assert_close(r.eigvecs @ r.eigvecs.T, torch.eye(5, dtype=D), atol=1e-10, rtol=0)
    # residuals come from stored products, no extra HVPs, and equal the explicit ones
    torch.testing.assert_close(r.residuals, _explicit(A, r), rtol=1e-4, atol=1e-14)
    assert r.n_matvec == sum(calls) and max(calls) <= b and r.iterations == len(calls)


def test_block_lanczos_fewer_hvps_than_lanczos_and_float32():
    A, _ = _matrix(_spectrum(), seed=1)
    old = lanczos_topk(lambda v: A @ v, 300, 5, tol=1e-8, max_iter=300, dtype=D)
    new = block_lanczos_topk(lambda v: A @ v, 300, 5, tol=1e-8, max_iter=300, dtype=D)
    assert old.converged and new.converged and new.n_matvec < old.n_matvec
    torch.testing.assert_close(new.eigvals, old.eigvals, rtol=1e-12, atol=0)
    A32 = A.float()
    r = block_lanczos_topk(lambda v: A32 @ v, 300, 3, tol=1e-4, dtype=torch.float32)
    assert r.converged and r.eigvals.dtype == torch.float32 and r.eigvecs.dtype == torch.float32
    torch.testing.assert_close(r.eigvals.double(), old.eigvals[:3], rtol=1e-5, atol=0)


def test_block_lanczos_not_converged_breakdown_small_dims():
    A, _ = _matrix(_spectrum(), seed=2)
    r = block_lanczos_topk(lambda v: A @ v, 300, 5, tol=1e-14, max_iter=8, dtype=D)
    assert not r.converged and r.n_matvec == 8
    torch.testing.assert_close(r.residuals, _explicit(A, r), rtol=1e-6, atol=1e-15)
    # repeated eigenvalues: a single start vector spans one copy of each; the restart finds the others
    A3, U3 = _matrix([4.0] * 3 + [2.0] * 3 + [1.0] * 6, seed=2)
    for b in (1, 2):
        r = block_lanczos_topk(lambda v: A3 @ v, 12, 5, tol=1e-10, max_iter=50, block_size=b, min_iter=1, dtype=D)
        torch.testing.assert_close(r.eigvals, torch.tensor([4.0, 4.0, 4.0, 2.0, 2.0], dtype=D), rtol=1e-10, atol=0)
        P = U3[:, :3] @ U3[:, :3].T
        assert r.converged and _rel(r.eigvecs[:3] @ P, r.eigvecs[:3]) < 1e-9
    B, _ = _matrix([3.0, -1.0, 0.5, -7.0], seed=3)
    r = block_lanczos_topk(lambda v: B @ v, 4, 4, tol=1e-10, dtype=D)
    torch.testing.assert_close(r.eigvals, torch.tensor([3.0, 0.5, -1.0, -7.0], dtype=D), rtol=1e-10, atol=1e-12)
    r = block_lanczos_topk(lambda v: B @ v, 4, 1, tol=1e-10, dtype=D, block_size=3)
    torch.testing.assert_close(r.eigvals, torch.tensor([3.0], dtype=D), rtol=1e-10, atol=0)
    for bad in ({"k": 5}, {"k": 0}, {"k": 2, "block_size": 0}):
        with pytest.raises(ValueError):
            block_lanczos_topk(lambda v: B @ v, 4, **bad)


def test_block_lanczos_thick_restart_and_warm_start():
    eigs = _spectrum()
    A, _ = _matrix(eigs, seed=6)
    exact = torch.tensor([10.0, 8.0, 6.5, 5.0, 4.0], dtype=D)
    full = block_lanczos_topk(lambda v: A @ v, 300, 5, tol=1e-9, max_iter=400, dtype=D)
    for b, cap in ((1, 20), (2, 24)):
        r = block_lanczos_topk(lambda v: A @ v, 300, 5, tol=1e-9, max_iter=400, max_basis=cap, block_size=b, dtype=D)
        assert r.converged
        torch.testing.assert_close(r.eigvals, exact, rtol=1e-9, atol=0)
        torch.testing.assert_close(r.residuals, _explicit(A, r), rtol=1e-4, atol=1e-14)
        assert r.n_matvec >= full.n_matvec  # a capped basis can only cost more products
    g = torch.Generator().manual_seed(7)
    E = torch.randn(A.shape, generator=g, dtype=D)
    A2 = A + 1e-3 * (E + E.T)
    exact2 = torch.linalg.eigvalsh(A2).flip(0)[:5]
    for b in (1, 5):
        cold = block_lanczos_topk(lambda v: A2 @ v, 300, 5, tol=1e-8, block_size=b, dtype=D)
        warm = block_lanczos_topk(lambda v: A2 @ v, 300, 5, tol=1e-8, block_size=b, v0=full.eigvecs)
        assert cold.converged and warm.converged and warm.n_matvec < cold.n_matvec, b
        torch.testing.assert_close(warm.eigvals, exact2, rtol=1e-10, atol=0)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "vgg"])
def test_cached_hvp_matches_objective(kind):
    model, x, y = _net(kind)
    chunk = 10 if kind == "vgg" else 7  # BN: 2 normalisation batches
    obj = Objective(model, x, y, loss="ce", chunk_size=chunk)
    theta = obj.flatten()
    v, V = _unit(obj.dim, 9), _unit(obj.dim, 10, m=3)
    ref = {mode: Objective(model, x, y, loss="ce", chunk_size=chunk, hvp_mode=mode).hvp(theta, v)
           for mode in ("fwdrev", "revrev")}
    full = CachedHVP(obj, theta)
    assert full.cached_chunks == len(list(obj.chunks())) and full.graph_bytes > 0
    none = CachedHVP(obj, theta, max_bytes=0)
    assert none.cached_chunks == 0
    part = CachedHVP(obj, theta, max_bytes=full.graph_bytes // full.cached_chunks)
    assert part.cached_chunks == 1
    for op in (full, none, part):
        assert _rel(op(v), ref["revrev"]) < 1e-13 and _rel(op(v), ref["fwdrev"]) < 1e-10
        assert _rel(op(v), op(v)) == 0.0  # reusing the graph changes nothing
        assert _rel(op.batch(V), obj.hvp_batch(theta, V)) < 1e-10
    # bit for bit equal to the fresh double backward
    assert torch.equal(none(v), full(v))


@pytest.mark.parametrize("b", [1, 3])
def test_top_eigenpairs_block_matches_dense_eigh_on_mlp_hessian(mlp_hessian, b):
    obj, theta, H, w, U = mlp_hessian
    r = top_eigenpairs(obj, theta, 5, tol=1e-8, max_iter=400, block_size=b)
    assert r.converged and r.eigvecs.shape == (5, obj.dim)
    # the GPU path (Objective.hvp_batch's vmap products for blocks) gives the same pairs
    r_obj = top_eigenpairs(obj, theta, 5, tol=1e-8, max_iter=400, block_size=b, hvp="objective")
    assert r_obj.converged and float(((r_obj.eigvals - w).abs() / w.abs()).max()) < 1e-6
    assert float(((r.eigvals - w).abs() / w.abs()).max()) < 1e-6
    assert float((r.eigvecs * U).sum(1).abs().min()) > 0.9999
    torch.testing.assert_close(r.residuals, _explicit(H, r), rtol=1e-4, atol=1e-13)
    assert bool((r.residuals <= 1e-8).all())
    old = top_eigenpairs(obj, theta, 5, tol=1e-8, max_iter=400, method="lanczos")
    if b == 1:
        assert r.n_matvec < old.n_matvec
    # deterministic: the same call gives the same bits
    again = top_eigenpairs(obj, theta, 5, tol=1e-8, max_iter=400, block_size=b)
    assert torch.equal(r.eigvecs, again.eigvecs) and torch.equal(r.eigvals, again.eigvals)
    with pytest.raises(ValueError):
        top_eigenpairs(obj, theta, 5, method="arpack")
    with pytest.raises(ValueError):
        top_eigenpairs(obj, theta, 5, hvp="finite-differences")


def test_top_eigenpairs_batchnorm_matches_dense():
    model, x, y = _net("vgg")
    obj = Objective(model, x, y, loss="ce", chunk_size=10)
    theta = obj.flatten()
    H = dense_hessian(obj, theta)
    exact = torch.linalg.eigvalsh(H).flip(0)[:3]
    for b in (1, 2):
        r = top_eigenpairs(obj, theta, 3, tol=1e-9, max_iter=obj.dim, block_size=b)
        assert r.converged
        torch.testing.assert_close(r.eigvals, exact, rtol=1e-8, atol=0)


def test_tracker_warm_start_fewer_hvps_default_engine(mlp_hessian):
    obj, theta, _, w, _ = mlp_hessian
    g = torch.Generator().manual_seed(11)
    steps = [theta + 1e-3 * i * torch.randn(theta.shape, generator=g, dtype=D) for i in range(4)]
    tracker = SpectrumTracker(k=3, tol=1e-6, max_iter=400)
    assert tracker.method == "auto"
    warm = [tracker.measure(obj, t, step=i) for i, t in enumerate(steps)]
    cold = [top_eigenpairs(obj, t, 3, tol=1e-6, max_iter=400, seed=5) for t in steps]
    assert all(r.converged for r in warm + cold)
    assert sum(r.n_matvec for r in warm[1:]) < sum(r.n_matvec for r in cold[1:])
    for a, c in zip(warm, cold):
        torch.testing.assert_close(a.eigvals, c.eigvals, rtol=1e-9, atol=0)
    assert float(((warm[0].eigvals - w[:3]).abs() / w[:3]).max()) < 1e-9
    assert [rec["n_matvec"] for rec in tracker.records] == [r.n_matvec for r in warm]
    # the previous engine, selected by name, gives the same eigenvalues
    old = SpectrumTracker(k=3, tol=1e-6, max_iter=400, method="lanczos")
    for t, r in zip(steps, warm):
        torch.testing.assert_close(old.measure(obj, t).eigvals, r.eigvals, rtol=1e-9, atol=0)


def test_guard_vectors_catch_an_eigenvalue_crossing():
    """Between two measurements the second eigenvalue overtakes the first: a warm start from the
    previous top eigenvector plus the guard vectors (the next Ritz vectors) finds the new top one."""
    n = 200
    g = torch.Generator().manual_seed(3)
    U = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D)).Q
    bulk = torch.linspace(-1.0, 5.0, n - 2, dtype=D)
    before = (U * torch.cat([torch.tensor([10.0, 9.0], dtype=D), bulk])) @ U.T
    after = (U * torch.cat([torch.tensor([9.5, 10.5], dtype=D), bulk])) @ U.T  # u2 now on top
    prev = block_lanczos_topk(lambda v: before @ v, n, 1, tol=1e-6, dtype=D, n_guard=2)
    assert prev.guard.shape == (2, n) and abs(float(prev.guard[0] @ U[:, 1])) > 0.99
    r = block_lanczos_topk(lambda v: after @ v, n, 1, tol=1e-6, v0=torch.cat([prev.eigvecs, prev.guard]), n_guard=2)
    assert r.converged and abs(float(r.eigvals[0]) - 10.5) < 1e-8
    assert abs(float(r.eigvecs[0] @ U[:, 1])) > 1 - 1e-6
