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

:func:`block_lanczos_topk` (the default engine of :func:`top_eigenpairs` and
:class:`SpectrumTracker`) keeps the product ``H q`` of every basis vector next to it, so Ritz
residuals are formed from actual HVPs of the basis without extra products, and it can grow the
Krylov space a block at a time (batched HVPs, a win on GPUs). :class:`CachedHVP` builds the
first-derivative graph of each data chunk once per ``θ`` and reuses it for every product (double
backward with a retained graph), about half the cost of a fresh HVP on a CPU.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

__all__ = ["EigResult", "lanczos_topk", "block_lanczos_topk", "CachedHVP", "top_eigenpairs", "SpectrumTracker",
           "dense_hessian", "METHODS"]

MatVec = Callable[[Tensor], Tensor]

#: Solvers of :func:`top_eigenpairs`: ``"auto"`` (``"block"``), ``"block"``
#: (:func:`block_lanczos_topk`), ``"lanczos"`` (:func:`lanczos_topk` over ``Objective.hvp``, the
#: engine before the block solver; kept for comparison).
METHODS = ("auto", "block", "lanczos")
#: Default memory budget of :class:`CachedHVP` for the retained first-derivative graphs.
DEFAULT_GRAPH_CACHE_BYTES = 2 * 2**30


@dataclass
class EigResult:
    """Top-k eigenpairs.

    eigvals: ``(k,)`` sorted descending. eigvecs: ``(k, P)`` orthonormal rows, ``eigvecs[i]`` pairs
    with ``eigvals[i]``. residuals: ``(k,)`` explicit ``‖H v − λ v‖ / |λ|``. iterations: Lanczos
    (Krylov) steps. n_matvec: total HVPs, residual checks included. converged: all residuals ≤ tol.
    guard: ``(g, P)`` Ritz vectors that come next after the top k (not converged; None if not asked
    for), kept by :class:`SpectrumTracker` to warm-start the next solve.
    """

    eigvals: Tensor
    eigvecs: Tensor
    residuals: Tensor
    iterations: int
    n_matvec: int
    converged: bool
    guard: Tensor | None = None


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


def _problem(dim, k, v0, dtype, device) -> tuple[int, int, torch.dtype, torch.device]:
    """Checked ``dim`` and ``k`` of a top-k problem, and its dtype and device (from ``v0`` when
    not given; else torch's default dtype, the CPU)."""
    dim, k = int(dim), int(k)
    if dim < 1:
        raise ValueError(f"dim must be ≥ 1, got {dim}")
    if not 1 <= k <= dim:
        raise ValueError(f"need 1 ≤ k ≤ dim, got k={k}, dim={dim}")
    if v0 is not None:
        dtype = dtype or v0.dtype
        device = device if device is not None else v0.device
    return dim, k, dtype or torch.get_default_dtype(), torch.device(device if device is not None else "cpu")


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
    dim, k, dtype, device = _problem(dim, k, v0, dtype, device)
    if check_every < 1:
        raise ValueError(f"check_every must be ≥ 1, got {check_every}")
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


def _orthonormal_rows(Z: Tensor, Q: Tensor, thresh: float) -> Tensor:
    """Rows of ``Z`` made orthonormal to the rows of ``Q`` and to each other (classical
    Gram-Schmidt, twice per row). A row whose norm after orthogonalisation is at most ``thresh``
    (it lay in the span already: breakdown or rank deficiency) is dropped."""
    out: list[Tensor] = []
    for z in Z:
        z, _ = _orthogonalise(z, torch.cat([Q, torch.stack(out)]) if out else Q)
        nz = float(torch.linalg.vector_norm(z))
        if nz > thresh:
            out.append(z / nz)
    return torch.stack(out) if out else Z.new_zeros(0, Z.shape[1])


def block_lanczos_topk(matvec: MatVec, dim: int, k: int, *, v0: Tensor | None = None, tol: float = 1e-3,
                       max_iter: int = 200, block_size: int = 1, min_iter: int | None = None,
                       max_basis: int | None = None, dtype: torch.dtype | None = None,
                       device: torch.device | str | None = None, seed: int = 0,
                       matvec_batch: Callable[[Tensor], Tensor] | None = None,
                       warm_noise: float = 1e-2, n_guard: int = 0) -> EigResult:
    """The ``k`` algebraically largest eigenpairs of ``matvec`` by (block) Lanczos with stored products.

    Lanczos with full reorthogonalisation (``block_size`` 1) or block Lanczos (a block of
    ``block_size`` vectors per step, its HVPs one call of ``matvec_batch``), in Krylov-Schur
    form: the product ``H q`` of every basis vector ``q`` is kept, the projected matrix
    ``T = Q H Qᵀ`` is assembled from those products, and its Ritz pairs are checked every step
    (every ``m/25`` steps once the basis holds ``m ≥ 50`` vectors) with the cheap residual
    estimate ``‖R s_last‖ / |θ|`` (``R``: the part of the last block's products outside the
    basis). When every estimate is ≤ ``tol`` the residuals
    ``‖sᵀ(HQ) − θ sᵀQ‖ / |θ|`` are formed from the stored products (HVPs of the basis vectors,
    no new HVPs) and must be ≤ ``tol`` too. Compared with :func:`lanczos_topk` this saves the
    ``k`` HVPs of every explicit check, at twice the basis memory.

    Warm start ``v0`` (``(m, dim)`` rows, e.g. the previous eigenvectors): with ``block_size`` 1
    the start vector is the normalised sum of the normalised rows plus a seeded perturbation of
    relative size ``warm_noise`` (as in :func:`lanczos_topk`); with larger blocks the rows
    themselves start the block, completed with seeded random rows up to ``block_size``.

    ``max_iter`` caps the HVPs (``converged=False`` when reached); ``min_iter`` (default
    ``k + 1``) is the basis size before which convergence is not accepted. ``max_basis``
    (default: unbounded) caps the stored basis: when full, it is restarted thick with the top
    Ritz vectors and their products (no new HVPs), which keeps the Krylov-Schur relation.
    Breakdown (an invariant subspace) continues with a seeded random vector orthogonal to the
    basis and waits ``min(k, dim − m)`` more basis vectors before accepting convergence, as in
    :func:`lanczos_topk`. ``iterations`` counts (block) steps, ``n_matvec`` HVPs; ``residuals``
    are the ones formed from the stored products. ``n_guard``: also return the next ``n_guard``
    Ritz vectors (``EigResult.guard``); a warm start that includes them finds an eigenvalue that
    has risen into the top k since (a crossing), which a start from the top k alone can miss.
    """
    dim, k, dtype, device = _problem(dim, k, v0, dtype, device)
    b = int(block_size)
    if b < 1:
        raise ValueError(f"block_size must be ≥ 1, got {b}")
    max_iter = max(k, int(max_iter))
    min_iter = min(dim, k + 1 if min_iter is None else max(k, int(min_iter)))
    cap = dim if max_basis is None else min(dim, max(int(max_basis), 2 * (k + b)))
    eps = torch.finfo(dtype).eps
    gen = torch.Generator(device="cpu").manual_seed(int(seed))

    def rand(n: int) -> Tensor:
        return torch.randn(n, dim, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)

    def products(V: Tensor) -> Tensor:
        return _apply_batch(matvec, matvec_batch, V).to(dtype)

    # start block
    if v0 is None:
        X = rand(min(b, dim))
    else:
        rows = v0.detach().to(device=device, dtype=dtype).reshape(-1, dim)
        norms = torch.linalg.vector_norm(rows, dim=1)
        rows = rows[norms > 0] / norms[norms > 0, None]
        if b == 1 or rows.shape[0] == 0:
            s = rows.sum(0) if rows.shape[0] else rows.new_zeros(dim)
            r = rand(1)[0]
            s_norm = float(torch.linalg.vector_norm(s))
            X = (s / s_norm + warm_noise * r / torch.linalg.vector_norm(r))[None] if s_norm > 0 else r[None]
        else:
            X = torch.cat([rows[:cap], rand(max(0, min(b, cap) - rows.shape[0]))])
    empty = X.new_zeros(0, dim)
    block = _orthonormal_rows(X, empty, 0.0)
    if block.shape[0] == 0:
        block = _orthonormal_rows(rand(1), empty, 0.0)

    Q = torch.empty(min(cap, max(2 * block.shape[0], 32)), dim, dtype=dtype, device=device)
    HQ = torch.empty_like(Q)
    T = torch.zeros(0, 0, dtype=torch.float64)
    m = n_matvec = steps = 0
    a_norm, hold, next_check, backoff = 0.0, 0, 0, 1

    def ritz_vectors(S: Tensor, theta: Tensor, m: int):
        Sd = S.to(device=device, dtype=dtype)
        Y, HY = Sd.T @ Q[:m], Sd.T @ HQ[:m]
        lam = theta.to(device=device, dtype=dtype)
        return lam, Y, _explicit_residuals(HY, Y, lam)

    def result(S: Tensor, theta: Tensor, m: int, kk: int, lam: Tensor, Y: Tensor, res: Tensor) -> EigResult:
        g = min(int(n_guard), m - kk)
        guard = (S[:, kk:kk + g].to(device=device, dtype=dtype).T @ Q[:m]) if n_guard else None
        return EigResult(eigvals=lam, eigvecs=Y, residuals=res, iterations=steps, n_matvec=n_matvec,
                         converged=kk == k and bool((res <= tol).all()), guard=guard)

    while True:
        nb = block.shape[0]
        W = products(block)
        n_matvec += nb
        steps += 1
        if m + nb > Q.shape[0]:  # grow the buffers
            size = min(cap, max(m + nb, 2 * Q.shape[0]))
            Q2 = torch.empty(size, dim, dtype=dtype, device=device)
            HQ2 = torch.empty_like(Q2)
            Q2[:m], HQ2[:m] = Q[:m], HQ[:m]
            Q, HQ = Q2, HQ2
        Q[m:m + nb], HQ[m:m + nb] = block, W
        m_old, m = m, m + nb
        a_norm = max(a_norm, float(torch.linalg.vector_norm(W, dim=1).max()))
        # projected matrix: the new columns Q (H q_new), then the part of H q_new outside the basis
        C = Q[:m] @ W.T
        R = W - C.T @ Q[:m]
        # a second Gram-Schmidt pass unless the first kept most of the norm (DGKS criterion)
        if bool((torch.linalg.vector_norm(R, dim=1) < 0.7 * torch.linalg.vector_norm(W, dim=1)).any()):
            C2 = Q[:m] @ R.T
            R = R - C2.T @ Q[:m]
        T2 = torch.zeros(m, m, dtype=torch.float64)
        T2[:m_old, :m_old] = T
        C64 = C.to(device="cpu", dtype=torch.float64)
        T2[:, m_old:] = C64
        T2[m_old:, :] = C64.T
        T2[m_old:, m_old:] = 0.5 * (C64[m_old:] + C64[m_old:].T)
        T = T2
        kk = min(k, m)
        exhausted = m == dim or n_matvec >= max_iter
        # next block: the outside parts (already orthogonal to the basis), orthonormalised
        # among themselves. Rows that vanish mean an invariant subspace (breakdown): they are
        # replaced by random vectors, and convergence waits min(k, dim - m) more basis vectors,
        # since an invariant subspace from few start vectors can miss copies of an eigenvalue.
        room = min(dim - m, max_iter - n_matvec)
        block = _orthonormal_rows(R[:room], empty, 1e3 * eps * max(a_norm, 1e-300))
        if block.shape[0] < min(R.shape[0], room):
            fill = _orthonormal_rows(rand(min(R.shape[0], room) - block.shape[0]), torch.cat([Q[:m], block]), 1e-3)
            block = torch.cat([block, fill])
            hold = m + min(k, dim - m)
        check = kk == k and m >= max(min_iter, hold, next_check)
        if check or exhausted:
            theta, S = torch.linalg.eigh(T)
            theta, S = theta.flip(0), S.flip(1)
            # every step while the basis is small (an eigh of T is cheap), then every m/25 steps
            next_check = m + max(1, m // 25)
            G = (R @ R.T).to(device="cpu", dtype=torch.float64)  # residual of s: ‖Rᵀ s_last‖
            s_last = S[m_old:, :k]
            est = (s_last * (G @ s_last)).sum(0).clamp_min(0).sqrt() / theta[:k].abs().clamp_min(1e-300)
            if bool((est <= tol).all()) or exhausted:
                lam, Y, res = ritz_vectors(S[:, :kk], theta[:kk], m)
                if exhausted or bool((res <= tol).all()):
                    return result(S, theta, m, kk, lam, Y, res)
                # the estimate passed but the products say no (rounding floor, e.g. a tol near
                # the dtype's precision): back off before forming the Ritz vectors again
                backoff = 2 * backoff
                next_check = m + backoff
        if m + block.shape[0] > cap:
            # thick restart with the top Ritz vectors and their products; the next block's
            # products couple to them through T's new columns (Krylov-Schur form)
            if not (check or exhausted):
                theta, S = torch.linalg.eigh(T)
                theta, S = theta.flip(0), S.flip(1)
            keep = max(k + int(n_guard), min(m, cap - block.shape[0], max(k + b + int(n_guard), cap // 2)))
            Sk = S[:, :keep].to(device=device, dtype=dtype)
            Q[:keep], HQ[:keep] = Sk.T @ Q[:m], Sk.T @ HQ[:m]
            T = torch.diag(theta[:keep])
            hold = max(0, hold - (m - keep))
            m = keep
            block = _orthonormal_rows(block, Q[:m], 1e-3)


class CachedHVP:
    """``v ↦ ∇²L(θ) v`` of an :class:`~eosflow.objective.Objective` at one ``θ``, reusing graphs.

    For each data chunk the gradient ``∇L_c(θ)`` is computed once with ``create_graph=True`` and
    its graph kept; every product is then one double-backward pass through it
    (``retain_graph=True``), skipping the forward and first backward that a fresh HVP repeats.
    Chunks are summed in order and divided by N as in ``Objective.hvp`` (equal up to rounding;
    this is reverse-over-reverse, so also right for BatchNorm nets).

    Memory: the graphs of the first chunks are kept while their saved tensors total at most
    ``max_bytes`` (measured on the first chunk); the other chunks are recomputed per product.
    ``cached_chunks`` and ``graph_bytes`` say what was kept. Drop the object to free them.
    """

    def __init__(self, objective, theta: Tensor, max_bytes: int = DEFAULT_GRAPH_CACHE_BYTES):
        self.objective = objective
        self.theta = theta.detach()
        self._leaf = self.theta.detach().requires_grad_(True)
        self._graphs: list[Tensor] = []
        self._rest: list[tuple[Tensor, Tensor]] = []
        self.graph_bytes = 0
        per_chunk = None
        for xc, yc in objective.chunks():
            if per_chunk is not None and self.graph_bytes + per_chunk > max_bytes or max_bytes <= 0:
                self._rest.append((xc, yc))
                continue
            saved: dict = {}

            def pack(t: Tensor) -> Tensor:
                saved[(t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)] = t.numel() * t.element_size()
                return t.detach()  # not t itself: a saved output would hold its own grad_fn (a leak)

            hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t) if per_chunk is None \
                else contextlib.nullcontext()
            with torch.enable_grad(), hooks:
                (g,) = torch.autograd.grad(objective._sum_loss(self._leaf, xc, yc), self._leaf, create_graph=True)
            if per_chunk is None:
                per_chunk = sum(saved.values())
                if per_chunk > max_bytes:
                    self._rest.append((xc, yc))
                    continue
            self._graphs.append(g)
            self.graph_bytes += per_chunk
        self.cached_chunks = len(self._graphs)

    def __call__(self, v: Tensor) -> Tensor:
        out = torch.zeros_like(self.theta)
        with torch.enable_grad():
            for g in self._graphs:
                out += torch.autograd.grad(g, self._leaf, grad_outputs=v, retain_graph=True)[0]
            for xc, yc in self._rest:
                t = self.theta.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(self.objective._sum_loss(t, xc, yc), t, create_graph=True)
                out += torch.autograd.grad(g, t, grad_outputs=v)[0]
        return out / self.objective.n

    def batch(self, V: Tensor) -> Tensor:
        """Products for the rows of ``V``."""
        return torch.stack([self(v) for v in V])


def _default_block_size(objective, theta: Tensor, k: int) -> int:
    """1 (single-vector Lanczos over cached graphs) on a CPU, where batching HVPs gains little;
    on a GPU a block of ``k`` (at most 16) when the objective can batch HVPs with ``vmap``."""
    if theta.device.type == "cuda" and getattr(objective, "hvp_mode", None) == "fwdrev":
        return max(1, min(int(k), 16))
    return 1


def top_eigenpairs(objective, theta: Tensor, k: int, *, warm: Tensor | None = None, tol: float = 1e-3,
                   max_iter: int = 200, seed: int = 0, method: str = "auto", block_size: int | None = None,
                   n_guard: int = 0, hvp: str = "auto",
                   graph_cache_bytes: int = DEFAULT_GRAPH_CACHE_BYTES) -> EigResult:
    """Top-k Hessian eigenpairs of ``objective`` at ``theta``.

    ``warm``: previous eigenvectors ``(m, P)`` (or one vector) to warm-start from.
    ``method``: ``"auto"``/``"block"``: :func:`block_lanczos_topk` over a :class:`CachedHVP`
    (``block_size``: default 1 on a CPU; on a GPU ``min(k, 16)`` with ``Objective.hvp_batch``'s
    ``vmap``-batched products when the objective is forward-over-reverse); ``"lanczos"``:
    :func:`lanczos_topk` over ``Objective.hvp`` (the previous engine). Both stop at relative
    residual ``tol`` and agree to that accuracy. ``n_guard``: also return that many further Ritz
    vectors as ``EigResult.guard`` (block engine only). ``hvp`` (block engine): ``"cached"``
    (:class:`CachedHVP`, with at most ``graph_cache_bytes`` of retained graphs), ``"objective"``
    (``Objective.hvp``/``hvp_batch``) or ``"auto"`` (``"objective"`` for blocks on a GPU with a
    forward-over-reverse objective, whose ``vmap`` batches pay off there; else ``"cached"``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {list(METHODS)}")
    theta = theta.detach()
    if method == "lanczos":
        return lanczos_topk(lambda v: objective.hvp(theta, v), objective.dim, k, v0=warm, tol=tol,
                            max_iter=max_iter, dtype=theta.dtype, device=theta.device, seed=seed,
                            matvec_batch=lambda V: objective.hvp_batch(theta, V))
    if hvp not in ("auto", "cached", "objective"):
        raise ValueError(f"unknown hvp {hvp!r}; allowed: ['auto', 'cached', 'objective']")
    b = _default_block_size(objective, theta, k) if block_size is None else int(block_size)
    if hvp == "auto":
        gpu_blocks = b > 1 and theta.device.type == "cuda" and getattr(objective, "hvp_mode", None) == "fwdrev"
        # objects that only offer hvp/hvp_batch (duck-typed objectives) use those
        cacheable = hasattr(objective, "chunks") and hasattr(objective, "_sum_loss")
        hvp = "objective" if gpu_blocks or not cacheable else "cached"
    if hvp == "objective":
        # e.g. GPU blocks: vmap-batched forward-over-reverse products, one kernel sequence per block
        matvec, batch = (lambda v: objective.hvp(theta, v)), (lambda V: objective.hvp_batch(theta, V))
    else:
        op = CachedHVP(objective, theta, max_bytes=graph_cache_bytes)
        matvec, batch = op, op.batch
    return block_lanczos_topk(matvec, objective.dim, k, v0=warm, tol=tol, max_iter=max_iter, block_size=b,
                              dtype=theta.dtype, device=theta.device, seed=seed, matvec_batch=batch,
                              n_guard=n_guard)


@dataclass
class SpectrumTracker:
    """Top-k Hessian eigenpairs along a trajectory, each solve warm-started from the previous one.

    ``records`` holds one dict per :meth:`measure` (eigenvalues, residuals and costs, on the CPU);
    ``eigvecs`` the latest eigenvectors (on the device of ``theta``). ``method`` and
    ``block_size`` are passed to :func:`top_eigenpairs`. With the block engine the next solve
    starts from the top k and ``n_guard`` further Ritz vectors (``guard``) of the previous one, so
    that an eigenvalue rising into the top k between two measurements is not missed.
    """

    k: int
    tol: float = 1e-3
    max_iter: int = 200
    seed: int = 0
    eigvecs: Tensor | None = None
    records: list[dict] = field(default_factory=list)
    method: str = "auto"
    block_size: int | None = None
    n_guard: int = 2
    guard: Tensor | None = field(default=None, repr=False)

    def measure(self, objective, theta: Tensor, step: int | None = None) -> EigResult:
        warm = self.eigvecs
        if warm is not None and self.guard is not None and self.guard.shape[0]:
            warm = torch.cat([warm, self.guard])
        res = top_eigenpairs(objective, theta, self.k, warm=warm, tol=self.tol,
                             max_iter=self.max_iter, seed=self.seed + len(self.records), method=self.method,
                             block_size=self.block_size, **({} if self.method == "lanczos" else
                                                            {"n_guard": self.n_guard}))
        self.eigvecs, self.guard = res.eigvecs, res.guard
        self.records.append({
            "step": step, "eigvals": res.eigvals.detach().cpu(), "residuals": res.residuals.detach().cpu(),
            "iterations": res.iterations, "n_matvec": res.n_matvec, "converged": res.converged,
        })
        return res

    def reset(self) -> None:
        """Forget the warm start (e.g. after a jump in parameters)."""
        self.eigvecs = self.guard = None


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
