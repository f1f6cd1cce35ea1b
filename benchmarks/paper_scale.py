"""An estimate (not a measurement) of what config/paper.yaml costs: CPU-hours here, GPU-hours on one GPU.

    python benchmarks/paper_scale.py [--out results/bench/paper_scale.json] [--threads 2]
           [--gpu-step-ratio 2.8] [--gpu-hvp-ratio 5.2] [--epochs-from results/runs]

1. The jobs: ``snakemake -n all --configfile config/paper.yaml`` (the train and hessian jobs, with
   their wildcards), so the estimate follows the config and the DAG, whatever they become.
2. Per setting of paper.yaml, measured on this machine: one full-batch GD step (loss + gradient)
   and one Hessian-vector product on synthetic data of the setting's shape and size (CIFAR-10 need
   not be on disk).
3. Per run, the epochs: the mean epochs of the finished default-scale runs in ``--epochs-from`` of
   the same group and setting, else of the same group and the proxy setting (cifar_vgg takes
   fmnist_cnn's, the other second setting), else of fig5's sweep (same setting, proxy, then
   fmnist_mlp), capped at paper.yaml's max_epochs (the cap itself when no run is found). An
   assumption: the paper's 5,000-image subsets need about as many epochs as the default's 500-2,000.
4. A run costs epochs x (step + HVPs_warm x HVP / sharpness_every) and its Hessian job
   (epochs / snapshot_every / every + 2) measurements x HVPs_cold(k) x HVP, with the engine's HVP
   counts from the README's benchmark (10 warm top-1, 52 cold top-10, 19 cold top-1).
5. GPU-hours divide the step and HVP parts by the README's measured H100 / 16-core CPU ratios
   (2.8x a step, 5.2x an HVP, on the 199k MLP); this machine's 2 cores are slower than that CPU,
   so the GPU figure is conservative, and very much so for the CIFAR-10 VGG, whose convolutions gain
   far more on a GPU than the MLP's matrix products (unmeasured). Small models do not fill a GPU: batched sweeps
   (``fig5.batched``) are how to use it; their gain on a GPU is unmeasured here.
"""

from __future__ import annotations

import argparse
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
from eosflow.models import build_model  # noqa: E402
from eosflow.objective import Objective  # noqa: E402

#: HVPs per measurement (README's benchmark): warm top-1 tracking, cold top-1 and cold top-10
HVPS_WARM, HVPS_COLD_TOP1, HVPS_COLD_TOP10 = 10, 19, 52
SHAPES = {"fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
PROXY = {"cifar_vgg": "fmnist_cnn"}


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


def step_and_hvp(setting: dict, threads: int) -> dict:
    """Median seconds of one GD step and one HVP on synthetic data of the setting's shape and size."""
    torch.set_num_threads(threads)
    shape = SHAPES[setting["dataset"]]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(setting["n_train"], *shape, generator=g)
    y = torch.arange(setting["n_train"]) % 10
    obj = Objective(build_model(setting["model"], shape, 10, 0), x, y, setting["loss"], setting["chunk_size"])
    theta = obj.flatten()
    v = torch.randn(obj.dim, generator=g)

    def median(fn, reps=3):
        fn()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    return {"params": obj.dim, "n_train": setting["n_train"], "step_s": median(lambda: obj.loss_grad(theta)),
            "hvp_s": median(lambda: obj.hvp(theta, v))}


def default_epochs(runs_dir: Path) -> dict:
    """Mean epochs of the finished default-scale runs per (group, setting)."""
    import xarray as xr

    acc = defaultdict(list)
    for path in runs_dir.glob("*/*/*/*/*/metrics.nc"):
        exp, setting = path.relative_to(runs_dir).parts[:2]
        with xr.open_dataset(path) as m:
            acc[(exp, setting)].append(int(m["step"].values[-1]))
    return {k: statistics.mean(v) for k, v in acc.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/bench/paper_scale.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gpu-step-ratio", type=float, default=2.8)
    p.add_argument("--gpu-hvp-ratio", type=float, default=5.2)
    p.add_argument("--epochs-from", default="results/runs")
    args = p.parse_args()
    cfg = paper_config()
    jobs = dag_jobs()
    epochs = default_epochs(ROOT / args.epochs_from)
    costs = {name: step_and_hvp(cfg["settings"][name], args.threads)
             for name in sorted({j["setting"] for j in jobs})}
    rows = defaultdict(lambda: {"runs": 0, "epochs": 0.0, "cpu_step_h": 0.0, "cpu_hvp_h": 0.0})
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
            r["cpu_hvp_h"] += meas * hvps * c["hvp_s"] / 3600
            continue
        r["runs"] += 1
        r["epochs"] += n_ep
        r["cpu_step_h"] += n_ep * c["step_s"] / 3600
        if tracks_sharpness(t):
            every = 1 if t.get("clamp") is not None else t["sharpness_every"]
            r["cpu_hvp_h"] += n_ep / every * HVPS_WARM * c["hvp_s"] / 3600
    table = []
    for (exp, name), r in sorted(rows.items()):
        cpu = r["cpu_step_h"] + r["cpu_hvp_h"]
        gpu = r["cpu_step_h"] / args.gpu_step_ratio + r["cpu_hvp_h"] / args.gpu_hvp_ratio
        table.append({"group": exp, "setting": name, "runs": r["runs"], "epochs": round(r["epochs"]),
                      "cpu_hours": round(cpu, 2), "gpu_hours": round(gpu, 2)})
    total_cpu, total_gpu = sum(t["cpu_hours"] for t in table), sum(t["gpu_hours"] for t in table)
    report = {"kind": "estimate, not measured", "threads": args.threads, "per_setting_costs": costs,
              "gpu_ratios": {"step": args.gpu_step_ratio, "hvp": args.gpu_hvp_ratio},
              "hvps_per_measurement": {"warm_top1": HVPS_WARM, "cold_top1": HVPS_COLD_TOP1,
                                       "cold_top10": HVPS_COLD_TOP10},
              "rows": table, "total_cpu_hours": round(total_cpu, 1), "total_gpu_hours": round(total_gpu, 1)}
    write_report(report, args.out, indent=2)
    print(f"{'group':<24}{'setting':<24}{'runs':>6}{'epochs':>10}{'CPU h':>9}{'GPU h':>9}")
    for t in table:
        print(f"{t['group']:<24}{t['setting']:<24}{t['runs']:>6}{t['epochs']:>10}{t['cpu_hours']:>9}{t['gpu_hours']:>9}")
    print(f"total: {total_cpu:.1f} CPU-hours on {args.threads} threads here, {total_gpu:.1f} GPU-hours (estimate)")


if __name__ == "__main__":
    main()
