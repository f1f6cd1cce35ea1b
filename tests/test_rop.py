"""The R-operator Hessian-vector products (eosflow.spectral.rop) against dense float64 Hessians and
finite differences; the subspace warm start of block Lanczos against dense eigendecompositions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from eosflow.models import build_model
from eosflow.objective import Objective
from eosflow.spectral import (CachedHVP, SpectrumTracker, block_lanczos_topk, hvp_operator, top_eigenpairs)
from eosflow.spectral.rop import RopHVP, _nbytes, rop_supported, rop_unsupported_reason
from oracles import dense_hessian

D = torch.float64

NETS = {
    "mlp_tanh": ((1, 4, 4), {"arch": "mlp", "widths": [6, 5], "activation": "tanh"}),
    "mlp_relu": ((1, 4, 4), {"arch": "mlp", "widths": [6, 5], "activation": "relu"}),
    "mlp_softplus": ((1, 4, 4), {"arch": "mlp", "widths": [5], "activation": "softplus"}),
    "mlp_elu": ((1, 4, 4), {"arch": "mlp", "widths": [5], "activation": "elu"}),
    "cnn_gelu": ((1, 6, 6), {"arch": "cnn", "channels": [2, 3], "activation": "gelu"}),
    "cnn_pool_relu": ((1, 8, 8), {"arch": "cnn", "channels": [2, 3], "activation": "relu", "input_pool": 2}),
    "vgg_plain_silu": ((3, 4, 4), {"arch": "vgg", "blocks": 1, "base_width": 2, "batch_norm": False,
                                   "activation": "silu", "dense": 4}),
    "vgg_bn": ((3, 4, 4), {"arch": "vgg", "blocks": 1, "base_width": 2, "batch_norm": True, "activation": "relu"}),
    "vgg_bn_dense": ((3, 4, 4), {"arch": "vgg", "blocks": 1, "base_width": 2, "batch_norm": True,
                                 "activation": "relu", "dense": 4}),
    "vgg_bn_tanh_2blocks": ((3, 8, 8), {"arch": "vgg", "blocks": 2, "base_width": 2, "batch_norm": True,
                                        "activation": "tanh"}),
}


def _objective(name, loss, n=12, chunk=6):
    shape, spec = NETS[name]
    model = build_model(spec, shape, 3, seed=1).double()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, *shape, generator=g, dtype=D)
    y = torch.randint(0, 3, (n,), generator=g)
    return Objective(model, x, y, loss=loss, chunk_size=chunk, hvp_mode="revrev")


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_rop_matches_dense_hessian(name, loss):
    obj = _objective(name, loss)
    theta = obj.flatten()
    H = dense_hessian(obj, theta, mode="revrev")
    assert float(H.abs().max()) > 0
    g = torch.Generator().manual_seed(5)
    V = torch.randn(3, obj.dim, generator=g, dtype=D)
    op = RopHVP(obj, theta)
    assert op.product == "rop" and rop_supported(obj.model)
    assert _rel(op.matvec(V[0]), H @ V[0]) < 1e-12
    assert _rel(op.matvec_batch(V), V @ H) < 1e-12
    # nothing kept between products: the same numbers
    assert _rel(RopHVP(obj, theta, max_bytes=0).matvec_batch(V), V @ H) < 1e-12
    # both layouts of a convolutional net's activations (the default: channels-last for images with
    # channels, on a CPU)
    conv = NETS[name][1]["arch"] != "mlp"
    assert op.channels_last == (conv and NETS[name][0][0] > 1)
    if conv:
        other = RopHVP(obj, theta, channels_last=not op.channels_last)
        assert other.channels_last != op.channels_last
        assert _rel(other.matvec_batch(V), V @ H) < 1e-12
        _, _, g_other = other.loss_grad_acc()
        torch.testing.assert_close(g_other, obj.loss_grad_acc(theta)[2], rtol=1e-10, atol=1e-12)
    if NETS[name][1]["activation"] != "relu":  # where the gradient is smooth (no ReLU or max kinks
        # within ±ε): finite differences of the gradient, an oracle that shares no code with either
        eps = 1e-5
        fd = (obj.grad(theta + eps * V[0]) - obj.grad(theta - eps * V[0])) / (2 * eps)
        assert _rel(op.matvec(V[0]), fd) < 1e-6


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_rop_loss_grad_acc_is_the_objectives_and_its_primal_serves_the_products(name, loss):
    """The operator's own primal passes give the loss, accuracy and gradient of
    ``Objective.loss_grad_acc`` (autograd; float64, to rounding), and the products after it equal a fresh operator's
    bit for bit (the passes it kept are the ones the products would have made)."""
    obj = _objective(name, loss)
    theta = obj.flatten() + 0.1 * torch.randn(obj.dim, generator=torch.Generator().manual_seed(3), dtype=D)
    loss_ref, acc_ref, g_ref = obj.loss_grad_acc(theta)
    op = RopHVP(obj, theta)
    loss_op, acc_op, g_op = op.loss_grad_acc()
    assert op.cached_chunks == 2
    assert loss_op == pytest.approx(loss_ref, rel=1e-12) and acc_op == acc_ref
    torch.testing.assert_close(g_op, g_ref, rtol=1e-10, atol=1e-12)
    assert not torch.equal(g_op, torch.zeros_like(g_op))
    V = torch.randn(2, obj.dim, generator=torch.Generator().manual_seed(4), dtype=D)
    assert torch.equal(op.matvec_batch(V), RopHVP(obj, theta).matvec_batch(V))


def test_rop_primal_cache_budget():
    obj = _objective("vgg_bn", "ce", n=12, chunk=4)
    theta = obj.flatten()
    v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(0), dtype=D)
    full = RopHVP(obj, theta)
    ref = full.matvec(v)
    assert full.cached_chunks == 3 and full.cache_bytes > 0
    one = RopHVP(obj, theta, max_bytes=full.cache_bytes // 3 + 1)
    assert torch.equal(one.matvec(v), ref) and one.cached_chunks == 1
    none = RopHVP(obj, theta, max_bytes=0)
    assert torch.equal(none.matvec(v), ref) and none.cached_chunks == 0
    assert torch.equal(full.matvec(v), ref)  # from the kept primal passes
    # the budget counts each kept tensor once: a tensor held by two layers (an alias) is not counted
    # twice
    held = [t for Ps, prob in full._cache for t in [prob, *[x for P in Ps for x in P.values()]]
            if isinstance(t, torch.Tensor)]
    unique = {(t.data_ptr(), t.numel() * t.element_size()): t for t in held}
    assert full.cache_bytes == sum(t.numel() * t.element_size() for t in unique.values())
    t = torch.zeros(5, 3)
    assert _nbytes({"a": t, "b": [t, t.view(15)], "c": (t[0],)}) == t.numel() * t.element_size() + 3 * 4


def test_a_solve_reports_what_its_operator_kept():
    """EigResult.cache: the chunks whose primal passes the solve's operator held at its end, and
    their bytes (what the benchmark's cold rows record); none within a zero budget."""
    from eosflow.spectral import top_eigenpairs

    obj = _objective("vgg_bn", "ce", n=12, chunk=4)
    theta = obj.flatten()
    full = top_eigenpairs(obj, theta, 1, tol=1e-3, hvp="rop")
    reference = RopHVP(obj, theta)
    reference.matvec(torch.ones(obj.dim, dtype=D))
    assert full.cache == {"cached_chunks": 3, "cache_bytes": reference.cache_bytes}
    assert top_eigenpairs(obj, theta, 1, tol=1e-3, hvp="rop", graph_cache_bytes=0).cache == \
        {"cached_chunks": 0, "cache_bytes": 0}
    assert top_eigenpairs(obj, theta, 1, tol=1e-3, hvp="objective").cache is None


class _Square(nn.Module):
    def forward(self, x):
        return x * x


class _Sine(nn.Module):
    def forward(self, x):
        return torch.sin(x)


def test_unsupported_models_fall_back_to_the_graph_rop_then_double_backward():
    square = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), _Square(), nn.Linear(3, 2)).double()
    x = torch.randn(5, 1, 2, 2, dtype=D)
    assert "_Square has no R-operator rule" in rop_unsupported_reason(square)
    sq = Objective(square, x, torch.arange(5) % 2, "ce")
    assert hvp_operator(sq, sq.flatten()).product == "graph_rop"  # the fx graph's rules cover x * x
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), _Sine(), nn.Linear(3, 2)).double()
    obj = Objective(model, x, torch.arange(5) % 2, "ce")
    assert "_Sine has no R-operator rule" in rop_unsupported_reason(model)
    running = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3))
    assert rop_unsupported_reason(running) is None  # batch statistics (the "batch" policy) whatever the flag
    assert "running statistics" in rop_unsupported_reason(running, batch_norm="eval")
    assert "not an nn.Sequential" in rop_unsupported_reason(nn.Linear(2, 2))
    theta = obj.flatten()
    op = hvp_operator(obj, theta)
    assert isinstance(op, CachedHVP) and op.product == "cached"
    with pytest.raises(ValueError, match="no R-operator rule"):
        hvp_operator(obj, theta, kind="rop")
    assert top_eigenpairs(obj, theta, 1).product == "cached"
    assert top_eigenpairs(_objective("vgg_bn", "ce"), _objective("vgg_bn", "ce").flatten(), 1).product == "rop"


# -- the subspace warm start ----------------------------------------------------------------------

def _spd(n, top, seed):
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D)).Q
    vals = torch.cat([torch.tensor(top, dtype=D), torch.linspace(-1.0, 5.0, n - len(top), dtype=D)])
    return U, (U * vals) @ U.T


def test_subspace_warm_start_is_exact_and_cheaper():
    """Warm rows as along GD past the stability limit: the previous eigenvector barely overlaps the
    new one (0.2), the one before overlaps it well (0.95). Started from their span, the solve
    needs fewer products than from their sum, and returns the same pair."""
    n = 300
    U, A = _spd(n, [10.0, 9.0, 8.5], seed=1)
    w = U[:, 3:] @ torch.randn(n - 3, 2, generator=torch.Generator().manual_seed(2), dtype=D)
    w = w / w.norm(dim=0)
    noisy = torch.stack([0.2 * U[:, 0] + 0.98 * w[:, 0], 0.95 * U[:, 0] + 0.31 * w[:, 1]])
    kw = dict(tol=1e-8, max_iter=200, dtype=D, matvec_batch=lambda V: V @ A)
    summed = block_lanczos_topk(lambda v: A @ v, n, 1, v0=noisy, **kw)
    span = block_lanczos_topk(lambda v: A @ v, n, 1, v0=noisy, warm_subspace=True, **kw)
    for r in (summed, span):
        assert r.converged and abs(float(r.eigvals[0]) - 10.0) < 1e-9
        assert float((A @ r.eigvecs[0] - r.eigvals[0] * r.eigvecs[0]).norm()) / 10.0 < 1e-8
    assert span.n_matvec < summed.n_matvec
    # k = 3 from a span holding the top three exactly: answered by Rayleigh-Ritz, one product a row
    exact = block_lanczos_topk(lambda v: A @ v, n, 3, v0=torch.cat([U[:, :3].T, U[:, 5:6].T]), warm_subspace=True, **kw)
    assert exact.converged and exact.n_matvec == 4
    torch.testing.assert_close(exact.eigvals, torch.tensor([10.0, 9.0, 8.5], dtype=D), rtol=0, atol=1e-10)


def test_subspace_warm_start_catches_a_crossing():
    n = 200
    U, before = _spd(n, [10.0, 9.0], seed=3)
    after = (U * torch.cat([torch.tensor([9.5, 10.5], dtype=D), torch.linspace(-1.0, 5.0, n - 2, dtype=D)])) @ U.T
    prev = block_lanczos_topk(lambda v: before @ v, n, 1, tol=1e-6, dtype=D, n_guard=1)
    r = block_lanczos_topk(lambda v: after @ v, n, 1, tol=1e-6, v0=torch.cat([prev.eigvecs, prev.guard]),
                           warm_subspace=True, n_guard=1)
    assert r.converged and abs(float(r.eigvals[0]) - 10.5) < 1e-8
    assert abs(float(r.eigvecs[0] @ U[:, 1])) > 1 - 1e-6


def test_tracker_subspace_state_round_trip():
    """The warm start of a subspace tracker includes the measurement before; a tracker restored
    from ``state_dict`` measures exactly what the uninterrupted one does."""
    obj = _objective("mlp_tanh", "ce", n=24, chunk=24)
    thetas = [obj.flatten() + 0.05 * i * torch.ones(obj.dim, dtype=D) for i in range(4)]
    whole = SpectrumTracker(k=1, tol=1e-8, n_guard=1, warm_subspace=True)
    for th in thetas[:2]:
        whole.measure(obj, th)
    assert whole.warm_rows().shape[0] == 3 and whole.previous is not None
    resumed = SpectrumTracker(k=1, tol=1e-8, n_guard=1, warm_subspace=True)
    resumed.load_state_dict(whole.state_dict())
    for th in thetas[2:]:
        a, b = whole.measure(obj, th), resumed.measure(obj, th)
        assert torch.equal(a.eigvals, b.eigvals) and a.n_matvec == b.n_matvec
    H = dense_hessian(obj, thetas[-1], mode="revrev")
    assert abs(float(a.eigvals[0]) - float(torch.linalg.eigvalsh(H)[-1])) < 1e-8 * float(a.eigvals[0])


def test_heap_settings_apply_and_keep_results(tmp_path):
    """The workflow's glibc heap settings are accepted at start-up and by mallopt, and change no
    number: the same product in a process started with them."""
    import os
    import subprocess
    import sys

    from eosflow.heap import HEAP_ENV, reuse_freed_memory

    assert reuse_freed_memory() is True  # Linux, glibc: applied
    code = ("import torch, sys; from eosflow.heap import heap_env_applied; "
            "from eosflow.spectral.rop import RopHVP; from eosflow.models import build_model; "
            "from eosflow.objective import Objective; torch.manual_seed(0); "
            "m = build_model({'arch': 'vgg', 'blocks': 1, 'base_width': 2, 'batch_norm': True, 'activation': 'relu'},"
            " (3, 8, 8), 3, seed=1).double(); x = torch.randn(8, 3, 8, 8, dtype=torch.float64); "
            "o = Objective(m, x, torch.arange(8) % 3); t = o.flatten(); "
            "torch.save((heap_env_applied(), RopHVP(o, t).matvec(torch.ones_like(t))), sys.argv[1])")
    outs = []
    for env in (dict(os.environ, **HEAP_ENV), {k: v for k, v in os.environ.items() if k not in HEAP_ENV}):
        path = tmp_path / f"{len(outs)}.pt"
        subprocess.run([sys.executable, "-c", code, str(path)], env=env, check=True)
        outs.append(torch.load(path, weights_only=True))
    assert outs[0][0] is True and outs[1][0] is False
    assert torch.equal(outs[0][1], outs[1][1])


def test_a_shared_conv_pass_takes_both_gradients_in_one_call_with_the_same_bits(monkeypatch):
    """A clamped step's primal pass takes each convolution's input and weight gradients from one
    ``convolution_backward`` call (``_Conv.backward_grads``); in float32 they are the two separate
    calls' bits, so the default pipeline's clamped CNN runs did not change."""
    from eosflow.spectral.rop import _Conv, _Rule

    model = build_model({"arch": "cnn", "channels": [4, 6], "activation": "relu", "input_pool": 2}, (1, 12, 12), 3, seed=1)
    g = torch.Generator().manual_seed(2)
    obj = Objective(model, torch.randn(40, 1, 12, 12, generator=g), torch.randint(0, 3, (40,), generator=g), "ce")
    theta = obj.flatten()
    calls = []
    real = torch.ops.aten.convolution_backward
    monkeypatch.setattr(torch.ops.aten, "convolution_backward", lambda *a: calls.append(a[-1]) or real(*a))
    merged = RopHVP(obj, theta).loss_grad_acc()
    assert [list(m[:2]) for m in calls] == [[True, True], [False, True]]  # the first layer's input needs none
    monkeypatch.setattr(_Conv, "backward_grads", _Rule.backward_grads)
    calls.clear()
    separate = RopHVP(obj, theta).loss_grad_acc()
    assert len(calls) == 3
    assert merged[0] == separate[0] and torch.equal(merged[2], separate[2])
