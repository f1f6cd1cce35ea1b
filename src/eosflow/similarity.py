"""Similarity of eigenvectors and eigenspaces (fig2; the rotation 1 − ρ of the sweeps), and a NaN-aware
rank correlation.

numpy only: figure code uses these without torch. Inputs may be numpy arrays or torch tensors
(on any device); array results come back as the type of the first argument (a float64 tensor
on the CPU for tensors).
"""

from __future__ import annotations

import math
import sys

import numpy as np

__all__ = ["eigvec_similarity", "principal_angles", "subspace_similarity", "rotation", "spearman"]


def _numpy(a) -> np.ndarray:
    """A float64 numpy copy of an array or a torch tensor."""
    if hasattr(a, "detach"):  # a torch tensor (torch is imported already if one exists)
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _like(result: np.ndarray, template):
    """``result`` as a torch tensor when ``template`` is one, else as it is."""
    if hasattr(template, "detach"):
        return sys.modules["torch"].from_numpy(np.ascontiguousarray(result))
    return result


def eigvec_similarity(u, v):
    """``|cos(u, v)|``, invariant to the sign of either vector.

    ``(P,)`` vectors give a float; ``(k, P)`` pairs give ``k`` values, row ``i`` against row ``i``.
    """
    a, b = _numpy(u), _numpy(v)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    cos = np.abs((a * b).sum(-1)) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return float(cos) if a.ndim == 1 else _like(cos, u)


def _orthonormal_basis(A: np.ndarray) -> np.ndarray:
    A = A.reshape(1, -1) if A.ndim == 1 else A
    if A.shape[0] > A.shape[1]:
        raise ValueError(f"more rows ({A.shape[0]}) than the ambient dimension ({A.shape[1]})")
    return np.linalg.qr(A.T)[0]  # (P, k), orthonormal columns


def principal_angles(A, B):
    """Principal angles (ascending, float64, in ``[0, π/2]``) between ``span(rows of A)`` and ``span(rows of B)``.

    Rows are orthonormalised by QR first; ``θ_j = arccos(clamp(σ_j(Q_Aᵀ Q_B), 0, 1))``. With
    ``k_A ≠ k_B`` there are ``min(k_A, k_B)`` angles.
    """
    QA, QB = _orthonormal_basis(_numpy(A)), _orthonormal_basis(_numpy(B))
    if QA.shape[0] != QB.shape[0]:
        raise ValueError(f"ambient dimensions differ: {QA.shape[0]} vs {QB.shape[0]}")
    sigma = np.linalg.svd(QA.T @ QB, compute_uv=False)  # descending, so the angles come out ascending
    return _like(np.arccos(np.clip(sigma, 0.0, 1.0)), A)


def subspace_similarity(A, B) -> float:
    """Similarity of two k-dimensional subspaces from their principal angles ``θ``:

    ``s = cos( (π/2) · ‖θ‖₂ / (√k · π/2) ) = cos(‖θ‖₂ / √k)``,

    i.e. the cosine of the root-mean-square principal angle: 1 for the same subspace (any basis),
    0 for orthogonal subspaces (all angles π/2). ``k`` is the number of angles.
    """
    theta = _numpy(principal_angles(_numpy(A), _numpy(B)))
    return math.cos(float(np.linalg.norm(theta)) / math.sqrt(theta.size))


def spearman(x, y) -> float:
    """Spearman rank correlation of paired samples, dropping pairs where either is NaN.

    NaN if fewer than 3 pairs remain or either remaining sample is constant.
    """
    from scipy.stats import spearmanr

    x, y = _numpy(x).ravel(), _numpy(y).ravel()
    if x.shape != y.shape:
        raise ValueError(f"lengths differ: {x.size} vs {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if x.size < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(spearmanr(x, y).statistic)


def rotation(first, last) -> float:
    """``1 − ρ``: how far a top-k eigenspace turned between two measurements (``first`` and
    ``last``, each ``(k, P)`` eigenvectors as rows), ρ the :func:`subspace_similarity` of their
    spans (the spec's rotation: 0 = the same eigenspace, 1 = orthogonal)."""
    return 1.0 - subspace_similarity(first, last)
