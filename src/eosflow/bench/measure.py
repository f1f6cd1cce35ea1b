"""Timing and memory of one call: CUDA-synchronised wall time, peak RSS (Linux), and explicit
residuals of eigenpairs from fresh HVPs; a report written as JSON (:func:`write_report`)."""

from __future__ import annotations

import ctypes
import gc
import json
import resource
import statistics
import time
from pathlib import Path

import torch

from ..objective import Objective
from ..spectral import CachedHVP


def speedups(rows: dict, base: str) -> None:
    """Add ``speedup_vs_<base>`` to every row: ``base``'s median seconds over the row's, to 2 decimals."""
    for r in rows.values():
        r[f"speedup_vs_{base}"] = round(rows[base]["median_s"] / r["median_s"], 2)


def print_table(title: str, rows, line) -> None:
    """Print ``title``, then ``line(label, row)`` for each ``(label, row)`` of ``rows`` (a dict or pairs)."""
    print(title)
    for label, r in (rows.items() if isinstance(rows, dict) else rows):
        print(line(label, r))


def write_report(report: dict, path, indent: int = 1) -> Path:
    """Write a benchmark's ``report`` as JSON at ``path`` (its folder made); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=indent, default=float) + "\n")
    return path


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


def median(xs):
    """The median as a float, None for no values."""
    return float(statistics.median(xs)) if xs else None


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


def timed(fn, device: torch.device):
    """``fn()`` timed alone, CUDA-synchronised: ``(seconds, result)``. For the per-step rows,
    where :func:`measured`'s garbage collection and memory bookkeeping would cost more than a
    step of the small workloads."""
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t, out


def product_of(names) -> str | None:
    """The Hessian-vector product a row's solves used, from each result's ``product`` (``names``):
    one name, ``"a+b"`` when they differed, None when the engine does not say."""
    names = sorted({n for n in names if n is not None})
    return "+".join(names) if names else None


def explicit_residuals(obj: Objective, theta, vals, vecs) -> list[float]:
    """``‖Hv − λv‖ / |λ|`` with fresh HVPs (unit ``v``), whatever method produced the pairs."""
    V = torch.as_tensor(vecs).to(device=theta.device, dtype=theta.dtype)
    V = V / torch.linalg.vector_norm(V, dim=1, keepdim=True)
    lam = torch.as_tensor(vals).to(device=theta.device, dtype=theta.dtype)
    op = CachedHVP(obj, theta)
    HV = op.batch(V)
    r = torch.linalg.vector_norm(HV - lam[:, None] * V, dim=1) / lam.abs()
    return [float(x) for x in r.cpu()]
