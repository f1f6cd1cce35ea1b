"""What config/paper.yaml costs, in gradient-equivalents and CPU-hours, from its networks' measured per-step costs.

    python benchmarks/paper_scale.py [--out results/bench/paper_scale.json] [--threads 2]
           [--vgg-epochs 100] [--vgg-lr-multiple 2.0] [--epochs-from results/runs]

1. The jobs: ``snakemake -n all --configfile config/paper.yaml`` (the train and hessian jobs, with
   their wildcards), so the estimate follows the config and the DAG, whatever they become.
2. Per setting of paper.yaml, measured on this machine on synthetic data of the setting's shape
   and size (CIFAR-10 need not be on disk): one full-batch gradient ``g`` (loss and gradient, the
   unit), and one Hessian-vector product by the engine's own operator
   (``eosflow.spectral.hvp_operator``: a first product with its primal pass, and a second one
   reusing it), in gradients.
3. The paper's VGG (``cifar_vgg``: 5,120 CIFAR-shaped images, full-batch BatchNorm) trained by
   ``eosflow.training.train`` for ``--vgg-epochs`` epochs (default 100) at ``--vgg-lr-multiple``
   x its η_eos(θ₀), with paper.yaml's train block and its in-loop sharpness
   (``eosflow.jobs.run.InloopSharpness``, every ``sharpness_every`` epochs): seconds an epoch,
   gradient-equivalents an epoch, products a warm in-loop measurement.
4. Per run, the epochs: the mean epochs of the finished default-scale runs in ``--epochs-from`` of
   the same group and setting, else of the same group and the proxy setting (cifar_vgg takes
   fmnist_cnn's, the other second setting), else of fig5's sweep (same setting, proxy, then
   fmnist_mlp), capped at paper.yaml's max_epochs (the cap itself when no run is found). An
   assumption: the paper's 5,000-image subsets need about as many epochs as the default's 500-2,000.
5. A run costs, in gradients, ``epochs x (1 + (warm HVPs x h + p) / sharpness_every)``; a clamped twin
   ``epochs x (1 + f x m x h)`` (a solve's primal pass gives its step's gradient), with the solve
   fraction ``f`` and the products a solve ``m``
   measured on the default MLP's clamped runs (``benchmarks/results/clamp-cost-cpu-*.json``, the
   default ``clamp_margin``; not measured on the VGG: an assumption), ``h`` the product reusing its
   primal pass and ``p`` the primal pass (in gradients); a Hessian job ``(epochs / snapshot_every / every + 2)``
   cold measurements x (HVPs_cold(k) x h + p) (19 cold top-1, 52 cold top-10: the README's benchmark).
   Warm in-loop products: the VGG run's measured count for cifar_vgg, else 10. CPU-hours are
   gradients x the setting's measured gradient seconds on ``--threads`` threads.
No GPU figure: none has been measured on these networks.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from eosflow.bench.measure import write_report  # noqa: E402
from eosflow.config import load_config, read_yaml, run_settings, tracks_sharpness, validate_config  # noqa: E402
from eosflow.jobs.run import InloopSharpness  # noqa: E402
from eosflow.models import build_model  # noqa: E402
from eosflow.objective import Objective  # noqa: E402
from eosflow.spectral import hvp_operator, top_eigenpairs  # noqa: E402
from eosflow.training import TrainConfig, train  # noqa: E402
from eosflow.training.clamp import DEFAULT_CLAMP_MARGIN  # noqa: E402

#: HVPs per measurement (README's benchmark): warm top-1 tracking, cold top-1 and cold top-10
HVPS_WARM, HVPS_COLD_TOP1, HVPS_COLD_TOP10 = 10, 19, 52
SHAPES = {"fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
PROXY = {"cifar_vgg": "fmnist_cnn"}
CLAMP_COST = ROOT / "benchmarks/results/clamp-cost-cpu-2026-12-06b.json"


def paper_config() -> dict:
    cfg = load_config(ROOT / "config/config.yaml")

    def merge(a, b):
        for k, v in b.items():
            if isinstance(v, dict) and isinstance(a.get(k), dict):
                merge(a[k], v)
            else:
                a[k] = v

    merge(cfg, read_yaml(ROOT / "config/paper.yaml"))
    return validate_config(cfg)


def dag_jobs() -> list[dict]:
    """The train and hessian jobs of rule all under paper.yaml, with their wildcards."""
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "all", "--configfile", "config/paper.yaml"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"snakemake -n failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    jobs, rule = [], None
    for line in out.stdout.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if m:
            rule = m.group(1)
            continue
        m = re.match(r"^wildcards: (.*)$", line.strip())
        if m and rule in ("train", "train_group", "hessian"):
            jobs.append({"rule": rule, **dict(kv.split("=", 1) for kv in m.group(1).split(", "))})
    return jobs


def _median(fn, reps=3):
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def synthetic_objective(setting: dict) -> Objective:
    """The setting's network (seed 0) on synthetic data of its shape and size."""
    shape = SHAPES[setting["dataset"]]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(setting["n_train"], *shape, generator=g)
    y = torch.arange(setting["n_train"]) % 10
    return Objective(build_model(setting["model"], shape, 10, 0), x, y, setting["loss"], setting["chunk_size"])


def step_and_hvp(setting: dict) -> dict:
    """Median seconds of one gradient, and of one engine HVP with its primal pass and reusing it."""
    obj = synthetic_objective(setting)
    theta = obj.flatten()
    v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(1))
    op = hvp_operator(obj, theta)
    grad_s = _median(lambda: obj.loss_grad(theta))
    fresh_s = _median(lambda: hvp_operator(obj, theta).matvec(v))
    kept_s = _median(lambda: op.matvec(v))
    return {"params": obj.dim, "n_train": setting["n_train"], "product": getattr(op, "product", None),
            "grad_s": grad_s, "hvp_fresh_s": fresh_s, "hvp_s": kept_s,
            "hvp_in_grads": kept_s / grad_s, "primal_in_grads": max(fresh_s - kept_s, 0.0) / grad_s}


def vgg_run(cfg: dict, epochs: int, multiple: float) -> dict:
    """``epochs`` epochs of the paper's VGG as the train rule runs it (paper.yaml's train block, its
    in-loop sharpness), on synthetic CIFAR-shaped images, at ``multiple`` x η_eos(θ₀)."""
    setting = cfg["settings"]["cifar_vgg"]
    obj = synthetic_objective(setting)
    theta0 = obj.flatten()
    t = time.perf_counter()
    s0 = top_eigenpairs(obj, theta0, 1, tol=1e-3, max_iter=200)
    s0_s = time.perf_counter() - t
    lr = multiple * 2.0 / float(s0.eigvals[0])
    train_block = {k: v for k, v in cfg["train"].items() if k in TrainConfig.__dataclass_fields__}
    tc = TrainConfig(**{**train_block, "lr": lr, "max_epochs": epochs, "acc_goal": None})
    fn = InloopSharpness(obj, cfg["hessian"]["tol"], cfg["hessian"]["max_iter"])
    grad_s = _median(lambda: obj.loss_grad(theta0))
    t = time.perf_counter()
    res = train(obj, theta0, tc, sharpness_fn=fn if tc.sharpness_every else None, progress=False)
    wall = time.perf_counter() - t
    n = [r["n_matvec"] for r in fn.tracker.records]
    steps = int(res.steps[-1]) + 1
    return {"setting": "cifar_vgg", "data": "synthetic CIFAR-shaped (3x32x32), 5120 images", "epochs": steps,
            "status": res.status, "lr": lr, "lr_multiple": multiple, "sharpness_theta0": float(s0.eigvals[0]),
            "sharpness_theta0_s": s0_s, "sharpness_every": tc.sharpness_every, "wall_s": wall,
            "s_per_epoch": wall / steps, "grad_s": grad_s, "grads_per_epoch": wall / steps / grad_s,
            "inloop_measurements": len(n), "inloop_hvps_mean": statistics.fmean(n) if n else None,
            "final_train_loss": float(res.metrics["train_loss"][-1]),
            "sharpness_inloop_last": float(next((x for x in res.metrics["sharpness_inloop"][::-1] if x == x), "nan"))}


def default_epochs(runs_dir: Path) -> dict:
    """Mean epochs of the finished default-scale runs per (group, setting)."""
    import xarray as xr

    acc = defaultdict(list)
    for path in runs_dir.glob("*/*/*/*/*/metrics.nc"):
        exp, setting = path.relative_to(runs_dir).parts[:2]
        with xr.open_dataset(path) as m:
            acc[(exp, setting)].append(int(m["step"].values[-1]))
    return {k: statistics.mean(v) for k, v in acc.items()}


def clamp_model() -> dict:
    """The solve fraction and products a solve of a clamped run at the default ``clamp_margin``, as
    measured on the default MLP (an assumption for the other settings)."""
    d = json.loads(CLAMP_COST.read_text())
    row = d["rows"][f"clamp_tol 0.001, margin {DEFAULT_CLAMP_MARGIN:g}"]  # the defaults: margin 0 solves every step
    return {"source": str(CLAMP_COST.relative_to(ROOT)), "solve_fraction": row["solves"] / (d["epochs"] + 1),
            "hvps_per_solve": row["hvps_per_measurement_mean"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/bench/paper_scale.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vgg-epochs", type=int, default=100)
    p.add_argument("--vgg-lr-multiple", type=float, default=2.0)
    p.add_argument("--epochs-from", default="results/runs")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = paper_config()
    jobs = dag_jobs()
    epochs = default_epochs(ROOT / args.epochs_from)
    costs = {name: step_and_hvp(cfg["settings"][name]) for name in sorted({j["setting"] for j in jobs})}
    vgg = vgg_run(cfg, args.vgg_epochs, args.vgg_lr_multiple) if args.vgg_epochs else None
    clamp = clamp_model()
    rows = defaultdict(lambda: {"runs": 0, "epochs": 0.0, "grads_steps": 0.0, "grads_hvps": 0.0, "cpu_h": 0.0})
    for j in jobs:
        exp, name = j["exp"], j["setting"]
        rc = run_settings(cfg, exp, name)
        t, h, c = rc["train"], rc["hessian"], costs[name]
        known = next((epochs[k] for k in ((exp, name), (exp, PROXY.get(name, name)), ("sweep", name),
                                          ("sweep", PROXY.get(name, name)), ("sweep", "fmnist_mlp"))
                      if k in epochs), None)
        n_ep = min(known, t["max_epochs"]) if known else t["max_epochs"]
        r = rows[(exp, name)]
        if j["rule"] == "hessian":
            meas = n_ep / t["snapshot_every"] / max(h["every"], 1) + 2
            hvps = HVPS_COLD_TOP10 if h["k"] > 1 else HVPS_COLD_TOP1
            g = meas * (hvps * c["hvp_in_grads"] + c["primal_in_grads"])
            r["grads_hvps"] += g
            r["cpu_h"] += g * c["grad_s"] / 3600
            continue
        r["runs"] += 1
        r["epochs"] += n_ep
        g_steps, g_hvps = float(n_ep), 0.0
        if t.get("clamp") is not None:
            g_hvps = n_ep * clamp["solve_fraction"] * clamp["hvps_per_solve"] * c["hvp_in_grads"]
        elif tracks_sharpness(t):
            warm = vgg["inloop_hvps_mean"] if vgg and name == "cifar_vgg" and vgg["inloop_hvps_mean"] else HVPS_WARM
            g_hvps = n_ep / t["sharpness_every"] * (warm * c["hvp_in_grads"] + c["primal_in_grads"])
        r["grads_steps"] += g_steps
        r["grads_hvps"] += g_hvps
        r["cpu_h"] += (g_steps + g_hvps) * c["grad_s"] / 3600
    table = [{"group": exp, "setting": name, "runs": r["runs"], "epochs": round(r["epochs"]),
              "gradients_steps": round(r["grads_steps"]), "gradients_products": round(r["grads_hvps"]),
              "cpu_hours": round(r["cpu_h"], 2)} for (exp, name), r in sorted(rows.items())]
    total_cpu = sum(t["cpu_hours"] for t in table)
    total_g = sum(t["gradients_steps"] + t["gradients_products"] for t in table)
    report = {"kind": "estimate from measured per-step costs", "threads": args.threads,
              "per_setting_costs": costs, "vgg_run": vgg, "clamp_model": clamp,
              "hvps_per_measurement": {"warm_top1_default": HVPS_WARM, "cold_top1": HVPS_COLD_TOP1,
                                       "cold_top10": HVPS_COLD_TOP10},
              "rows": table, "total_gradients": total_g, "total_cpu_hours": round(total_cpu, 1),
              "gpu": "no GPU figure: none measured on these networks"}
    write_report(report, args.out, indent=2)
    if vgg:
        print(f"cifar_vgg: {vgg['epochs']} epochs ({vgg['status']}) at {vgg['lr_multiple']} eta_eos: "
              f"{vgg['s_per_epoch']:.2f} s an epoch = {vgg['grads_per_epoch']:.2f} gradients "
              f"(gradient {vgg['grad_s']:.2f} s; {vgg['inloop_measurements']} in-loop measurements, "
              f"{vgg['inloop_hvps_mean']} products each)")
    print(f"{'group':<24}{'setting':<24}{'runs':>6}{'epochs':>10}{'grads (steps)':>15}{'grads (HVPs)':>14}{'CPU h':>9}")
    for t in table:
        print(f"{t['group']:<24}{t['setting']:<24}{t['runs']:>6}{t['epochs']:>10}{t['gradients_steps']:>15}"
              f"{t['gradients_products']:>14}{t['cpu_hours']:>9}")
    print(f"total: {total_g:.3g} gradient-equivalents, {total_cpu:.1f} CPU-hours on {args.threads} threads here")


if __name__ == "__main__":
    main()
