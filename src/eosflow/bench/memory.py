"""``--memory``: full-batch gradient and one HVP of the small VGG over 50,000 CIFAR-shaped images,
each in its own subprocess so that its peak RSS is its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from ..models import build_model
from ..objective import Objective
from ..spectral import CachedHVP
from .measure import _peak_rss_mb, _status_kb, write_report


def memory_child(op: str, n: int, chunk: int) -> dict:
    """One full-batch ``op`` ("grad" or "hvp") of the small VGG over ``n`` synthetic CIFAR-shaped
    images in chunks of ``chunk``, in this (fresh) process. Peak RSS is the process's."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.empty(n, 3, 32, 32)
    for i in range(0, n, 5000):  # fill in place: no second copy of the data
        x[i:i + 5000] = torch.randn(min(5000, n - i), 3, 32, 32, generator=g)
    y = torch.arange(n) % 10
    model = build_model({"arch": "vgg", "blocks": 3, "base_width": 8, "batch_norm": True, "activation": "relu"},
                        (3, 32, 32), 10, seed=0)
    obj = Objective(model, x, y, "ce", chunk_size=chunk)
    theta = obj.flatten()
    rss_data = (_status_kb("VmRSS") or 0) / 1024
    v = torch.randn(obj.dim, generator=g)
    t = time.perf_counter()
    if op == "grad":
        loss, grad = obj.loss_grad(theta)
        value = float(torch.linalg.vector_norm(grad))
    elif op == "hvp":
        value = float(torch.linalg.vector_norm(obj.hvp(theta, v)))
    elif op == "hvp_cached":
        value = float(torch.linalg.vector_norm(CachedHVP(obj, theta)(v)))
    else:
        raise ValueError(op)
    dt = time.perf_counter() - t
    return {"op": op, "n_examples": n, "chunk_size": chunk, "n_params": obj.dim, "time_s": round(dt, 2),
            "peak_rss_mb": round(_peak_rss_mb(), 1), "rss_after_data_mb": round(rss_data, 1),
            "data_mb": round(x.numel() * 4 / 2**20, 1), "norm": value, "torch_threads": torch.get_num_threads()}


def run_memory(n: int = 50_000, chunk: int = 1000, out=None, ops=("grad", "hvp"), threads: int | None = None,
               verbose: bool = True) -> dict:
    res = {"what": "small VGG (3 blocks, width 8, BatchNorm), synthetic CIFAR-shaped data, CPU, "
                   "one subprocess per operation", "budget_mb": 8 * 1024, "results": []}
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    for op in ops:
        cmd = [sys.executable, "-m", "eosflow.bench", "--memory-child", op, "--n", str(n), "--chunk", str(chunk)]
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
        r = json.loads(p.stdout.strip().splitlines()[-1])
        r["within_budget"] = r["peak_rss_mb"] <= res["budget_mb"]
        res["results"].append(r)
        if verbose:
            print(f"[bench --memory] {op}: {r['time_s']} s, peak RSS {r['peak_rss_mb']:.0f} MB "
                  f"(data {r['data_mb']:.0f} MB; after data {r['rss_after_data_mb']:.0f} MB), "
                  f"{n} images, chunk {chunk}", flush=True)
    if out is not None:
        path = Path(out)
        res["path"] = str(write_report(res, path / "memory.json" if path.suffix != ".json" else path))
    return res
