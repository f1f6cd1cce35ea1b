"""Engine timings and a CPU/GPU agreement check on whatever device is present.

    python benchmarks/device_check.py [--out results/bench/device_check.json] [--data PREPARED.pt]

Times, for the 784-200-200-10 tanh MLP (199k parameters) on 5,000 Fashion-MNIST-shaped images
(synthetic unless --data is given) with cross-entropy: one GD step (loss + gradient), one HVP,
10 HVPs batched with vmap, top-10 Lanczos cold and warm-started (relative residual <= 1e-3).
With --data, also runs one training run and its Hessian extraction through the pipeline on the
device and on the CPU and compares the cubes. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from eosflow.bench.measure import write_report
from eosflow.spectral import top_eigenpairs
from eosflow.models import build_model
from eosflow.objective import Objective


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, reps=5, warmup=2):
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2], out


def engine_timings(device: torch.device, n: int = 5000) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 28, 28, generator=g).to(device)
    y = (torch.arange(n) % 10).to(device)
    model = build_model({"arch": "mlp", "widths": [200, 200], "activation": "tanh"}, (1, 28, 28), 10, 0).to(device)
    obj = Objective(model, x, y, "ce")
    theta = obj.flatten()
    v = torch.randn(obj.dim, generator=g).to(device)
    vs = torch.randn(10, obj.dim, generator=g).to(device)
    res = {"device": str(device), "n_params": obj.dim, "n_examples": n}
    res["gd_step_s"], _ = timeit(lambda: obj.loss_grad_acc(theta), device)
    res["hvp_s"], _ = timeit(lambda: obj.hvp(theta, v), device)
    res["hvp_batch10_s"], _ = timeit(lambda: obj.hvp_batch(theta, vs), device)
    res["lanczos_top10_cold_s"], cold = timeit(lambda: top_eigenpairs(obj, theta, 10, tol=1e-3), device, reps=3, warmup=1)
    # warm start: one GD step away, from the previous eigenvectors
    theta2 = theta - 0.05 * obj.grad(theta)
    res["lanczos_top10_warm_s"], warm = timeit(lambda: top_eigenpairs(obj, theta2, 10, warm=cold.eigvecs, tol=1e-3),
                                               device, reps=3, warmup=1)
    res["cold_matvecs"], res["warm_matvecs"] = cold.n_matvec, warm.n_matvec
    res["top10_eigvals"] = [round(float(e), 6) for e in cold.eigvals]
    res["max_residual"] = float(cold.residuals.max())
    return res


def pipeline_agreement(data_path: str, device: str) -> dict:
    """One fig5-style run (train + hessian) on ``device`` and on the CPU; compare the cubes."""
    import xarray as xr

    from eosflow.config import load_config
    from eosflow.jobs.hessian import run_hessian
    from eosflow.jobs.spec import RunSpec
    from eosflow.jobs.train import run_train

    root = Path(__file__).resolve().parents[1]
    out = {}
    cubes = {}
    for dev in (device, "cpu"):
        cfg = load_config(root / "config/config.yaml")
        cfg["device"] = dev
        d = Path(tempfile.mkdtemp())
        t = time.perf_counter()
        spec = RunSpec.from_settings(cfg, "fmnist_mlp", 0.16, 0)
        status = run_train(spec, data_path, d / "m.nc", d / "s.pt", progress=False)
        t_train = time.perf_counter() - t
        t = time.perf_counter()
        run_hessian(cfg, "fmnist_mlp", data_path, d / "m.nc", d / "s.pt", d / "c.nc", progress=False)
        cubes[dev] = xr.load_dataset(d / "c.nc")
        out[dev] = {"status": status, "train_s": round(t_train, 2), "hessian_s": round(time.perf_counter() - t, 2),
                    "steps": int(cubes[dev]["step"][-1])}
    a, b = cubes[device], cubes["cpu"]
    n = min(a.sizes["hstep"], b.sizes["hstep"])
    rel = abs(a["sharpness"][:n].values - b["sharpness"][:n].values) / abs(b["sharpness"][:n].values)
    out["sharpness_max_rel_diff_vs_cpu"] = float(rel.max())
    out["final_test_acc"] = {device: float(a["test_acc"].dropna("step")[-1]), "cpu": float(b["test_acc"].dropna("step")[-1])}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/bench/device_check.json")
    p.add_argument("--data", default=None, help="a prepared dataset file (results/data/...pt)")
    args = p.parse_args()
    report = {"torch": torch.__version__, "python": platform.python_version(),
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    devices = [torch.device("cuda")] if torch.cuda.is_available() else []
    devices.append(torch.device("cpu"))
    report["engine"] = [engine_timings(d) for d in devices]
    if args.data and torch.cuda.is_available():
        report["pipeline"] = pipeline_agreement(args.data, "cuda")
    write_report(report, args.out, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
