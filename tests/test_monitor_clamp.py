"""eosflow.SharpnessMonitor, eosflow.StabilityClamp and eosflow.preconditioned_sharpness in plain
torch.optim loops: eigenvalues against fresh cold and dense solves, the clamp's bound at every step
by dense eigvalsh, the run cube drawn by ext/eos and fig7, resume, the README section."""

import copy
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import eosflow
from eosflow.monitor import clamp_threshold, optimizer_preconditioner
from eosflow.objective import Objective
from eosflow.spectral import top_eigenpairs

ROOT = Path(__file__).resolve().parents[1]


def _data(n=120, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64),
            torch.randint(0, classes, (n,), generator=g))


def _tiny(seed=0, d=6, width=5, classes=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, classes)).double()


def _dense_hessian(obj: Objective, model: nn.Module) -> torch.Tensor:
    theta = obj.flatten(model)

    def f(t):
        return sum(obj.sum_loss(t, xc, yc) for xc, yc in obj.chunks()) / obj.n

    return torch.autograd.functional.hessian(f, theta)


def _loop(model, opt, x, y, steps, before_step):
    lf = nn.CrossEntropyLoss()
    for _ in range(steps):
        opt.zero_grad()
        loss = lf(model(x), y)
        loss.backward()
        before_step(loss)
        opt.step()


def test_import_eosflow_stays_light():
    out = subprocess.run([sys.executable, "-c", "import eosflow, sys; print('torch' in sys.modules); "
                          "print(eosflow.SharpnessMonitor.__module__)"],
                         capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "eosflow.monitor"]


def test_monitor_eigenvalues_match_cold_solves():
    x, y = _data()
    model = _tiny()
    opt = torch.optim.SGD(model.parameters(), lr=2.0)
    mon = eosflow.SharpnessMonitor(model, (x, y), nn.CrossEntropyLoss(), k=2, every=4, tol=1e-8, progress=False,
                                   optimizer=opt)
    thetas = {}

    def before(loss):
        if mon.t % 4 == 0:
            thetas[mon.t] = mon.objective.flatten()
        mon.step(loss=loss)

    _loop(model, opt, x, y, 21, before)
    ds = mon.dataset()
    assert list(ds["hstep"].values) == sorted(thetas) == list(range(0, 21, 4))
    for i, s in enumerate(ds["hstep"].values):
        cold = top_eigenpairs(mon.objective, thetas[int(s)], 2, tol=1e-10, max_iter=500).eigvals.numpy()
        np.testing.assert_allclose(ds["eigval"].values[i], cold, rtol=1e-6)
    # the exact loss at measured steps, the loop's loss elsewhere (full batch: the same), the lr
    np.testing.assert_allclose(ds["train_loss"].values, [float(ds["train_loss"][0])] + list(ds["train_loss"][1:]))
    assert np.isfinite(ds["train_acc"].values[::4]).all() and np.isnan(ds["train_acc"].values[1])
    assert (ds["lr_step"].values == 2.0).all() and float(ds["lr"]) == 2.0
    assert ds["sharpness_inloop"].values[4] == pytest.approx(float(ds["sharpness"][1]))


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.6, False), (0.6, True)])
def test_sgd_clamp_bound_holds_at_every_step(momentum, nesterov):
    """η_t·λ_max(H(θ_t)) ≤ c·τ with λ_max by dense eigvalsh at every step; the clamp binds."""
    x, y = _data()
    model = _tiny(1)
    opt = torch.optim.SGD(model.parameters(), lr=8.0, momentum=momentum, nesterov=nesterov, weight_decay=1e-3)
    mon = eosflow.SharpnessMonitor(model, (x, y), nn.CrossEntropyLoss(), every=0, tol=1e-3, progress=False)
    clamp = eosflow.StabilityClamp(opt, mon, c=0.9)
    tau = clamp_threshold(opt, opt.param_groups[0])
    ratios = []

    def before(loss):
        clamp.step()
        lam = float(torch.linalg.eigvalsh(_dense_hessian(mon.objective, model))[-1]) + 1e-3
        ratios.append(opt.param_groups[0]["lr"] * lam / (0.9 * tau))
        mon.step(loss=loss)

    _loop(model, opt, x, y, 40, before)
    assert max(ratios) <= 1 + 1e-9, max(ratios)
    assert max(ratios) > 0.95  # the clamp binds, and tightly
    assert any(h["lr"] < 8.0 for h in clamp.history)
    ds = mon.dataset()  # every step measured (the clamp's), the capped lr recorded
    assert ds.sizes["hstep"] == 40
    np.testing.assert_allclose(ds["lr_step"].values, [h["lr"] for h in clamp.history], rtol=1e-6)


def _torch_denominator(opt, p):
    """The denominator the step just taken used, from the optimizer's state after it."""
    st, group = opt.state[p], opt.param_groups[0]
    if isinstance(opt, torch.optim.RMSprop):
        v = st["square_avg"]
        if group["centered"]:
            v = v - st["grad_avg"] ** 2
        return v.sqrt() + group["eps"]
    b2 = group["betas"][1]
    v = st["max_exp_avg_sq"] if group["amsgrad"] else st["exp_avg_sq"]
    return v.sqrt() / math.sqrt(1 - b2 ** float(st["step"])) + group["eps"]


@pytest.mark.parametrize("make", [
    lambda ps: torch.optim.Adam(ps, lr=0.5),
    lambda ps: torch.optim.Adam(ps, lr=0.5, betas=(0.5, 0.99), weight_decay=1e-2, amsgrad=True),
    lambda ps: torch.optim.AdamW(ps, lr=0.5, weight_decay=1e-2),
    lambda ps: torch.optim.RMSprop(ps, lr=0.2, momentum=0.3, centered=True),
], ids=["adam", "adam-l2-amsgrad", "adamw", "rmsprop"])
def test_adaptive_clamp_bound_holds_at_every_step(make):
    """η_t·λ_max(P_t⁻¹(H(θ_t) + wd)) ≤ c·τ, P_t the denominator the step used (read from the state
    after it), λ_max by dense eigvalsh."""
    x, y = _data()
    model = _tiny(2)
    opt = make(model.parameters())
    mon = eosflow.SharpnessMonitor(model, (x, y), nn.CrossEntropyLoss(), every=0, tol=1e-3, progress=False)
    clamp = eosflow.StabilityClamp(opt, mon, c=0.9)
    tau = clamp_threshold(opt, opt.param_groups[0])
    decay = opt.param_groups[0]["weight_decay"] if not isinstance(opt, torch.optim.AdamW) else 0.0
    lf, ratios = nn.CrossEntropyLoss(), []
    for _ in range(30):
        opt.zero_grad()
        loss = lf(model(x), y)
        loss.backward()
        clamp.step()
        mon.step(loss=loss)
        H = _dense_hessian(mon.objective, model) + decay * torch.eye(mon.objective.dim, dtype=torch.float64)
        lr = opt.param_groups[0]["lr"]
        opt.step()
        d = torch.cat([_torch_denominator(opt, p).reshape(-1) for p in model.parameters()]).rsqrt()
        lam = float(torch.linalg.eigvalsh(d[:, None] * H * d[None, :])[-1])
        ratios.append(lr * lam / (0.9 * tau))
    assert max(ratios) <= 1 + 1e-9, max(ratios)
    assert max(ratios) > 0.95, max(ratios)


def test_preconditioned_sharpness_from_a_real_adam_state():
    x, y = _data()
    model = _tiny(3)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-2)
    lf = nn.CrossEntropyLoss()
    _loop(model, opt, x, y, 7, lambda loss: None)
    opt.zero_grad()
    lf(model(x), y).backward()
    res = eosflow.preconditioned_sharpness(opt, model, (x, y), lf, k=3, tol=1e-9, max_iter=300)
    obj = Objective(model, x, y, lf)
    H = _dense_hessian(obj, model) + 1e-2 * torch.eye(obj.dim, dtype=torch.float64)
    twin = copy.deepcopy(model)  # the next step, taken on a copy: its state holds the P it used
    twin_opt = torch.optim.Adam(twin.parameters(), lr=0.01, weight_decay=1e-2)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # (load_state_dict shares tensors)
    for p, q in zip(model.parameters(), twin.parameters()):
        q.grad = p.grad.clone()
    twin_opt.step()
    d = torch.cat([_torch_denominator(twin_opt, q).reshape(-1) for q in twin.parameters()]).rsqrt()
    dense = torch.linalg.eigvalsh(d[:, None] * H * d[None, :]).flip(0)[:3]
    np.testing.assert_allclose(res.eigvals.numpy(), dense.numpy(), rtol=1e-7)
    P, wd, moved = optimizer_preconditioner(opt, model)
    np.testing.assert_allclose(P.rsqrt().numpy(), d.numpy(), rtol=1e-12)
    assert moved.all() and (wd == 1e-2).all()


def _monitored_run(lr, steps=30, seed=0, every=3, path=None, clamp=None):
    x, y = _data(seed=5)
    model = _tiny(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    mon = eosflow.SharpnessMonitor(model, (x, y), nn.CrossEntropyLoss(), every=every, tol=1e-4, path=path,
                                   optimizer=opt, validation=_data(40, seed=9), seed=seed, name="tiny", progress=False)
    cl = eosflow.StabilityClamp(opt, mon, clamp) if clamp else None

    def before(loss):
        if cl is not None:
            cl.step()
        mon.step(loss=loss)

    with mon:
        _loop(model, opt, x, y, steps, before)
    return mon


def test_monitor_cube_is_drawn_by_ext_eos_and_fig7(tmp_path):
    from eosflow.cubes import open_cube
    from eosflow.figures.eos import make_eos, summarize
    from eosflow.figures.fig7 import make_fig7
    from eosflow.summary import summarize_runs

    paths = []
    for i, lr in enumerate((0.5, 4.0, 12.0)):
        for seed in (0, 1):
            p = tmp_path / f"run{i}-{seed}.nc"
            _monitored_run(lr, seed=seed, path=p)
            paths.append(p)
    cubes = [open_cube(p) for p in paths]  # the run cube's required variables are there
    c = cubes[0]
    assert c.attrs["Conventions"] == "CF-1.12" and "eosflow.SharpnessMonitor" in c.attrs["history"]
    assert c.attrs["source"].startswith("eosflow ") and c.attrs["eta_eos"] == pytest.approx(2 / float(c["sharpness"][0]))
    assert all(c[v].attrs.get("long_name") for v in c.data_vars)
    rows = summarize(cubes)
    assert {r["above_limit"] for r in rows} == {True, False}
    assert all(math.isfinite(r["median_ratio_second_half"]) for r in rows if r["lr"] < 12)
    claims = make_eos(cubes, tmp_path / "eos.pdf", tmp_path / "eos.png", tmp_path / "eos.json")
    assert (tmp_path / "eos.png").exists() and len(claims) == 3
    summary = summarize_runs({"tiny": paths})
    assert np.isfinite(summary["rotation"].values).all() and np.isfinite(summary["final_test_acc"].values).all()
    make_fig7(summary, tmp_path / "fig7.pdf", tmp_path / "fig7.png", tmp_path / "fig7.json", k=1)
    assert (tmp_path / "fig7.png").exists()


def test_resume_round_trip():
    """Stopped at step 12 and resumed from state dicts (model, optimizer, monitor, clamp), the run
    measures and steps exactly as the uninterrupted one."""
    x, y = _data()
    lf = nn.CrossEntropyLoss()

    def make():
        model = _tiny(4)
        opt = torch.optim.Adam(model.parameters(), lr=0.3)
        mon = eosflow.SharpnessMonitor(model, (x, y), lf, every=2, progress=False, optimizer=opt)
        return model, opt, mon, eosflow.StabilityClamp(opt, mon, c=0.9)

    def run(model, opt, mon, clamp, steps):
        def before(loss):
            clamp.step()
            mon.step(loss=loss)
        _loop(model, opt, x, y, steps, before)

    whole = make()
    run(*whole, 24)
    first = make()
    run(*first, 12)
    saved = copy.deepcopy([o.state_dict() for o in first])
    resumed = make()
    for o, s in zip(resumed, saved):
        o.load_state_dict(s)
    run(*resumed, 12)
    a, b = whole[2].dataset(), resumed[2].dataset()
    for v in ("eigval", "lr_step", "train_loss", "sharpness_inloop"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
    assert [h["lr"] for h in whole[3].history] == [h["lr"] for h in resumed[3].history]
    assert resumed[3].get_last_lr() == whole[3].get_last_lr()


def test_clamp_caps_what_another_scheduler_sets():
    x, y = _data()
    model = _tiny(5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = eosflow.SharpnessMonitor(model, (x, y), "ce", every=0, progress=False)
    clamp = eosflow.StabilityClamp(opt, mon, c=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=10.0)
    lrs = []

    def before(loss):
        lrs.append(clamp.step()[0])
        mon.step(loss=loss)

    lf = nn.CrossEntropyLoss()
    for _ in range(4):
        opt.zero_grad()
        loss = lf(model(x), y)
        loss.backward()
        before(loss)
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[1] == pytest.approx(1.0)  # uncapped: the scheduler's
    assert lrs[-1] < 100.0 and clamp.history[-1]["lr_uncapped"] == pytest.approx(100.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(1000.0)  # after the step: uncapped, then the scheduler's


def test_errors_name_the_argument():
    x, y = _data()
    model = _tiny()
    mon = eosflow.SharpnessMonitor(model, (x, y), "ce", progress=False)
    with pytest.raises(TypeError, match="optimizer: LBFGS is not supported"):
        eosflow.StabilityClamp(torch.optim.LBFGS(model.parameters()), mon)
    with pytest.raises(ValueError, match="not one of the monitored model's parameters"):
        eosflow.StabilityClamp(torch.optim.SGD(_tiny(1).parameters(), lr=0.1), mon)
    with pytest.raises(ValueError, match="no step recorded"):
        mon.dataset()


def _readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## In your own training loop")
    return text[start:text.index("\n## ", start + 3)]


def test_readme_section_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", _readme_section(), re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
