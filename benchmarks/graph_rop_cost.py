"""What one Hessian-vector product costs on the residual workload, in gradients: GraphRopHVP (the
R-operator over the fx graph) against CachedHVP (double backward through retained graphs) and
forward-over-reverse by torch.func.

    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483647 \\
        python benchmarks/graph_rop_cost.py [--threads 2] [--n 512] [--reps 7] [--out results/bench/graph_rop_cost.json]

Workload: ``eosflow.bench.residual.residual_cnn()`` (9.8k parameters), ``n`` synthetic inputs of
shape (1, 28, 28), 10 classes, cross-entropy, float32 on the CPU, the whole batch as one chunk and
in chunks of 128; the objective over tensors with eosflow's ``"ce"`` (closed-form loss rule) and,
as the benchmark's residual workload builds it, over a ``DataLoader`` with
``nn.CrossEntropyLoss()`` (the loss's output derivatives by autograd). A gradient is ``objective.loss_grad(θ)``; each product is at one θ with the
primal pass (GraphRopHVP) or the first-derivative graphs (CachedHVP) kept, as in an eigensolver.
Every product is timed ``reps`` times, interleaved with the others, after one untimed call; the
minimum is reported (a shared machine's noise only adds time). Each product is checked against
CachedHVP's (relative difference, float32).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from eosflow.bench.measure import write_report
from eosflow.bench.residual import residual_cnn
from eosflow.heap import heap_env_applied
from eosflow.objective import Objective
from eosflow.spectral import CachedHVP
from eosflow.spectral.graph_rop import GraphRopHVP


def products(n: int, chunk: int | None, form: str):
    model = residual_cnn()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 1, 28, 28, generator=g), torch.arange(n) % 10
    if form == "loader":
        loader = DataLoader(TensorDataset(x, y), batch_size=chunk or n, shuffle=False)
        obj = Objective(model, loader, loss=nn.CrossEntropyLoss(), hvp_mode="revrev")
        fwd = Objective(model, loader, loss=nn.CrossEntropyLoss(), hvp_mode="fwdrev")
    else:
        obj = Objective(model, x, y, "ce", chunk_size=chunk, hvp_mode="revrev")
        fwd = Objective(model, x, y, "ce", chunk_size=chunk, hvp_mode="fwdrev")
    theta = obj.flatten()
    v = torch.randn(theta.numel(), generator=g)
    v /= v.norm()
    graph, cached = GraphRopHVP(obj, theta), CachedHVP(obj, theta)
    return {"grad": lambda: obj.loss_grad(theta), "graph_rop": lambda: graph.matvec(v),
            "cached": lambda: cached.matvec(v), "fwdrev": lambda: fwd.hvp(theta, v)}, theta.numel()


def measure(fns: dict, reps: int) -> dict:
    out = {name: fn() for name, fn in fns.items()}
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    base = min(times["grad"])
    ref = out["cached"]
    return {name: {"min_s": min(ts), "x_grad": round(min(ts) / base, 2),
                   "rel_diff_vs_cached": None if name == "grad" else
                   float(torch.linalg.vector_norm(out[name] - ref) / torch.linalg.vector_norm(ref))}
            for name, ts in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--out", default=None, help="also write the numbers as JSON here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {"n": args.n, "reps": args.reps, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
              "heap_env": heap_env_applied(), "chunks": {}}
    print(f"residual_cnn, n={args.n}, {torch.get_num_threads()} threads, min of {args.reps}, "
          f"heap settings {'on' if report['heap_env'] else 'off'}")
    for form, chunk in (("tensors", None), ("tensors", 128), ("loader", None), ("loader", 128)):
        fns, dim = products(args.n, chunk, form)
        rows = measure(fns, args.reps)
        label = ("full batch" if chunk is None else f"chunks of {chunk}") + (
            ", tensors, 'ce'" if form == "tensors" else ", DataLoader, CrossEntropyLoss()")
        report["chunks"][label] = {"n_params": dim, "products": rows}
        print(f"{label} ({dim} parameters)")
        for name, r in rows.items():
            diff = "" if r["rel_diff_vs_cached"] is None else f"  rel diff vs cached {r['rel_diff_vs_cached']:.1e}"
            print(f"  {name:10s} {r['min_s'] * 1e3:8.1f} ms  x{r['x_grad']:5.2f} grad{diff}")
    if args.out:
        write_report(report, args.out)


if __name__ == "__main__":
    main()
