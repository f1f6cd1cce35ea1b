"""ClampBound: when a clamped run needs a full solve of S, and the bound it steps with between
solves, on sequences of S whose future is known."""
import math

import pytest

from eosflow.training.clamp import ClampBound

TOL = 1e-3


def drive(bounds: ClampBound, S):
    """Step through the sharpness sequence ``S`` as a clamped run would: a solve returns the true
    value. Returns the bound of every step and which steps solved."""
    out, solved = [], []
    for t, s in enumerate(S):
        if bounds.due(t):
            u, _ = bounds.solved(t, s)
            solved.append(t)
        else:
            u = bounds.predicted(t)
        out.append(u)
    return out, solved


def period_two(n, rate=0.0025, amp=0.02, s0=50.0):
    """Progressive sharpening at ``rate`` per step with a period-two oscillation of relative size ``amp``."""
    return [s0 * math.exp(rate * t) * (1 + amp * (t % 2)) for t in range(n)]


def test_margin_zero_solves_at_every_step_with_the_exact_bound():
    S = period_two(50)
    b = ClampBound(TOL, 0.0)
    us, solved = drive(b, S)
    assert solved == list(range(50)) and b.predictions == 0
    assert us == [s * (1.0 + TOL) for s in S]  # the exact clamp's bound, to the bit


def test_steady_sharpening_skips_most_solves_and_the_bound_holds_everywhere():
    S = period_two(300)
    b = ClampBound(TOL, 0.02)
    us, solved = drive(b, S)
    assert all(u >= s for u, s in zip(us, S))  # U_t ≥ S_t at every step
    assert all(u <= s * 1.03 for u, s in zip(us, S))  # and at most the margin (plus the tolerance) above it
    assert len(solved) < 100 and b.misses == 0
    assert solved[:8] == list(range(8))  # each parity needs its window of solves before predicting


def test_approaching_the_clamps_limit_from_below_solves_every_step_and_binding_predicts_again():
    """S sharpening toward the limit 2c/η (here 80) from below: once the predicted bound is within a
    quarter of it every step solves, and a jump there (the VGG's 24 % in three steps) is seen at
    once; once the solves bind (S at the limit) the trend predicts again."""
    S = [50.0 * math.exp(0.01 * t) for t in range(40)]  # 50 -> 74
    S += [S[-1] * 1.08 ** (i + 1) for i in range(3)]  # a jump across the limit
    S += period_two(60, rate=0.002, s0=82.0)  # binding: at and above the limit
    b = ClampBound(TOL, 0.02)
    b.limit = lambda t: 80.0
    _, solved = drive(b, S)
    near = [t for t in range(8, 40) if S[t] * (1 + TOL) * 1.25 >= 80.0]
    assert near and set(near) <= set(solved)  # every step within a quarter of the limit solved
    assert set(range(40, 43)) <= set(solved) and b.misses == 0  # the jump: solved, not predicted
    assert len([t for t in solved if t >= 60]) < 30  # binding again: predictions resume
    free = ClampBound(TOL, 0.02)  # without the limit the same sequence predicts through the approach
    _, solved_free = drive(free, S)
    assert not set(near) <= set(solved_free)


def test_a_sudden_acceleration_is_a_miss_and_doubles_the_safety():
    S = period_two(60) + [v * math.exp(0.03 * (i + 1)) for i, v in enumerate(period_two(120)[60:])]
    b = ClampBound(TOL, 0.05)
    _, solved = drive(b, S)
    assert b.misses >= 1 and b.safety >= 8.0  # seen at the first solve after the change
    # an unannounced change goes at most max_gap steps without a solve of its parity
    assert all(any(t < s <= t + b.max_gap for s in solved) for t in range(len(S) - b.max_gap))


def test_a_falling_sharpness_is_bounded_by_its_last_solve():
    S = [80.0 * math.exp(-0.002 * t) for t in range(200)]
    b = ClampBound(TOL, 0.02)
    us, solved = drive(b, S)
    for t, u in enumerate(us):
        if t not in solved:
            last = max(x for x in solved if x < t and x % 2 == t % 2)
            assert u >= S[last] * (1 + TOL)  # never predicts a fall


def test_state_round_trip_continues_identically():
    S = period_two(200)
    whole = ClampBound(TOL, 0.02)
    us, _ = drive(whole, S)
    first = ClampBound(TOL, 0.02)
    drive(first, S[:90])
    second = ClampBound(TOL, 0.02)
    second.load_state_dict(first.state_dict())
    rest = []
    for t in range(90, 200):
        rest.append(second.solved(t, S[t])[0] if second.due(t) else second.predicted(t))
    assert rest == us[90:]


def test_bad_margin_and_a_prediction_when_due_are_errors():
    with pytest.raises(ValueError, match="clamp_margin"):
        ClampBound(TOL, -0.1)
    with pytest.raises(RuntimeError, match="solve is due"):
        ClampBound(TOL, 0.02).predicted(0)


def test_the_default_margin_is_the_config_schemas_everywhere():
    """One default: the schema's ``train.clamp_margin``, the constant the code defaults to, and the
    defaults of TrainConfig, InloopSharpness and the benchmark's runner."""
    import inspect

    from eosflow.bench.runner import run
    from eosflow.config import load_schema
    from eosflow.jobs.run import InloopSharpness
    from eosflow.training import TrainConfig
    from eosflow.training.clamp import DEFAULT_CLAMP_MARGIN

    schema = load_schema()["properties"]["train"]["properties"]["clamp_margin"]["default"]
    assert schema == DEFAULT_CLAMP_MARGIN
    assert TrainConfig(lr=0.1).clamp_margin == DEFAULT_CLAMP_MARGIN
    assert inspect.signature(InloopSharpness).parameters["margin"].default == DEFAULT_CLAMP_MARGIN
    assert inspect.signature(run).parameters["clamp_margin"].default == DEFAULT_CLAMP_MARGIN
