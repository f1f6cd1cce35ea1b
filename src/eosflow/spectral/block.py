"""Block Lanczos with stored products, in Krylov-Schur form (:func:`block_lanczos`): the default
engine of :func:`eosflow.spectral.top_eigenpairs`.

Lanczos with full reorthogonalisation (``block_size`` 1) or block Lanczos (a block of
``block_size`` vectors per step, its products one ``matvec_batch`` call). The product ``H q`` of
every basis vector ``q`` is kept, the projected matrix ``T = Q H Qᵀ`` is assembled from those
products, and Ritz residuals come from them too: no extra products for checks, at twice the basis
memory of :func:`eosflow.spectral.lanczos.lanczos`.

One solve is four steps, each a method of :class:`_BlockLanczos`: **start** (the first block from
a warm start or seeded random rows), **extend** (the block's products join the basis; ``T`` gains
their columns; the part of the products outside the basis is the next block's raw material),
**check** (Ritz pairs of ``T``, cheap residual estimates, then residuals from the stored
products) and **restart** (a full basis shrinks to the top Ritz vectors and their products).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .krylov import EigResult, check_k, explicit_residuals, function_operator, operator_cache, orthonormal_rows
from .operators import LinearOperator

__all__ = ["block_lanczos", "block_lanczos_topk"]


class _BlockLanczos:
    """The state of one block Lanczos solve: basis ``Q`` and products ``HQ`` (first ``m`` rows),
    projected matrix ``T`` (float64, CPU), and the counters."""

    def __init__(self, op: LinearOperator, k: int, *, tol: float, max_iter: int, block_size: int,
                 min_iter: int | None, max_basis: int | None, seed: int, warm_noise: float, n_guard: int,
                 warm_subspace: bool = False):
        self.op, dim = op, op.dim
        self.k = check_k(op, k)
        self.b = int(block_size)
        if self.b < 1:
            raise ValueError(f"block_size must be ≥ 1, got {self.b}")
        self.tol, self.warm_noise, self.n_guard = tol, warm_noise, int(n_guard)
        self.warm_subspace, self.thick = bool(warm_subspace), False
        self.max_iter = max(self.k, int(max_iter))
        self.min_iter = min(dim, self.k + 1 if min_iter is None else max(self.k, int(min_iter)))
        self.cap = dim if max_basis is None else min(dim, max(int(max_basis), 2 * (self.k + self.b)))
        self.eps = torch.finfo(op.dtype).eps
        self.gen = torch.Generator(device="cpu").manual_seed(int(seed))
        self.empty = torch.zeros(0, dim, dtype=op.dtype, device=op.device)
        self.Q = self.HQ = self.empty
        self.T = torch.zeros(0, 0, dtype=torch.float64)
        self.m = self.n_matvec = self.steps = 0
        self.a_norm, self.hold, self.next_check, self.backoff = 0.0, 0, 0, 1
        self.ritz: tuple[Tensor, Tensor] | None = None  # (θ descending, S) of the current T, once computed

    def rand(self, n: int) -> Tensor:
        return torch.randn(n, self.op.dim, generator=self.gen, dtype=torch.float64).to(
            device=self.op.device, dtype=self.op.dtype)

    # -- start ---------------------------------------------------------------------------------
    def start(self, v0: Tensor | None) -> Tensor:
        """The first block: seeded random rows; or, from ``v0``, the normalised sum of its rows plus
        a seeded perturbation (block size 1) or its rows completed with random ones."""
        if v0 is None:
            X = self.rand(min(self.b, self.op.dim))
        elif self.warm_subspace:
            X = v0.detach().to(device=self.op.device, dtype=self.op.dtype).reshape(-1, self.op.dim)[:self.cap]
            X = X[torch.linalg.vector_norm(X, dim=1) > 0]
            X = X / torch.linalg.vector_norm(X, dim=1, keepdim=True)
            self.thick = X.shape[0] > 0
            if self.thick:  # rows within ~1e-2 of the span of the earlier ones add nothing: dropped
                block = orthonormal_rows(X, self.empty, 1e-2)
                self.Q = torch.empty(min(self.cap, max(2 * block.shape[0], 32)), self.op.dim, dtype=self.op.dtype,
                                     device=self.op.device)
                self.HQ = torch.empty_like(self.Q)
                return block
            X = self.rand(min(self.b, self.op.dim))
        else:
            rows = v0.detach().to(device=self.op.device, dtype=self.op.dtype).reshape(-1, self.op.dim)
            norms = torch.linalg.vector_norm(rows, dim=1)
            rows = rows[norms > 0] / norms[norms > 0, None]
            if self.b == 1 or rows.shape[0] == 0:
                s = rows.sum(0) if rows.shape[0] else rows.new_zeros(self.op.dim)
                r = self.rand(1)[0]
                s_norm = float(torch.linalg.vector_norm(s))
                X = (s / s_norm + self.warm_noise * r / torch.linalg.vector_norm(r))[None] if s_norm > 0 else r[None]
            else:
                X = torch.cat([rows[:self.cap], self.rand(max(0, min(self.b, self.cap) - rows.shape[0]))])
        block = orthonormal_rows(X, self.empty, 0.0)
        if block.shape[0] == 0:
            block = orthonormal_rows(self.rand(1), self.empty, 0.0)
        self.Q = torch.empty(min(self.cap, max(2 * block.shape[0], 32)), self.op.dim, dtype=self.op.dtype,
                             device=self.op.device)
        self.HQ = torch.empty_like(self.Q)
        return block

    # -- extend --------------------------------------------------------------------------------
    def _room_for(self, nb: int) -> None:
        if self.m + nb > self.Q.shape[0]:  # grow the buffers
            size = min(self.cap, max(self.m + nb, 2 * self.Q.shape[0]))
            Q2 = torch.empty(size, self.op.dim, dtype=self.op.dtype, device=self.op.device)
            HQ2 = torch.empty_like(Q2)
            Q2[:self.m], HQ2[:self.m] = self.Q[:self.m], self.HQ[:self.m]
            self.Q, self.HQ = Q2, HQ2

    def extend(self, block: Tensor) -> tuple[Tensor, int]:
        """Products of ``block`` into the basis; ``T`` gains their columns. Returns ``R``, the part of
        the products outside the basis, and the basis size before."""
        nb = block.shape[0]
        W = self.op.matvec_batch(block).to(self.op.dtype)
        self.n_matvec += nb
        self.steps += 1
        self._room_for(nb)
        m_old, m = self.m, self.m + nb
        Q = self.Q
        Q[m_old:m], self.HQ[m_old:m] = block, W
        self.m = m
        self.a_norm = max(self.a_norm, float(torch.linalg.vector_norm(W, dim=1).max()))
        C = Q[:m] @ W.T
        R = W - C.T @ Q[:m]
        # a second Gram-Schmidt pass unless the first kept most of the norm (DGKS criterion)
        if bool((torch.linalg.vector_norm(R, dim=1) < 0.7 * torch.linalg.vector_norm(W, dim=1)).any()):
            C2 = Q[:m] @ R.T
            R = R - C2.T @ Q[:m]
        T2 = torch.zeros(m, m, dtype=torch.float64)
        T2[:m_old, :m_old] = self.T
        C64 = C.to(device="cpu", dtype=torch.float64)
        T2[:, m_old:] = C64
        T2[m_old:, :] = C64.T
        T2[m_old:, m_old:] = 0.5 * (C64[m_old:] + C64[m_old:].T)
        self.T, self.ritz = T2, None
        return R, m_old

    def next_block(self, R: Tensor) -> Tensor:
        """The outside parts, orthonormalised among themselves. Rows that vanish mean an invariant
        subspace (breakdown): they are replaced by random vectors, and convergence waits
        ``min(k, dim − m)`` more basis vectors, since an invariant subspace from few start vectors
        can miss copies of an eigenvalue."""
        m, dim = self.m, self.op.dim
        room = min(dim - m, self.max_iter - self.n_matvec)
        block = orthonormal_rows(R[:room], self.empty, 1e3 * self.eps * max(self.a_norm, 1e-300))
        if block.shape[0] < min(R.shape[0], room):
            fill = orthonormal_rows(self.rand(min(R.shape[0], room) - block.shape[0]),
                                    torch.cat([self.Q[:m], block]), 1e-3)
            block = torch.cat([block, fill])
            self.hold = m + min(self.k, dim - m)
        return block

    # -- check ---------------------------------------------------------------------------------
    def eigh(self) -> tuple[Tensor, Tensor]:
        """Ritz values (descending) and coordinates of the current ``T`` (computed once per basis)."""
        if self.ritz is None:
            theta, S = torch.linalg.eigh(self.T)
            self.ritz = (theta.flip(0), S.flip(1))
        return self.ritz

    def result(self, S: Tensor, theta: Tensor, kk: int) -> EigResult:
        m, op = self.m, self.op
        Sd = S[:, :kk].to(device=op.device, dtype=op.dtype)
        Y, HY = Sd.T @ self.Q[:m], Sd.T @ self.HQ[:m]
        lam = theta[:kk].to(device=op.device, dtype=op.dtype)
        res = explicit_residuals(HY, Y, lam)
        g = min(self.n_guard, m - kk)
        guard = (S[:, kk:kk + g].to(device=op.device, dtype=op.dtype).T @ self.Q[:m]) if self.n_guard else None
        return EigResult(eigvals=lam, eigvecs=Y, residuals=res, iterations=self.steps, n_matvec=self.n_matvec,
                         converged=kk == self.k and bool((res <= self.tol).all()), guard=guard,
                         product=getattr(op, "product", None), cache=operator_cache(op))

    def check(self, R: Tensor, m_old: int, exhausted: bool) -> EigResult | None:
        """The result when the top ``k`` have converged (or nothing is left to do), else None.
        Checks every step while the basis is small (an eigh of T is cheap), then every ``m/25``."""
        m, k = self.m, self.k
        kk = min(k, m)
        if not (exhausted or (kk == k and m >= max(self.min_iter, self.hold, self.next_check))):
            return None
        theta, S = self.eigh()
        self.next_check = m + max(1, m // 25)
        G = (R @ R.T).to(device="cpu", dtype=torch.float64)  # residual of s: ‖Rᵀ s_last‖
        s_last = S[m_old:, :k]
        est = (s_last * (G @ s_last)).sum(0).clamp_min(0).sqrt() / theta[:k].abs().clamp_min(1e-300)
        if bool((est <= self.tol).all()) or exhausted:
            r = self.result(S, theta, kk)
            if exhausted or bool((r.residuals <= self.tol).all()):
                return r
            # the estimate passed but the products say no (rounding floor, e.g. a tol near the
            # dtype's precision): back off before forming the Ritz vectors again
            self.backoff *= 2
            self.next_check = m + self.backoff
        return None

    # -- restart -------------------------------------------------------------------------------
    def restart(self, block: Tensor) -> Tensor:
        """Thick restart with the top Ritz vectors and their products; the next block's products
        couple to them through T's new columns (Krylov-Schur form)."""
        theta, S = self.eigh()
        m, g = self.m, self.n_guard
        keep = max(self.k + g, min(m, self.cap - block.shape[0], max(self.k + self.b + g, self.cap // 2)))
        Sk = S[:, :keep].to(device=self.op.device, dtype=self.op.dtype)
        self.Q[:keep], self.HQ[:keep] = Sk.T @ self.Q[:m], Sk.T @ self.HQ[:m]
        self.T, self.ritz = torch.diag(theta[:keep]), None
        self.hold = max(0, self.hold - (m - keep))
        self.m = keep
        return orthonormal_rows(block, self.Q[:keep], 1e-3)

    # -- subspace warm start ---------------------------------------------------------------------
    def warm_pairs(self) -> EigResult | None:
        """After the warm rows' products: their Rayleigh-Ritz pairs if those already meet ``tol``
        (residuals from the stored products), else None."""
        theta, S = self.eigh()
        kk = min(self.k, self.m)
        r = self.result(S, theta, kk)
        done = kk == self.k and self.m >= self.min_iter and bool((r.residuals <= self.tol).all())
        return r if done or self.n_matvec >= self.max_iter or self.m == self.op.dim else None

    def restart_from_ritz(self) -> Tensor:
        """Shrink the warm span to its top ``block_size`` Ritz vectors (with one vector and k > 1,
        their normalised sum), whose products are already stored, and return the next block: the
        parts of those products outside them. Krylov spaces then grow from the best vectors in the
        warm span, with no new products for the vectors themselves."""
        theta, S = self.eigh()
        m = self.m
        if self.b == 1:
            C = S[:, :min(self.k, m)].sum(1, keepdim=True) / min(self.k, m) ** 0.5
        else:
            C = S[:, :min(self.b, m)]
        Cd = C.to(device=self.op.device, dtype=self.op.dtype)
        Y, HY = Cd.T @ self.Q[:m], Cd.T @ self.HQ[:m]
        nb = Y.shape[0]
        self.T, self.ritz = C.T @ self.T @ C, None
        self.T = 0.5 * (self.T + self.T.T)
        self.Q[:nb], self.HQ[:nb] = Y, HY
        self.m, self.thick = nb, False
        R = HY - self.T.to(device=self.op.device, dtype=self.op.dtype) @ Y
        return self.next_block(R - (R @ Y.T) @ Y)

    def run(self, v0: Tensor | None) -> EigResult:
        block = self.start(v0)
        if self.thick:
            self.extend(block)
            done = self.warm_pairs()
            if done is not None:
                return done
            block = self.restart_from_ritz()
        while True:
            R, m_old = self.extend(block)
            exhausted = self.m == self.op.dim or self.n_matvec >= self.max_iter
            block = self.next_block(R)
            done = self.check(R, m_old, exhausted)
            if done is not None:
                return done
            if self.m + block.shape[0] > self.cap:
                block = self.restart(block)


def block_lanczos(op: LinearOperator, k: int, *, v0: Tensor | None = None, tol: float = 1e-3,
                  max_iter: int = 200, block_size: int = 1, min_iter: int | None = None,
                  max_basis: int | None = None, seed: int = 0, warm_noise: float = 1e-2,
                  n_guard: int = 0, warm_subspace: bool = False) -> EigResult:
    """The ``k`` algebraically largest eigenpairs of ``op`` by (block) Lanczos with stored products.

    Ritz pairs of ``T`` are checked with the cheap estimate ``‖R s_last‖ / |θ|`` (``R``: the part
    of the last block's products outside the basis); when every estimate is ≤ ``tol`` the
    residuals ``‖sᵀ(HQ) − θ sᵀQ‖ / |θ|`` are formed from the stored products and must be ≤ ``tol``
    too. Compared with :func:`eosflow.spectral.lanczos.lanczos` this saves the ``k`` products of
    every explicit check.

    Warm start ``v0`` (``(m, dim)`` rows, e.g. the previous eigenvectors): with ``block_size`` 1
    the start vector is the normalised sum of the normalised rows plus a seeded perturbation of
    relative size ``warm_noise``; with larger blocks the rows themselves start the block,
    completed with seeded random rows up to ``block_size``.

    ``max_iter`` caps the products (``converged=False`` when reached); ``min_iter`` (default
    ``k + 1``) is the basis size before which convergence is not accepted. ``max_basis``
    (default: unbounded) caps the stored basis: when full, it is restarted thick with the top
    Ritz vectors and their products (no new products), which keeps the Krylov-Schur relation.
    Breakdown (an invariant subspace) continues with a seeded random vector orthogonal to the
    basis and waits ``min(k, dim − m)`` more basis vectors before accepting convergence.
    ``iterations`` counts (block) steps, ``n_matvec`` products; ``residuals`` are the ones formed
    from the stored products. ``n_guard``: also return the next ``n_guard`` Ritz vectors
    (``EigResult.guard``); a warm start that includes them finds an eigenvalue that has risen
    into the top k since (a crossing), which a start from the top k alone can miss.

    ``warm_subspace``: instead, the products of all the rows of ``v0`` come first (one
    ``matvec_batch`` call); when the Rayleigh-Ritz pairs of their span meet ``tol`` they are the
    answer, else (block) Lanczos starts from the top ``block_size`` Ritz vectors of that span (one
    vector: the normalised sum of the top k), whose products are known.
    Along a GD trajectory past the stability limit the top eigenvector at step t is close to the
    one at t − 2, not t − 1 (period-two oscillation): :class:`~eosflow.spectral.SpectrumTracker`
    starts from the span of both.
    """
    return _BlockLanczos(op, k, tol=tol, max_iter=max_iter, block_size=block_size, min_iter=min_iter,
                         max_basis=max_basis, seed=seed, warm_noise=warm_noise, n_guard=n_guard,
                         warm_subspace=warm_subspace).run(v0)


def block_lanczos_topk(matvec: Callable[[Tensor], Tensor], dim: int, k: int, *, v0: Tensor | None = None,
                       dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                       matvec_batch: Callable[[Tensor], Tensor] | None = None, **options) -> EigResult:
    """:func:`block_lanczos` for an operator given as a function ``v ↦ H v`` on ``R^dim``
    (optionally with a batched ``(m, dim) ↦ (m, dim)`` product for blocks); ``dtype`` and
    ``device`` default to those of ``v0``, else torch's default dtype, CPU. ``options``: those of
    :func:`block_lanczos`."""
    op = function_operator(matvec, dim, v0, dtype, device, matvec_batch)
    return block_lanczos(op, k, v0=v0, **options)
