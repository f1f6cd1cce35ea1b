"""Claims: every expected effect of a figure as a statistic against a threshold, with a verdict.

A claim's verdict is ``holds``, ``fails`` or ``undetermined``, decided by :func:`check` from rules
fixed here, before any run:

1. **Minimum evidence.** Each claim states what it needs (``minimum``, e.g. ``{"seeds": 3}``) and
   what it had (``evidence``). Short of any of it the claim is ``undetermined``, with the reason:
   runs past the stability limit are chaotic, and one seed, or one run past a threshold, proves
   little.
2. **A statistic that cannot be computed** (no run on one side, no instability) is
   ``undetermined``.
3. **An interval** (95 % bootstrap over the replicates, :func:`bootstrap_interval`; computed from
   at least :data:`MIN_INTERVAL_VALUES` values) must clear the threshold for ``holds``; lying
   entirely on the wrong side is ``fails``; containing the threshold is ``undetermined`` (the
   data cannot decide).
4. **Otherwise** (a deterministic quantity, such as the toy model's) the value against the
   threshold gives ``holds`` or ``fails``.

``all_hold`` in a claims file is true only when every claim holds. No torch here.
"""

from __future__ import annotations

import math
import operator
from dataclasses import asdict, dataclass, field

import numpy as np

from .files import write_json

__all__ = ["VERDICTS", "MIN_INTERVAL_VALUES", "Claim", "check", "bootstrap_interval", "write_claims"]

VERDICTS = ("holds", "fails", "undetermined")
#: The fewest values a bootstrap interval is computed from.
MIN_INTERVAL_VALUES = 3
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass
class Claim:
    """One expected effect of a figure, stated as a number against a threshold (see the module
    docstring for the verdict). ``holds`` is ``verdict == "holds"``; ``reason`` says why a claim
    is undetermined; ``interval`` is the 95 % bootstrap interval of the statistic, where there is one."""

    name: str
    statistic: str
    value: float | None
    threshold: str
    verdict: str
    holds: bool
    note: str = ""
    reason: str = ""
    interval: list[float] | None = None
    evidence: dict = field(default_factory=dict)
    minimum: dict = field(default_factory=dict)


def _finite(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _decide(value, op, bound, interval, evidence, minimum) -> tuple[str, str]:
    short = [f"{k} {evidence.get(k, 0)} < {need}" for k, need in minimum.items() if evidence.get(k, 0) < need]
    if short:
        return "undetermined", "too little evidence: " + ", ".join(short)
    if value is None:
        return "undetermined", "the statistic cannot be computed from these runs"
    if interval is not None:
        lo, hi = interval
        if _OPS[op](lo, bound) and _OPS[op](hi, bound):
            return "holds", ""
        if not _OPS[op](lo, bound) and not _OPS[op](hi, bound):
            return "fails", ""
        return "undetermined", f"the 95% interval [{lo:.4g}, {hi:.4g}] contains the threshold {bound:g}"
    return ("holds" if _OPS[op](value, bound) else "fails"), ""


def check(name: str, statistic: str, value, op: str, bound: float, note: str = "", *,
          interval=None, evidence: dict | None = None, minimum: dict | None = None) -> Claim:
    """A :class:`Claim` for ``value <op> bound`` (op in ``<, <=, >, >=``) with its verdict.

    ``evidence``/``minimum``: counts the claim had and needs (same keys); ``interval``: the
    statistic's ``(lo, hi)`` 95 % interval, or None (then the value decides).
    """
    if op not in _OPS:
        raise ValueError(f"unknown comparison {op!r}; allowed: {list(_OPS)}")
    value = _finite(value)
    evidence, minimum = dict(evidence or {}), dict(minimum or {})
    if interval is not None:
        interval = [float(interval[0]), float(interval[1])]
        if not all(math.isfinite(v) for v in interval):
            interval = None
    verdict, reason = _decide(value, op, float(bound), interval, evidence, minimum)
    return Claim(name, statistic, value, f"{op} {bound:g}", verdict, verdict == "holds", note, reason, interval,
                 evidence, minimum)


def bootstrap_interval(values, stat=np.mean, level: float = 0.95, n_boot: int = 10_000, seed: int = 0):
    """Percentile bootstrap interval of ``stat`` over ``values`` (NaNs dropped): ``(lo, hi)``, or
    None with fewer than :data:`MIN_INTERVAL_VALUES` values. Seeded: the same data give the same
    interval."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < MIN_INTERVAL_VALUES:
        return None
    rng = np.random.default_rng(seed)
    draws = stat(v[rng.integers(0, v.size, size=(n_boot, v.size))], axis=1)
    a = (1.0 - level) / 2
    return float(np.quantile(draws, a)), float(np.quantile(draws, 1 - a))


def write_claims(claims: list[Claim], path, figure: str, **extra) -> None:
    """Write ``{"figure", "claims", "all_hold", "verdicts", **extra}`` atomically; ``verdicts``
    counts the claims of each verdict."""
    counts = {v: sum(c.verdict == v for c in claims) for v in VERDICTS}
    write_json({"figure": figure, "claims": [asdict(c) for c in claims],
                "all_hold": all(c.holds for c in claims), "verdicts": counts, **extra}, path)
