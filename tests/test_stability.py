"""Measured stability of a run and the rotation 1 − ρ, on traces whose answer is known."""
import math

import numpy as np
import pytest

from eosflow.similarity import rotation
from eosflow.stability import measured_stability

RULE = {"min_fraction": 0.05, "min_spikes": 1, "min_rise": 0.2}


def traces(n=200, every=10, ratio=0.5, spikes=(), lr=0.1):
    """A decaying loss with spikes (loss × 3 for 3 steps) at ``spikes``; S measured every ``every``
    steps with η·S/2 = ``ratio`` (a number or a function of the step)."""
    steps = np.arange(n)
    loss = np.exp(-steps / 50.0)
    for s in spikes:
        loss[s + 1:s + 4] *= 3.0
    sharp = np.full(n, np.nan)
    r = np.array([ratio(t) if callable(ratio) else ratio for t in steps])
    sharp[::every] = 2 * r[::every] / lr
    return loss, np.full(n, lr), sharp


def test_below_the_limit_everywhere_is_stable():
    out = measured_stability(*traces(ratio=0.8), "converged", **RULE)
    assert out["stability"] == "stable" and out["fraction_above"] == 0.0 and out["n_spikes"] == 0
    assert out["max_ratio"] == pytest.approx(0.8) and out["n_measured"] == 20


def test_crossing_with_a_spike_is_unstable():
    # η·S/2 = 1.3 from step 100 on (half the measurements), a spike starting at a measured step
    out = measured_stability(*traces(ratio=lambda t: 1.3 if t >= 100 else 0.9, spikes=(120,)), "converged", **RULE)
    assert out["fraction_above"] == pytest.approx(0.5) and out["max_ratio"] == pytest.approx(1.3)
    assert out["n_spikes"] == 1 and out["stability"] == "unstable"


def test_crossing_without_a_spike_or_too_briefly_is_stable():
    calm = measured_stability(*traces(ratio=lambda t: 1.1 if t >= 100 else 0.9), "converged", **RULE)
    assert calm["fraction_above"] == pytest.approx(0.5) and calm["n_spikes"] == 0 and calm["stability"] == "stable"
    # above the limit at 1 of 20 measurements (5 %): at the threshold counts; with min_fraction 0.1 it does not
    brief = traces(ratio=lambda t: 1.5 if t == 120 else 0.9, spikes=(120,))
    assert measured_stability(*brief, "converged", **RULE)["stability"] == "unstable"
    assert measured_stability(*brief, "converged", **{**RULE, "min_fraction": 0.1})["stability"] == "stable"


def test_a_small_rise_is_not_a_spike():
    loss, lr, sharp = traces(ratio=1.2)
    loss[51:54] *= 1.1  # a 10 % rise: the edge of stability's oscillation, below min_rise 0.2
    out = measured_stability(loss, lr, sharp, "converged", **RULE)
    assert out["fraction_above"] == 1.0 and out["n_spikes"] == 0 and out["stability"] == "stable"


def test_diverged_is_unstable_and_nothing_measured_is_unmeasured():
    loss, lr, sharp = traces(ratio=0.5)
    assert measured_stability(loss, lr, sharp, "diverged", **RULE)["stability"] == "unstable"
    out = measured_stability(loss, lr, np.full_like(sharp, np.nan), "converged", **RULE)
    assert out["stability"] == "unmeasured" and math.isnan(out["max_ratio"]) and out["n_measured"] == 0


def test_the_step_sizes_taken_count_not_eta0():
    loss, lr, sharp = traces(ratio=1.5)
    clamped = lr * 0.6  # a clamp that took η_t = 0.6 η₀: η_t S / 2 = 0.9
    out = measured_stability(loss, clamped, sharp, "converged", **RULE)
    assert out["max_ratio"] == pytest.approx(0.9) and out["stability"] == "stable"


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="per step"):
        measured_stability(np.ones(5), 0.1, np.ones(4), "converged", **RULE)


def test_rotation_of_known_subspaces():
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.normal(size=(50, 6)))[0].T  # 6 orthonormal rows
    A = Q[:3]
    mix = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    assert rotation(A, mix @ A) == pytest.approx(0.0, abs=1e-7)  # same span, another basis, signs
    assert rotation(A, Q[3:]) == pytest.approx(1.0)  # orthogonal spans
    alpha = 0.4  # one of the three vectors turned by alpha: rms angle alpha / sqrt(3)
    B = A.copy()
    B[0] = math.cos(alpha) * Q[0] + math.sin(alpha) * Q[5]
    assert rotation(A, B) == pytest.approx(1 - math.cos(alpha / math.sqrt(3)), rel=1e-9)
