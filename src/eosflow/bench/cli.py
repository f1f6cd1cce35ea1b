"""``python -m eosflow bench``: the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..heap import reuse_freed_memory

from .memory import memory_child, run_memory
from .runner import METHOD_ORDER, ROWS, run
from .workloads import BenchDataError

DEFAULT_CONFIG = "config/config.yaml"


def config_defaults(path: str | None, explicit: bool = False) -> dict:
    """What the benchmark takes from the workflow's config ``path``: ``data.cifar10_dir``,
    ``train.clamp_tol``, ``train.clamp_margin`` and ``hessian.max_iter`` (the clamp's in-loop tracker), each the schema's
    default where the file or the key is absent. A missing file is an error only when it was named
    (``explicit``); a malformed one always is (:class:`eosflow.config.ConfigError`, naming it)."""
    from ..config import ConfigError, load_schema, read_yaml

    props = load_schema()["properties"]
    out = {"config": None, "cifar10_dir": None,
           "clamp_tol": props["train"]["properties"]["clamp_tol"]["default"],
           "clamp_margin": props["train"]["properties"]["clamp_margin"]["default"],
           "max_iter": props["hessian"]["properties"]["max_iter"]["default"]}
    if path is None or not (Path(path).exists() or explicit):
        return out
    raw = read_yaml(path)
    out["config"] = str(path)
    for key, block, name, kinds in (("cifar10_dir", "data", "cifar10_dir", (str, type(None))),
                                    ("clamp_tol", "train", "clamp_tol", (int, float)),
                                    ("clamp_margin", "train", "clamp_margin", (int, float)),
                                    ("max_iter", "hessian", "max_iter", (int,))):
        section = raw.get(block) or {}
        if name in section:
            if not isinstance(section[name], kinds) or isinstance(section[name], bool):
                raise ConfigError(f"{path}: {block}.{name} = {section[name]!r} has the wrong type")
            out[key] = section[name]
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="tiny version (CI smoke test, well under a minute)")
    p.add_argument("--out", default="results/bench", help="folder (or .json file) for the report")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--config", default=None,
                   help=f"workflow config read for data.cifar10_dir, train.clamp_tol and hessian.max_iter "
                        f"(default: {DEFAULT_CONFIG} when it exists)")
    p.add_argument("--cifar10-dir", default=None,
                   help="CIFAR-10 folder (torchvision's cifar-10-batches-py or its parent) for the VGG workload "
                        "(default: the config's data.cifar10_dir; neither: synthetic CIFAR-shaped images)")
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=None,
                   help="rows to run per workload (default all): cold top-k, tracking, clamped GD, GD vs bare torch")
    p.add_argument("--reps", type=int, default=None,
                   help="repetitions for the MLP (default 5 for top-1, 3 for top-10; quick 1)")
    p.add_argument("--k", type=int, nargs="+", default=None, help="top-k values for the MLP (default 1 10)")
    p.add_argument("--vgg-k", type=int, nargs="+", default=None, help="top-k values for the VGG (default 1 3)")
    p.add_argument("--vgg-reps", type=int, default=None, help="repetitions for the VGG (default 1)")
    p.add_argument("--track-k", type=int, default=None, help="k tracked along GD (default 1; the MLP's 10 on a GPU)")
    p.add_argument("--track-steps", type=int, default=None,
                   help="GD steps tracked on the MLP (default 200; 0: no tracking)")
    p.add_argument("--vgg-track-steps", type=int, default=None,
                   help="GD steps tracked on the VGG (the vgg_small workload: default 230; 0: no tracking)")
    p.add_argument("--lr-factor", type=float, default=1.5, help="GD learning rate in units of 2/S(theta0)")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--clamp", type=float, default=0.95, help="the clamp row's train.clamp (default 0.95)")
    p.add_argument("--clamp-tol", type=float, default=None,
                   help="relative residual of the clamp's in-loop S (default: the config's train.clamp_tol, "
                        "else its schema default)")
    p.add_argument("--clamp-margin", type=float, default=None,
                   help="the clamp's predicted-bound margin (default: the config's train.clamp_margin, else its "
                        "schema default; 0: a full solve at every step)")
    p.add_argument("--clamp-steps", type=int, default=None,
                   help="clamped GD steps on the MLPs (default 200 on the 199k MLP, 300 on the default one; 0: none)")
    p.add_argument("--vgg-clamp-steps", type=int, default=None,
                   help="clamped GD steps on the VGG (default 6 on 5,000 images, 120 on vgg_small; 0: none)")
    p.add_argument("--gd-steps", type=int, default=None,
                   help="timed GD steps each, eosflow and bare torch (default MLP 20, VGG 6; 0: none)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's); 1 is steadier on a shared, oversubscribed CPU")
    p.add_argument("--workloads", nargs="+", choices=["mlp", "vgg", "mlp_default", "vgg_small", "residual"],
                   default=None,
                   help="workloads to run (default all); 'mlp_default': the pipeline's default MLP, its clamp row "
                        "only; 'vgg_small': the VGG on 1,000 images, its trajectory rows (tracking past the "
                        "catapult, the clamp over 120 steps); 'residual': a user's residual CNN through a DataLoader "
                        "against PyHessian, hessian-eigenthings and curvlinops (minutes on its own)")
    p.add_argument("--residual-k", type=int, nargs="+", default=None,
                   help="top-k values for the residual workload (default 1 3)")
    p.add_argument("--residual-reps", type=int, default=None, help="repetitions for the residual workload (default 3)")
    p.add_argument("--residual-methods", nargs="+", default=None,
                   choices=["eosflow", "eosflow_lean", "pyhessian", "hessian_eigenthings", "curvlinops"],
                   help="methods of the residual workload's rows (default all; a peer not installed is skipped)")
    p.add_argument("--methods", nargs="+", choices=list(METHOD_ORDER), default=None)
    p.add_argument("--malloc-default", action="store_true",
                   help="keep glibc's default heap settings (default: eosflow.heap.HEAP_ENV, as the workflow's "
                        "jobs run, for every method alike)")
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
    args.command = "python -m eosflow bench " + " ".join(sys.argv[1:] if argv is None else argv)
    return run_args(args)


def run_args(args) -> int:
    from ..config import ConfigError

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    heap = False if getattr(args, "malloc_default", False) else reuse_freed_memory()  # as the workflow's jobs

    if getattr(args, "memory_child", None):
        print(json.dumps(memory_child(args.memory_child, args.n, args.chunk)))
        return 0
    if args.memory:
        run_memory(args.memory_n, out=args.out, ops=tuple(args.memory_ops), threads=args.threads)
        return 0
    try:
        cfg = config_defaults(args.config or DEFAULT_CONFIG, explicit=args.config is not None)
        if args.cifar10_dir is not None:
            cifar, origin = args.cifar10_dir, "--cifar10-dir"
        else:
            cifar, origin = cfg["cifar10_dir"], f"data.cifar10_dir in {cfg['config']}"
        run(quick=args.quick, out=args.out, device=args.device, reps=args.reps, ks=args.k, track_k=args.track_k,
            track_steps=args.track_steps, lr_factor=args.lr_factor, tol=args.tol, workloads=args.workloads,
            methods=args.methods, vgg_ks=args.vgg_k, vgg_reps=args.vgg_reps, vgg_track_steps=args.vgg_track_steps,
            rows=args.rows, cifar10_dir=cifar, cifar10_origin=origin, clamp=args.clamp,
            clamp_tol=args.clamp_tol if args.clamp_tol is not None else cfg["clamp_tol"],
            clamp_max_iter=cfg["max_iter"],
            clamp_margin=args.clamp_margin if args.clamp_margin is not None else cfg["clamp_margin"],
            clamp_steps=args.clamp_steps, vgg_clamp_steps=args.vgg_clamp_steps,
            gd_steps=args.gd_steps, heap_reuse=heap, residual_ks=args.residual_k, residual_reps=args.residual_reps,
            residual_methods=args.residual_methods, command=getattr(args, "command", None))
    except (BenchDataError, ConfigError) as e:
        print(f"eosflow bench: {e}", file=sys.stderr)
        return 2
    return 0
