"""One benchmark run: per workload the cold solves, tracking, the clamped step and the GD step
against bare torch (:data:`ROWS`); the targets; the printed tables."""

from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from ..device import resolve_device
from ..objective import Objective
from ..spectral import SpectrumTracker, top_eigenpairs
from ..spectral.operators import DEFAULT_GRAPH_CACHE_BYTES
from ..training.clamp import DEFAULT_CLAMP_MARGIN
from .measure import explicit_residuals, measured, median, product_of, write_report
from .references import HE_VERSION, EigenthingsMethod, ScipyBaseline, calibrate_eigenthings, hessian_eigenthings_available
from .steps import bench_clamp, bench_gd_vs_torch
from .targets import format_targets, targets
from .workloads import build_workload, cifar10_subset

METHOD_ORDER = ("scipy_eigsh", "hessian_eigenthings", "eosflow", "eosflow_nocache", "eosflow_cached",
                "eosflow_lanczos")
#: Run unless ``methods`` says otherwise (``eosflow_lanczos``, the engine before last, only on request).
DEFAULT_METHODS = METHOD_ORDER[:-1]
#: The rows of each workload: cold top-k solves, tracking along GD, the clamped GD step, the GD
#: step against a bare torch loop.
ROWS = ("cold", "tracking", "clamp", "gd")


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
        elif name == "eosflow_cached":
            top_eigenpairs(small, theta, 2, tol=1e-2, max_iter=6, hvp="cached")
    small.loss_grad(theta)


def _rel_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


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
        elif name in ("eosflow", "eosflow_nocache"):
            kept = entry["primal_cache"] = {}
            budget = 0 if name == "eosflow_nocache" else DEFAULT_GRAPH_CACHE_BYTES
            fn = lambda kept=kept, budget=budget: _eosflow_cold(obj, theta, k, tol, budget, kept)  # noqa: E731
        elif name == "eosflow_cached":
            fn = lambda: top_eigenpairs(obj, theta, k, tol=tol, max_iter=500, hvp="cached")  # noqa: E731
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
            entry["product"] = getattr(r, "product", None)
            r = {"eigvals": [float(x) for x in r.eigvals.cpu()], "eigvecs": r.eigvecs, "n_matvec": r.n_matvec}
        runs[name] = r
        res = explicit_residuals(obj, theta, r["eigvals"], r["eigvecs"])
        entry.update({"time_s": median(times), "times_s": [round(t, 4) for t in times], "n_matvec": r["n_matvec"],
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


def _eosflow_cold(obj, theta, k: int, tol: float, budget: int, kept: dict):
    """eosflow's cold top-k (``top_eigenpairs``, its default engine, primal passes kept within
    ``budget`` bytes), recording in ``kept`` what its operator kept between products
    (:attr:`EigResult.cache`): the chunks whose primal passes it kept (of ``chunks``) and their size."""
    res = top_eigenpairs(obj, theta, k, tol=tol, max_iter=500, graph_cache_bytes=budget)
    cache = res.cache or {}
    n = getattr(obj, "n", None)
    size = getattr(obj, "chunk_size", None)
    kept.update(budget_mb=round(budget / 2**20, 1), cached_chunks=cache.get("cached_chunks"),
                cache_mb=round(cache.get("cache_bytes", 0) / 2**20, 1),
                chunks=math.ceil(n / size) if n and size else None)
    return res


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


def sharpness_at(obj, theta) -> float:
    """S(θ) to relative residual 1e-4: the unit of the rows' learning rates (η = factor · 2/S(θ₀))."""
    return float(top_eigenpairs(obj, theta, 1, tol=1e-4).eigvals[0])


def bench_tracking(obj, theta0, k: int, tol: float, steps: int, lr_factor: float, compare_at, device,
                   baseline: bool = True, s0: float | None = None) -> dict:
    """GD above the stability limit, top-k every step warm-started as the in-loop sharpness is
    (:class:`eosflow.jobs.run.InloopSharpness`: the span of the last two measurements' eigenvectors and
    one guard vector); (a) at ``compare_at`` steps. ``s0``: S(θ₀) when already known (else
    measured here)."""
    s0 = sharpness_at(obj, theta0) if s0 is None else s0
    lr = lr_factor * 2.0 / s0
    tracker = SpectrumTracker(k=k, tol=tol, max_iter=500, n_guard=1, warm_subspace=True)
    theta = theta0.clone()
    meas, gd, comp, products = [], [], [], []
    for t in range(steps):
        dt, res, mem = measured(lambda: tracker.measure(obj, theta, step=t), device)
        meas.append(dt)
        products.append(getattr(res, "product", None))
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
    # the catapult: GD above the limit until S falls below 2/η; the steps after it are at the edge
    catapult = next((t for t, x in enumerate(sharp) if x < 2.0 / lr), None)
    out = {
        "k": k, "tol": tol, "steps": len(recs), "lr": lr, "lr_factor": lr_factor, "sharpness_theta0": s0,
        "catapult_end_step": catapult, "steps_past_catapult": None if catapult is None else len(recs) - catapult,
        "compared_past_catapult": catapult is not None and all(c["step"] >= catapult for c in comp),
        "mean_measure_s_past_catapult": (float(np.mean(meas[catapult:])) if catapult is not None else None),
        "mean_n_matvec_past_catapult": (float(np.mean([r["n_matvec"] for r in recs[catapult:]]))
                                        if catapult is not None else None),
        "stability_limit_2_over_lr": 2.0 / lr, "sharpness_first_last": [sharp[0], sharp[-1]],
        "sharpness_median": median(sharp),
        "median_measure_s": median(meas), "median_gd_step_s": median(gd),
        "median_gd_plus_measure_s": median([a + b for a, b in zip(meas, gd)]),
        "mean_n_matvec": float(np.mean([r["n_matvec"] for r in recs])),
        "first_n_matvec": recs[0]["n_matvec"], "median_n_matvec_warm": median([r["n_matvec"] for r in recs[1:]]),
        "all_converged": all(r["converged"] for r in recs),
        "max_residual": max(float(r["residuals"].max()) for r in recs),
        "compare_scipy": comp, "product": product_of(products),
    }
    if comp:
        out["scipy_median_s"] = median([c["scipy_eigsh_s"] for c in comp])
        out["ratio_scipy_vs_tracking_median"] = round(out["scipy_median_s"] / out["median_measure_s"], 3)
        out["ratio_same_steps_median"] = median([c["ratio"] for c in comp])
        out["max_rel_diff_vs_scipy"] = max(c["max_rel_diff"] for c in comp)
    return out


# -- configurations ------------------------------------------------------------------------------

def configs(quick: bool) -> list[dict]:
    """The workloads and their rows: ``ks`` (cold top-k), ``track`` (tracking: top-``k`` over
    ``steps`` GD steps, eigsh at ``compare_at``), ``clamp`` (clamped GD over ``steps``, S to 1e-6 at
    ``check_at``), ``gd`` (``steps`` timed GD steps each for eosflow and bare torch). An HVP of the
    VGG over 5,000 images costs seconds (about 10 s on one thread; 4x that in float64, which the
    clamp's check needs): its rows take few steps and one clamp check; its tracking past the catapult
    and a longer clamped run use 1,000 of its images (``vgg_small``). ``mlp_default``: the default pipeline's MLP, for
    its clamp row."""
    if quick:
        return [
            {"name": "mlp", "data": "fashion-mnist", "n": 300,
             "model": {"arch": "mlp", "widths": [32], "activation": "tanh"}, "chunk_size": None,
             "ks": [1, 10], "reps": 1, "track": {"k": 2, "steps": 6, "compare_at": [1, 5]},
             "clamp": {"steps": 6, "check_at": [2, 5]}, "gd": {"steps": 3}},
            {"name": "vgg", "data": "cifar10", "n": 64, "chunk_size": 32,
             "model": {"arch": "vgg", "blocks": 1, "base_width": 4, "batch_norm": True, "activation": "relu"},
             "ks": [1, 3], "reps": 1, "track": {"k": 1, "steps": 4, "compare_at": [1, 3]},
             "clamp": {"steps": 4, "check_at": [3]}, "gd": {"steps": 3}},
            {"name": "mlp_default", "data": "fashion-mnist", "n": 300,
             "model": {"arch": "mlp", "widths": [32, 32, 32], "activation": "relu"}, "chunk_size": None,
             "ks": [], "reps": 1, "track": None, "clamp": {"steps": 12, "check_at": [11], "every_step": True},
             "gd": None},
            {"name": "residual", "data": "fashion-mnist", "n": 64, "batch_size": 32,
             "model": {"width": 4, "blocks": 1}, "ks": [1, 3], "reps": 1, "hvp_reps": 3},
        ]
    return [
        {"name": "mlp", "data": "fashion-mnist", "n": 5000,
         "model": {"arch": "mlp", "widths": [200, 200], "activation": "tanh"}, "chunk_size": None,
         "ks": [1, 10], "reps": {1: 5, 10: 3}, "track": {"k": 1, "steps": 200, "compare_at": [1, 50, 100, 150, 199]},
         "clamp": {"steps": 200, "check_at": [50, 199], "every_step": True}, "gd": {"steps": 20}},
        {"name": "vgg", "data": "cifar10", "n": 5000, "chunk_size": 1000,
         "model": {"arch": "vgg", "blocks": 3, "base_width": 8, "batch_norm": True, "activation": "relu"},
         "ks": [1, 3], "reps": 1, "he_max_runs": 2, "track": None,
         "clamp": {"steps": 6, "check_at": [5]}, "gd": {"steps": 6}},
        {"name": "mlp_default", "data": "fashion-mnist", "n": 1000,
         "model": {"arch": "mlp", "widths": [32, 32, 32], "activation": "relu"}, "chunk_size": None,
         "ks": [], "reps": 1, "track": None, "clamp": {"steps": 300, "check_at": [100, 299], "every_step": True},
         "gd": None},
        # the VGG's trajectory rows: 1,000 of the VGG workload's images (one chunk), so that 230 tracked
        # steps past the catapult, eigsh at four of them and 120 clamped steps (the bound checked by a
        # float64 tracker at every step without a solve) take minutes, not hours
        {"name": "vgg_small", "data": "cifar10", "n": 1000, "chunk_size": 1000,
         "model": {"arch": "vgg", "blocks": 3, "base_width": 8, "batch_norm": True, "activation": "relu"},
         "ks": [], "reps": 1, "track": {"k": 1, "steps": 230, "compare_at": [60, 120, 180, 229]},
         "clamp": {"steps": 120, "check_at": [60, 119], "every_step": "predicted"}, "gd": None},
        {"name": "residual", "data": "fashion-mnist", "n": 512, "batch_size": 128,
         "model": {"width": 16, "blocks": 2}, "ks": [1, 3], "reps": 3, "hvp_reps": 20},
    ]


def _shortened(row: dict | None, n: int | None, key: str) -> dict | None:
    """A trajectory row (``track`` or ``clamp``) cut to ``n`` steps, its ``key`` steps (``compare_at``,
    ``check_at``) those below ``n`` (else the last step); ``n`` None: the row as it is; 0: no row."""
    if row is None or n is None:
        return row
    if n == 0:
        return None
    return {**row, "steps": n, key: [c for c in row.get(key, []) if c < n] or [n - 1]}


def _with_overrides(spec: dict, o: dict) -> dict:
    """``spec`` with the command line's overrides ``o`` of its sizes (None: keep the workload's)."""
    spec = dict(spec)
    if spec["name"] == "residual":
        spec["ks"] = o.get("residual_ks") or spec["ks"]
        spec["reps"] = o.get("residual_reps") or spec["reps"]
        return spec
    mlp = spec["name"] in ("mlp", "mlp_default")
    if spec["name"] in ("mlp", "vgg"):
        spec["ks"] = (o.get("ks") if mlp else o.get("vgg_ks")) or spec["ks"]
        spec["reps"] = (o.get("reps") if mlp else o.get("vgg_reps")) or spec["reps"]
        if o.get("gd_steps") is not None:
            spec["gd"] = None if o["gd_steps"] == 0 else {"steps": o["gd_steps"]}
    spec["track"] = _shortened(spec.get("track"), o.get("track_steps" if mlp else "vgg_track_steps"), "compare_at")
    spec["clamp"] = _shortened(spec.get("clamp"), o.get("clamp_steps" if mlp else "vgg_clamp_steps"), "check_at")
    return spec


#: What each method and row of the report measures (the report's ``methods``).
METHOD_NOTES = {
    "scipy_eigsh": "(a) scipy.sparse.linalg.eigsh(which='LA') over a numpy LinearOperator, "
                   "double-backward HVP, numpy<->torch copies per product",
    "hessian_eigenthings": f"(b) hessian_eigenthings.lanczos {HE_VERSION} (which='LA', "
                           "reorthogonalize=True), steps calibrated to meet tol (untimed)",
    "eosflow": "(c) eosflow top_eigenpairs, default engine (its Hessian-vector product: each "
               "row's 'product')",
    "eosflow_nocache": "eosflow's default engine keeping nothing between products "
                       "(graph_cache_bytes=0): the least memory",
    "eosflow_cached": "eosflow top_eigenpairs(hvp='cached'): the previous default engine "
                      "(double backward through retained graphs)",
    "eosflow_lanczos": "eosflow top_eigenpairs(method='lanczos'): the engine before that",
    "tracking": "(d) SpectrumTracker warm-started every GD step",
    "residual": "a user's model (eosflow.bench.residual.residual_cnn, eval mode) through a DataLoader with "
                "torch.nn.CrossEntropyLoss(): eosflow top_eigenpairs cold against PyHessian (deflated power "
                "iteration, its tol calibrated), hessian-eigenthings (HessianOperator on the loader, Lanczos steps "
                "calibrated) and curvlinops (HessianLinearOperator under scipy eigsh, eigsh tol calibrated), "
                "each calibrated to meet tol by fresh HVPs; eigenvalues against a float64 eigsh reference; one "
                "HVP of each kind in gradients",
    "clamp": "GD at lr_factor x 2/S(theta0) with the stability clamp as a clamped training run "
             "(InloopSharpness: solves to clamp_tol, bound predicted between them within clamp_margin; "
             "RunState.clamped_lr) against a plain GD step from the same theta_t; ratio = total clamped time / "
             "total plain time; S to 1e-6 (cold, float32 then float64) at a few steps and, where 'every_step', "
             "by a float64 tracker at every step (or at every predicted step) checks eta_t S <= 2 clamp",
    "gd_vs_torch": "eosflow's full-batch GD step (ObjectiveStepper, as run_loop) against a bare "
                   "torch loop over the same chunks, interleaved, at eta = 1/S(theta0)",
}


def _load_average() -> list | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def run(quick: bool = False, out: str | os.PathLike | None = None, device: str = "auto", reps: int | None = None,
        ks: list[int] | None = None, track_k: int | None = None, track_steps: int | None = None,
        lr_factor: float = 1.5, tol: float = 1e-3, workloads: list[str] | None = None,
        methods: list[str] | None = None, vgg_ks: list[int] | None = None, vgg_reps: int | None = None,
        vgg_track_steps: int | None = None, rows: list[str] | None = None, cifar10_dir: str | None = None,
        cifar10_origin: str = "--cifar10-dir", clamp: float = 0.95, clamp_tol: float = 1e-3,
        clamp_max_iter: int = 100, clamp_margin: float = DEFAULT_CLAMP_MARGIN, clamp_steps: int | None = None, vgg_clamp_steps: int | None = None,
        gd_steps: int | None = None, verbose: bool = True, heap_reuse: bool | None = None,
        residual_ks: list[int] | None = None, residual_reps: int | None = None,
        residual_methods: list[str] | None = None, command: str | None = None) -> dict:
    """Run the benchmark and return (and, with ``out``, write) its report. Sizes left None are the
    workload's (:func:`configs`); a step count of 0 drops that row. ``rows``: which of
    :data:`ROWS` to run (default all). ``cifar10_dir``: real CIFAR-10 for the VGG (its origin,
    the flag or the config key, names it in errors), else synthetic images. The clamp row uses
    ``clamp``, ``clamp_tol``, ``clamp_margin`` and ``clamp_max_iter`` as a training run's ``train.clamp``,
    ``train.clamp_tol``, ``train.clamp_margin`` and ``hessian.max_iter``. The ``residual`` workload (a user's model through a
    ``DataLoader``, :mod:`eosflow.bench.userload`) runs its own rows (cold top-k by eosflow and the
    peers ``residual_methods``, the HVP cost), sized by ``residual_ks`` and ``residual_reps``."""
    dev = resolve_device(device)
    rows = list(rows or ROWS)
    overrides = {"ks": ks, "reps": reps, "vgg_ks": vgg_ks, "vgg_reps": vgg_reps, "track_steps": track_steps,
                 "vgg_track_steps": vgg_track_steps, "clamp_steps": clamp_steps, "vgg_clamp_steps": vgg_clamp_steps,
                 "gd_steps": gd_steps, "residual_ks": residual_ks, "residual_reps": residual_reps}
    specs = [_with_overrides(s, overrides) for s in configs(quick) if not workloads or s["name"] in workloads]
    vgg_data = None
    if cifar10_dir is not None and any(s["name"] == "vgg" for s in specs):  # before any work: a bad folder fails now
        vgg_data = cifar10_subset(cifar10_dir, next(s["n"] for s in specs if s["name"] == "vgg"), origin=cifar10_origin)
    torch.manual_seed(0)
    t_start = time.perf_counter()
    he_version = hessian_eigenthings_available()
    methods = list(methods or DEFAULT_METHODS)
    if he_version is None and "hessian_eigenthings" in methods:
        methods.remove("hessian_eigenthings")
    report: dict = {
        "command": command, "quick": quick, "device": str(dev), "tol": tol, "rows": rows, "lr_factor": lr_factor,
        "cifar10_dir": None if vgg_data is None else {"path": str(cifar10_dir), "origin": cifar10_origin},
        "clamp": {"clamp": clamp, "clamp_tol": clamp_tol, "max_iter": clamp_max_iter, "clamp_margin": clamp_margin},
        "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average_start": _load_average(),
        "heap_reuse": heap_reuse,  # eosflow.heap.HEAP_ENV applied to this process (None: not said)
        "hessian_eigenthings": he_version or "not installed (method skipped)",
        "methods": dict(METHOD_NOTES), "workloads": {},
    }
    options = {"rows": rows, "methods": methods, "tol": tol, "dev": dev, "quick": quick, "track_k": track_k,
               "lr_factor": lr_factor, "clamp": (clamp, clamp_tol, clamp_max_iter), "clamp_margin": clamp_margin,
               "verbose": verbose}
    if any(s["name"] == "residual" for s in specs):
        from .peers import PEERS, peer_version

        report["peers"] = {m: f"{d} {peer_version(m) or 'not installed (row skipped)'}" for m, d in PEERS.items()}
    for spec in specs:
        if spec["name"] == "residual":
            from .userload import bench_residual

            report["workloads"]["residual"] = bench_residual(
                spec, tol, dev, residual_methods, verbose, show=lambda r: print(format_cold("residual", r), flush=True))
            continue
        data = vgg_data if spec["name"] == "vgg" else None
        report["workloads"][spec["name"]] = _bench_workload(spec, data, cifar10_origin, options)
    report["targets"] = targets(report)
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    report["load_average_end"] = _load_average()
    if verbose:
        print(format_targets(report), flush=True)
    if out is not None:
        path = Path(out)
        report["path"] = str(write_report(report, path / ("bench_quick.json" if quick else "bench.json")
                                          if path.suffix != ".json" else path))
        if verbose:
            print(f"[bench] wrote {report['path']} ({report['wall_s']} s)")
    return report


def _bench_workload(spec: dict, data, origin: str, o: dict) -> dict:
    """One workload's rows: the cold solves at each k, then tracking, the clamp and GD along a
    trajectory from θ₀ (``o``: :func:`run`'s options)."""
    name, dev, verbose = spec["name"], o["dev"], o["verbose"]
    obj, theta, info = build_workload(spec, dev, data)
    if data is not None:
        info["data_origin"] = origin
    warm_up(obj, theta, o["methods"])
    w: dict = {"info": info, "cold": {}}
    if verbose:
        print(f"[bench] {name}: {info['n_params']} parameters, {info['n_examples']} examples "
              f"({info['data']}), device {dev}", flush=True)
    if "cold" in o["rows"]:
        wm = [m for m in o["methods"] if not (name == "vgg" and m == "eosflow_lanczos")]
        # eosflow first: its HVP count seeds (b)'s calibration
        wm = [m for m in ("eosflow", *[m for m in wm if m != "eosflow"]) if m in wm]
        for k in spec["ks"]:
            nrep = spec["reps"].get(k, 1) if isinstance(spec["reps"], dict) else spec["reps"]
            r = bench_cold(obj, theta, k, o["tol"], nrep, dev, wm, he_max_runs=spec.get("he_max_runs", 6))
            r["methods"] = {m: r["methods"][m] for m in METHOD_ORDER if m in r["methods"]}
            r["agreement"] = agreement({n: e["eigvals"] for n, e in r["methods"].items() if "eigvals" in e})
            w["cold"][f"top{k}"] = r
            if verbose:
                print(format_cold(name, r), flush=True)
    along = {row: spec[key] for row, key in (("tracking", "track"), ("clamp", "clamp"), ("gd", "gd"))
             if row in o["rows"] and spec[key] is not None}
    if along:
        _bench_trajectory(name, obj, theta, along, w, o)
    return w


def _bench_trajectory(name: str, obj, theta, along: dict, w: dict, o: dict) -> None:
    """The rows along a GD trajectory from θ₀ (``along``: the workload's sizes of each), into ``w``."""
    dev, verbose, lr_factor = o["dev"], o["verbose"], o["lr_factor"]
    s0 = w["sharpness_theta0"] = sharpness_at(obj, theta)
    tr, cl, gd = along.get("tracking"), along.get("clamp"), along.get("gd")
    if tr is not None:
        steps = tr["steps"]
        compare = [c for c in tr["compare_at"] if c < steps] or [steps - 1]
        if steps - 1 not in compare and steps > 1 and tr["compare_at"][-1] >= steps:
            compare.append(steps - 1)
        # (d) on a GPU tracks the MLP's top 10 (the GPU target); on a CPU the top 1 (sharpness)
        tk = o["track_k"] or (10 if dev.type == "cuda" and not o["quick"] and name == "mlp" else tr["k"])
        w["tracking"] = bench_tracking(obj, theta, tk, o["tol"], steps, lr_factor, compare, dev,
                                       baseline="scipy_eigsh" in o["methods"], s0=s0)
        if verbose:
            print(format_tracking(name, w["tracking"]), flush=True)
    if cl is not None:
        w["clamp"] = bench_clamp(obj, theta, lr_factor * 2.0 / s0, *o["clamp"], cl["steps"], cl["check_at"], dev,
                                 margin=o["clamp_margin"], check_every_step=cl.get("every_step", False))
        w["clamp"]["lr_factor"] = lr_factor
        if verbose:
            print(format_clamp(name, w["clamp"]), flush=True)
    if gd is not None:
        w["gd_vs_torch"] = bench_gd_vs_torch(obj, theta, 1.0 / s0, gd["steps"], dev)
        if verbose:
            print(format_gd_vs_torch(name, w["gd_vs_torch"]), flush=True)


# -- printing ----------------------------------------------------------------------------------------

def format_cold(name: str, r: dict) -> str:
    lines = [f"{name} top-{r['k']} (tol {r['tol']:g}, median of {r['reps']}):",
             f"  {'method':22s} {'time s':>9s} {'HVPs':>6s} {'max resid':>10s} {'peak RSS MB':>12s} "
             f"{'(+call)':>8s} {'x eosflow':>10s}  eigvals (first 3)"]
    ref = r["methods"].get("eosflow", {}).get("time_s")
    for n, e in r["methods"].items():
        if "time_s" not in e:
            lines.append(f"  {n:22s} " + (f"failed: {e['failed']}" if "failed" in e else f"skipped: {e.get('skipped')}"))
            continue
        ratio = f"{e['time_s'] / ref:10.2f}" if ref else " " * 10
        ev = ", ".join(f"{v:.5g}" for v in e["eigvals"][:3]) + (f"  [{e['product']}]" if e.get("product") else "")
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
             f"all converged {t['all_converged']}; product {t.get('product')}"]
    for c in t["compare_scipy"]:
        lines.append(f"  step {c['step']:4d}: tracking {c['tracking_s']:.3f} s ({c['tracking_n_matvec']} HVPs), "
                     f"scipy_eigsh {c['scipy_eigsh_s']:.3f} s ({c['scipy_n_matvec']} HVPs): x{c['ratio']:.2f}, "
                     f"eigvals rel diff {c['max_rel_diff']:.1e}")
    if t["compare_scipy"]:
        lines.append(f"  median ratio at those steps x{t['ratio_same_steps_median']:.2f}; scipy median "
                     f"{t['scipy_median_s']:.3f} s vs tracking median {t['median_measure_s']:.3f} s")
    return "\n".join(lines)


def format_clamp(name: str, c: dict) -> str:
    v, n = c["validity"], c["n_matvec_per_measurement"]
    worst = v["max_lr_s_exact_over_2clamp"]
    return "\n".join([
        f"{name} clamped GD: clamp {c['clamp']}, clamp_tol {c['clamp_tol']:g}, lr {c['lr']:.4g} "
        f"({c['lr_factor']} x 2/S(theta0)), {c['steps']} steps ({c['status']}), clamp binding at {c['binding_steps']}",
        f"  plain GD step mean {c['mean_gd_step_s']:.4f} s; clamped step mean {c['mean_clamped_step_s']:.4f} s "
        f"({c['solves']} solves, {c['predicted_steps']} predicted steps, {c['misses']} misses; HVPs per solve first "
        f"{n['first']}, warm median {n['median_warm']}): x{c['ratio_clamped_vs_plain']:.2f} (medians "
        f"x{c['ratio_median_steps']:.2f}); all converged {c['all_converged']}; product {c['product']}",
        f"  validity: S to {v['exact_tol']:g} at steps {v['steps']}: max eta_t*S/(2*clamp) = "
        + ("-" if worst is None else f"{worst:.6f}")
        + f" (exact solves converged: {all(x['exact_converged'] for x in v['checks'])}) -> ok={v['ok']}"])


def format_gd_vs_torch(name: str, g: dict) -> str:
    return (f"{name} GD step vs bare torch (eta {g['lr']:.4g}, {g['steps']} steps each, interleaved, "
            f"{g['n_chunks']} chunks): eosflow {g['median_eosflow_s']:.4f} s, bare torch {g['median_bare_s']:.4f} s: "
            f"x{g['ratio_eosflow_vs_bare']:.3f}; first updates differ by {g['first_update_rel_diff']:.1e} "
            f"(same update: {g['same_update']})")
