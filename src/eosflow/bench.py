"""Benchmark of the spectral engine: ``python -m eosflow bench [--quick] [--memory] [--out DIR]``.

In one process, on the same model, data and tolerance (relative residual ``‖Hv − λv‖/|λ| ≤ tol``),
it times the top-k Hessian eigenpairs by

* ``scipy_eigsh`` (a): ``scipy.sparse.linalg.eigsh(which="LA")`` (ARPACK) over a
  ``LinearOperator`` whose matvec is a double-backward HVP (``torch.autograd.grad`` twice through
  the model's own parameters), with the vector copied numpy → torch → numpy at every product;
* ``hessian_eigenthings`` (b): ``hessian_eigenthings.lanczos`` (PyPI ``hessian-eigenthings``
  1.0.0a5, ``which="LA"``, full reorthogonalisation) over its ``HessianOperator``. It runs a
  fixed number of Lanczos steps; the bench finds the smallest number that meets ``tol`` (checked
  with fresh HVPs) before timing it, which favours it;
* ``eosflow`` (c): :func:`eosflow.hessian.top_eigenpairs` from a cold start, the default engine,
  and ``eosflow_lanczos``, the previous engine (``method="lanczos"``), for reference;
* ``tracking`` (d): :class:`eosflow.hessian.SpectrumTracker` warm-started along a GD trajectory
  above the stability limit (η = ``lr_factor`` · 2/S(θ₀)), eigenpairs every step, with (a) run at
  a few of the same steps for comparison.

Every method's eigenpairs are checked afterwards with fresh HVPs (explicit residuals) and their
eigenvalues compared. Times are medians over repetitions (``time.perf_counter``, with
``torch.cuda.synchronize`` on a GPU); peak memory is the process's peak RSS during the call
(Linux ``/proc/self/status`` VmHWM, reset through ``/proc/self/clear_refs`` before each call),
and ``torch.cuda.max_memory_allocated`` on a GPU. Writes ``bench.json`` (``bench_quick.json`` with
``--quick``) under ``--out`` and prints a table.

``--memory``: full-batch gradient and one HVP of the small VGG over 50,000 CIFAR-shaped images
(synthetic), chunked, each in its own subprocess so that its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .hessian import CachedHVP, SpectrumTracker, top_eigenpairs
from .models import build_model
from .objective import Objective

HE_VERSION = "1.0.0a5"
METHOD_ORDER = ("scipy_eigsh", "hessian_eigenthings", "eosflow", "eosflow_lanczos")


# -- measuring ----------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ≥ 4.0); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    hwm = _status_kb("VmHWM")
    if hwm is not None:
        return hwm / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB (macOS: bytes)


def _release_memory() -> None:
    """Collect garbage and hand freed heap memory back to the OS (glibc ``malloc_trim``), so that
    the RSS before a call is not inflated by what earlier calls freed but the allocator kept."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measured(fn, device: torch.device):
    """``fn()`` timed, with its peak memory: ``(seconds, result, memory dict)``."""
    _release_memory()
    per_call = _reset_peak_rss()
    rss0 = (_status_kb("VmRSS") or 0) / 1024
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    out = fn()
    _sync(device)
    dt = time.perf_counter() - t
    peak = _peak_rss_mb()
    mem = {"peak_rss_mb": round(peak, 1), "rss_before_mb": round(rss0, 1), "extra_rss_mb": round(peak - rss0, 1),
           "peak_rss_scope": "call" if per_call else "process"}
    if device.type == "cuda":
        mem["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return dt, out, mem


def explicit_residuals(obj: Objective, theta, vals, vecs) -> list[float]:
    """``‖Hv − λv‖ / |λ|`` with fresh HVPs (unit ``v``), whatever method produced the pairs."""
    V = torch.as_tensor(vecs).to(device=theta.device, dtype=theta.dtype)
    V = V / torch.linalg.vector_norm(V, dim=1, keepdim=True)
    lam = torch.as_tensor(vals).to(device=theta.device, dtype=theta.dtype)
    op = CachedHVP(obj, theta)
    HV = op.batch(V)
    r = torch.linalg.vector_norm(HV - lam[:, None] * V, dim=1) / lam.abs()
    return [float(x) for x in r.cpu()]


# -- the methods ------------------------------------------------------------------------------

def _model_at(obj: Objective, theta):
    """A copy of the objective's model with ``theta`` loaded into its parameters."""
    model = copy.deepcopy(obj.model)
    torch.nn.utils.vector_to_parameters(theta.detach().clone(), model.parameters())
    return model


class ScipyBaseline:
    """(a) ARPACK over a numpy LinearOperator whose matvec is a double-backward HVP."""

    name = "scipy_eigsh"

    def __init__(self, obj: Objective, theta):
        from scipy.sparse.linalg import LinearOperator

        self.obj, self.theta = obj, theta
        self.model = _model_at(obj, theta)
        self.params = list(self.model.parameters())
        self.n_matvec = 0
        P = obj.dim

        def matvec(v_np):
            self.n_matvec += 1
            v = torch.from_numpy(np.ascontiguousarray(v_np, dtype=np.float64).reshape(-1)).to(
                device=theta.device, dtype=theta.dtype)
            vs = [t.view_as(p) for t, p in zip(torch.split(v, [p.numel() for p in self.params]), self.params)]
            total = torch.zeros(P, dtype=theta.dtype, device=theta.device)
            for xc, yc in obj.chunks():
                loss = F.cross_entropy(self.model(xc), yc, reduction="sum")
                grads = torch.autograd.grad(loss, self.params, create_graph=True)
                hv = torch.autograd.grad(grads, self.params, grad_outputs=vs)
                total += torch.cat([h.reshape(-1) for h in hv])
            return (total / obj.n).cpu().double().numpy()

        self.op = LinearOperator((P, P), matvec=matvec, dtype=np.float64)

    def solve(self, k: int, tol: float, seed: int = 0):
        from scipy.sparse.linalg import eigsh

        self.n_matvec = 0
        v0 = np.random.default_rng(seed).standard_normal(self.obj.dim)
        w, U = eigsh(self.op, k=k, which="LA", tol=tol, v0=v0)
        order = np.argsort(w)[::-1]
        return {"eigvals": w[order].tolist(), "eigvecs": torch.from_numpy(U[:, order].T.copy()),
                "n_matvec": self.n_matvec}


def hessian_eigenthings_available() -> str | None:
    try:
        import hessian_eigenthings
    except ImportError:
        return None
    return getattr(hessian_eigenthings, "__version__", "?")


class EigenthingsMethod:
    """(b) ``hessian_eigenthings.lanczos`` (which="LA", full reorthogonalisation), ``m`` steps."""

    name = "hessian_eigenthings"

    def __init__(self, obj: Objective, theta):
        import hessian_eigenthings as he

        sizes = {int(xc.shape[0]) for xc, _ in obj.chunks()}
        if len(sizes) != 1:  # it averages per-batch means: equal to L only for equal batches
            raise ValueError(f"hessian_eigenthings needs equal chunks, got sizes {sorted(sizes)}")
        self.he = he
        self.model = _model_at(obj, theta)
        data = list(obj.chunks())
        self.op = he.HessianOperator(self.model, data, he.supervised_loss(F.cross_entropy))

    def solve(self, k: int, m: int, seed: int = 0):
        r = self.he.lanczos(self.op, k=k, max_iter=m, which="LA", reorthogonalize=True, seed=seed)
        return {"eigvals": [float(x) for x in r.eigenvalues.cpu()], "eigvecs": r.eigenvectors.detach(),
                "n_matvec": int(r.iterations)}


def calibrate_eigenthings(method: EigenthingsMethod, obj, theta, k: int, tol: float, m0: int,
                          max_runs: int = 6, device=torch.device("cpu")) -> dict:
    """Smallest Lanczos length ``m`` (searched from ``m0``: up by 25 %, down by an eighth, then
    bisection; at most ``max_runs`` runs) whose top-k meet ``tol`` by fresh HVPs. Each run is
    timed (the same call as a timed repetition), so the run at the chosen ``m`` serves as the
    first repetition."""
    limit = obj.dim - 1
    tried: dict[int, float] = {}
    runs: dict[int, tuple] = {}

    def ok(m: int) -> bool:
        if m not in tried:
            dt, r, mem = measured(lambda: method.solve(k, m), device)
            tried[m] = max(explicit_residuals(obj, theta, r["eigvals"], r["eigvecs"]))
            runs[m] = (dt, r, mem)
        return tried[m] <= tol

    m = min(max(m0, k + 1), limit)
    hi = None
    while len(tried) < max_runs:
        if ok(m):
            hi = m
            break
        if m == limit:
            break
        m = min(limit, math.ceil(1.25 * m) + 1)
    if hi is not None:  # step down while it still meets tol, then bisect to the smallest m
        step = max(1, hi // 8)
        while len(tried) < max_runs and hi - step > k and ok(hi - step):
            hi -= step
        lo = max([m for m, r in tried.items() if r > tol and m < hi], default=hi)
        while len(tried) < max_runs and hi - lo > 1:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid
    return {"m": hi, "tried": {str(a): b for a, b in sorted(tried.items())},
            "timed_run": runs.get(hi) if hi is not None else None}


# -- workloads ---------------------------------------------------------------------------------

def fashion_mnist_subset(n: int, seed: int = 0):
    """``n`` class-balanced Fashion-MNIST training images (normalised), or synthetic ones of that
    shape when no copy is on disk. Returns ``(x, y, source)``."""
    from .data import DataError, balanced_subset, load_fashion_mnist

    try:
        x_tr, y_tr, _, _ = load_fashion_mnist(download=False)
    except (DataError, OSError) as e:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, 1, 28, 28, generator=g), torch.arange(n) % 10, f"synthetic ({e.__class__.__name__})"
    idx = balanced_subset(y_tr, n, seed)
    x = torch.from_numpy(x_tr[idx].astype(np.float32) / 255.0)[:, None]
    x = (x - x.mean()) / x.std()
    return x, torch.from_numpy(y_tr[idx].astype(np.int64)), "fashion-mnist (disk)"


def cifar_shaped(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 10, "synthetic CIFAR-shaped (3x32x32)"


def build_workload(spec: dict, device: torch.device):
    if spec["data"] == "fashion-mnist":
        x, y, source = fashion_mnist_subset(spec["n"])
        shape = (1, 28, 28)
    else:
        x, y, source = cifar_shaped(spec["n"])
        shape = (3, 32, 32)
    model = build_model(spec["model"], shape, 10, seed=0).to(device)
    obj = Objective(model, x.to(device), y.to(device), "ce", chunk_size=spec.get("chunk_size"))
    info = {"model": spec["model"], "n_params": obj.dim, "n_examples": obj.n, "chunk_size": spec.get("chunk_size"),
            "data": source, "loss": "ce", "dtype": "float32", "hvp_mode_objective": obj.hvp_mode}
    return obj, obj.flatten(), info


def warm_up(obj: Objective, theta, methods) -> None:
    """One untimed solve of every method on a small slice of the data (lazy initialisation of
    torch, vmap and the BLAS/oneDNN kernels would otherwise land in the first timed call)."""
    chunk = min(obj.chunk_size, 64) if obj.chunk_size < obj.n else None
    n = min(obj.n, 2 * chunk if chunk else 128)
    small = Objective(obj.model, obj.x[:n], obj.y[:n], obj.loss_name, chunk_size=chunk)
    for name in methods:
        if name == "scipy_eigsh":
            ScipyBaseline(small, theta).solve(1, 1e-2)
        elif name == "hessian_eigenthings":
            EigenthingsMethod(small, theta).solve(1, 3)
        elif name == "eosflow":
            top_eigenpairs(small, theta, 2, tol=1e-2, max_iter=6)
        elif name == "eosflow_lanczos":
            top_eigenpairs(small, theta, 2, tol=1e-2, max_iter=6, method="lanczos")
    small.loss_grad(theta)


def _median(xs):
    return float(statistics.median(xs)) if xs else None


def _rel_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


# -- one workload ------------------------------------------------------------------------------

def bench_cold(obj, theta, k: int, tol: float, reps: int, device, methods, he_m0=None, he_max_runs: int = 6) -> dict:
    """Cold top-k by every method: times (median of ``reps``), HVPs, memory, residuals, agreement."""
    out: dict = {"k": k, "tol": tol, "reps": reps, "methods": {}}
    runs = {}
    for name in methods:
        entry: dict = {}
        first = None
        if name == "scipy_eigsh":
            base = ScipyBaseline(obj, theta)
            fn = lambda base=base: base.solve(k, tol)  # noqa: E731
        elif name == "hessian_eigenthings":
            he = EigenthingsMethod(obj, theta)
            m0 = he_m0 or runs.get("eosflow", {}).get("n_matvec", 2 * k + 10)
            cal = calibrate_eigenthings(he, obj, theta, k, tol, m0, max_runs=he_max_runs, device=device)
            first = cal.pop("timed_run")
            entry["calibration"] = cal
            if cal["m"] is None:
                entry["skipped"] = f"no Lanczos length up to the tried ones met tol={tol}"
                out["methods"][name] = entry
                continue
            fn = lambda he=he, m=cal["m"]: he.solve(k, m)  # noqa: E731
        elif name == "eosflow":
            fn = lambda: top_eigenpairs(obj, theta, k, tol=tol, max_iter=500)  # noqa: E731
        elif name == "eosflow_lanczos":
            fn = lambda: top_eigenpairs(obj, theta, k, tol=tol, max_iter=500, method="lanczos")  # noqa: E731
        else:
            raise ValueError(name)
        times, mems = [], []
        if name == "hessian_eigenthings" and first is not None:
            times.append(first[0])
            mems.append(first[2])
            r = first[1]
        for _ in range(reps - len(times)):
            dt, r, mem = measured(fn, device)
            times.append(dt)
            mems.append(mem)
        if not isinstance(r, dict):
            r = {"eigvals": [float(x) for x in r.eigvals.cpu()], "eigvecs": r.eigvecs, "n_matvec": r.n_matvec}
        runs[name] = r
        res = explicit_residuals(obj, theta, r["eigvals"], r["eigvecs"])
        entry.update({"time_s": _median(times), "times_s": [round(t, 4) for t in times], "n_matvec": r["n_matvec"],
                      "eigvals": r["eigvals"], "residuals": res, "max_residual": max(res),
                      "meets_tol": max(res) <= tol,
                      "peak_rss_mb": max(m["peak_rss_mb"] for m in mems),
                      "extra_rss_mb": max(m["extra_rss_mb"] for m in mems),
                      "rss_before_mb": mems[-1]["rss_before_mb"], "peak_rss_scope": mems[-1]["peak_rss_scope"]})
        if device.type == "cuda":
            entry["cuda_max_allocated_mb"] = max(m["cuda_max_allocated_mb"] for m in mems)
        out["methods"][name] = entry
    out["agreement"] = agreement({n: e["eigvals"] for n, e in out["methods"].items() if "eigvals" in e})
    t = {n: e["time_s"] for n, e in out["methods"].items() if e.get("time_s")}
    if "eosflow" in t:
        out["speedup_eosflow_vs"] = {n: round(v / t["eosflow"], 3) for n, v in t.items() if n != "eosflow"}
    return out


def agreement(eigvals: dict, rtol: float = 1e-4) -> dict:
    """Largest relative difference of each method's eigenvalues from the first method's (the
    reference), and ``ok``: every one within ``rtol``."""
    names = list(eigvals)
    if not names:
        return {"reference": None, "max_rel_diff": {}, "rtol": rtol, "ok": False}
    ref = eigvals[names[0]]
    diffs = {n: _rel_diff(eigvals[n], ref) for n in names[1:]}
    ok = all(len(eigvals[n]) == len(ref) and d <= rtol for n, d in diffs.items())
    return {"reference": names[0], "max_rel_diff": diffs, "rtol": rtol, "ok": bool(ok)}


def bench_tracking(obj, theta0, k: int, tol: float, steps: int, lr_factor: float, compare_at, device,
                   baseline: bool = True) -> dict:
    """GD above the stability limit, top-k every step warm-started; (a) at ``compare_at`` steps."""
    s0 = float(top_eigenpairs(obj, theta0, 1, tol=1e-4).eigvals[0])
    lr = lr_factor * 2.0 / s0
    tracker = SpectrumTracker(k=k, tol=tol, max_iter=500)
    theta = theta0.clone()
    meas, gd, comp = [], [], []
    for t in range(steps):
        dt, res, mem = measured(lambda: tracker.measure(obj, theta, step=t), device)
        meas.append(dt)
        if baseline and t in compare_at:
            base = ScipyBaseline(obj, theta)
            dta, ra, mema = measured(lambda: base.solve(k, tol), device)
            comp.append({"step": t, "tracking_s": round(dt, 4), "scipy_eigsh_s": round(dta, 4),
                         "ratio": round(dta / dt, 3), "tracking_n_matvec": res.n_matvec,
                         "scipy_n_matvec": ra["n_matvec"],
                         "eigvals_tracking": [float(x) for x in res.eigvals.cpu()], "eigvals_scipy": ra["eigvals"],
                         "max_rel_diff": _rel_diff([float(x) for x in res.eigvals.cpu()], ra["eigvals"]),
                         "scipy_max_residual": max(explicit_residuals(obj, theta, ra["eigvals"], ra["eigvecs"]))})
        dt_gd, (loss, g), _ = measured(lambda: obj.loss_grad(theta), device)
        gd.append(dt_gd)
        if not math.isfinite(float(loss)):
            break
        theta = theta - lr * g
    recs = tracker.records
    sharp = [float(r["eigvals"][0]) for r in recs]
    out = {
        "k": k, "tol": tol, "steps": len(recs), "lr": lr, "lr_factor": lr_factor, "sharpness_theta0": s0,
        "stability_limit_2_over_lr": 2.0 / lr, "sharpness_first_last": [sharp[0], sharp[-1]],
        "sharpness_median": _median(sharp),
        "median_measure_s": _median(meas), "median_gd_step_s": _median(gd),
        "median_gd_plus_measure_s": _median([a + b for a, b in zip(meas, gd)]),
        "mean_n_matvec": float(np.mean([r["n_matvec"] for r in recs])),
        "first_n_matvec": recs[0]["n_matvec"], "median_n_matvec_warm": _median([r["n_matvec"] for r in recs[1:]]),
        "all_converged": all(r["converged"] for r in recs),
        "max_residual": max(float(r["residuals"].max()) for r in recs),
        "compare_scipy": comp,
    }
    if comp:
        out["scipy_median_s"] = _median([c["scipy_eigsh_s"] for c in comp])
        out["ratio_scipy_vs_tracking_median"] = round(out["scipy_median_s"] / out["median_measure_s"], 3)
        out["ratio_same_steps_median"] = _median([c["ratio"] for c in comp])
        out["max_rel_diff_vs_scipy"] = max(c["max_rel_diff"] for c in comp)
    return out


# -- configurations ------------------------------------------------------------------------------

def configs(quick: bool) -> list[dict]:
    if quick:
        return [
            {"name": "mlp", "data": "fashion-mnist", "n": 300,
             "model": {"arch": "mlp", "widths": [32], "activation": "tanh"}, "chunk_size": None,
             "ks": [1, 3], "reps": 1, "track": {"k": 2, "steps": 6, "compare_at": [1, 5]}},
            {"name": "vgg", "data": "cifar10", "n": 64, "chunk_size": 32,
             "model": {"arch": "vgg", "blocks": 1, "base_width": 4, "batch_norm": True, "activation": "relu"},
             "ks": [1], "reps": 1, "track": None},
        ]
    return [
        {"name": "mlp", "data": "fashion-mnist", "n": 5000,
         "model": {"arch": "mlp", "widths": [200, 200], "activation": "tanh"}, "chunk_size": None,
         "ks": [1, 10], "reps": {1: 5, 10: 3}, "track": {"k": 1, "steps": 200, "compare_at": [1, 50, 100, 150, 199]}},
        {"name": "vgg", "data": "cifar10", "n": 5000, "chunk_size": 1000,
         "model": {"arch": "vgg", "blocks": 3, "base_width": 8, "batch_norm": True, "activation": "relu"},
         "ks": [1], "reps": 1, "he_max_runs": 2, "track": None},
    ]


def run(quick: bool = False, out: str | os.PathLike | None = None, device: str = "auto", reps: int | None = None,
        ks: list[int] | None = None, track_k: int | None = None, track_steps: int | None = None,
        lr_factor: float = 1.5, tol: float = 1e-3, workloads: list[str] | None = None,
        methods: list[str] | None = None, vgg_ks: list[int] | None = None, vgg_reps: int | None = None,
        verbose: bool = True) -> dict:
    from .device import resolve_device

    dev = resolve_device(device)
    torch.manual_seed(0)
    t_start = time.perf_counter()
    he_version = hessian_eigenthings_available()
    methods = list(methods or METHOD_ORDER)
    if he_version is None and "hessian_eigenthings" in methods:
        methods.remove("hessian_eigenthings")
    report: dict = {
        "quick": quick, "device": str(dev), "tol": tol,
        "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "hessian_eigenthings": he_version or "not installed (method skipped)",
        "methods": {"scipy_eigsh": "(a) scipy.sparse.linalg.eigsh(which='LA') over a numpy LinearOperator, "
                                   "double-backward HVP, numpy<->torch copies per product",
                    "hessian_eigenthings": f"(b) hessian_eigenthings.lanczos {HE_VERSION} (which='LA', "
                                           "reorthogonalize=True), steps calibrated to meet tol (untimed)",
                    "eosflow": "(c) eosflow top_eigenpairs, default engine (block_lanczos_topk over CachedHVP)",
                    "eosflow_lanczos": "eosflow top_eigenpairs(method='lanczos'): the previous engine",
                    "tracking": "(d) SpectrumTracker warm-started every GD step"},
        "workloads": {},
    }
    for spec in configs(quick):
        if workloads and spec["name"] not in workloads:
            continue
        spec = dict(spec)
        if spec["name"] == "mlp":
            spec["ks"] = ks or spec["ks"]
            spec["reps"] = reps or spec["reps"]
        else:
            spec["ks"] = vgg_ks or spec["ks"]
            spec["reps"] = vgg_reps or spec["reps"]
        obj, theta, info = build_workload(spec, dev)
        warm_up(obj, theta, methods)
        w: dict = {"info": info, "cold": {}}
        if verbose:
            print(f"[bench] {spec['name']}: {info['n_params']} parameters, {info['n_examples']} examples "
                  f"({info['data']}), device {dev}", flush=True)
        wm = [m for m in methods if not (spec["name"] == "vgg" and m == "eosflow_lanczos")]
        # eosflow first: its HVP count seeds (b)'s calibration
        wm = [m for m in ("eosflow", *[m for m in wm if m != "eosflow"]) if m in wm]
        for k in spec["ks"]:
            nrep = spec["reps"].get(k, 1) if isinstance(spec["reps"], dict) else spec["reps"]
            r = bench_cold(obj, theta, k, tol, nrep, dev, wm, he_max_runs=spec.get("he_max_runs", 6))
            r["methods"] = {m: r["methods"][m] for m in METHOD_ORDER if m in r["methods"]}
            r["agreement"] = agreement({n: e["eigvals"] for n, e in r["methods"].items() if "eigvals" in e})
            w["cold"][f"top{k}"] = r
            if verbose:
                print(format_cold(spec["name"], r), flush=True)
        tr = spec["track"]
        if tr is not None and track_steps != 0:
            steps = track_steps or tr["steps"]
            compare = [c for c in tr["compare_at"] if c < steps] or [steps - 1]
            if steps - 1 not in compare and steps > 1 and tr["compare_at"][-1] >= steps:
                compare.append(steps - 1)
            # (d) on a GPU tracks the top 10 (the GPU target); on a CPU the top 1 (sharpness)
            tk = track_k or (10 if dev.type == "cuda" and not quick else tr["k"])
            w["tracking"] = bench_tracking(obj, theta, tk, tol, steps, lr_factor, compare, dev,
                                           baseline="scipy_eigsh" in methods)
            if verbose:
                print(format_tracking(spec["name"], w["tracking"]), flush=True)
        report["workloads"][spec["name"]] = w
    report["targets"] = targets(report)
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    report["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    if out is not None:
        path = Path(out)
        path = path / ("bench_quick.json" if quick else "bench.json") if path.suffix != ".json" else path
        path.parent.mkdir(parents=True, exist_ok=True)
        report_json = json.dumps(report, indent=1, default=float)
        path.write_text(report_json)
        report["path"] = str(path)
        if verbose:
            print(f"[bench] wrote {path} ({report['wall_s']} s)")
    return report


def targets(report: dict) -> dict:
    """The issue's targets, evaluated on what this run measured (None: not measured here)."""
    out: dict = {}
    mlp = report["workloads"].get("mlp", {})
    tr = mlp.get("tracking")
    if tr and tr.get("compare_scipy"):
        out["cpu_tracking_5x_vs_scipy"] = {
            "ratio": tr["ratio_same_steps_median"], "target": 5.0, "met": tr["ratio_same_steps_median"] >= 5.0,
            "eigvals_within_1e-4": tr["max_rel_diff_vs_scipy"] <= 1e-4, "k": tr["k"]}
    top10 = mlp.get("cold", {}).get("top10", {}).get("speedup_eosflow_vs", {})
    if "hessian_eigenthings" in top10:
        out["cpu_cold_top10_2x_vs_eigenthings"] = {"ratio": top10["hessian_eigenthings"], "target": 2.0,
                                                   "met": top10["hessian_eigenthings"] >= 2.0}
    if report["device"].startswith("cuda"):
        t10 = mlp.get("cold", {}).get("top10", {}).get("methods", {}).get("eosflow", {})
        if t10:
            out["gpu_top10_le_30ms"] = {"time_s": t10["time_s"], "met": t10["time_s"] <= 0.030}
        if tr and tr["k"] >= 10:
            out["gpu_step_plus_top10_le_20ms"] = {"time_s": tr["median_gd_plus_measure_s"],
                                                  "met": tr["median_gd_plus_measure_s"] <= 0.020}
    return out


# -- printing ----------------------------------------------------------------------------------------

def format_cold(name: str, r: dict) -> str:
    lines = [f"{name} top-{r['k']} (tol {r['tol']:g}, median of {r['reps']}):",
             f"  {'method':22s} {'time s':>9s} {'HVPs':>6s} {'max resid':>10s} {'peak RSS MB':>12s} "
             f"{'(+call)':>8s} {'x eosflow':>10s}  eigvals (first 3)"]
    ref = r["methods"].get("eosflow", {}).get("time_s")
    for n, e in r["methods"].items():
        if "time_s" not in e:
            lines.append(f"  {n:22s} skipped: {e.get('skipped')}")
            continue
        ratio = f"{e['time_s'] / ref:10.2f}" if ref else " " * 10
        ev = ", ".join(f"{v:.5g}" for v in e["eigvals"][:3])
        lines.append(f"  {n:22s} {e['time_s']:9.3f} {e['n_matvec']:6d} {e['max_residual']:10.2e} "
                     f"{e['peak_rss_mb']:12.0f} {e['extra_rss_mb']:8.0f} {ratio}  {ev}")
    a = r["agreement"]
    lines.append(f"  eigenvalue agreement vs {a['reference']}: max rel diff "
                 + ", ".join(f"{n} {d:.1e}" for n, d in a["max_rel_diff"].items()) + f" -> ok={a['ok']}")
    return "\n".join(lines)


def format_tracking(name: str, t: dict) -> str:
    s0, s1 = t["sharpness_first_last"]
    lines = [f"{name} tracking top-{t['k']}: {t['steps']} GD steps at lr {t['lr']:.4g} "
             f"({t['lr_factor']} x 2/S(theta0) = {2 / t['sharpness_theta0']:.4g}); sharpness {s0:.4g}"
             f" -> {s1:.4g} (2/lr = {t['stability_limit_2_over_lr']:.4g})",
             f"  per measurement: median {t['median_measure_s']:.4f} s, {t['mean_n_matvec']:.1f} HVPs mean "
             f"(first {t['first_n_matvec']}, warm median {t['median_n_matvec_warm']}); "
             f"GD step {t['median_gd_step_s']:.4f} s; step + measurement {t['median_gd_plus_measure_s']:.4f} s; "
             f"all converged {t['all_converged']}"]
    for c in t["compare_scipy"]:
        lines.append(f"  step {c['step']:4d}: tracking {c['tracking_s']:.3f} s ({c['tracking_n_matvec']} HVPs), "
                     f"scipy_eigsh {c['scipy_eigsh_s']:.3f} s ({c['scipy_n_matvec']} HVPs): x{c['ratio']:.2f}, "
                     f"eigvals rel diff {c['max_rel_diff']:.1e}")
    if t["compare_scipy"]:
        lines.append(f"  median ratio at those steps x{t['ratio_same_steps_median']:.2f}; scipy median "
                     f"{t['scipy_median_s']:.3f} s vs tracking median {t['median_measure_s']:.3f} s")
    return "\n".join(lines)


# -- memory mode -------------------------------------------------------------------------------------

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
        path = path / "memory.json" if path.suffix != ".json" else path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=1))
        res["path"] = str(path)
    return res


# -- command line ---------------------------------------------------------------------------------

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
    p = argparse.ArgumentParser(prog="python -m eosflow bench", description=__doc__.splitlines()[0])
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


if __name__ == "__main__":
    sys.exit(main())
