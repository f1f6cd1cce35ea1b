"""A user's model, loss and data in the Python API: Hessians of residual / LayerNorm / Embedding
nets and of torch.nn losses against dense float64 autograd Hessians, DataLoaders equal to
tensors, exact dataset averages, loaders that change between passes, the BatchNorm policy, and
the errors that name the argument."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from eosflow.bench.residual import residual_cnn
from eosflow.losses import resolve_loss
from eosflow.objective import DataChangedError, Objective
from eosflow.spectral import hvp_operator, top_eigenpairs
from eosflow.training import TrainConfig, train

D = torch.float64


class ResMLP(nn.Module):
    """A small residual MLP with LayerNorm and Dropout (a user's model: not nn.Sequential)."""

    def __init__(self, d_in=6, width=5, n_out=3):
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(width, n_out)

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        h = h + self.fc(F.gelu(self.norm(h)))
        return self.out(self.drop(h))


class TokenNet(nn.Module):
    """Embedding, mean over the sequence, linear read-out."""

    def __init__(self, vocab=7, dim=4, n_out=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.out = nn.Linear(dim, n_out)

    def forward(self, tokens):
        return self.out(torch.tanh(self.emb(tokens).mean(1)))


def dense_hessian(model, x, y, loss_of_output):
    """Float64 autograd Hessian of ``loss_of_output(model(x), y)`` in the flat parameters."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    model.eval()

    def f(t):
        params = {n: v.view(s) for n, v, s in zip(names, torch.split(t, sizes), shapes)}
        return loss_of_output(torch.func.functional_call(model, params, (x,)), y)

    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        return torch.autograd.functional.hessian(f, theta)


def _cases():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 6, generator=g, dtype=D)
    y = torch.randint(0, 3, (24,), generator=g)
    tok = torch.randint(0, 7, (24, 5), generator=g)
    return {
        "resmlp-ls": (ResMLP, x, y, nn.CrossEntropyLoss(label_smoothing=0.1),
                      lambda o, t: F.cross_entropy(o, t, label_smoothing=0.1)),
        "resmlp-weighted": (ResMLP, x, y, nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5], dtype=D)),
                            lambda o, t: F.cross_entropy(o, t, weight=torch.tensor([1.0, 2.0, 0.5], dtype=D))),
        "resmlp-mseloss": (ResMLP, x, y, "MSELoss",
                           lambda o, t: F.mse_loss(o, F.one_hot(t, 3).to(D))),
        "resmlp-huber-fn": (ResMLP, x, y, lambda o, t: F.huber_loss(o, F.one_hot(t, 3).to(o.dtype), reduction="none").sum(1),
                            lambda o, t: F.huber_loss(o, F.one_hot(t, 3).to(D), reduction="none").sum(1).mean()),
        "tokens": (TokenNet, tok, y, "ce", lambda o, t: F.cross_entropy(o, t)),
    }


@pytest.mark.parametrize("case", list(_cases()))
def test_user_models_and_losses_match_dense_float64_hessian(case):
    make, x, y, loss, oracle = _cases()[case]
    torch.manual_seed(1)
    model = make().double()
    H = dense_hessian(model, x, y, oracle)
    loader = DataLoader(TensorDataset(x, y), batch_size=10, shuffle=False)  # uneven last batch
    for obj in (Objective(model, x, y, loss), Objective(model, x, y, loss, chunk_size=7), Objective(model, loader, loss=loss)):
        theta = obj.flatten()
        loss_val = float(obj.loss(theta))
        with torch.no_grad():
            assert loss_val == pytest.approx(float(oracle(model.eval()(x), y)), rel=1e-12)
        V = torch.randn(3, obj.dim, dtype=D, generator=torch.Generator().manual_seed(2))
        for kind in ("auto", "cached", "objective"):
            op = hvp_operator(obj, theta, kind=kind)
            torch.testing.assert_close(op.matvec_batch(V), V @ H, rtol=1e-10, atol=1e-10)
        g = obj.grad(theta)
        theta_r = theta.clone().requires_grad_(True)
        names, sizes, shapes = obj.names, obj.sizes, obj.shapes
        params = {n: v.view(s) for n, v, s in zip(names, torch.split(theta_r, sizes), shapes)}
        (g_ref,) = torch.autograd.grad(oracle(torch.func.functional_call(model, params, (x,)), y), theta_r)
        torch.testing.assert_close(g, g_ref, rtol=1e-11, atol=1e-12)


def test_loader_objective_equals_tensor_objective_in_every_instrument():
    torch.manual_seed(0)
    model = residual_cnn(in_channels=1, n_classes=4, width=4, blocks=1).double()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8, generator=g, dtype=D), torch.arange(40) % 4
    a = Objective(model, x, y, nn.CrossEntropyLoss())
    b = Objective(model, DataLoader(TensorDataset(x, y), batch_size=16), loss=nn.CrossEntropyLoss())
    theta = a.flatten()
    assert b.n == 40 and b.chunk_size == 16 and b.dtype == D
    torch.testing.assert_close(a.loss_grad(theta)[1], b.loss_grad(theta)[1], rtol=1e-12, atol=1e-13)
    ra, rb = top_eigenpairs(a, theta, 3, tol=1e-8, max_iter=300), top_eigenpairs(b, theta, 3, tol=1e-8, max_iter=300)
    torch.testing.assert_close(ra.eigvals, rb.eigvals, rtol=1e-8, atol=1e-10)
    cfg = TrainConfig(lr=0.05, max_epochs=5, acc_goal=None)
    ta, tb = train(a, theta, cfg, progress=False), train(b, theta, cfg, progress=False)
    torch.testing.assert_close(ta.theta, tb.theta, rtol=1e-11, atol=1e-12)
    assert a.evaluate(theta) == pytest.approx(b.evaluate(theta), rel=1e-12)


class _Augmenting(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i] + 0.01 * torch.randn_like(self.x[i]), self.y[i]


def test_a_loader_whose_batches_change_is_caught_with_its_cause():
    model = ResMLP().double()
    x, y = torch.randn(20, 6, dtype=D), torch.arange(20) % 3
    with pytest.raises(DataChangedError, match="random augmentation, shuffle=True"):
        Objective(model, DataLoader(_Augmenting(x, y), batch_size=8), loss="ce")
    with pytest.raises(DataChangedError, match="batch 0 changed between passes"):
        Objective(model, DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True), loss="ce")
    # without the double read, the next pass (here the shape check's) still notices
    with pytest.raises(DataChangedError, match="checksum"):
        Objective(model, DataLoader(_Augmenting(x, y), batch_size=8), loss="ce", check_data=False)
    seeded = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(3))
    with pytest.raises(DataChangedError):  # a seeded generator still advances between passes
        Objective(model, seeded, loss="ce")


def test_batch_norm_policy_is_explicit_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 2)).double()
    x, y = torch.randn(16, 3, dtype=D), torch.arange(16) % 2
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = Objective(model, x, y, "ce", chunk_size=8)
    ev = Objective(model, x, y, "ce", chunk_size=8, batch_norm="eval")
    theta = batch.flatten()
    lb, le = float(batch.loss(theta)), float(ev.loss(theta))
    with torch.no_grad():
        model.eval()  # running stats (mean 0, var 1 untouched) and no dropout
        ref_eval = float(F.cross_entropy(model(x), y))
    assert le == pytest.approx(ref_eval, rel=1e-12) and abs(lb - le) > 1e-3
    chunks = [x[:8], x[8:]]
    with torch.no_grad():  # batch policy: each chunk normalised by itself, dropout off
        h = [model[1].weight * (model[0](c) - model[0](c).mean(0)) / (model[0](c).var(0, unbiased=False) + 1e-5).sqrt()
             + model[1].bias for c in chunks]
        logits = torch.cat([model[4](torch.relu(t)) for t in h])
    assert lb == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-10)
    model.train()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # no running buffer moved
    assert model.training and model[3].training  # flags restored
    assert batch.hvp_mode == "revrev" and ev.hvp_mode == "fwdrev"
    with pytest.raises(ValueError, match="batch_norm: 'train' is not allowed"):
        Objective(model, x, y, "ce", batch_norm="train")


def test_accuracy_is_nan_where_it_has_no_meaning():
    model = nn.Linear(3, 2).double()
    x, t = torch.randn(10, 3, dtype=D), torch.randn(10, 2, dtype=D)
    obj = Objective(model, x, t, nn.MSELoss())
    loss, acc, _ = obj.loss_grad_acc(obj.flatten())
    with torch.no_grad():
        assert math.isnan(acc) and loss == pytest.approx(float(F.mse_loss(model(x), t)), rel=1e-12)
    assert obj.scale == pytest.approx(1 / 2)  # MSELoss averages over the 2 outputs as well


def test_sum_reduction_and_ignore_index_average_exactly():
    torch.manual_seed(0)
    model = nn.Linear(3, 4).double()
    x, y = torch.randn(13, 3, dtype=D), torch.tensor([0, 1, 2, 3, -100, 1, 2, -100, 0, 0, 1, 3, 2])
    for loss in (nn.CrossEntropyLoss(reduction="sum"), nn.CrossEntropyLoss(ignore_index=-100)):
        obj = Objective(model, DataLoader(TensorDataset(x, y), batch_size=4), loss=loss)
        assert float(obj.loss(obj.flatten())) == pytest.approx(float(loss(model(x), y)), rel=1e-12)


@pytest.mark.parametrize("args, kwargs, match", [
    (("not a model", torch.zeros(2, 3), torch.zeros(2)), {}, "model: expected a torch.nn.Module"),
    ((nn.Linear(3, 2), torch.zeros(4, 3)), {}, "y: the targets are missing"),
    ((nn.Linear(3, 2), torch.zeros(4, 3), torch.zeros(3, dtype=torch.long)), {}, "x has 4 examples, y has 3"),
    ((nn.Linear(3, 2), iter([(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))])), {}, "an iterator can be read only once"),
    ((nn.Linear(3, 2), TensorDataset(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))), {},
     "wrap it in a DataLoader"),
    ((nn.Linear(3, 2), [torch.zeros(2, 3)]), {}, "batch 0 is Tensor; expected \\(x, y\\)"),
    ((nn.Linear(3, 2), torch.zeros(4, 5), torch.zeros(4, dtype=torch.long)), {}, "model: Linear failed on a batch"),
    ((nn.Linear(3, 2), torch.zeros(4, 3), torch.full((4,), 5)), {}, "labels run from 5 to 5, but the model has 2 outputs"),
    ((nn.Linear(3, 2), torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)), {"loss": "hinge"}, "loss: unknown loss 'hinge'"),
    ((nn.Linear(3, 2), torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)), {"loss": lambda o, t: o},
     r"returned shape \(4, 2\) for a batch of 4"),
    ((nn.Linear(3, 2), torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)), {"loss": nn.CTCLoss()},
     "CTCLoss takes more than"),
    ((nn.Linear(3, 2), [(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))]), {"chunk_size": 1},
     "chunk_size: a loader's batches are the chunks"),
])
def test_bad_arguments_name_the_argument(args, kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        Objective(*args, **kwargs)


def test_losses_by_name_mapping_and_path(tmp_path, monkeypatch):
    assert resolve_loss({"name": "CrossEntropyLoss", "label_smoothing": 0.1}).module.label_smoothing == 0.1
    (tmp_path / "myloss.py").write_text("import torch.nn.functional as F\n"
                                        "def focal(out, y, gamma=2.0):\n"
                                        "    p = F.softmax(out, -1).gather(1, y[:, None])[:, 0]\n"
                                        "    return -((1 - p) ** gamma) * p.log()\n")
    monkeypatch.chdir(tmp_path)
    loss = resolve_loss({"name": "myloss.py:focal", "gamma": 1.0})
    out, y = torch.randn(5, 3, dtype=D), torch.arange(5) % 3
    p = F.softmax(out, -1)[torch.arange(5), y]
    assert float(loss.chunk(out, y)[0]) == pytest.approx(float(-((1 - p) * p.log()).sum()), rel=1e-12)
    assert loss.record()["source_sha256"] and loss.record()["qualname"].endswith(":focal")
    with pytest.raises(ValueError, match="loss: no file nothere.py"):
        resolve_loss("nothere.py:f")
    with pytest.raises(ValueError, match="cannot import 'nosuchpkg_xyz.mod'"):
        resolve_loss("nosuchpkg_xyz.mod:f")
    with pytest.raises(ValueError, match="has no 'nope'"):
        resolve_loss("myloss.py:nope")
    with pytest.raises(ValueError, match=r"CrossEntropyLoss\(bogus=1\) failed"):
        resolve_loss({"name": "CrossEntropyLoss", "bogus": 1})


def test_a_torchvision_model_at_tiny_width_matches_dense_float64_hessian():
    """torchvision's VisionTransformer at tiny width (patch embedding, class token, attention,
    LayerNorm, residuals, Dropout): every product kind against the dense float64 Hessian."""
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=4, patch_size=2, num_layers=1, num_heads=1, hidden_dim=4, mlp_dim=6,
                              num_classes=3, dropout=0.1).double()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, 4, 4, generator=g, dtype=D), torch.arange(6) % 3
    H = dense_hessian(model, x, y, lambda o, t: F.cross_entropy(o, t))
    assert H.shape[0] < 400  # small enough for a dense Hessian
    obj = Objective(model, DataLoader(TensorDataset(x, y), batch_size=4), loss=nn.CrossEntropyLoss())
    theta = obj.flatten()
    V = torch.randn(2, obj.dim, dtype=D, generator=g)
    for kind in ("auto", "cached", "objective"):
        torch.testing.assert_close(hvp_operator(obj, theta, kind=kind).matvec_batch(V), V @ H, rtol=1e-9, atol=1e-10)
    ev = torch.linalg.eigvalsh(H)
    res = top_eigenpairs(obj, theta, 2, tol=1e-8, max_iter=400)
    torch.testing.assert_close(res.eigvals, ev.flip(0)[:2], rtol=1e-6, atol=1e-9)
