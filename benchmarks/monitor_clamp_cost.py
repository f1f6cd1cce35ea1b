"""What eosflow.SharpnessMonitor and eosflow.StabilityClamp cost in a plain PyTorch training loop.

    python benchmarks/monitor_clamp_cost.py [--steps 300] [--threads 1] [--out benchmarks/results/...json]

The default MLP (784-32-32-32-10 ReLU, ``eosflow.models.build_model``, seed 0) on 1,000
Fashion-MNIST images (``eosflow.bench.workloads.fashion_mnist_subset``; synthetic images of that
shape if none on disk), full-batch GD with ``torch.optim.SGD`` and ``nn.CrossEntropyLoss`` at
``--lr-multiple`` × η_eos(θ₀) (2: the run reaches the edge of stability), the loop a user writes::

    opt.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); [clamp.step()]; [monitor.step(loss=loss)]; opt.step()

Every loop starts from the same θ₀ and runs ``--steps`` steps; its wall time over the steps is the
time a step (best of ``--repeats``). Rows: plain; monitored every 10 (and 100) steps at the
monitor's tolerances; clamped (c = 0.95, every step) at each tolerance. Overhead = monitored / plain
− 1; clamp cost = clamped / plain. For the clamped runs the bound is checked: max over every 25th
step of η_t·λ_max(θ_t)/(2c), λ_max recomputed cold in float64 to 1e-8 (at most 1: the clamp held).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import eosflow
from eosflow.bench.measure import write_report
from eosflow.bench.workloads import fashion_mnist_subset
from eosflow.models import build_model
from eosflow.objective import Objective
from eosflow.spectral import top_eigenpairs

SPEC = {"arch": "mlp", "widths": [32, 32, 32], "activation": "relu"}
LOSS = None  # the monitor's loss: the loop's module (None) or "ce" (--monitor-loss)
OUT = Path(__file__).parent / "results" / "monitor-clamp-cost-cpu-2026-12-06.json"


def loop(model0, x, y, lr, steps, every=None, tol=1e-3, clamp=None):
    """One run from θ₀; returns (seconds a step, monitor, clamp, θ snapshots every 25 steps)."""
    model = copy.deepcopy(model0)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    mon = cl = None
    if every is not None or clamp is not None:
        mon = eosflow.SharpnessMonitor(model, (x, y), LOSS or loss_fn, every=every or 0, tol=tol, optimizer=opt,
                                       progress=False)
    if clamp is not None:
        cl = eosflow.StabilityClamp(opt, mon, c=clamp)
    snaps = {}
    t0 = time.perf_counter()
    for t in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        if cl is not None:
            cl.step()
            if t % 25 == 0:
                snaps[t] = (torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone(),
                            opt.param_groups[0]["lr"])
        if mon is not None:
            mon.step(loss=loss)
        opt.step()
    return (time.perf_counter() - t0) / steps, mon, cl, snaps


def timed(args, model0, x, y, lr, **kw):
    best = None
    for _ in range(args.repeats):
        r = loop(model0, x, y, lr, args.steps, **kw)
        best = r if best is None or r[0] < best[0] else best
    return best


def bound(model0, x, y, snaps, c):
    obj = Objective(copy.deepcopy(model0).double(), x.double(), y, nn.CrossEntropyLoss())
    worst = 0.0
    for theta, lr in snaps.values():
        s = float(top_eigenpairs(obj, theta.double(), 1, tol=1e-8, max_iter=500).eigvals[0])
        worst = max(worst, lr * s / (2 * c))
    return worst


def monitor_row(sec, plain, mon):
    recs = mon.tracker.records
    return {"s_per_step": sec, "overhead_vs_plain": sec / plain - 1, "measurements": len(recs),
            "hvps_per_measurement_mean": statistics.fmean(r["n_matvec"] for r in recs),
            "product": recs[-1]["product"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lr-multiple", type=float, default=2.0)
    p.add_argument("--tols", type=float, nargs="+", default=[1e-3, 1e-2, 3e-2])
    p.add_argument("--monitor-loss", choices=["module", "ce"], default="module",
                   help="the monitor's loss: the loop's nn.CrossEntropyLoss() or eosflow's 'ce' (same loss)")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    global LOSS
    LOSS = "ce" if args.monitor_loss == "ce" else None
    torch.set_num_threads(args.threads)
    x, y, source = fashion_mnist_subset(1000)
    model0 = build_model(SPEC, (1, 28, 28), 10, seed=0)
    obj = Objective(model0, x, y, nn.CrossEntropyLoss())
    s0 = float(top_eigenpairs(obj, obj.flatten(), 1, tol=1e-6, max_iter=500).eigvals[0])
    lr = args.lr_multiple * 2 / s0
    report = {"workload": "784-32-32-32-10 relu MLP (build_model seed 0), 1000 images, full-batch torch.optim.SGD, "
                          "nn.CrossEntropyLoss; the user's loop with the monitor/clamp calls",
              "data": source, "lr": lr, "eta_eos": 2 / s0, "lr_multiple": args.lr_multiple, "steps": args.steps,
              "repeats": args.repeats, "monitor_loss": args.monitor_loss, "torch_threads": args.threads, "device": "cpu", "rows": {}}
    rows = report["rows"]
    plain = timed(args, model0, x, y, lr)[0]
    rows["plain"] = {"s_per_step": plain}
    print(f"plain: {plain * 1e3:.2f} ms a step")
    for every in (10, 100):
        for tol in args.tols:
            sec, mon, _, _ = timed(args, model0, x, y, lr, every=every, tol=tol)
            r = rows[f"monitor_every_{every}_tol_{tol:g}"] = monitor_row(sec, plain, mon)
            print(f"monitor every {every}, tol {tol:g}: {sec * 1e3:.2f} ms a step, overhead {r['overhead_vs_plain']:.1%} "
                  f"({r['hvps_per_measurement_mean']:.1f} HVPs a measurement, {r['product']})")
    for tol in args.tols:
        sec, mon, cl, snaps = timed(args, model0, x, y, lr, tol=tol, clamp=0.95)
        r = rows[f"clamp_tol_{tol:g}"] = monitor_row(sec, plain, mon)
        r["ratio_vs_plain"] = r.pop("overhead_vs_plain") + 1
        r["max_lr_s_over_2c"] = bound(model0, x, y, snaps, 0.95)
        r["clamp_binding_fraction"] = statistics.fmean(h["lr"] < lr * (1 - 1e-9) for h in cl.history)
        print(f"clamp 0.95, tol {tol:g}: {sec * 1e3:.2f} ms a step, x{r['ratio_vs_plain']:.2f} plain "
              f"({r['hvps_per_measurement_mean']:.1f} HVPs a step, {r['product']}); binding {r['clamp_binding_fraction']:.0%}; "
              f"max eta_t S/(2c) {r['max_lr_s_over_2c']:.5f}")
    write_report(report, args.out)


if __name__ == "__main__":
    main()
