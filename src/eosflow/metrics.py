"""Comparisons of eigenvectors and eigenspaces, and a NaN-aware rank correlation."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["eigvec_similarity", "principal_angles", "subspace_similarity", "spearman"]


def eigvec_similarity(u: Tensor, v: Tensor) -> float | Tensor:
    """``|cos(u, v)|``, invariant to the sign of either vector.

    ``(P,)`` vectors give a float; ``(k, P)`` pairs give a ``(k,)`` tensor, row ``i`` against row ``i``.
    """
    u, v = torch.as_tensor(u, dtype=torch.float64), torch.as_tensor(v, dtype=torch.float64)
    if u.shape != v.shape:
        raise ValueError(f"shapes differ: {tuple(u.shape)} vs {tuple(v.shape)}")
    cos = (u * v).sum(-1).abs() / (torch.linalg.vector_norm(u, dim=-1) * torch.linalg.vector_norm(v, dim=-1))
    return float(cos) if u.ndim == 1 else cos


def _orthonormal_basis(A: Tensor) -> Tensor:
    A = torch.as_tensor(A, dtype=torch.float64)
    A = A.reshape(1, -1) if A.ndim == 1 else A
    if A.shape[0] > A.shape[1]:
        raise ValueError(f"more rows ({A.shape[0]}) than the ambient dimension ({A.shape[1]})")
    return torch.linalg.qr(A.T).Q  # (P, k), orthonormal columns


def principal_angles(A: Tensor, B: Tensor) -> Tensor:
    """Principal angles (ascending, float64, in ``[0, π/2]``) between ``span(rows of A)`` and ``span(rows of B)``.

    Rows are orthonormalised by QR first; ``θ_j = arccos(clamp(σ_j(Q_Aᵀ Q_B), 0, 1))``. With
    ``k_A ≠ k_B`` there are ``min(k_A, k_B)`` angles.
    """
    QA, QB = _orthonormal_basis(A), _orthonormal_basis(B)
    if QA.shape[0] != QB.shape[0]:
        raise ValueError(f"ambient dimensions differ: {QA.shape[0]} vs {QB.shape[0]}")
    sigma = torch.linalg.svdvals(QA.T @ QB)  # descending, so the angles come out ascending
    return torch.arccos(sigma.clamp(0.0, 1.0))


def subspace_similarity(A: Tensor, B: Tensor) -> float:
    """Similarity of two k-dimensional subspaces from their principal angles ``θ``:

    ``s = cos( (π/2) · ‖θ‖₂ / (√k · π/2) ) = cos(‖θ‖₂ / √k)``,

    i.e. the cosine of the root-mean-square principal angle: 1 for the same subspace (any basis),
    0 for orthogonal subspaces (all angles π/2). ``k`` is the number of angles.
    """
    theta = principal_angles(A, B)
    return math.cos(float(torch.linalg.vector_norm(theta)) / math.sqrt(theta.numel()))


def spearman(x, y) -> float:
    """Spearman rank correlation of paired samples, dropping pairs where either is NaN.

    NaN if fewer than 3 pairs remain or either remaining sample is constant.
    """
    from scipy.stats import spearmanr

    x = np.asarray(torch.as_tensor(x).detach().cpu() if isinstance(x, Tensor) else x, dtype=float).ravel()
    y = np.asarray(torch.as_tensor(y).detach().cpu() if isinstance(y, Tensor) else y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"lengths differ: {x.size} vs {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if x.size < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(spearmanr(x, y).statistic)
