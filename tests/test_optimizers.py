"""The optimizers of the training loop (issue 12): against torch.optim step for step in float64,
Clipped-Ada's two limits, minibatch order, and a killed minibatch Adam run resuming bit for bit."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from eosflow.objective import Objective
from eosflow.training import TrainConfig, epoch_order, make_optimizer, stability_threshold, train, train_group
from eosflow.training.optimizers import Optimizer, optimizer_problems
from eosflow.training.steppers import ObjectiveStepper

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_objective(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    y = torch.arange(n) % 3
    return Objective(model, x, y, "ce", chunk_size=16), model


def torch_reference(name, model, obj, lr, epochs, batch_size, seed, **kw):
    """θ after every (minibatch) step of torch.optim on a copy of ``model``, the same batches."""
    m = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    m.load_state_dict(model.state_dict())
    opt = {"sgd": lambda p: torch.optim.SGD(p, lr=lr),
           "adam": lambda p: torch.optim.Adam(p, lr=lr, betas=(kw["beta1"], kw["beta2"]), eps=kw["eps"]),
           "rmsprop": lambda p: torch.optim.RMSprop(p, lr=lr, alpha=kw["beta2"], eps=kw["eps"])}[name](m.parameters())
    out = []
    for epoch in range(epochs):
        order = epoch_order(obj.n, seed, epoch) if batch_size else torch.arange(obj.n)
        bs = batch_size or obj.n
        for i in range(0, obj.n, bs):
            idx = order[i:i + bs]
            opt.zero_grad()
            nn.functional.cross_entropy(m(obj.x[idx]), obj.y[idx]).backward()
            opt.step()
            out.append(torch.cat([p.detach().reshape(-1) for p in m.parameters()]).clone())
    return out


def ours(name, obj, theta, lr, epochs, batch_size, seed, **kw):
    opt = Optimizer(name, batch_size=batch_size, seed=seed, n=obj.n, **kw)
    stepper = ObjectiveStepper(obj, opt)
    out = []
    for epoch in range(epochs):
        if opt.minibatch:
            order = epoch_order(obj.n, seed, epoch)
            for i in range(0, obj.n, batch_size):
                theta = opt._apply(theta, stepper.batch_grad(theta, order[i:i + batch_size]), lr)
                out.append(theta.clone())
            opt.epoch += 1
        else:
            theta = opt.step(theta, obj.loss_grad(theta)[1], lr)
            out.append(theta.clone())
    return out


@pytest.mark.parametrize("name, batch_size", [("sgd", 7), ("adam", 7), ("adam", None), ("rmsprop", 7),
                                              ("rmsprop", None)])
def test_against_torch_optim_step_for_step(name, batch_size):
    obj, model = tiny_objective()
    kw = {"beta1": 0.9, "beta2": 0.99, "eps": 1e-8}
    lr = 0.05 if name == "sgd" else 5e-3
    want = torch_reference(name, model, obj, lr, 3, batch_size, seed=4, **kw)
    got = ours(name, obj, obj.flatten(), lr, 3, batch_size, seed=4, **kw)
    assert len(got) == len(want) == (3 * math.ceil(40 / 7) if batch_size else 3)  # the last batch is smaller
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_epoch_step_is_the_minibatch_sequence():
    """Optimizer.step does one epoch: the same θ as the step-by-step reference, position back at 0."""
    obj, _ = tiny_objective()
    theta = obj.flatten()
    opt = Optimizer("adam", batch_size=7, seed=4, n=obj.n, beta2=0.99)
    stepper = ObjectiveStepper(obj, opt)
    for _ in range(2):
        theta = stepper.update(theta, obj.loss_grad(theta)[1], [5e-3])
    want = ours("adam", obj, obj.flatten(), 5e-3, 2, 7, seed=4, beta1=0.9, beta2=0.99, eps=1e-8)[-1]
    assert torch.equal(theta, want) and opt.epoch == 2 and opt.position == 0 and opt.k == 12


def test_clipped_ada_limits():
    obj, _ = tiny_objective()
    th0 = obj.flatten()
    # c = inf: Adam exactly
    a = ours("adam", obj, th0, 5e-3, 5, 7, seed=1, beta1=0.9, beta2=0.99, eps=1e-8)
    c = ours("clipped_adam", obj, th0, 5e-3, 5, 7, seed=1, beta1=0.9, beta2=0.99, eps=1e-8, clip=math.inf)
    assert all(torch.equal(x, y) for x, y in zip(a, c))
    # c below every sqrt(v_hat): the momentum step -eta * m_hat / c (+ eps)
    opt = Optimizer("clipped_adam", clip=1e-3, beta1=0.9, beta2=0.99)
    theta, m = th0.clone(), torch.zeros_like(th0)
    gen = torch.Generator().manual_seed(0)
    for k in range(1, 6):
        g = torch.randn(th0.shape, generator=gen, dtype=torch.float64).sign() * (0.1 + torch.rand(
            th0.shape, generator=gen, dtype=torch.float64))  # |g| >= 0.1 >> c: sqrt(v_hat) > c everywhere
        m = 0.9 * m + 0.1 * g
        want = theta - 5e-3 * (m / (1 - 0.9 ** k)) / (1e-3 + 1e-8)
        theta = opt._apply(theta, g, 5e-3)
        torch.testing.assert_close(theta, want, rtol=1e-13, atol=0)
    # the RMSprop variant is beta1 = 0, bias-corrected: clipped_rmsprop(c = inf) == adam(beta1 = 0)
    r = ours("clipped_rmsprop", obj, th0, 5e-3, 3, None, 0, beta1=0.9, beta2=0.99, eps=1e-8, clip=math.inf)
    a0 = ours("adam", obj, th0, 5e-3, 3, None, 0, beta1=0.0, beta2=0.99, eps=1e-8)
    assert all(torch.equal(x, y) for x, y in zip(r, a0))


def test_preconditioner_and_threshold():
    assert stability_threshold("adam", 0.01, 0.9) == pytest.approx(38 / 0.01)  # Cohen et al. 2022: 38/eta
    assert stability_threshold("clipped_rmsprop", 0.01, 0.9) == pytest.approx(200.0)
    assert stability_threshold("sgd", 0.1) == pytest.approx(20.0)
    g = torch.tensor([3.0, 0.5, -2.0], dtype=torch.float64)
    opt = Optimizer("clipped_adam", clip=1.0, beta2=0.99)
    # full batch: the preconditioner at theta_0 is the first step's denominator, min(|g|, c) + eps
    torch.testing.assert_close(opt.preconditioner(g), torch.tensor([1.0, 0.5, 1.0], dtype=torch.float64) + 1e-8)
    assert opt.k == 0 and opt.v is None  # a peek changes nothing
    assert Optimizer("sgd").preconditioner(g) is None and not Optimizer("gd").adaptive


def test_epoch_order_is_fixed_by_seed_and_epoch():
    a, b = epoch_order(50, 3, 7), epoch_order(50, 3, 7)
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(50))
    assert not torch.equal(a, epoch_order(50, 3, 8)) and not torch.equal(a, epoch_order(50, 4, 7))


def test_config_problems_name_the_key():
    assert optimizer_problems({"optimizer": "adam"}) == []
    assert "train.clip" in optimizer_problems({"optimizer": "clipped_adam"})[0]
    assert "use optimizer: clipped_adam" in optimizer_problems({"optimizer": "adam", "clip": 1.0})[0]
    assert "optimizer: sgd" in optimizer_problems({"optimizer": "gd", "batch_size": 10})[0]
    assert "must be in [0, 1)" in optimizer_problems({"optimizer": "adam", "beta2": 1.0}, "x.train")[0]
    with pytest.raises(ValueError, match="train.clip"):
        Optimizer("clipped_rmsprop")


def test_gd_through_the_optimizer_is_plain_gd():
    """optimizer gd (default) takes the loop's old path; sgd with a full batch is the same GD."""
    obj, _ = tiny_objective()
    base = dict(lr=0.5, max_epochs=15, acc_goal=None, eval_every=5, snapshot_every=5)
    ref = train(obj, obj.flatten(), TrainConfig(**base), progress=False)
    full = train(obj, obj.flatten(), TrainConfig(**base, optimizer="sgd", batch_size=obj.n), progress=False)
    assert torch.equal(ref.theta, full.theta) and ref.optimizer is None
    np.testing.assert_array_equal(ref.metrics["train_loss"], full.metrics["train_loss"])
    with pytest.raises(ValueError, match="full-batch GD only"):
        train_group(obj, obj.flatten()[None], [TrainConfig(**base, optimizer="adam")], progress=False)


def test_adaptive_run_records_its_preconditioner():
    obj, _ = tiny_objective()
    cfg = TrainConfig(lr=5e-3, max_epochs=12, acc_goal=None, snapshot_every=5, optimizer="clipped_adam", clip=0.05,
                      beta2=0.99)
    res = train(obj, obj.flatten(), cfg, progress=False)
    rec = res.optimizer["preconditioner"]
    assert sorted(rec) == list(res.snapshot_steps) == [0, 5, 10, 12]
    assert all(float(p.max()) <= 0.05 + 1e-8 for p in rec.values())
    # the recorded P at theta_t is the denominator of the step out of theta_t (full batch: with grad L(theta_t))
    opt = make_optimizer(cfg, n=obj.n)
    theta = obj.flatten()
    for t in range(6):
        g = obj.loss_grad(theta)[1]
        if t == 5:
            torch.testing.assert_close(rec[5], opt.preconditioner(g), rtol=0, atol=0)
        theta = opt.step(theta, g, 5e-3)


class _Killed(Exception):
    pass


class KillAfter:
    """The objective, but its minibatch gradient raises after ``n`` calls (a kill mid-epoch)."""

    def __init__(self, obj, n):
        self.obj, self.limit, self.calls = obj, n, 0

    def __getattr__(self, name):
        return getattr(self.obj, name)

    def batch_grad(self, theta, idx):
        self.calls += 1
        if self.calls > self.limit:
            raise _Killed
        return ObjectiveStepper(self.obj).batch_grad(theta, idx)


def test_killed_minibatch_adam_resumes_bit_for_bit(tmp_path):
    obj, _ = tiny_objective()
    cfg = TrainConfig(lr=5e-3, max_epochs=25, acc_goal=None, eval_every=3, snapshot_every=4, checkpoint_every=5,
                      optimizer="adam", batch_size=7, beta2=0.99, order_seed=3)
    test = (obj.x[:10], obj.y[:10])
    ref = train(obj, obj.flatten(), cfg, test=test, progress=False)
    ckpt = tmp_path / "run.ckpt"
    killer = KillAfter(obj, 6 * 12 + 3)  # 12 epochs of 6 batches, then 3 batches into the 13th
    with pytest.raises(_Killed):
        train(killer, obj.flatten(), cfg, test=test, checkpoint=ckpt, progress=False)
    saved = torch.load(ckpt, weights_only=True)
    assert saved["step"] == 10 and saved["optimizer"]["epoch"] == 10 and saved["optimizer"]["position"] == 0
    assert saved["optimizer"]["k"] == 10 * 6 and saved["optimizer"]["v"] is not None
    res = train(obj, obj.flatten(), cfg, test=test, checkpoint=ckpt, progress=False)
    assert torch.equal(res.theta, ref.theta) and torch.equal(res.snapshots, ref.snapshots)
    for k in ("train_loss", "train_acc", "test_loss", "grad_norm"):
        np.testing.assert_array_equal(res.metrics[k], ref.metrics[k])
    assert all(torch.equal(res.optimizer["preconditioner"][s], p) for s, p in ref.optimizer["preconditioner"].items())


def test_diverged_minibatch_run_is_a_result():
    obj, _ = tiny_objective()
    res = train(obj, obj.flatten(), TrainConfig(lr=1e4, max_epochs=20, acc_goal=None, diverge_loss=50.0,
                                                optimizer="sgd", batch_size=5), progress=False)
    assert res.status == "diverged" and res.steps[-1] < 20
