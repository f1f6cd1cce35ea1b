"""``python -m eosflow bench``: the command line."""

from __future__ import annotations

import argparse
import json

import torch

from .memory import memory_child, run_memory
from .runner import METHOD_ORDER, run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="tiny version (CI smoke test, well under a minute)")
    p.add_argument("--out", default="results/bench", help="folder (or .json file) for the report")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--reps", type=int, default=None,
                   help="repetitions for the MLP (default 5 for top-1, 3 for top-10; quick 1)")
    p.add_argument("--k", type=int, nargs="+", default=None, help="top-k values for the MLP (default 1 10)")
    p.add_argument("--vgg-k", type=int, nargs="+", default=None, help="top-k values for the VGG (default 1)")
    p.add_argument("--vgg-reps", type=int, default=None, help="repetitions for the VGG (default 1)")
    p.add_argument("--track-k", type=int, default=None, help="k tracked along GD (default 1; 10 on a GPU)")
    p.add_argument("--track-steps", type=int, default=None, help="GD steps tracked (default 200; 0: no tracking)")
    p.add_argument("--lr-factor", type=float, default=1.5, help="GD learning rate in units of 2/S(theta0)")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's); 1 is steadier on a shared, oversubscribed CPU")
    p.add_argument("--workloads", nargs="+", choices=["mlp", "vgg"], default=None)
    p.add_argument("--methods", nargs="+", choices=list(METHOD_ORDER), default=None)
    p.add_argument("--memory", action="store_true",
                   help="instead: full-batch grad and one HVP of the small VGG over 50,000 CIFAR-shaped images")
    p.add_argument("--memory-n", type=int, default=50_000)
    p.add_argument("--memory-ops", nargs="+", default=["grad", "hvp"], choices=["grad", "hvp", "hvp_cached"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m eosflow bench", description="Benchmark of the spectral engine (see the eosflow.bench module).")
    add_arguments(p)
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=50_000, help=argparse.SUPPRESS)
    p.add_argument("--chunk", type=int, default=1000, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    return run_args(args)


def run_args(args) -> int:
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    if getattr(args, "memory_child", None):
        print(json.dumps(memory_child(args.memory_child, args.n, args.chunk)))
        return 0
    if args.memory:
        run_memory(args.memory_n, out=args.out, ops=tuple(args.memory_ops), threads=args.threads)
        return 0
    run(quick=args.quick, out=args.out, device=args.device, reps=args.reps, ks=args.k, track_k=args.track_k,
        track_steps=args.track_steps, lr_factor=args.lr_factor, tol=args.tol, workloads=args.workloads,
        methods=args.methods, vgg_ks=args.vgg_k, vgg_reps=args.vgg_reps)
    return 0
