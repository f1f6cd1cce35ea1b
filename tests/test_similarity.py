"""Eigenvector / subspace similarities and the NaN-aware Spearman correlation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eosflow.similarity import eigvec_similarity, principal_angles, spearman, subspace_similarity

D = torch.float64


def _orthonormal(P, k, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(P, k, generator=g, dtype=D)).Q.T  # (k, P) orthonormal rows


def test_same_subspace_other_basis():
    A = _orthonormal(50, 4, 0)
    R = _orthonormal(4, 4, 1)  # a random rotation within the subspace
    B = 3.0 * (R @ A)  # another (scaled) basis of the same span
    assert subspace_similarity(A, B) == pytest.approx(1.0, abs=1e-12)
    assert float(principal_angles(A, B).max()) < 1e-6
    # a different subspace is not similar
    assert subspace_similarity(A, _orthonormal(50, 4, 2)) < 0.9


def test_orthogonal_subspaces():
    Q = _orthonormal(30, 6, 3)
    A, B = Q[:3], Q[3:]
    assert abs(subspace_similarity(A, B)) < 1e-12
    torch.testing.assert_close(principal_angles(A, B), torch.full((3,), math.pi / 2, dtype=D))


@pytest.mark.parametrize("angle", [0.3, 1.1])
def test_known_principal_angle(angle):
    Q = _orthonormal(20, 3, 4)
    e1, e2, e3 = Q
    A = torch.stack([e1, e2])
    b1, b2 = e1, math.cos(angle) * e2 + math.sin(angle) * e3  # angles (0, angle) to span(e1, e2)
    B = torch.stack([b1 + 0.5 * b2, -2.0 * b2])  # the same span in a non-orthonormal basis
    theta = principal_angles(A, B)
    torch.testing.assert_close(theta, torch.tensor([0.0, angle], dtype=D), atol=1e-7, rtol=0)
    assert subspace_similarity(A, B) == pytest.approx(math.cos(angle / math.sqrt(2)), abs=1e-12)
    # symmetric in its arguments
    assert subspace_similarity(B, A) == pytest.approx(subspace_similarity(A, B), abs=1e-12)


def test_eigvec_similarity_sign_invariant():
    g = torch.Generator().manual_seed(5)
    u, w = torch.randn(2, 40, generator=g, dtype=D)
    assert eigvec_similarity(u, -2.0 * u) == pytest.approx(1.0, abs=1e-14)
    c = float(u @ w / (u.norm() * w.norm()))
    assert eigvec_similarity(u, w) == pytest.approx(abs(c), abs=1e-14)
    assert eigvec_similarity(-u, w) == pytest.approx(abs(c), abs=1e-14)
    U, V = torch.stack([u, w]), torch.stack([-u, 5 * w])
    torch.testing.assert_close(eigvec_similarity(U, V), torch.ones(2, dtype=D))
    torch.testing.assert_close(eigvec_similarity(U, V.flip(0)), torch.tensor([abs(c), abs(c)], dtype=D))


def test_spearman():
    x = np.arange(10.0)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert spearman(x, -x**3) == pytest.approx(-1.0)
    assert spearman(torch.tensor(x), torch.tensor(x**2)) == pytest.approx(1.0)
    # NaN pairs are dropped (the NaN-free part is perfectly anti-monotone)
    y = -x.copy()
    y[[2, 5]] = np.nan
    xx = x.copy()
    xx[7] = np.nan
    assert spearman(xx, y) == pytest.approx(-1.0)
    # a partially monotone sample gives a value strictly between
    r = spearman(x, np.array([0, 2, 1, 3, 5, 4, 6, 8, 7, 9.0]))
    assert 0.8 < r < 1.0
    assert math.isnan(spearman([1.0, np.nan, 2.0, 3.0], [1.0, 2.0, np.nan, 3.0]))  # 2 pairs left
    assert math.isnan(spearman(x, np.ones(10)))  # constant
