"""``decide``: per-seed values in, a verdict with its interval and the seeds that would decide it out.

The one entry every figure's claims go through (by way of :mod:`eosflow.claims.registry`), and one a
user can call on their own numbers::

    >>> from eosflow.claims import decide
    >>> d = decide([-0.9, -1.0, -0.8, -0.95, -0.7, -0.85], "<", 0)   # six seeds, sign test
    >>> d.verdict, d.interval
    ('holds', (-1.0, -0.7))
    >>> d = decide([-0.9, -1.0, -0.8], "<", 0)                       # three seeds cannot decide
    >>> d.verdict, d.needed
    ('undetermined', 12)

A verdict is ``holds`` when the kind's one-sided test rejects "the statistic is on the other side of
the bound" at :data:`~eosflow.claims.procedures.ALPHA`, ``fails`` when the test in the opposite
direction rejects "the statistic is on the claim's side", and ``undetermined`` otherwise (then
``needed`` says how many seeds would decide it at the observed effect and spread, or that more seeds do
not help). No torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from . import procedures as P

__all__ = ["Decision", "decide", "decide_family", "FAMILY_RULES"]

INTERVAL_KIND = {"mean": "confidence", "paired": "confidence", "median": "confidence", "rank": "null band",
                 "exact": None}
PROCEDURE = {
    "mean": "exact sign-flip test of the mean (Hartigan interval)",
    "paired": "exact sign-flip test of the mean paired difference (Hartigan interval)",
    "median": "sign test of the median (order-statistic interval)",
    "rank": "stratified permutation test of the mean per-block Spearman correlation (null band)",
    "exact": "a deterministic value against its bound",
}


@dataclass(frozen=True)
class Decision:
    """What :func:`decide` returns. ``value``: the statistic (mean, median or mean correlation of the
    values); ``interval``: its 95 % interval (``interval_kind`` "confidence"), or for ``rank`` the
    null's central 95 % band ("null band"), None where the seeds cannot give one; ``p_holds`` and
    ``p_fails``: the one-sided p-values toward each verdict; ``needed``: for an undetermined claim,
    the seeds that would decide it (None when it is decided, or when more seeds do not help:
    ``needed_note`` says which)."""

    verdict: str
    value: float | None
    interval: tuple[float, float] | None
    needed: int | None
    kind: str
    op: str
    bound: float
    n: int
    p_holds: float | None = None
    p_fails: float | None = None
    interval_kind: str | None = None
    procedure: str = ""
    reason: str = ""
    needed_note: str = ""
    values: tuple = field(default=())

    @property
    def holds(self) -> bool:
        return self.verdict == "holds"


def _clean(values, keep_infinite: bool = False) -> np.ndarray:
    """The values as floats, None and NaN dropped (and ±inf too, unless ``keep_infinite``: a sign test
    counts an infinite value on its side)."""
    v = np.asarray([np.nan if x is None else x for x in np.ravel(np.asarray(values, dtype=object))],
                   dtype=np.float64)
    return v[~np.isnan(v)] if keep_infinite else v[np.isfinite(v)]


def _test(kind: str, v: np.ndarray, bound: float, sizes, alpha: float) -> dict:
    if kind in ("mean", "paired"):
        return P.signflip(v, bound, alpha)
    if kind == "median":
        return P.sign_test(v, bound, alpha)
    if kind == "rank":
        if bound != 0:
            raise ValueError("a rank claim tests correlations against 0 (its null); bound must be 0")
        return P.rank_test(v, sizes, alpha)
    raise ValueError(f"unknown kind {kind!r}; allowed: {list(P.KINDS)}")


def _effect(kind: str, v: np.ndarray, bound: float, sizes, op: str) -> tuple[float, dict]:
    """The observed effect toward whichever verdict the data lean to, in :func:`procedures.power`'s
    units, and the power model's keywords."""
    if kind in ("mean", "paired"):
        dev = abs(float(v.mean()) - bound)
        sd = float(v.std(ddof=1)) if v.size > 1 else math.nan
        if dev == 0:
            return 0.0, {}
        return (math.inf if sd == 0 else dev / sd), {}
    if kind == "median":
        # the seeds on the claim's side counted as the sign test counts them (a value at the bound
        # meets ``>=``/``<=``, not ``>``/``<``); shrunk toward 1/2: 3 of 3 is not certainty
        k = int(P.meets(v, op, bound).sum())
        return (max(k, v.size - k) + 0.5) / (v.size + 1.0), {}
    spread = float(v.std(ddof=1)) if v.size > 1 else None
    return abs(float(v.mean())), {"block_size": int(round(np.mean(list(sizes)))), "spread": spread}


def decide(values, op: str, bound: float, kind: str = "median", *, sizes=None, minimum: int = 1,
           seeds: int | None = None, alpha: float = P.ALPHA) -> Decision:
    """Decide ``statistic(values) <op> bound`` from per-seed values (NaN/None dropped).

    ``kind``: ``mean``, ``paired``, ``median``, ``rank`` or ``exact`` (:mod:`eosflow.claims.procedures`
    for each test). The default, ``median`` (the sign test), is exact whatever the values' distribution;
    ``mean`` and ``paired`` assume values symmetric about the bound under the null (true of paired
    differences, not of a skewed statistic). ``sizes``: for ``rank``, each block's number of runs (``values`` are then per-block
    Spearman correlations). ``minimum``: the fewest values a verdict needs (short of it:
    ``undetermined``, ``needed`` = minimum). ``seeds``: how many seeds the values come from when it is
    not one value per seed (``rank`` with several blocks per seed; ``needed`` counts seeds). ``alpha``:
    the one-sided level of each verdict (a family's options are decided at a corrected level)."""
    P.success_side(op)
    if kind not in P.KINDS:
        raise ValueError(f"unknown kind {kind!r}; allowed: {list(P.KINDS)}")
    raw = list(np.ravel(np.asarray(values, dtype=object)))
    if kind == "rank":
        if sizes is None or len(sizes) != len(raw):
            raise ValueError("a rank claim needs sizes: one number of runs per correlation")
        keep = [i for i, x in enumerate(raw) if x is not None and math.isfinite(float(x))]
        v, sizes = np.array([float(raw[i]) for i in keep]), [int(sizes[i]) for i in keep]
    else:
        v = _clean(raw, keep_infinite=kind in ("median", "exact"))
    n = int(v.size)
    base = dict(kind=kind, op=op, bound=float(bound), n=n, interval_kind=INTERVAL_KIND[kind],
                procedure=PROCEDURE[kind], values=tuple(float(x) for x in v))
    if kind == "exact":
        if n != 1:
            return Decision("undetermined", None, None, None, reason=f"an exact claim needs one value, had {n}",
                            **base)
        return Decision("holds" if P.meets(v[0], op, bound) else "fails", float(v[0]), None, None, **base)
    value = None if n == 0 else float(np.median(v) if kind == "median" else np.mean(v))
    if n < max(minimum, 1):
        return Decision("undetermined", value, None, max(minimum, 1), needed_note=f"at least {minimum} seeds",
                        reason=f"too little evidence: {n} values < {minimum}", **base)
    t = _test(kind, v, float(bound), sizes, alpha)
    up = P.success_side(op) > 0
    p_holds = float((t["p_above"] if up else t["p_below"])[0])
    p_fails = float((t["p_below"] if up else t["p_above"])[0])
    if kind == "median":  # the sign test counts a value at the bound as the comparison says
        p_holds, p_fails = P.sign_test_op(v, op, float(bound))
    lo, hi = float(t["lo"][0]), float(t["hi"][0])
    interval = (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None
    base.update(p_holds=p_holds, p_fails=p_fails)
    if p_holds <= alpha:
        return Decision("holds", value, interval, None, **base)
    if p_fails <= alpha:
        return Decision("fails", value, interval, None, **base)
    needed, note = needed_for(kind, v, float(bound), sizes, seeds or n, alpha, op=op)
    reason = (f"{n} seeds cannot reach a one-sided {alpha:.3g} with the {kind} test (smallest p = 2^-{n})"
              if n < P.min_deciding_seeds(kind, alpha) else
              f"p = {min(p_holds, p_fails):.3g} toward {'holds' if p_holds < p_fails else 'fails'}, "
              f"above {alpha:.3g}")
    return Decision("undetermined", value, interval, needed, reason=reason, needed_note=note, **base)


def needed_for(kind: str, v: np.ndarray, bound: float, sizes, have_seeds: int,
               alpha: float = P.ALPHA, *, op: str = ">") -> tuple[int | None, str]:
    """(seeds, why): the seeds at which ``kind`` would decide values like ``v`` (claim ``<op> bound``)
    at level ``alpha`` with 80 % power (:func:`procedures.needed_seeds`), or None with the reason.
    ``sizes`` (rank) are filtered with ``v`` when they pair with it."""
    v = np.asarray(v, dtype=np.float64)
    keep = ~np.isnan(v) if kind == "median" else np.isfinite(v)
    if sizes is not None and len(sizes) == v.size:
        sizes = [int(s) for s, k in zip(sizes, keep) if k]
    v = v[keep]
    if v.size == 0:
        return None, "no value"
    effect, kw = _effect(kind, v, bound, sizes, op)
    if kind == "rank" and v.size != have_seeds:
        kw["blocks_per_seed"] = max(1, round(v.size / have_seeds))
    if kind in ("mean", "paired") and not math.isfinite(effect) and v.size < 2:
        return None, "one value: its spread is unknown"
    n = P.needed_seeds(kind, effect, have_seeds, alpha=alpha, **kw)
    if n is None:
        return None, f"more seeds do not help: the observed effect is nil at this spread (> {P.MAX_SEEDS} seeds)"
    return n, f"{n} seeds decide it with {P.POWER:.0%} power at the observed effect and spread"


#: How a family of options is decided (``correction`` in the registry).
FAMILY_RULES = {
    "some": "holds when some option holds after Holm's correction over the options (its first step: the "
            "smallest p_holds <= alpha / options); fails when every option fails (an intersection: no "
            "correction)",
    "every": "holds when every option holds (an intersection: no correction); fails when some option "
             "fails after Holm's correction (the smallest p_fails <= alpha / options)",
}


def decide_family(decisions: dict, rule: str) -> tuple[str, object, str]:
    """Combine per-option decisions (``{option: Decision}``) under ``rule`` ("some" or "every",
    :data:`FAMILY_RULES`): (verdict, the deciding option, why)."""
    if rule not in FAMILY_RULES:
        raise ValueError(f"unknown family rule {rule!r}; allowed: {list(FAMILY_RULES)}")
    m = len(decisions)
    if m == 0:
        return "undetermined", None, "no option had values"
    if all(d.kind == "exact" for d in decisions.values()):
        # no p-values: an exact option is decided by its one value (p 0 or 1: no error to correct)
        ph = {k: 0.0 if d.holds else 1.0 for k, d in decisions.items()}
        pf = {k: 0.0 if d.verdict == "fails" else 1.0 for k, d in decisions.items()}
    else:
        ph = {k: (d.p_holds if d.p_holds is not None else 1.0) for k, d in decisions.items()}
        pf = {k: (d.p_fails if d.p_fails is not None else 1.0) for k, d in decisions.items()}
    if rule == "some":
        best = min(ph, key=ph.get)
        if ph[best] <= P.ALPHA / m:
            return "holds", best, f"option {best} holds at alpha/{m} (Holm)"
        if all(d.verdict == "fails" for d in decisions.values()):
            return "fails", max(pf, key=pf.get), "every option fails"
        return "undetermined", best, f"no option holds at alpha/{m} (Holm), and not every option fails"
    worst = min(pf, key=pf.get)
    if pf[worst] <= P.ALPHA / m:
        return "fails", worst, f"option {worst} fails at alpha/{m} (Holm)"
    if all(d.holds for d in decisions.values()):
        return "holds", max(ph, key=ph.get), "every option holds"
    undecided = max(ph, key=ph.get)
    return "undetermined", undecided, f"option {undecided} does not hold, and none fails at alpha/{m} (Holm)"
