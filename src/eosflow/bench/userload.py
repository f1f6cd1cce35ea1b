"""The ``residual`` workload: a user's model (:func:`eosflow.bench.residual.residual_cnn`, eval
mode) on class-balanced Fashion-MNIST images served through a ``DataLoader`` with
``torch.nn.CrossEntropyLoss()``, the same loader handed to every method.

Rows: cold top-k eigenpairs by eosflow and the peers (:mod:`eosflow.bench.peers`), each peer's
accuracy knob calibrated to the tolerance eosflow is asked for (checked with fresh HVPs), every
method's eigenvalues compared with a float64 reference (scipy ``eigsh`` to 1e-10 over a float64
double-backward product, its residuals explicit); and the cost of one Hessian-vector product in
gradients (:func:`hvp_cost`).
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ..objective import Objective
from ..spectral import CachedHVP, hvp_operator, top_eigenpairs
from ..spectral.tracker import HVP_KINDS
from .measure import explicit_residuals, measured, median
from .peers import CurvlinopsMethod, EigenthingsLoaderMethod, PyHessianMethod, calibrate_ladder, peer_version
from .residual import residual_cnn
from .workloads import fashion_mnist_subset

#: The methods of the residual workload's cold rows, in the order run and reported.
RESIDUAL_METHODS = ("eosflow", "eosflow_lean", "pyhessian", "hessian_eigenthings", "curvlinops")
#: ``eosflow_lean``: eosflow keeping at most this much of its primal passes between products (the
#: default keeps up to 2 GiB: all four chunks here, about 125 MB)
LEAN_CACHE_BYTES = 100 * 2**20
#: Rows compared against: the peers.
PEER_METHODS = RESIDUAL_METHODS[2:]
#: PyHessian's ``tol`` (relative change of the eigenvalue between power iterations), tried from
#: the loosest: half decades from tol/10 down.
PYHESSIAN_TOLS = (1e-4, 10 ** -4.5, 1e-5, 10 ** -5.5, 1e-6, 10 ** -6.5, 1e-7, 1e-8)
#: eigsh's ``tol`` for curvlinops, tried from the loosest (multiples of the bench's tolerance).
EIGSH_TOL_FACTORS = (1.0, 0.1, 0.01, 0.001)


def loader_of(x, y, batch_size: int) -> DataLoader:
    """The workload's loader: ``DataLoader(TensorDataset(x, y), batch_size, shuffle=False)``."""
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def eosflow_objective(model, x, y, batch_size: int):
    """eosflow's objective of the workload: ``Objective(model, loader, loss=CrossEntropyLoss())``
    where :class:`~eosflow.objective.Objective` takes a loader, else the same function from tensors
    (``Objective(model, x, y, "ce", chunk_size=batch_size)``). Returns ``(objective, form, why)``."""
    try:
        obj = Objective(model, loader_of(x, y, batch_size), loss=torch.nn.CrossEntropyLoss())
        return obj, "loader", None
    except (TypeError, ValueError) as e:
        return Objective(model, x, y, "ce", chunk_size=batch_size), "tensors", f"{type(e).__name__}: {e}"


def reference_f64(model, x, y, batch_size: int, k: int, tol: float = 1e-10, which: str = "LA") -> dict:
    """Top-``k`` eigenpairs in float64: ARPACK (``eigsh(which=which)``: ``"LA"`` the largest, ``"LM"``
    the largest in magnitude, what power iteration finds), ``tol``, over a float64 double-backward
    product of the same loss, with explicit residuals (float64, fresh HVPs)."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    m64 = copy.deepcopy(model).double().eval()
    obj = Objective(m64, x.double(), y, "ce", chunk_size=batch_size, hvp_mode="revrev")
    theta = obj.flatten()
    count = [0]

    def matvec(v):
        count[0] += 1
        return obj.hvp(theta, torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1))).numpy()

    t = time.perf_counter()
    w, U = eigsh(LinearOperator((obj.dim, obj.dim), matvec=matvec, dtype=np.float64), k=k, which=which, tol=tol,
                 v0=np.random.default_rng(1).standard_normal(obj.dim))
    dt = time.perf_counter() - t
    order = np.argsort(np.abs(w) if which == "LM" else w)[::-1]
    vals, vecs = w[order].tolist(), torch.from_numpy(U[:, order].T.copy())
    res = explicit_residuals(obj, theta, vals, vecs)
    return {"what": f"scipy eigsh(which='{which}', tol={tol:g}) over a float64 double-backward HVP", "k": k,
            "eigvals": vals, "residuals": res, "max_residual": max(res), "n_matvec": count[0], "time_s": round(dt, 3)}


def hvp_cost(obj, theta, reps: int, device, seed: int = 0) -> dict:
    """One Hessian-vector product in gradients: the median time of ``obj.loss_grad(θ)`` against the
    median time of one product of :func:`~eosflow.spectral.hvp_operator` at the same θ after a
    first, untimed one (the primal pass cached as the solvers use it), for ``"auto"`` and each kind.
    A kind that cannot serve the model records why."""
    g = torch.Generator().manual_seed(seed)
    vs = [torch.randn(obj.dim, generator=g).to(device=theta.device, dtype=theta.dtype) for _ in range(reps + 1)]
    obj.loss_grad(theta)
    grad_s = median([measured(lambda: obj.loss_grad(theta), device)[0] for _ in range(reps)])
    kinds = {}
    for kind in HVP_KINDS:
        try:
            t0 = time.perf_counter()
            op = hvp_operator(obj, theta, kind=kind)
            op(vs[0])  # the primal pass, and any caching, happen here
            setup = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001 - a kind that does not apply to this model says why
            kinds[kind] = {"unavailable": f"{type(e).__name__}: {e}"}
            continue
        ts = [measured(lambda v=v: op(v), device)[0] for v in vs[1:]]
        kinds[kind] = {"product": getattr(op, "product", None), "time_s": median(ts),
                       "x_grad": round(median(ts) / grad_s, 4), "first_product_s": round(setup, 4)}
        del op
    auto = kinds.get("auto", {})
    return {"grad_s": grad_s, "reps": reps, "kinds": kinds, "product": auto.get("product"),
            "x_grad": auto.get("x_grad")}


def _entry(times, mems, r, res, tol) -> dict:
    return {"time_s": median(times), "times_s": [round(t, 4) for t in times], "n_matvec": r["n_matvec"],
            "eigvals": r["eigvals"], "residuals": res, "max_residual": max(res), "meets_tol": max(res) <= tol,
            "peak_rss_mb": max(m["peak_rss_mb"] for m in mems), "extra_rss_mb": max(m["extra_rss_mb"] for m in mems),
            "rss_before_mb": mems[-1]["rss_before_mb"], "peak_rss_scope": mems[-1]["peak_rss_scope"]}


def bench_residual_cold(obj, model, loader, n: int, check_obj, theta, k: int, tol: float, reps: int, device,
                        methods, ref: dict) -> dict:
    """Cold top-``k`` by each of ``methods`` on the workload: times (median of ``reps``), HVPs,
    peak RSS, residuals (fresh HVPs on ``check_obj``), and agreement with ``ref``."""
    crit = torch.nn.CrossEntropyLoss()
    check = lambda vals, vecs: explicit_residuals(check_obj, theta, vals, vecs)  # noqa: E731
    out: dict = {"k": k, "tol": tol, "reps": reps, "methods": {}}
    for name in methods:
        entry: dict = {}
        times, mems, r = [], [], None
        try:
            if name == "eosflow":
                fn = lambda: top_eigenpairs(obj, obj.flatten(), k, tol=tol, max_iter=500)  # noqa: E731
            elif name == "eosflow_lean":
                fn = lambda: top_eigenpairs(obj, obj.flatten(), k, tol=tol, max_iter=500,  # noqa: E731
                                            graph_cache_bytes=LEAN_CACHE_BYTES)
            elif name == "pyhessian":
                ph = PyHessianMethod(model, loader, crit)
                cal = calibrate_ladder(ph.solve, PYHESSIAN_TOLS, check, k, tol, device)
                entry["calibration"] = {"knob": "tol (relative eigenvalue change)", "max_iter": ph.max_iter,
                                        "setting": cal["setting"], "tried": cal["tried"]}
                fn, first = (lambda s=cal["setting"]: ph.solve(k, s)), cal["timed_run"]
            elif name == "curvlinops":
                cm = CurvlinopsMethod(model, loader, crit, n)
                cal = calibrate_ladder(cm.solve, [tol * f for f in EIGSH_TOL_FACTORS], check, k, tol, device)
                entry["calibration"] = {"knob": "eigsh tol", "setting": cal["setting"], "tried": cal["tried"]}
                fn, first = (lambda s=cal["setting"]: cm.solve(k, s)), cal["timed_run"]
            elif name == "hessian_eigenthings":
                from .references import calibrate_eigenthings

                he = EigenthingsLoaderMethod(model, loader, crit)
                m0 = out["methods"].get("eosflow", {}).get("n_matvec", 2 * k + 10)
                cal = calibrate_eigenthings(he, check_obj, theta, k, tol, m0, device=device)
                first = cal.pop("timed_run")
                entry["calibration"] = {"knob": "Lanczos steps", "setting": cal["m"], "tried": cal["tried"]}
                fn = lambda m=cal["m"]: he.solve(k, m)  # noqa: E731
            else:
                raise ValueError(name)
            if not name.startswith("eosflow"):
                if entry["calibration"]["setting"] is None:
                    entry["skipped"] = f"no setting tried met tol={tol}"
                    out["methods"][name] = entry
                    continue
                times, mems, r = [first[0]], [first[2]], first[1]
            for _ in range(reps - len(times)):
                dt, r, mem = measured(fn, device)
                times.append(dt)
                mems.append(mem)
        except Exception as e:  # noqa: BLE001 - a peer that cannot handle the model is a row saying so
            entry["failed"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            out["methods"][name] = entry
            continue
        if not isinstance(r, dict):
            entry["product"] = getattr(r, "product", None)
            r = {"eigvals": [float(v) for v in r.eigvals.cpu()], "eigvecs": r.eigvecs, "n_matvec": r.n_matvec}
        entry.update(_entry(times, mems, r, check(r["eigvals"], r["eigvecs"]), tol))
        out["methods"][name] = entry
    out["agreement"] = agreement_f64(out["methods"], ref, k)
    t = {m: e["time_s"] for m, e in out["methods"].items() if e.get("time_s")}
    if "eosflow" in t:
        out["speedup_eosflow_vs"] = {m: round(v / t["eosflow"], 3) for m, v in t.items() if not m.startswith("eosflow")}
    return out


#: What each method's eigenvalues are: the top k (largest), except PyHessian's power iteration,
#: which finds the k largest in magnitude (the same where no negative eigenvalue dominates).
ANSWERS = {"pyhessian": "LM"}


def agreement_f64(methods: dict, ref: dict, k: int, rtol: float = 1e-4) -> dict:
    """Each method's eigenvalues against the float64 reference of what it computes (:data:`ANSWERS`:
    ``ref["LA"]`` or ``ref["LM"]``), largest relative difference, ``ok`` when all are within ``rtol``;
    ``top_k``: whether each method's answer is the top k (its reference's equal the largest ones)."""
    diffs, top = {}, {}
    for m, e in methods.items():
        if "eigvals" not in e:
            continue
        r = ref[ANSWERS.get(m, "LA")]["eigvals"][:k]
        a, b = np.asarray(e["eigvals"], dtype=float), np.asarray(r, dtype=float)
        diffs[m] = float(np.max(np.abs(a - b) / np.abs(b))) if len(a) == len(b) else float("inf")
        top[m] = bool(np.allclose(r, ref["LA"]["eigvals"][:k], rtol=rtol, atol=0))
    return {"reference": "float64_reference", "max_rel_diff": diffs, "rtol": rtol,
            "ok": bool(diffs) and all(d <= rtol for d in diffs.values()), "top_k": top,
            "answers": {m: "top k by magnitude" if ANSWERS.get(m) == "LM" else "top k" for m in diffs}}


def residual_workload(spec: dict, data=None):
    """``(model, x, y, source)`` of the spec: the residual CNN (eval mode) and its images (``data``:
    ``(x, y, source)`` given, else class-balanced Fashion-MNIST from disk, synthetic if absent)."""
    x, y, source = data if data is not None else fashion_mnist_subset(spec["n"])
    m = spec["model"]
    model = residual_cnn(in_channels=int(x.shape[1]), width=m["width"], blocks=m["blocks"], seed=0).eval()
    return model, x, y, source


def bench_residual(spec: dict, tol: float, device, methods=None, verbose: bool = True, data=None,
                   show=None) -> dict:
    """The residual workload's rows (see the module docstring). CPU only: the peers are called as
    on a CPU (PyHessian with ``cuda=False``). ``show(row)``: prints a cold row (with ``verbose``)."""
    model, x, y, source = residual_workload(spec, data)
    bs = spec["batch_size"]
    loader = loader_of(x, y, bs)
    obj, form, why = eosflow_objective(model, x, y, bs)
    check_obj = Objective(model, x, y, "ce", chunk_size=bs)  # the same function, for the residual checks
    theta = check_obj.flatten()
    methods = [m for m in (methods or RESIDUAL_METHODS) if m in RESIDUAL_METHODS]
    versions = {m: peer_version(m) for m in PEER_METHODS}
    info = {"model": {"name": "eosflow.bench.residual.residual_cnn", **spec["model"], "mode": "eval"},
            "n_params": check_obj.dim, "n_examples": int(x.shape[0]), "batch_size": bs, "data": source,
            "data_real": not source.startswith("synthetic"), "loss": "torch.nn.CrossEntropyLoss()",
            "loader": f"DataLoader(TensorDataset(x, y), batch_size={bs}, shuffle=False)",
            "eosflow_objective": form, "peers": versions}
    if why:
        info["eosflow_objective_why"] = why
    missing = [m for m in methods if not m.startswith("eosflow") and versions[m] is None]
    for m in missing:
        methods.remove(m)
    if verbose:
        print(f"[bench] residual: {info['n_params']} parameters, {info['n_examples']} examples ({source}), "
              f"loader batches of {bs}, eosflow objective from {form}; peers {versions}", flush=True)
    _warm_up(model, x[:bs], y[:bs], bs, methods, obj if form == "tensors" else None)
    ks = spec["ks"]
    ref = {"LA": reference_f64(model, x, y, bs, max(ks))}
    if "pyhessian" in methods:
        ref["LM"] = reference_f64(model, x, y, bs, max(ks), which="LM")
    w: dict = {"info": info, "reference": ref, "cold": {},
               "not_installed": {m: f"pip install {m}" for m in missing}}
    for k in ks:
        nrep = spec["reps"].get(k, 1) if isinstance(spec["reps"], dict) else spec["reps"]
        r = bench_residual_cold(obj, model, loader, int(x.shape[0]), check_obj, theta, k, tol, nrep, device,
                                methods, ref)
        w["cold"][f"top{k}"] = r
        if verbose and show is not None:
            show(r)
    w["hvp_cost"] = hvp_cost(obj, obj.flatten(), spec["hvp_reps"], device)
    if verbose:
        print(format_hvp_cost(w["hvp_cost"]), flush=True)
    return w


def _warm_up(model, x, y, bs: int, methods, obj=None) -> None:
    """One untimed solve by every method on one batch (lazy initialisation out of the timings)."""
    crit, loader = torch.nn.CrossEntropyLoss(), loader_of(x, y, bs)
    small, _, _ = eosflow_objective(model, x, y, bs)
    for name in methods:
        try:
            if name.startswith("eosflow"):
                top_eigenpairs(small, small.flatten(), 2, tol=1e-2, max_iter=6)
            elif name == "pyhessian":
                PyHessianMethod(model, loader, crit, max_iter=3).solve(1, 1e-2)
            elif name == "hessian_eigenthings":
                EigenthingsLoaderMethod(model, loader, crit).solve(1, 3)
            elif name == "curvlinops":
                CurvlinopsMethod(model, loader, crit, int(x.shape[0])).solve(1, 1e-1)
        except Exception:  # noqa: BLE001 - the timed call records the failure
            pass
    small.loss_grad(small.flatten())
    CachedHVP(Objective(model, x, y, "ce", chunk_size=bs), small.flatten())(small.flatten())


def format_hvp_cost(h: dict) -> str:
    parts = []
    for kind, e in h["kinds"].items():
        if "unavailable" in e:
            parts.append(f"{kind}: unavailable ({e['unavailable'][:60]})")
        else:
            parts.append(f"{kind} [{e['product']}] {e['x_grad']:.2f}")
    return (f"residual HVP cost in gradients (gradient {h['grad_s']:.4f} s, median of {h['reps']}): "
            + "; ".join(parts))
