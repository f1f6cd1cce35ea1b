"""Throughput of a batched sweep (eosflow.training.train_group) against the same runs one after another
(eosflow.training.train).

    python benchmarks/sweep_throughput.py [--device cpu|cuda] [--runs 8] [--steps 200]
        [--steps-large N] [--threads N] [--dtype float32] [--models small,large]
        [--out results/bench/sweep_throughput.json]

Models: ``small`` = the default setting's 784-32-32-32-10 ReLU MLP (LeCun init) on 1,000 images;
``large`` = the 784-200-200-10 tanh MLP on 5,000 images. Images are Fashion-MNIST-shaped Gaussian
noise with cycling labels (speed does not depend on the pixel values). Each of the K runs has its
own seed and learning rate and takes exactly ``steps`` GD steps (acc_goal and diverge_loss are set
out of reach); no test-set evaluation. Throughput = K * steps / wall time, in run-steps per second.
A warm-up of a few steps of each kind runs first. Also reports the largest relative difference
between the batched and the sequential final parameters (rounding only). Prints and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import torch

from eosflow.bench.measure import write_report
from eosflow.models import build_model
from eosflow.objective import Objective
from eosflow.training import train_group
from eosflow.training import TrainConfig, train

MODELS = {
    "small": ({"arch": "mlp", "widths": [32, 32, 32], "activation": "relu", "init": "lecun"}, 1000),
    "large": ({"arch": "mlp", "widths": [200, 200], "activation": "tanh", "init": "lecun"}, 5000),
}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_model(name: str, steps: int, n_runs: int, device: torch.device, dtype: torch.dtype) -> dict:
    spec, n = MODELS[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 28, 28, generator=g).to(device, dtype)
    y = (torch.arange(n) % 10).to(device)
    models = [build_model(spec, (1, 28, 28), 10, seed).to(device, dtype) for seed in range(n_runs)]
    obj = Objective(models[0], x, y, "ce")
    theta0s = torch.stack([obj.flatten(m) for m in models])
    lrs = [0.01 * (i + 1) for i in range(n_runs)]

    def cfgs(max_epochs):
        return [TrainConfig(lr=lr, max_epochs=max_epochs, acc_goal=math.inf, diverge_loss=math.inf,
                            snapshot_every=10**9, checkpoint_every=10**9) for lr in lrs]

    # warm-up (allocator, first-call overheads of the functorch transforms)
    train_group(obj, theta0s, cfgs(3), progress=False)
    for i, c in enumerate(cfgs(3)):
        train(obj, theta0s[i], c, progress=False)
    _sync(device)

    t = time.perf_counter()
    seq = [train(obj, theta0s[i], c, progress=False) for i, c in enumerate(cfgs(steps))]
    _sync(device)
    t_seq = time.perf_counter() - t
    t = time.perf_counter()
    grp = train_group(obj, theta0s, cfgs(steps), progress=False)
    _sync(device)
    t_grp = time.perf_counter() - t

    rels = [float((a.theta - b.theta).norm() / b.theta.norm()) for a, b in zip(grp, seq)]
    rel = max(rels)
    run_steps = n_runs * steps
    out = {
        "model": name, "n_parameters": obj.dim, "n_examples": n, "runs": n_runs, "steps_per_run": steps,
        "sequential_s": round(t_seq, 3), "batched_s": round(t_grp, 3),
        "sequential_steps_per_s": round(run_steps / t_seq, 2), "batched_steps_per_s": round(run_steps / t_grp, 2),
        "speedup": round(t_seq / t_grp, 3), "max_rel_diff_final_theta": rel,
        "rel_diff_final_theta_per_run": [float(f"{r:.3g}") for r in rels],
        "statuses": sorted({r.status for r in grp}),
    }
    print(json.dumps(out), flush=True)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--steps-large", type=int, default=None, help="steps for the large model (default --steps)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--models", default="small,large")
    p.add_argument("--out", default="results/bench/sweep_throughput.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU is visible")
    dtype = getattr(torch, args.dtype)
    report = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
              "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
              "cpu_threads": torch.get_num_threads(), "dtype": args.dtype, "results": []}
    for name in args.models.split(","):
        steps = args.steps_large if name == "large" and args.steps_large else args.steps
        report["results"].append(bench_model(name, steps, args.runs, device, dtype))
    write_report(report, args.out, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
