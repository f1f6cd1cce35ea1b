"""Single-vector Lanczos with full reorthogonalisation (:func:`lanczos`).

Lanczos builds an orthonormal Krylov basis ``Q`` with ``H Q_m = Q_m T_m + β_m q_{m+1} e_mᵀ``; the
Ritz pairs of the small tridiagonal ``T_m`` approximate the extreme eigenpairs of ``H``. We want
the algebraically *largest* ``k`` eigenvalues (a Hessian can be indefinite; the sharpness is its
largest eigenvalue, not the largest in magnitude). Every new Lanczos vector is orthogonalised
twice by classical Gram-Schmidt against the whole stored basis, so the basis stays orthonormal to
working precision and no spurious ("ghost") copies of converged eigenvalues appear. Convergence is
judged on relative residuals ``‖H v − λ v‖ / |λ|``: cheaply from the tridiagonal
(``β_m |s_{m,i}| / |θ_i|``), then confirmed by explicit products of the Ritz vectors.

It stores only the basis (half the memory of :func:`eosflow.spectral.block.block_lanczos`, which
also keeps every product) and pays ``k`` products per explicit check; ``method="lanczos"`` of
:func:`eosflow.spectral.top_eigenpairs` selects it.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .krylov import EigResult, check_k, explicit_residuals, function_operator, orthogonalise, random_unit
from .operators import LinearOperator

__all__ = ["lanczos", "lanczos_topk"]


def _start_vector(op: LinearOperator, v0: Tensor | None, gen: torch.Generator, warm_noise: float) -> Tensor:
    """A seeded random unit vector, or the normalised sum of the normalised rows of ``v0`` plus a
    seeded perturbation of relative size ``warm_noise``."""
    dim = op.dim
    q = random_unit(gen, dim, op.dtype, op.device)
    if v0 is not None:
        rows = v0.detach().to(device=op.device, dtype=op.dtype).reshape(-1, dim)
        norms = torch.linalg.vector_norm(rows, dim=1, keepdim=True)
        rows = rows[norms[:, 0] > 0] / norms[norms[:, 0] > 0]
        if rows.shape[0] > 0:
            s = rows.sum(0)
            s_norm = torch.linalg.vector_norm(s)
            if s_norm > 0:
                q = s / s_norm + warm_noise * q
                q = q / torch.linalg.vector_norm(q)
    return q


def _ritz(alphas: list[float], betas: list[float], m: int, k: int, beta_m: float):
    """Top Ritz values, their coordinates and residual estimates of the ``m × m`` tridiagonal."""
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


def _explicit(op: LinearOperator, Q: Tensor, m: int, theta: Tensor, S: Tensor):
    """Ritz pairs ``(λ, V)`` from the basis and their residuals from fresh products."""
    V = S.T.to(device=op.device, dtype=op.dtype) @ Q[:m]
    lam = theta.to(device=op.device, dtype=op.dtype)
    return lam, V, explicit_residuals(op.matvec_batch(V), V, lam)


def _restart_direction(op: LinearOperator, Q: Tensor, m: int, gen: torch.Generator) -> Tensor:
    """A seeded random direction orthogonal to the basis (after an invariant-subspace breakdown)."""
    w = torch.zeros(op.dim, dtype=op.dtype, device=op.device)
    while float(torch.linalg.vector_norm(w)) <= 1e-3:  # retry the (unlikely) near-miss
        w, _ = orthogonalise(random_unit(gen, op.dim, op.dtype, op.device), Q[:m])
    return w


def lanczos(op: LinearOperator, k: int, *, v0: Tensor | None = None, tol: float = 1e-3, max_iter: int = 200,
            min_iter: int | None = None, check_every: int = 5, seed: int = 0, warm_noise: float = 1e-2) -> EigResult:
    """The ``k`` algebraically largest eigenpairs of the symmetric operator ``op``.

    ``v0``: warm start, a ``(dim,)`` vector or ``(m, dim)`` rows (e.g. the previous eigenvectors),
    see :func:`_start_vector`; ``None``: a seeded random start. Stops when every relative residual
    of the top ``k`` is ≤ ``tol``; ``max_iter`` caps the Krylov steps (clamped to ``[k, dim]``;
    ``converged=False`` if reached); ``min_iter`` (default ``k + 1``) is the first step at which
    convergence is checked, then every ``check_every`` steps. ``seed`` seeds the random vectors
    (CPU generator, device-independent).

    Invariant-subspace breakdown (``β ≈ 0``): Lanczos restarts with a seeded random vector
    orthogonal to the basis (an invariant subspace found from one start vector holds one vector
    per distinct eigenvalue, so it can miss copies of a repeated one) and checks convergence again
    once the new block has run ``min(k, dim − basis size)`` steps; it stops at ``max_iter`` or when
    the basis spans the whole space.
    """
    dim, k = op.dim, check_k(op, k)
    if check_every < 1:
        raise ValueError(f"check_every must be ≥ 1, got {check_every}")
    max_iter = max(k, min(int(max_iter), dim))
    min_iter = max(k, min(k + 1 if min_iter is None else int(min_iter), max_iter))
    eps = torch.finfo(op.dtype).eps
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    # Krylov basis in a growing buffer (rows), so memory follows the steps actually taken
    Q = torch.empty(min(max_iter + 1, max(2 * k + 8, 32)), dim, dtype=op.dtype, device=op.device)
    Q[0] = _start_vector(op, v0, gen, warm_noise)
    alphas: list[float] = []
    betas: list[float] = []  # betas[j] couples q_j and q_{j+1} (0 after a restart)
    a_norm, m, n_matvec, converged = 0.0, 0, 0, False  # a_norm: running estimate of ‖H‖ (breakdown test)
    final = None  # (m, eigvals, eigvecs, residuals) of the last explicit check
    block_start, next_check = 0, min_iter
    while True:
        w = op.matvec(Q[m]).to(op.dtype)
        n_matvec += 1
        a_norm = max(a_norm, float(torch.linalg.vector_norm(w)))
        w, h = orthogonalise(w, Q[:m + 1])
        alphas.append(float(h[m]))
        b = float(torch.linalg.vector_norm(w))
        m += 1
        if m == max_iter or m == dim:
            break  # the final Ritz pairs and residuals are computed below
        if b <= 1e3 * eps * max(a_norm, 1e-300):
            # Invariant subspace: restart in its orthogonal complement; the next check waits until
            # the new block has had min(k, room) steps to bring in larger eigenvalues.
            w, block_start = _restart_direction(op, Q, m, gen), m
            b_next, b = float(torch.linalg.vector_norm(w)), 0.0
        else:
            b_next = b
            if m >= next_check and m - block_start >= min(k, dim - block_start):
                next_check = m + check_every
                theta, S, est = _ritz(alphas, betas, m, k, b)
                if theta.numel() == k and bool((est <= tol).all()):
                    final = (m, *_explicit(op, Q, m, theta, S))
                    n_matvec += k
                    if bool((final[3] <= tol).all()):
                        converged = True
                        break
        if m >= Q.shape[0]:
            grown = torch.empty(min(max_iter + 1, 2 * Q.shape[0]), dim, dtype=op.dtype, device=op.device)
            grown[:m] = Q[:m]
            Q = grown
        Q[m] = w / b_next
        betas.append(b)
    if final is None or final[0] != m:
        theta, S, _ = _ritz(alphas, betas, m, k, 0.0)
        final = (m, *_explicit(op, Q, m, theta, S))
        n_matvec += final[2].shape[0]
        converged = bool((final[3] <= tol).all())
    _, lam, V, res = final
    return EigResult(eigvals=lam, eigvecs=V, residuals=res, iterations=m, n_matvec=n_matvec, converged=converged,
                     product=getattr(op, "product", None))


def lanczos_topk(matvec: Callable[[Tensor], Tensor], dim: int, k: int, *, v0: Tensor | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 matvec_batch: Callable[[Tensor], Tensor] | None = None, **options) -> EigResult:
    """:func:`lanczos` for an operator given as a function ``v ↦ H v`` on ``R^dim`` (optionally
    with a batched ``(m, dim) ↦ (m, dim)`` product, used for the explicit residuals); ``dtype`` and
    ``device`` of the Krylov vectors default to those of ``v0``, else torch's default dtype, CPU.
    ``options``: those of :func:`lanczos`."""
    op = function_operator(matvec, dim, v0, dtype, device, matvec_batch)
    return lanczos(op, k, v0=v0, **options)
