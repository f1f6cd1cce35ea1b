"""The peer libraries the ``residual`` workload is measured against, each called the way its own
documentation shows, on the model and the ``DataLoader`` a user brings, and the calibration of
each one's accuracy knob to the benchmark's tolerance.

* ``pyhessian`` (PyPI ``PyHessian`` 0.1): ``hessian(model, criterion, dataloader=..., cuda=False)
  .eigenvalues(top_n=k, maxIter=..., tol=...)``: power iteration with deflation, double-backward
  products; ``tol`` bounds the relative change of the eigenvalue between iterations.
* ``hessian_eigenthings`` (1.0.0a5): ``HessianOperator(model, dataloader, supervised_loss(...))``
  and ``lanczos(which="LA", reorthogonalize=True)`` with a fixed number of steps (the 1.0 API has
  no ``compute_hessian_eigenthings``).
* ``curvlinops`` (PyPI ``curvlinops-for-pytorch`` 3.0.x): ``HessianLinearOperator(model,
  loss_func, params, data, check_deterministic=False, num_data=N).to_scipy()`` under
  ``scipy.sparse.linalg.eigsh(which="LA")``; its products are forward-over-reverse
  (``torch.func.jvp`` of ``jacrev``).

Every ``solve`` returns ``{"eigvals", "eigvecs" (k, P), "n_matvec"}``, eigenvalues in decreasing
order; ``n_matvec`` counts full-data Hessian-vector products.
"""

from __future__ import annotations

import copy
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch

from .measure import explicit_residuals, measured

#: The peers of the residual workload: method name -> PyPI distribution.
PEERS = {"pyhessian": "PyHessian", "hessian_eigenthings": "hessian-eigenthings",
         "curvlinops": "curvlinops-for-pytorch"}


class _Counted:
    """``fn`` that counts its calls (``n``): a peer's Hessian-vector products."""

    def __init__(self, fn):
        self.fn, self.n = fn, 0

    def __call__(self, v):
        self.n += 1
        return self.fn(v)


def peer_version(method: str) -> str | None:
    """The installed version of ``method``'s distribution, None when it is not installed."""
    try:
        return version(PEERS[method])
    except PackageNotFoundError:
        return None


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _desc(vals, vecs, n, by_magnitude: bool = False):
    """Eigenpairs sorted as the bench records them: decreasing (``by_magnitude``: decreasing |λ|)."""
    vals = np.asarray(vals, dtype=float)
    order = np.argsort(np.abs(vals) if by_magnitude else vals, kind="stable")[::-1]
    V = torch.as_tensor(np.asarray(vecs)) if not isinstance(vecs, torch.Tensor) else vecs
    return {"eigvals": vals[order].tolist(), "eigvecs": V[torch.as_tensor(order.copy())].detach(), "n_matvec": n}


class PyHessianMethod:
    """PyHessian's deflated power iteration; its ``tol`` is the knob calibrated."""

    name = "pyhessian"

    def __init__(self, model, loader, criterion, max_iter: int = 1000):
        self.model, self.loader, self.criterion, self.max_iter = copy.deepcopy(model).eval(), loader, criterion, max_iter

    def solve(self, k: int, tol: float, seed: int = 0):
        from pyhessian import hessian

        torch.manual_seed(seed)  # its start vectors are torch.randn
        h = hessian(self.model, self.criterion, dataloader=self.loader, cuda=False)
        h.dataloader_hv_product = counted = _Counted(h.dataloader_hv_product)
        vals, vecs = h.eigenvalues(top_n=k, maxIter=self.max_iter, tol=tol)
        self.model.zero_grad(set_to_none=True)
        # power iteration finds the largest in magnitude: kept in that order
        return _desc(vals, torch.stack([_flat(v) for v in vecs]), counted.n, by_magnitude=True)


class EigenthingsLoaderMethod:
    """hessian-eigenthings' Lanczos over its ``HessianOperator`` on the loader; ``m`` steps (the
    knob calibrated, as in :func:`eosflow.bench.references.calibrate_eigenthings`). It averages
    per-batch means: the loss only for equal batches (checked)."""

    name = "hessian_eigenthings"

    def __init__(self, model, loader, criterion):
        sizes = {int(xb.shape[0]) for xb, _ in loader}
        if len(sizes) != 1:
            raise ValueError(f"hessian_eigenthings averages per-batch means: needs equal batches, got {sorted(sizes)}")
        self.model, self.loader, self.criterion = copy.deepcopy(model).eval(), loader, criterion

    def solve(self, k: int, m: int, seed: int = 0):
        import hessian_eigenthings as he

        op = he.HessianOperator(self.model, self.loader, he.supervised_loss(self.criterion))
        op.matvec = counted = _Counted(op.matvec)
        r = he.lanczos(op, k=k, max_iter=m, which="LA", reorthogonalize=True, seed=seed)
        return _desc([float(x) for x in r.eigenvalues.cpu()], r.eigenvectors.detach().cpu(), counted.n)


class CurvlinopsMethod:
    """curvlinops' ``HessianLinearOperator`` exported to scipy, under ``eigsh(which="LA")``; eigsh's
    ``tol`` is the knob calibrated. ``check_deterministic=False`` and ``num_data`` given: its
    construction then costs no products (the check would add some; the loader here is fixed)."""

    name = "curvlinops"

    def __init__(self, model, loader, criterion, n: int):
        self.model, self.loader, self.criterion, self.n = copy.deepcopy(model).eval(), loader, criterion, n

    def solve(self, k: int, tol: float, seed: int = 0):
        from curvlinops import HessianLinearOperator
        from scipy.sparse.linalg import LinearOperator, eigsh

        params = [p for p in self.model.parameters() if p.requires_grad]
        H = HessianLinearOperator(self.model, self.criterion, params, self.loader, check_deterministic=False,
                                  num_data=self.n).to_scipy()
        counted = _Counted(lambda v: H @ v)
        op = LinearOperator(H.shape, matvec=counted, dtype=np.float64)
        v0 = np.random.default_rng(seed).standard_normal(H.shape[0])
        w, U = eigsh(op, k=k, which="LA", tol=tol, v0=v0)
        return _desc(w, torch.from_numpy(U.T.copy()).float(), counted.n)


def calibrate_ladder(solve, settings, check, k: int, tol: float, device, max_runs: int | None = None) -> dict:
    """The first of ``settings`` (ordered from the cheapest, loosest) at which ``solve(k, s)``
    meets ``tol`` by fresh HVPs (``check(vals, vecs)``: the residuals). Each run is timed as a timed
    repetition is, so the run at the chosen setting serves as the first repetition."""
    tried, runs = {}, {}
    for s in list(settings)[:max_runs]:
        dt, r, mem = measured(lambda s=s: solve(k, s), device)
        tried[s] = max(check(r["eigvals"], r["eigvecs"]))
        runs[s] = (dt, r, mem)
        if tried[s] <= tol:
            return {"setting": s, "tried": {f"{a:g}": b for a, b in tried.items()}, "timed_run": runs[s]}
    return {"setting": None, "tried": {f"{a:g}": b for a, b in tried.items()}, "timed_run": None}


def residual_check(obj, theta):
    """The explicit-residual check of eigenpairs on ``obj`` at ``theta`` (fresh HVPs)."""
    return lambda vals, vecs: explicit_residuals(obj, theta, vals, vecs)
