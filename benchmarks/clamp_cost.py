"""What the stability clamp costs on the default pipeline's network, in real training runs.

    python benchmarks/clamp_cost.py [--out results/bench/clamp_cost.json] [--threads 1] [--epochs 300]

The default config's ``fmnist_mlp`` setting (784-32-32-32-10 ReLU MLP, 1,000 Fashion-MNIST images;
synthetic images of that shape if none on disk), seed 0, GD at 2 η_eos(θ₀) for ``--epochs`` epochs:
plain, and clamped at ``train.clamp`` 0.95 for each ``clamp_tol``, through ``eosflow.training.train``
with the in-loop sharpness the jobs use (``eosflow.jobs.run.InloopSharpness``). Reports seconds
per step (wall time of the run over its steps), the ratio to plain GD, Hessian-vector products
per measurement, and the largest η_t·S(θ_t)/(2·clamp) with S recomputed to 1e-6 (float64) at every
25th step: at most 1 means the clamp held.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from eosflow.bench.measure import write_report
from eosflow.bench.steps import float64_objective
from eosflow.bench.workloads import fashion_mnist_subset
from eosflow.jobs.run import InloopSharpness
from eosflow.models import build_model
from eosflow.objective import Objective
from eosflow.spectral import top_eigenpairs
from eosflow.training import TrainConfig, train

SPEC = {"arch": "mlp", "widths": [32, 32, 32], "activation": "relu"}


def run(obj, lr, epochs, clamp=None, clamp_tol=1e-3):
    cfg = TrainConfig(lr=lr, max_epochs=epochs, acc_goal=None, eval_every=epochs, snapshot_every=1,
                      sharpness_every=0, clamp=clamp, clamp_tol=clamp_tol)
    fn = InloopSharpness(obj, clamp_tol, 100, clamped=True) if clamp is not None else None
    t = time.perf_counter()
    res = train(obj, obj.flatten(), cfg, sharpness_fn=fn, progress=False)
    dt = time.perf_counter() - t
    out = {"s_per_step": dt / epochs, "status": res.status}
    if fn is not None:
        n = [r["n_matvec"] for r in fn.tracker.records]
        out.update(hvps_per_measurement_median=statistics.median(n), hvps_per_measurement_mean=statistics.fmean(n),
                   product=fn.tracker.records[-1]["product"])
        obj64 = float64_objective(obj)
        worst = 0.0
        for t in range(0, epochs, 25):
            s = float(top_eigenpairs(obj64, res.snapshots[t].double(), 1, tol=1e-6, max_iter=300).eigvals[0])
            worst = max(worst, float(res.metrics["lr"][t]) * s / (2 * clamp))
        out["max_lr_s_over_2clamp"] = worst
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/bench/clamp_cost.json")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--clamp-tols", type=float, nargs="+", default=[1e-3, 1e-2, 3e-2])
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
    for tol in args.clamp_tols:
        r = run(obj, lr, args.epochs, clamp=0.95, clamp_tol=tol)
        r["ratio_vs_plain"] = r["s_per_step"] / plain["s_per_step"]
        report["rows"][f"clamp_tol_{tol:g}"] = r
        print(f"clamp 0.95, clamp_tol {tol:g}: {r['s_per_step'] * 1e3:.1f} ms a step, x{r['ratio_vs_plain']:.2f} "
              f"plain; {r['hvps_per_measurement_median']} HVPs a measurement (median), product {r['product']}; "
              f"max eta_t S/(2 clamp) {r['max_lr_s_over_2clamp']:.5f}")
    write_report(report, args.out)


if __name__ == "__main__":
    main()
