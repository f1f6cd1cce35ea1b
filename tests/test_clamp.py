"""The stability clamp η_t = min(η₀, clamp · 2 / S(θ_t)): its bound on problems of known
curvature and on the default MLP, and bit-for-bit plain GD where it never binds."""
import numpy as np
import pytest
import torch

from eosflow.spectral import SpectrumTracker, top_eigenpairs
from eosflow.training import TrainConfig, train

CLAMP = 0.9


class Quartic:
    """L(θ) = Σ (a_i θ_i⁴ / 4 + b_i θ_i² / 2) after a fixed rotation Q: the Hessian Q diag(3 a θ̃² + b) Qᵀ
    (θ̃ = Qᵀθ) has a known top eigenvalue that changes along the trajectory. ``a = 0``: a quadratic."""

    def __init__(self, a, b, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.a, self.b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
        self.dim = len(self.b)
        self.Q = torch.linalg.qr(torch.randn(self.dim, self.dim, generator=g, dtype=torch.float64))[0]

    def _t(self, theta):
        return self.Q.T @ theta

    def loss(self, theta):
        t = self._t(theta)
        return float((self.a * t**4 / 4 + self.b * t**2 / 2).sum())

    def hessian_diag(self, theta):
        return 3 * self.a * self._t(theta) ** 2 + self.b

    def lam_max(self, theta):
        return float(self.hessian_diag(theta).max())

    def loss_grad_acc(self, theta):
        t = self._t(theta)
        loss = self.loss(theta)
        return loss, float(loss < 1e-12), self.Q @ (self.a * t**3 + self.b * t)

    def evaluate(self, theta, x=None, y=None):
        loss = self.loss(theta)
        return loss, float(loss < 1e-12)

    def hvp(self, theta, v):
        return self.Q @ (self.hessian_diag(theta) * (self.Q.T @ v))

    def hvp_batch(self, theta, V):
        return torch.stack([self.hvp(theta, v) for v in V])


def tracked(obj, tol):
    tracker = SpectrumTracker(k=1, tol=tol, max_iter=50, method="lanczos")
    return lambda theta: float(tracker.measure(obj, theta).eigvals[0])


def cfg(lr, **kw):
    return TrainConfig(lr=lr, acc_goal=None, max_epochs=60, eval_every=1, snapshot_every=1, **kw)


@pytest.mark.parametrize("a", [0.0, 2.0], ids=["quadratic", "quartic"])
def test_clamp_keeps_every_step_below_the_limit(a):
    obj = Quartic(a=[a] * 6, b=[10.0, 5.0, 2.0, 1.0, 0.5, 0.1])
    theta0 = torch.linspace(1.0, -1.0, 6, dtype=torch.float64)
    lr0 = 3.0 / obj.lam_max(theta0)  # 1.5x the stability limit at θ₀
    plain = train(obj, theta0, cfg(lr0), progress=False)
    assert plain.status == "diverged"  # without the clamp the run blows up
    res = train(obj, theta0, cfg(lr0, clamp=CLAMP, clamp_tol=1e-3), sharpness_fn=tracked(obj, 1e-3), progress=False)
    assert res.status == "max_epochs"
    eta, thetas = res.metrics["lr"], res.snapshots
    lam = np.array([obj.lam_max(t) for t in thetas])
    assert len(eta) == len(lam) == 61
    assert np.all(eta * lam <= 2 * CLAMP * (1 + 1e-12))  # at every step
    assert np.all(eta <= lr0) and eta[0] < lr0  # binds from the start, never above η₀
    # the recorded η is the one taken: θ_{t+1} = θ_t − η_t ∇L(θ_t)
    for t in (0, 17, 59):
        g = obj.loss_grad_acc(thetas[t])[2]
        assert torch.equal(thetas[t + 1], thetas[t] - eta[t] * g)
    np.testing.assert_allclose(res.metrics["sharpness_inloop"], lam, rtol=1e-3)
    if a == 0.0:  # constant curvature: the clamp is the limit times clamp / (1 + tol) at every step
        np.testing.assert_allclose(eta, CLAMP * 2 / (obj.lam_max(theta0) * (1 + 1e-3)), rtol=1e-5)


@pytest.mark.parametrize("a", [0.0, 2.0], ids=["quadratic", "quartic"])
def test_clamp_that_never_binds_is_plain_gd_bit_for_bit(a):
    obj = Quartic(a=[a] * 6, b=[10.0, 5.0, 2.0, 1.0, 0.5, 0.1])
    theta0 = torch.linspace(1.0, -1.0, 6, dtype=torch.float64)
    lr0 = 0.5 / obj.lam_max(theta0)  # a quarter of the limit; on the quartic S only falls from here
    plain = train(obj, theta0, cfg(lr0), progress=False)
    clamped = train(obj, theta0, cfg(lr0, clamp=CLAMP), sharpness_fn=tracked(obj, 1e-3), progress=False)
    assert torch.equal(plain.snapshots, clamped.snapshots) and torch.equal(plain.theta, clamped.theta)
    for m in ("train_loss", "lr", "grad_norm", "test_loss"):
        np.testing.assert_array_equal(plain.metrics[m], clamped.metrics[m])
    assert np.isfinite(clamped.metrics["sharpness_inloop"]).all()  # measured at every step all the same


def test_clamp_without_a_sharpness_function_is_an_error():
    obj = Quartic(a=[0.0] * 3, b=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="train.clamp needs its in-loop sharpness"):
        train(obj, torch.ones(3, dtype=torch.float64), cfg(0.1, clamp=CLAMP), progress=False)


def test_clamp_margin_of_the_run_and_of_its_sharpness_function_must_agree():
    from eosflow.jobs.run import InloopSharpness

    obj = Quartic(a=[0.0] * 3, b=[1.0, 2.0, 3.0])
    fn = InloopSharpness(obj, 1e-3, 50, clamped=True, margin=0.02)
    with pytest.raises(ValueError, match="clamp_margin is 0 but its in-loop sharpness predicts with margin 0.02"):
        train(obj, torch.ones(3, dtype=torch.float64), cfg(0.1, clamp=CLAMP), sharpness_fn=fn, progress=False)


def test_the_loop_gives_the_predictor_its_runs_clamp_limit():
    """run_loop connects a clamped run's predictor to the sharpness at which that run's clamp binds,
    2·clamp/η_t with the scheduled η_t, so that it solves while S approaches it."""
    from eosflow.jobs.run import InloopSharpness

    obj = Quartic(a=[0.0] * 3, b=[1.0, 2.0, 3.0])
    fn = InloopSharpness(obj, 1e-3, 50, clamped=True, margin=0.02)
    assert fn.bounds.limit is None
    lr = 0.1
    train(obj, torch.ones(3, dtype=torch.float64),
          cfg(lr, clamp=CLAMP, clamp_margin=0.02, schedule={"kind": "switch", "epoch": 10, "lr_small": lr / 2}),
          sharpness_fn=fn, progress=False)
    assert fn.bounds.limit(0) == pytest.approx(2 * CLAMP / lr) and fn.bounds.limit(10) == pytest.approx(4 * CLAMP / lr)


def test_connect_clamp_is_what_the_loop_and_the_bench_call():
    """One helper checks a clamped run's sharpness function and connects its limit (the loop and the
    benchmark's clamp row both use it); a run without a clamp is left alone."""
    from eosflow.jobs.run import InloopSharpness
    from eosflow.training.loop import connect_clamp
    from eosflow.training.state import RunState

    obj = Quartic(a=[0.0] * 3, b=[1.0, 2.0, 3.0])
    fn = InloopSharpness(obj, 1e-3, 50, clamped=True, margin=0.02)
    connect_clamp(RunState(cfg(0.1)), fn)  # not clamped: nothing checked, nothing connected
    connect_clamp(RunState(cfg(0.1)), None)
    assert fn.bounds.limit is None
    state = RunState(cfg(0.1, clamp=CLAMP, clamp_margin=0.02))
    connect_clamp(state, fn)
    assert fn.bounds.limit == state.clamp_limit and fn.bounds.limit(3) == pytest.approx(2 * CLAMP / 0.1)
    with pytest.raises(ValueError, match="train.clamp needs its in-loop sharpness"):
        connect_clamp(state, None)
    with pytest.raises(ValueError, match="clamp_margin is 0.02 but its in-loop sharpness predicts with margin 0"):
        connect_clamp(state, InloopSharpness(obj, 1e-3, 50, clamped=True, margin=0.0))


def test_a_clamped_step_asks_its_predictor_once_whether_to_solve():
    """The shared primal pass (loss_grad_acc) and the measurement (__call__) of one step agree on
    whether it solves, from one ClampBound.due per step."""
    from eosflow.jobs.run import InloopSharpness

    obj = Quartic(a=[0.0] * 3, b=[1.0, 2.0, 3.0])
    fn = InloopSharpness(obj, 1e-3, 50, clamped=True, margin=0.02)
    asked = []
    due = fn.bounds.due
    fn.bounds.due = lambda t: asked.append(t) or due(t)
    theta = torch.ones(3, dtype=torch.float64)
    for t in range(12):
        fn.loss_grad_acc(theta)  # the Quartic has no R-operator: None, but the question was asked
        fn(theta)
    assert asked == list(range(12))


@pytest.mark.parametrize("margin", [0.0, 0.02], ids=["solve-every-step", "predicted"])
def test_clamp_on_the_default_mlp_holds_at_every_step_against_float64_solves(tmp_path, one_thread, margin):
    """The default MLP (784-32-32-32-10, ReLU, LeCun) on 200 Fashion-MNIST images, η₀ = 3 η_eos,
    the config's clamp tracker (clamp_tol loosened to 1e-2: the (1 + tol) margin covers it):
    η_t · λ_max(θ_t) ≤ 2 · clamp at EVERY step, λ_max by a float64 tracker of the test's own to
    1e-7, and at a few steps by cold solves. With ``clamp_margin`` most steps step with a
    predicted bound (no solve), and the bound holds there too."""
    from eosflow.bench.steps import _every_step_checks
    from eosflow.config import load_config
    from eosflow.data import prepare_dataset
    from eosflow.jobs.run import build_objective, inloop_sharpness
    from eosflow.jobs.spec import RunSpec

    cfg_all = load_config("config/config.yaml")
    cfg_all["device"] = "cpu"
    cfg_all["settings"]["fmnist_mlp"]["n_train"] = 200
    cfg_all["train"].update(clamp=0.95, clamp_tol=1e-2, clamp_margin=margin)
    data = prepare_dataset("fashion-mnist", 200, 20, 0, str(tmp_path / "d.pt"))
    spec = RunSpec.from_settings(cfg_all, "fmnist_mlp", 0.1, seed=0)
    assert spec.inloop.tol == 1e-2 and spec.inloop.clamped and spec.inloop.margin == margin
    obj = build_objective(spec, data)
    theta0 = obj.flatten()
    s0 = float(top_eigenpairs(obj, theta0, 1, tol=1e-6, max_iter=300).eigvals[0])
    fn = inloop_sharpness(spec, obj)
    own_passes = []  # the objective's own gradient passes: at the steps without a solve only
    own = obj.loss_grad_acc
    obj.loss_grad_acc = lambda th: (own_passes.append(1), own(th))[1]
    res = train(obj, theta0, TrainConfig(lr=3 * 2 / s0, acc_goal=None, max_epochs=150, snapshot_every=1,
                                         clamp=0.95, clamp_tol=1e-2, clamp_margin=margin),
                sharpness_fn=fn, progress=False)
    assert res.status == "max_epochs"
    eta = res.metrics["lr"]
    assert eta.max() < 3 * 2 / s0  # the clamp binds
    b = fn.bounds
    assert b.solves + b.predictions == 151 and b.misses == 0
    assert len(own_passes) == b.predictions  # a solve's step took its gradient from the solve's primal pass
    del obj.loss_grad_acc
    for t in (0, 1, 149):  # solved steps: θ_{t+1} = θ_t − η_t ∇L(θ_t), the gradient equal to rounding
        step = res.snapshots[t] - eta[t] * obj.loss_grad_acc(res.snapshots[t])[2]
        torch.testing.assert_close(res.snapshots[t + 1], step, rtol=1e-5, atol=1e-7)
    if margin:
        assert b.predictions > 50  # most steps without a solve
        assert np.isnan(res.metrics["sharpness_inloop"]).sum() == b.predictions  # not measured there
    else:
        assert b.predictions == 0
    every = _every_step_checks(obj, list(res.snapshots), list(eta), 0.95, 1e-7, 300)
    assert every["steps"] == 151 and every["unconverged"] == 0
    assert every["max_lr_s_over_2clamp"] <= 1 + 1e-6, every["max_lr_s_over_2clamp"]
    for t in (0, 75, 150):
        s = float(top_eigenpairs(obj, res.snapshots[t], 1, tol=1e-6, max_iter=300).eigvals[0])
        assert eta[t] * s <= 2 * 0.95 * (1 + 1e-5), (t, eta[t] * s)


class Crash(Exception):
    pass


@pytest.mark.parametrize("margin", [0.0, 0.02], ids=["solve-every-step", "predicted"])
def test_a_clamped_run_resumed_from_its_checkpoint_equals_an_uninterrupted_one(tmp_path, margin):
    """The warm start of the clamp's tracker and its predicted bound's state are in the checkpoint:
    S(θ_t), hence η_t, and the whole trajectory after a crash are those of a run that never
    stopped, bit for bit."""
    from eosflow.jobs.run import InloopSharpness

    obj = Quartic(a=[2.0] * 6, b=[10.0, 5.0, 2.0, 1.0, 0.5, 0.1])
    theta0 = torch.linspace(1.0, -1.0, 6, dtype=torch.float64)
    c = TrainConfig(lr=3.0 / obj.lam_max(theta0), acc_goal=None, max_epochs=60, eval_every=1, snapshot_every=1,
                    checkpoint_every=20, clamp=CLAMP, clamp_margin=margin)
    whole = train(obj, theta0, c, sharpness_fn=InloopSharpness(obj, 1e-3, 50, clamped=True, margin=margin),
                  progress=False)

    class CrashAt(InloopSharpness):
        def __call__(self, theta):
            if self.calls == 47:
                raise Crash
            return super().__call__(theta)

    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(Crash):
        train(obj, theta0, c, checkpoint=ckpt, sharpness_fn=CrashAt(obj, 1e-3, 50, clamped=True, margin=margin),
              progress=False)
    assert ckpt.exists()  # written at step 40
    fn = InloopSharpness(obj, 1e-3, 50, clamped=True, margin=margin)
    resumed = train(obj, theta0, c, checkpoint=ckpt, sharpness_fn=fn, progress=False)
    assert torch.equal(whole.snapshots, resumed.snapshots)
    for m in ("lr", "sharpness_inloop", "train_loss"):
        np.testing.assert_array_equal(whole.metrics[m], resumed.metrics[m])
    assert (whole.metrics["lr"] < c.lr).all()
    assert (fn.bounds.predictions > 0) == (margin > 0)  # the resumed run did skip solves


def test_a_clamped_mlp_sharing_its_solves_primal_pass_resumes_bit_for_bit(tmp_path, one_thread):
    """A clamped run whose solves give the step's gradient (an R-operator model): killed mid-run and
    resumed from its checkpoint, it equals the uninterrupted run bit for bit, with and without margin."""
    from eosflow.jobs.run import InloopSharpness
    from eosflow.models import build_model
    from eosflow.objective import Objective

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 1, 6, 6, generator=g), torch.arange(96) % 10
    obj = Objective(build_model({"arch": "mlp", "widths": [12, 12], "activation": "relu"}, (1, 6, 6), 10, 0),
                    x, y, "ce", chunk_size=48)
    theta0 = obj.flatten()
    s0 = float(top_eigenpairs(obj, theta0, 1, tol=1e-6, max_iter=300).eigvals[0])
    for margin in (0.0, 0.02):
        c = TrainConfig(lr=3 * 2 / s0, acc_goal=None, max_epochs=40, eval_every=40, snapshot_every=1,
                        checkpoint_every=10, clamp=0.95, clamp_margin=margin)
        shared = []

        class Counting(InloopSharpness):
            def loss_grad_acc(self, theta):
                out = super().loss_grad_acc(theta)
                shared.append(out is not None)
                return out

        whole = train(obj, theta0, c, sharpness_fn=Counting(obj, 1e-3, 100, clamped=True, margin=margin),
                      progress=False)
        assert sum(shared) == whole.metrics["sharpness_inloop"].size - np.isnan(whole.metrics["sharpness_inloop"]).sum()
        assert sum(shared) > 10 and (whole.metrics["lr"] < c.lr).any()

        class CrashAt(InloopSharpness):
            def __call__(self, theta):
                if self.calls == 27:
                    raise Crash
                return super().__call__(theta)

        ckpt = tmp_path / f"ckpt{margin}.pt"
        with pytest.raises(Crash):
            train(obj, theta0, c, checkpoint=ckpt, sharpness_fn=CrashAt(obj, 1e-3, 100, clamped=True, margin=margin),
                  progress=False)
        resumed = train(obj, theta0, c, checkpoint=ckpt,
                        sharpness_fn=InloopSharpness(obj, 1e-3, 100, clamped=True, margin=margin), progress=False)
        assert torch.equal(whole.snapshots, resumed.snapshots)
        for m in ("lr", "sharpness_inloop", "train_loss", "grad_norm"):
            np.testing.assert_array_equal(whole.metrics[m], resumed.metrics[m])
