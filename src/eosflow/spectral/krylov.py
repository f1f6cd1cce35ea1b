"""What both Lanczos engines share: the result type, Gram-Schmidt, seeded random directions,
residuals, and the resolution of a bare ``matvec`` into an operator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .operators import FunctionOperator, LinearOperator

__all__ = ["EigResult"]


@dataclass
class EigResult:
    """Top-k eigenpairs.

    eigvals: ``(k,)`` sorted descending. eigvecs: ``(k, P)`` orthonormal rows, ``eigvecs[i]`` pairs
    with ``eigvals[i]``. residuals: ``(k,)`` explicit ``‖H v − λ v‖ / |λ|``. iterations: Lanczos
    (Krylov) steps. n_matvec: total HVPs, residual checks included. converged: all residuals ≤ tol.
    guard: ``(g, P)`` Ritz vectors that come next after the top k (not converged; None if not asked
    for), kept by :class:`~eosflow.spectral.SpectrumTracker` to warm-start the next solve.
    product: which Hessian-vector product the operator used (its ``product`` attribute: ``"rop"``,
    ``"cached"``, ``"objective"``; None for other operators).
    cache: what the operator kept between products when the solve ended, for operators that keep
    primal passes (``{"cached_chunks": ..., "cache_bytes": ...}``; None for others).
    """

    eigvals: Tensor
    eigvecs: Tensor
    residuals: Tensor
    iterations: int
    n_matvec: int
    converged: bool
    guard: Tensor | None = None
    product: str | None = None
    cache: dict | None = None


def operator_cache(op) -> dict | None:
    """What ``op`` kept between products (chunks whose primal passes or graphs it holds, and their
    bytes), for :attr:`EigResult.cache`; None for an operator that keeps none."""
    chunks = getattr(op, "cached_chunks", None)
    if chunks is None:
        return None
    return {"cached_chunks": chunks, "cache_bytes": getattr(op, "cache_bytes", getattr(op, "graph_bytes", 0))}


def orthogonalise(w: Tensor, Q: Tensor) -> tuple[Tensor, Tensor]:
    """Classical Gram-Schmidt of ``w`` against the rows of ``Q``, done twice. Returns ``(w, coeffs)``."""
    if Q.shape[0] == 0:
        return w, w.new_zeros(0)
    h = Q @ w
    w = w - h @ Q
    h2 = Q @ w
    w = w - h2 @ Q
    return w, h + h2


def orthonormal_rows(Z: Tensor, Q: Tensor, thresh: float) -> Tensor:
    """Rows of ``Z`` made orthonormal to the rows of ``Q`` and to each other (classical
    Gram-Schmidt, twice per row). A row whose norm after orthogonalisation is at most ``thresh``
    (it lay in the span already: breakdown or rank deficiency) is dropped."""
    out: list[Tensor] = []
    for z in Z:
        z, _ = orthogonalise(z, torch.cat([Q, torch.stack(out)]) if out else Q)
        nz = float(torch.linalg.vector_norm(z))
        if nz > thresh:
            out.append(z / nz)
    return torch.stack(out) if out else Z.new_zeros(0, Z.shape[1])


def random_unit(gen: torch.Generator, dim: int, dtype, device) -> Tensor:
    """A seeded Gaussian direction, drawn on the CPU so it does not depend on the device."""
    v = torch.randn(dim, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    return v / torch.linalg.vector_norm(v)


def explicit_residuals(HV: Tensor, V: Tensor, lam: Tensor) -> Tensor:
    """Relative residuals ``‖H v − λ v‖ / |λ|`` of the rows of ``V`` from their products ``HV``."""
    r = torch.linalg.vector_norm(HV - lam[:, None] * V, dim=1)
    return r / lam.abs().clamp_min(torch.finfo(lam.dtype).tiny)


def check_k(op: LinearOperator, k) -> int:
    """``k`` as an int, checked against the operator's dimension."""
    k = int(k)
    if not 1 <= k <= op.dim:
        raise ValueError(f"need 1 ≤ k ≤ dim, got k={k}, dim={op.dim}")
    return k


def function_operator(matvec: Callable[[Tensor], Tensor], dim: int, v0: Tensor | None, dtype, device,
                      matvec_batch: Callable[[Tensor], Tensor] | None) -> FunctionOperator:
    """A bare ``matvec`` as an operator; dtype and device from ``v0`` when not given (else torch's
    default dtype, the CPU)."""
    if v0 is not None:
        dtype = dtype or v0.dtype
        device = device if device is not None else v0.device
    return FunctionOperator(matvec, dim, dtype, device, matvec_batch)
