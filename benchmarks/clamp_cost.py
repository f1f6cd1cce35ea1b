"""What the stability clamp costs on the default pipeline's network, in real training runs.

    python benchmarks/clamp_cost.py [--out results/bench/clamp_cost.json] [--threads 1] [--epochs 300]
           [--rows 0.001:0 0.001:0.02 0.01:0.02 0.001:0.02:12]

The default config's ``fmnist_mlp`` setting (784-32-32-32-10 ReLU MLP, 1,000 Fashion-MNIST images;
synthetic images of that shape if none on disk), seed 0, GD at 2 η_eos(θ₀) for ``--epochs`` epochs:
plain, and clamped at ``train.clamp`` 0.95 for each ``clamp_tol:clamp_margin[:max_gap]`` row (``max_gap``:
the predictor's, :class:`eosflow.training.clamp.ClampBound`, 8 unless given), through
``eosflow.training.train`` with the in-loop sharpness the jobs use
(``eosflow.jobs.run.InloopSharpness``; margin 0: a full solve at every step). Reports seconds per
step (wall time of the run over its steps), the ratio to plain GD, full solves and Hessian-vector
products per solve, missed predictions, and the largest η_t·λ_max(θ_t)/(2·clamp) over EVERY step,
λ_max by a float64 tracker to 1e-7 (``eosflow.bench.steps._every_step_checks``): at most 1 means the
clamp held (``steps_above``: the steps above ``1 + 1e-5``, each with its ratio and whether it was solved).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from eosflow.bench.measure import write_report
from eosflow.bench.steps import _every_step_checks
from eosflow.bench.workloads import fashion_mnist_subset
from eosflow.jobs.run import InloopSharpness
from eosflow.models import build_model
from eosflow.objective import Objective
from eosflow.spectral import top_eigenpairs
from eosflow.training import TrainConfig, train
from eosflow.training.clamp import ClampBound

SPEC = {"arch": "mlp", "widths": [32, 32, 32], "activation": "relu"}


def run(obj, lr, epochs, clamp=None, clamp_tol=1e-3, margin=0.0, max_gap=None):
    cfg = TrainConfig(lr=lr, max_epochs=epochs, acc_goal=None, eval_every=epochs, snapshot_every=1,
                      sharpness_every=0, clamp=clamp, clamp_tol=clamp_tol, clamp_margin=margin)
    fn = InloopSharpness(obj, clamp_tol, 100, clamped=True, margin=margin) if clamp is not None else None
    if fn is not None and max_gap is not None:
        fn.bounds = ClampBound(clamp_tol, margin, max_gap=max_gap)
    t = time.perf_counter()
    res = train(obj, obj.flatten(), cfg, sharpness_fn=fn, progress=False)
    dt = time.perf_counter() - t
    out = {"s_per_step": dt / epochs, "status": res.status}
    if fn is not None:
        n = [r["n_matvec"] for r in fn.tracker.records]
        b = fn.bounds
        out.update(clamp_tol=clamp_tol, clamp_margin=margin, solves=b.solves, predicted_steps=b.predictions,
                   misses=b.misses, hvps_per_measurement_median=statistics.median(n),
                   hvps_per_measurement_mean=statistics.fmean(n), hvps_per_step=sum(n) / (epochs + 1),
                   product=fn.tracker.records[-1]["product"])
        every = _every_step_checks(obj, list(res.snapshots), list(res.metrics["lr"]), clamp, 1e-7, 300)
        out["max_lr_s_over_2clamp"] = every["max_lr_s_over_2clamp"]
        solved = res.metrics["sharpness_inloop"]
        out["max_gap"] = b.max_gap
        out["steps_above"] = [{"step": t, "lr_s_over_2clamp": v, "solved": bool(solved[t] == solved[t])}
                              for t, v in enumerate(every["lr_s_over_2clamp"]) if v > 1 + 1e-5]
        out["every_step_check"] = {k: v for k, v in every.items() if k != "lr_s_over_2clamp"}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/bench/clamp_cost.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--rows", nargs="+", default=["0.001:0", "0.001:0.02", "0.01:0.02", "0.001:0.02:12"],
                   help="clamped rows as clamp_tol:clamp_margin[:max_gap] (margin 0: a full solve at every step)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x, y, source = fashion_mnist_subset(1000)
    obj = Objective(build_model(SPEC, (1, 28, 28), 10, seed=0), x, y, "ce")
    s0 = float(top_eigenpairs(obj, obj.flatten(), 1, tol=1e-4).eigvals[0])
    lr = 2 * 2 / s0
    report = {"workload": "fmnist_mlp: 784-32-32-32-10 relu MLP, 1000 images, seed 0", "data": source,
              "lr": lr, "eta_eos": 2 / s0, "epochs": args.epochs, "torch_threads": args.threads, "rows": {}}
    plain = run(obj, lr, args.epochs)
    report["rows"]["plain"] = plain
    print(f"plain GD: {plain['s_per_step'] * 1e3:.1f} ms a step ({plain['status']})")
    for row in args.rows:
        tol, margin, *gap = (float(x) for x in row.split(":"))
        r = run(obj, lr, args.epochs, clamp=0.95, clamp_tol=tol, margin=margin, max_gap=int(gap[0]) if gap else None)
        r["ratio_vs_plain"] = r["s_per_step"] / plain["s_per_step"]
        report["rows"][f"clamp_tol {tol:g}, margin {margin:g}" + (f", max_gap {int(gap[0])}" if gap else "")] = r
        print(f"clamp 0.95, clamp_tol {tol:g}, margin {margin:g}: {r['s_per_step'] * 1e3:.1f} ms a step, "
              f"x{r['ratio_vs_plain']:.2f} plain; {r['solves']} solves, {r['misses']} misses, "
              f"{r['hvps_per_measurement_median']} HVPs a solve (median), product {r['product']}; "
              f"max eta_t S/(2 clamp) over every step {r['max_lr_s_over_2clamp']:.5f}")
    write_report(report, args.out)


if __name__ == "__main__":
    main()
