"""Which Hessian-vector product should the engine use, per architecture? Measured, not assumed.

    python benchmarks/hvp_choice.py [--out results/bench/hvp_choice.json] [--threads 2] [--n 1000]

One chunk of ``n`` images (synthetic, of the workload's shape), one random unit vector, float32, on
the CPU; the median of 5 timed products after one untimed one, interleaved across products so that
machine noise hits them alike. Workloads: the benchmark's 199k tanh MLP (Fashion-MNIST shape), the
default scale's CNN (``fmnist_cnn``), the benchmark's BatchNorm VGG (CIFAR shape). Products:

* ``revrev``: double backward, fresh each time (``Objective.hvp``, what hessian-eigenthings does);
* ``fwdrev``: ``torch.func.jvp`` of ``torch.func.grad`` (forward-over-reverse by autograd);
* ``cached``: double backward through the retained first-derivative graph (``CachedHVP``);
* ``rop`` / ``rop_fresh``: the R-operator written out per layer (``RopHVP``), with the primal pass kept
  between products / recomputed for each, in its default layout (channels-last on a CPU for images
  with channels: the VGG's);
* ``rop_nchw`` / ``rop_fresh_nchw`` or ``rop_channels_last`` / ``rop_fresh_channels_last``: the
  convolutional nets' R-operator in the layout it does not take by default;
* ``revrev_channels_last`` / ``fwdrev_channels_last``: the convolutional nets in channels-last layout;
* ``grad``: one gradient, the unit of the ``x grad`` column; ``grad_rop``: the gradient from the
  R-operator's own primal pass (``RopHVP.loss_grad_acc``, what a clamped step shares with its
  solve), in the default layout (in the other: ``grad_rop_nchw`` or ``grad_rop_channels_last``).

Every product is checked against ``revrev``, every gradient against ``grad`` (relative difference,
float32). ``torch.compile`` of the product was not tried: double backward is outside what it
compiles on torch 2.14.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from eosflow.bench.measure import print_table, speedups, write_report
from eosflow.models import build_model
from eosflow.objective import Objective
from eosflow.spectral import CachedHVP
from eosflow.spectral.rop import RopHVP

WORKLOADS = {
    "mlp_199k": ({"arch": "mlp", "widths": [200, 200], "activation": "tanh"}, (1, 28, 28)),
    "fmnist_cnn": ({"arch": "cnn", "channels": [8, 16], "activation": "relu", "input_pool": 2}, (1, 28, 28)),
    "vgg_bn": ({"arch": "vgg", "blocks": 3, "base_width": 8, "batch_norm": True, "activation": "relu"}, (3, 32, 32)),
}


def products(spec, shape, n):
    model = build_model(spec, shape, 10, seed=0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, *shape, generator=g), torch.arange(n) % 10
    rev = Objective(model, x, y, "ce", hvp_mode="revrev")
    fwd = Objective(model, x, y, "ce", hvp_mode="fwdrev")
    theta = rev.flatten()
    v = torch.randn(theta.numel(), generator=g)
    v /= v.norm()
    cached, rop, rop0 = CachedHVP(rev, theta), RopHVP(rev, theta), RopHVP(rev, theta, max_bytes=0)
    fns = {"revrev": lambda: rev.hvp(theta, v), "fwdrev": lambda: fwd.hvp(theta, v), "cached": lambda: cached(v),
           "rop": lambda: rop(v), "rop_fresh": lambda: rop0(v), "grad": lambda: rev.grad(theta)}
    # the gradient from the R-operator's own primal pass (what a clamped step shares with its
    # solve): always a fresh pass, so the kept operator serves
    fns["grad_rop"] = lambda: rop.loss_grad_acc()[2]
    if spec["arch"] != "mlp":
        # the R-operator in the layout it does not take by default (channels-last for images with
        # channels on a CPU)
        flag = not rop.channels_last
        layout = "channels_last" if flag else "nchw"
        kept, fresh = RopHVP(rev, theta, channels_last=flag), RopHVP(rev, theta, max_bytes=0, channels_last=flag)
        fns[f"rop_{layout}"], fns[f"rop_fresh_{layout}"] = lambda: kept(v), lambda: fresh(v)
        fns[f"grad_rop_{layout}"] = lambda: kept.loss_grad_acc()[2]
        cl = model.to(memory_format=torch.channels_last)
        xcl = x.contiguous(memory_format=torch.channels_last)
        rcl = Objective(cl, xcl, y, "ce", hvp_mode="revrev")
        fcl = Objective(cl, xcl, y, "ce", hvp_mode="fwdrev")
        fns["revrev_channels_last"] = lambda: rcl.hvp(theta, v)
        fns["fwdrev_channels_last"] = lambda: fcl.hvp(theta, v)
    return fns, theta.numel(), "channels_last" if rop.channels_last else "nchw"


def measure(fns, reps=5):
    out = {name: fn() for name, fn in fns.items()}  # untimed: lazy initialisation, kept primal passes
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    ref = {True: out["grad"], False: out["revrev"]}  # gradients against autograd's, products against revrev
    return {name: {"median_s": statistics.median(ts),
                   "rel_diff_vs_revrev": None if name == "grad" else
                   float(torch.linalg.vector_norm(out[name] - ref[name.startswith("grad")])
                         / torch.linalg.vector_norm(ref[name.startswith("grad")]))}
            for name, ts in times.items()}


def product_line(name: str, r: dict) -> str:
    diff = "" if r["rel_diff_vs_revrev"] is None else f"  rel diff vs revrev {r['rel_diff_vs_revrev']:.1e}"
    return (f"  {name:22s} {r['median_s'] * 1e3:9.1f} ms  x{r['x_grad']:5.2f} grad  "
            f"x{r['speedup_vs_revrev']:5.2f} vs revrev{diff}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/bench/hvp_choice.json")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--n", type=int, default=1000)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {"n_images": args.n, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
              "workloads": {}}
    for name, (spec, shape) in WORKLOADS.items():
        fns, dim, layout = products(spec, shape, args.n)
        rows = measure(fns)
        for r in rows.values():
            r["x_grad"] = round(r["median_s"] / rows["grad"]["median_s"], 2)
        speedups(rows, "revrev")
        best = min((r["median_s"], n) for n, r in rows.items() if not n.startswith("grad"))[1]
        report["workloads"][name] = {"n_params": dim, "rop_layout": layout, "products": rows, "fastest": best}
        print_table(f"{name} ({dim} parameters, {args.n} images): fastest {best}",
                    sorted(rows.items(), key=lambda kv: kv[1]["median_s"]), product_line)
    write_report(report, args.out)


if __name__ == "__main__":
    main()
