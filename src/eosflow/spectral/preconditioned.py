"""Preconditioned sharpness: the top eigenvalues of ``P^(-1/2) H P^(-1/2)``, the same as those of
``P⁻¹H`` (similar matrices), for a diagonal preconditioner ``P`` (Cohen et al. 2022, "Adaptive
Gradient Methods at the Edge of Stability": an adaptive method is stable while ``λ_max(P⁻¹H)``
stays below its threshold, :func:`eosflow.training.optimizers.stability_threshold`).

:class:`PreconditionedOperator` composes any symmetric :class:`~eosflow.spectral.operators.LinearOperator`
(a Hessian-vector product) with ``D = P^(-1/2)`` on both sides, so the result stays symmetric
and the Lanczos solvers apply unchanged. :func:`preconditioned_eigenpairs` does it for an
objective at ``θ`` with ``diag(P)`` (e.g. :meth:`eosflow.training.optimizers.Optimizer.preconditioner`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .block import block_lanczos
from .krylov import EigResult
from .operators import DEFAULT_GRAPH_CACHE_BYTES, LinearOperator
from .tracker import hvp_operator

__all__ = ["PreconditionedOperator", "preconditioned_eigenpairs"]


class PreconditionedOperator:
    """``v ↦ D A D v`` with ``D = diag(p)^(-1/2)``: symmetric when ``A`` is, with the eigenvalues of
    ``diag(p)⁻¹ A``. ``p`` must be positive and finite (an error says which entries are not)."""

    def __init__(self, op: LinearOperator, p_diag: Tensor):
        p = p_diag.detach().to(op.device, op.dtype).reshape(-1)
        if p.numel() != op.dim:
            raise ValueError(f"the preconditioner has {p.numel()} entries for an operator on R^{op.dim}")
        bad = ~(torch.isfinite(p) & (p > 0))
        if bad.any():
            raise ValueError(f"the preconditioner must be positive and finite; {int(bad.sum())} entries are not")
        self.op, self.d = op, p.rsqrt()
        self.dim, self.dtype, self.device = op.dim, op.dtype, op.device

    def matvec(self, v: Tensor) -> Tensor:
        return self.d * self.op.matvec(self.d * v)

    def matvec_batch(self, V: Tensor) -> Tensor:
        return self.d * self.op.matvec_batch(V * self.d)


def preconditioned_eigenpairs(objective, theta: Tensor, p_diag: Tensor, k: int = 1, *, warm: Tensor | None = None,
                              tol: float = 1e-3, max_iter: int = 200, seed: int = 0, hvp: str = "auto",
                              graph_cache_bytes: int = DEFAULT_GRAPH_CACHE_BYTES) -> EigResult:
    """Top-``k`` eigenpairs of ``P^(-1/2) ∇²L(θ) P^(-1/2)`` (eigenvalues: those of ``P⁻¹H``) by block
    Lanczos to relative residual ``tol``; ``warm``: previous eigenvectors (of this operator)."""
    op = PreconditionedOperator(hvp_operator(objective, theta, hvp, 1, graph_cache_bytes), p_diag)
    return block_lanczos(op, k, v0=warm, tol=tol, max_iter=max_iter, block_size=1, seed=seed)
