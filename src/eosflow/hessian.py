"""Top Hessian eigenpairs by Lanczos with full reorthogonalisation, warm-started across GD steps.

The Hessian is only touched through Hessian-vector products (:meth:`Objective.hvp`). Lanczos
builds an orthonormal Krylov basis ``Q`` with ``H Q_m = Q_m T_m + β_m q_{m+1} e_mᵀ``; the Ritz
pairs of the small tridiagonal ``T_m`` approximate the extreme eigenpairs of ``H``. We want the
algebraically *largest* ``k`` eigenvalues (a Hessian can be indefinite; the sharpness is its
largest eigenvalue, not the largest in magnitude).

Every new Lanczos vector is orthogonalised twice by classical Gram-Schmidt against the whole
stored basis, so the basis stays orthonormal to working precision and no spurious ("ghost")
copies of converged eigenvalues appear. Convergence is judged on relative residuals
``‖H v − λ v‖ / |λ|``: cheaply from the tridiagonal (``β_m |s_{m,i}| / |θ_i|``), then confirmed by
explicit HVPs of the Ritz vectors before stopping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

__all__ = ["EigResult", "lanczos_topk", "top_eigenpairs", "SpectrumTracker", "dense_hessian"]

MatVec = Callable[[Tensor], Tensor]


@dataclass
class EigResult:
    """Top-k eigenpairs.

    eigvals: ``(k,)`` sorted descending. eigvecs: ``(k, P)`` orthonormal rows, ``eigvecs[i]`` pairs
    with ``eigvals[i]``. residuals: ``(k,)`` explicit ``‖H v − λ v‖ / |λ|``. iterations: Lanczos
    (Krylov) steps. n_matvec: total HVPs, residual checks included. converged: all residuals ≤ tol.
    """

    eigvals: Tensor
    eigvecs: Tensor
    residuals: Tensor
    iterations: int
    n_matvec: int
    converged: bool


def _orthogonalise(w: Tensor, Q: Tensor) -> tuple[Tensor, Tensor]:
    """Classical Gram-Schmidt of ``w`` against the rows of ``Q``, done twice. Returns ``(w, coeffs)``."""
    if Q.shape[0] == 0:
        return w, w.new_zeros(0)
    h = Q @ w
    w = w - h @ Q
    h2 = Q @ w
    w = w - h2 @ Q
    return w, h + h2


def _random_unit(gen: torch.Generator, dim: int, dtype, device) -> Tensor:
    """A seeded Gaussian direction, drawn on the CPU so it does not depend on the device."""
    v = torch.randn(dim, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    return v / torch.linalg.vector_norm(v)


def _apply_batch(matvec: MatVec, matvec_batch: Callable[[Tensor], Tensor] | None, V: Tensor) -> Tensor:
    if matvec_batch is not None:
        return matvec_batch(V)
    return torch.stack([matvec(v) for v in V])


def _explicit_residuals(HV: Tensor, V: Tensor, lam: Tensor) -> Tensor:
    r = torch.linalg.vector_norm(HV - lam[:, None] * V, dim=1)
    return r / lam.abs().clamp_min(torch.finfo(lam.dtype).tiny)


def lanczos_topk(matvec: MatVec, dim: int, k: int, *, v0: Tensor | None = None, tol: float = 1e-3,
                 max_iter: int = 200, min_iter: int | None = None, check_every: int = 5,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 seed: int = 0, matvec_batch: Callable[[Tensor], Tensor] | None = None,
                 warm_noise: float = 1e-2) -> EigResult:
    """The ``k`` algebraically largest eigenpairs of the symmetric operator ``matvec`` on ``R^dim``.

    Parameters
    ----------
    matvec: ``v ↦ H v`` for a ``(dim,)`` vector.
    k: number of eigenpairs; ``1 ≤ k ≤ dim`` (else ``ValueError``).
    v0: warm start, a ``(dim,)`` vector or ``(m, dim)`` rows (e.g. the previous eigenvectors). The
        start vector is the normalised sum of the (normalised) rows plus a seeded random
        perturbation of relative size ``warm_noise``, so no eigen-direction is missed.
        ``None``: a seeded random start.
    tol: stop when every relative residual ``‖H v − λ v‖ / |λ|`` of the top ``k`` is ≤ ``tol``.
    max_iter: most Krylov steps (clamped to ``[k, dim]``); ``converged=False`` if reached.
    min_iter: first step at which convergence is checked (default ``k + 1``).
    check_every: check the (cheap) residual estimates every so many steps after ``min_iter``.
    dtype, device: of the Krylov vectors; default those of ``v0``, else the default dtype, CPU.
    seed: seeds the random start/perturbation/restart vectors (CPU generator, device-independent).
    matvec_batch: optional ``(m, dim) ↦ (m, dim)`` batched HVP, used for the explicit residuals.

    Invariant-subspace breakdown (``β ≈ 0``): Lanczos restarts with a seeded random vector
    orthogonal to the basis (an invariant subspace found from one start vector holds one vector
    per distinct eigenvalue, so it can miss copies of a repeated one) and checks convergence again
    once the new block has run ``min(k, dim − basis size)`` steps; it stops at ``max_iter`` or when
    the basis spans the whole space.
    """
    dim, k = int(dim), int(k)
    if dim < 1:
        raise ValueError(f"dim must be ≥ 1, got {dim}")
    if not 1 <= k <= dim:
        raise ValueError(f"need 1 ≤ k ≤ dim, got k={k}, dim={dim}")
    if check_every < 1:
        raise ValueError(f"check_every must be ≥ 1, got {check_every}")
    if v0 is not None:
        dtype = dtype or v0.dtype
        device = device if device is not None else v0.device
    dtype = dtype or torch.get_default_dtype()
    device = torch.device(device if device is not None else "cpu")
    max_iter = max(k, min(int(max_iter), dim))
    min_iter = k + 1 if min_iter is None else int(min_iter)
    min_iter = max(k, min(min_iter, max_iter))
    eps = torch.finfo(dtype).eps
    gen = torch.Generator(device="cpu").manual_seed(int(seed))

    # start vector
    q = _random_unit(gen, dim, dtype, device)
    if v0 is not None:
        rows = v0.detach().to(device=device, dtype=dtype).reshape(-1, dim)
        norms = torch.linalg.vector_norm(rows, dim=1, keepdim=True)
        rows = rows[norms[:, 0] > 0] / norms[norms[:, 0] > 0]
        if rows.shape[0] > 0:
            s = rows.sum(0)
            s_norm = torch.linalg.vector_norm(s)
            if s_norm > 0:
                q = s / s_norm + warm_noise * q
                q = q / torch.linalg.vector_norm(q)

    # Krylov basis in a growing buffer (rows), so memory follows the steps actually taken
    cap = min(max_iter + 1, max(2 * k + 8, 32))
    Q = torch.empty(cap, dim, dtype=dtype, device=device)
    Q[0] = q
    alphas: list[float] = []
    betas: list[float] = []  # betas[j] couples q_j and q_{j+1} (0 after a restart)
    n_matvec = 0
    a_norm = 0.0  # running estimate of ‖H‖, for the breakdown test
    m = 0
    converged = False
    final = None  # (eigvals, eigvecs, residuals) of the last explicit check, with its m

    def ritz(m: int, beta_m: float):
        T = torch.zeros(m, m, dtype=torch.float64)
        idx = torch.arange(m)
        T[idx, idx] = torch.tensor(alphas[:m], dtype=torch.float64)
        if m > 1:
            off = torch.tensor(betas[:m - 1], dtype=torch.float64)
            T[idx[:-1], idx[1:]] = off
            T[idx[1:], idx[:-1]] = off
        theta, S = torch.linalg.eigh(T)
        kk = min(k, m)
        theta, S = theta.flip(0)[:kk], S.flip(1)[:, :kk]
        est = beta_m * S[m - 1].abs() / theta.abs().clamp_min(1e-300)
        return theta, S, est

    def explicit(m: int, theta: Tensor, S: Tensor):
        nonlocal n_matvec
        V = S.T.to(device=device, dtype=dtype) @ Q[:m]
        lam = theta.to(device=device, dtype=dtype)
        HV = _apply_batch(matvec, matvec_batch, V)
        n_matvec += V.shape[0]
        return lam, V, _explicit_residuals(HV, V, lam)

    block_start, next_check = 0, min_iter
    while True:
        w = matvec(Q[m]).to(dtype)
        n_matvec += 1
        a_norm = max(a_norm, float(torch.linalg.vector_norm(w)))
        w, h = _orthogonalise(w, Q[:m + 1])
        alphas.append(float(h[m]))
        b = float(torch.linalg.vector_norm(w))
        m += 1
        if m == max_iter or m == dim:
            break  # the final Ritz pairs and residuals are computed below
        if b <= 1e3 * eps * max(a_norm, 1e-300):
            # Invariant subspace: its Ritz pairs are exact, but it may miss wanted eigenvectors
            # (e.g. a repeated eigenvalue). Restart in its orthogonal complement; the next check
            # waits until the new block has had min(k, room) steps to bring in larger eigenvalues.
            w = torch.zeros(dim, dtype=dtype, device=device)
            while float(torch.linalg.vector_norm(w)) <= 1e-3:  # retry the (unlikely) near-miss
                w, _ = _orthogonalise(_random_unit(gen, dim, dtype, device), Q[:m])
            b_next, b = float(torch.linalg.vector_norm(w)), 0.0
            block_start = m
        else:
            b_next = b
            if m >= next_check and m - block_start >= min(k, dim - block_start):
                next_check = m + check_every
                theta, S, est = ritz(m, b)
                if theta.numel() == k and bool((est <= tol).all()):
                    final = (m, *explicit(m, theta, S))
                    if bool((final[3] <= tol).all()):
                        converged = True
                        break
        if m >= Q.shape[0]:
            grown = torch.empty(min(max_iter + 1, 2 * Q.shape[0]), dim, dtype=dtype, device=device)
            grown[:m] = Q[:m]
            Q = grown
        Q[m] = w / b_next
        betas.append(b)

    if final is None or final[0] != m:
        theta, S, _ = ritz(m, 0.0)
        final = (m, *explicit(m, theta, S))
        converged = bool((final[3] <= tol).all())
    _, lam, V, res = final
    return EigResult(eigvals=lam, eigvecs=V, residuals=res, iterations=m, n_matvec=n_matvec,
                     converged=converged)


def top_eigenpairs(objective, theta: Tensor, k: int, *, warm: Tensor | None = None, tol: float = 1e-3,
                   max_iter: int = 200, seed: int = 0) -> EigResult:
    """Top-k Hessian eigenpairs of ``objective`` at ``theta`` (Lanczos on ``objective.hvp``).

    ``warm``: previous eigenvectors ``(m, P)`` (or one vector) to warm-start from.
    """
    theta = theta.detach()
    return lanczos_topk(lambda v: objective.hvp(theta, v), objective.dim, k, v0=warm, tol=tol,
                        max_iter=max_iter, dtype=theta.dtype, device=theta.device, seed=seed,
                        matvec_batch=lambda V: objective.hvp_batch(theta, V))


@dataclass
class SpectrumTracker:
    """Top-k Hessian eigenpairs along a trajectory, each solve warm-started from the previous one.

    ``records`` holds one dict per :meth:`measure` (eigenvalues, residuals and costs, on the CPU);
    ``eigvecs`` the latest eigenvectors (on the device of ``theta``).
    """

    k: int
    tol: float = 1e-3
    max_iter: int = 200
    seed: int = 0
    eigvecs: Tensor | None = None
    records: list[dict] = field(default_factory=list)

    def measure(self, objective, theta: Tensor, step: int | None = None) -> EigResult:
        res = top_eigenpairs(objective, theta, self.k, warm=self.eigvecs, tol=self.tol,
                             max_iter=self.max_iter, seed=self.seed + len(self.records))
        self.eigvecs = res.eigvecs
        self.records.append({
            "step": step, "eigvals": res.eigvals.detach().cpu(), "residuals": res.residuals.detach().cpu(),
            "iterations": res.iterations, "n_matvec": res.n_matvec, "converged": res.converged,
        })
        return res

    def reset(self) -> None:
        """Forget the warm start (e.g. after a jump in parameters)."""
        self.eigvecs = None


def dense_hessian(objective, theta: Tensor, *, mode: str | None = None) -> Tensor:
    """The full ``(P, P)`` Hessian of the objective's loss at ``theta`` (test oracle; tiny nets only).

    The loss is summed over the objective's chunks (so BatchNorm batches match :meth:`Objective.hvp`)
    and divided by N. ``mode``: ``"fwdrev"`` (``jacfwd(grad(f))``, forward-over-reverse) or
    ``"revrev"`` (``jacrev(grad(f))``, reverse-over-reverse); default the objective's ``hvp_mode``.
    Computed in the dtype of ``theta`` — pass float64 parameters, model and data for oracle use.

    The inner derivative is ``torch.func.grad``, not ``jacrev``: in torch 2.14 differentiating a
    ``jacrev`` (hence ``torch.func.hessian = jacfwd(jacrev)`` and ``jacrev(jacrev)``) through
    ``F.batch_norm`` in training mode gives a wrong, non-symmetric Hessian; ``grad``-based
    compositions agree with plain autograd and finite differences. For nets without BatchNorm
    this equals ``torch.func.hessian``.
    """
    mode = mode or objective.hvp_mode
    if mode not in ("fwdrev", "revrev"):
        raise ValueError(f"unknown mode {mode!r}; allowed: ['fwdrev', 'revrev']")

    def f(t: Tensor) -> Tensor:
        return sum(objective._sum_loss(t, xc, yc) for xc, yc in objective.chunks()) / objective.n

    outer = torch.func.jacfwd if mode == "fwdrev" else torch.func.jacrev
    return outer(torch.func.grad(f))(theta.detach()).detach()  # (jacrev(grad) through BN leaks a grad_fn)
