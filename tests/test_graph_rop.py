"""The R-operator over fx graphs (eosflow.spectral.graph_rop) against dense float64 autograd
Hessians: residual nets, normalisation layers, embeddings, functional ops, any loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eosflow.bench.residual import residual_cnn
from eosflow.objective import Objective
from eosflow.spectral import CachedHVP
from eosflow.spectral.graph_rop import GraphRopHVP, graph_rop_supported, graph_rop_unsupported_reason
from oracles import dense_hessian

D = torch.float64


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


class ResMLP(nn.Module):
    """Residual MLP: LayerNorm, functional GELU/tanh, ``x + y``, ``torch.add``, ``-``, scalar ``*``/``/``."""

    def __init__(self, d_in=6, width=5, n_classes=3):
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.ln1, self.fc1 = nn.LayerNorm(width), nn.Linear(width, width)
        self.ln2, self.fc2 = nn.LayerNorm(width, elementwise_affine=False), nn.Linear(width, width)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x):
        h = self.inp(x.view(x.size(0), -1))
        h = h + self.fc1(F.gelu(self.ln1(h)))
        h = torch.add(h, 0.5 * torch.tanh(self.fc2(self.ln2(h))))
        return self.head(h - h.mean(-1, keepdim=True) / 2)


class EmbedMean(nn.Module):
    """Embedding (with a padding row) + mean pooling + a head tied to the embedding."""

    def __init__(self, vocab=7, dim=4):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        self.mix = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.emb.weight  # tied

    def forward(self, tokens):
        e = self.emb(tokens)                     # (B, T, D)
        h = torch.relu(self.mix(e)).mean(dim=1)  # (B, D)
        return self.out(h + e.sum(1) / tokens.shape[1])


class BNNet(nn.Module):
    """BatchNorm (running statistics in eval mode; batch statistics in train mode), max-pool, cat,
    a learned gate ``x * scale``, permute and flatten."""

    def __init__(self, c=3, n_classes=3):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(2, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c, affine=False)
        self.pool = nn.MaxPool2d(2)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 2 * c).view(1, 2 * c, 1, 1))
        self.bn3 = nn.BatchNorm1d(2 * c * 4)
        self.head = nn.Linear(2 * c * 4, n_classes)

    def forward(self, x):
        a = F.silu(self.bn1(self.conv1(x)))
        b = self.bn2(self.conv2(a)).relu()
        h = self.pool(torch.cat([a, b], dim=1)) * self.scale
        h = torch.flatten(h.permute(0, 1, 3, 2), 1)
        return self.head(nn.functional.dropout(self.bn3(h), 0.3, training=False))


def _randomise_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=D))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g, dtype=D))
    return model


def _data(shape, n, n_classes=3, seed=2, tokens=None):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randint(0, tokens, (n, *shape), generator=g) if tokens else
         torch.randn(n, *shape, generator=g, dtype=D))
    return x, torch.randint(0, n_classes, (n,), generator=g)


def _check(model, x, y, loss="ce", chunk=None, n_vec=2, tol=1e-11, **kw):
    obj = Objective(model, x, y, loss=loss, chunk_size=chunk, hvp_mode="revrev", **kw)
    theta = obj.flatten()
    H = dense_hessian(obj, theta)
    assert float(H.abs().max()) > 0
    V = torch.randn(n_vec, obj.dim, generator=torch.Generator().manual_seed(5), dtype=D)
    assert graph_rop_unsupported_reason(model, obj.batch_norm) is None
    op = GraphRopHVP(obj, theta)
    assert op.product == "graph_rop"
    assert _rel(op.matvec_batch(V), V @ H) < tol
    assert _rel(op.matvec(V[0]), H @ V[0]) < tol  # again, from the kept primal passes
    return op, H, V


def _tiny_residual_cnn():
    torch.manual_seed(0)
    return residual_cnn(in_channels=1, n_classes=3, width=4, blocks=2).double().eval()


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_residual_cnn(loss, one_thread):
    x, y = _data((1, 6, 6), 6)
    _check(_tiny_residual_cnn(), x, y, loss, chunk=3)


def test_chunked_equals_unchunked(one_thread):
    model = _tiny_residual_cnn()
    x, y = _data((1, 6, 6), 8)
    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(1), dtype=D)
    outs = []
    for chunk in (None, 3, 8):
        obj = Objective(model, x, y, chunk_size=chunk)
        op = GraphRopHVP(obj, obj.flatten())
        outs.append(op.matvec(v))
        assert op.cached_chunks == -(-8 // (chunk or 8))
    assert _rel(outs[1], outs[0]) < 1e-13 and _rel(outs[2], outs[0]) < 1e-13


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_residual_mlp_layernorm(loss, one_thread):
    torch.manual_seed(0)
    x, y = _data((2, 3), 7)
    _check(ResMLP().double(), x, y, loss, chunk=4)


def test_embedding_mean_pool_tied_head(one_thread):
    torch.manual_seed(0)
    model = EmbedMean().double()
    x, y = _data((5,), 6, n_classes=7, tokens=7)
    x[0, :2] = 0  # padding tokens
    _check(model, x, y, "ce", chunk=4)


@pytest.mark.parametrize("policy", ["eval", "batch"])
def test_batch_norm(policy, one_thread):
    """Running statistics (a fixed affine map) and batch statistics, whatever the layers' own mode."""
    torch.manual_seed(0)
    model = _randomise_bn(BNNet().double()).train(policy == "eval")
    x, y = _data((2, 4, 4), 6)
    _check(model, x, y, "ce", chunk=3, batch_norm=policy)
    assert model.training == (policy == "eval")  # the model's own flags untouched


def test_group_norm_variants(one_thread):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=1)
            self.gn = nn.GroupNorm(2, 4)
            self.gn_plain = nn.GroupNorm(4, 4, affine=False)
            self.ln = nn.LayerNorm([3, 3])
            self.act = nn.Tanh()
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            h = self.act(self.gn(self.conv(x)))
            h = self.ln(self.gn_plain(h) + h)
            return self.head(F.adaptive_avg_pool2d(h, 1).flatten(1))

    torch.manual_seed(0)
    x, y = _data((2, 5, 5), 6)
    _check(Net().double(), x, y, "mse", chunk=3)


def test_fan_out_and_products_of_tensors(one_thread):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 3)

        def forward(self, x):
            h = self.a(x)
            return self.b(h * h + h - torch.sigmoid(h) * 2.0)

    torch.manual_seed(0)
    x, y = _data((3,), 5)
    _check(Net().double(), x, y, "ce")


def _smooth_abs(out, y):
    """A user's loss: softplus-smoothed absolute error to the one-hot target, per example."""
    return F.softplus(out - F.one_hot(y, out.shape[-1]).to(out.dtype), beta=3.0).sum(-1)


@pytest.mark.parametrize("loss", [_smooth_abs, nn.CrossEntropyLoss(label_smoothing=0.1)],
                         ids=["function", "CrossEntropyLoss"])
def test_any_loss_through_output_sum_loss(loss, one_thread):
    """Losses other than eosflow's ce/mse: their output gradient and Hessian by autograd."""
    x, y = _data((1, 6, 6), 6)
    op, _, _ = _check(_tiny_residual_cnn(), x, y, loss, chunk=4)
    assert op.loss is None and op.objective.loss_name is None


def test_torchvision_resnet18(one_thread):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = _randomise_bn(torchvision.models.resnet18(num_classes=3).double().eval())
    assert graph_rop_unsupported_reason(model) is None  # ReLU(inplace=True), BN eval, downsample, += …
    x, y = _data((3, 16, 16), 2)
    obj = Objective(model, x, y, hvp_mode="revrev", batch_norm="eval")
    theta = obj.flatten()
    v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(3), dtype=D)
    assert _rel(GraphRopHVP(obj, theta).matvec(v), CachedHVP(obj, theta).matvec(v)) < 1e-10


def test_primal_cache_budget_and_shared_tensors(one_thread):
    model = _tiny_residual_cnn()
    x, y = _data((1, 6, 6), 12)
    obj = Objective(model, x, y, chunk_size=4)
    theta = obj.flatten()
    v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(0), dtype=D)
    full = GraphRopHVP(obj, theta)
    ref = full.matvec(v)
    assert full.cached_chunks == 3 and full.cache_bytes > 0
    one = GraphRopHVP(obj, theta, max_bytes=full.cache_bytes // 3 + 1)
    assert torch.equal(one.matvec(v), ref) and one.cached_chunks == 1
    none = GraphRopHVP(obj, theta, max_bytes=0)
    assert torch.equal(none.matvec(v), ref) and none.cached_chunks == 0
    # a tensor kept by two nodes is counted once: each block ReLU's output is the next
    # convolution's input, a GroupNorm's input gradient the gradient of the convolution before it
    from eosflow.spectral.graph_rop import _nbytes
    Ps, _ = full._cache[0]
    relus = [n for n in Ps if n.target in ("blocks.0.act", "blocks.1.act")]
    convs = [n for n in Ps if str(n.target).endswith(("conv1", "conv2"))]
    assert len(relus) == len(convs) == 4
    assert all(Ps[r]["y"] is Ps[c]["x"] for r, c in zip(relus, convs))
    unique = {id(t): t for P in Ps.values() for t in P.values() if isinstance(t, torch.Tensor)}
    each = sum(_nbytes(P, set()) for P in Ps.values())
    assert _nbytes(Ps, set()) == sum(t.numel() * t.element_size() for t in unique.values()) < each


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = self.fc(x)
        if h.sum() > 0:  # control flow on a value: fx cannot trace it
            h = -h
        return h


def test_unsupported_models_give_a_reason():
    assert "cannot trace" in graph_rop_unsupported_reason(_Branchy())

    class Sin(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return torch.sin(self.fc(torch.sin(x)))  # sin of the data is fine, of a θ-dependent tensor not

    assert "sin has no R-operator rule" in graph_rop_unsupported_reason(Sin())
    drop = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5), nn.Linear(3, 2))
    assert graph_rop_supported(drop) and drop.training  # Dropout: the identity, as the objective runs it

    class Ratio(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x):
            return self.a(x) / self.b(x)

    assert "division by a tensor that depends on θ" in graph_rop_unsupported_reason(Ratio())
    assert "has no R-operator rule" in graph_rop_unsupported_reason(
        nn.Sequential(nn.Linear(4, 4), nn.MultiheadAttention(4, 1)))
    obj = Objective(Sin(), torch.randn(3, 4), torch.arange(3) % 2)
    with pytest.raises(ValueError, match="GraphRopHVP: .*no R-operator rule"):
        GraphRopHVP(obj, obj.flatten())
