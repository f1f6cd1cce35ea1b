"""The reference solvers the engine is measured against: scipy ``eigsh`` over a double-backward
HVP with numpy copies (a), and ``hessian-eigenthings`` (b), calibrated to the tolerance."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..objective import Objective
from .measure import explicit_residuals, measured

HE_VERSION = "1.0.0a5"


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
