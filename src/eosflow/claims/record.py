"""A claim as it is written: one expected effect of a figure, its statistic, the per-seed values it
was decided on, the decision (:mod:`eosflow.claims.decision`) and where it comes from in the registry
(:mod:`eosflow.claims.registry`); and the claims file of a figure. No torch here."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ..files import write_json

__all__ = ["VERDICTS", "Claim", "write_claims"]

VERDICTS = ("holds", "fails", "undetermined")


@dataclass
class Claim:
    """One claim with its verdict. ``id``: its registry entry; ``values``: the per-seed (or per-block)
    values the verdict was decided on; ``interval``: a 95 % interval of the statistic (``interval_kind``
    "confidence"), or the null's 95 % band ("null band", rank claims), None where the seeds cannot give
    one; ``needed``: the seeds that would decide an undetermined claim (``needed_note`` says how, or that
    more seeds do not help); ``family``: for a claim over options (some c, every eta_0), the rule and
    every option's decision. ``holds`` is ``verdict == "holds"``; ``reason`` says why a claim is
    undetermined."""

    id: str
    name: str
    statistic: str
    value: float | None
    threshold: str
    verdict: str
    holds: bool
    kind: str
    procedure: str
    interval: list[float] | None = None
    interval_kind: str | None = None
    p_holds: float | None = None
    p_fails: float | None = None
    needed: int | None = None
    needed_note: str = ""
    values: list[float] = field(default_factory=list)
    evidence: dict = field(default_factory=dict)
    minimum: dict = field(default_factory=dict)
    family: dict | None = None
    note: str = ""
    reason: str = ""


def _safe(x):
    if isinstance(x, dict):
        return {k: _safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_claims(claims: list[Claim], path, figure: str, **extra) -> None:
    """Write ``{"figure", "registry", "claims", "all_hold", "verdicts", "families", **extra}`` atomically:
    ``registry`` is the registry's version and hash, ``verdicts`` counts the claims of each verdict,
    ``families`` lists the claims decided over options with their rule."""
    from .registry import REGISTRY

    counts = {v: sum(c.verdict == v for c in claims) for v in VERDICTS}
    rows = [asdict(c) for c in claims]
    for r in rows:  # a sign test counts infinite values (a diverged run's side): kept as "inf" / "-inf"
        r["values"] = [v if math.isfinite(v) else ("inf" if v > 0 else "-inf") for v in r["values"]]
    families = {c.name: {"rule": c.family["rule"], "correction": c.family["correction"],
                         "options": list(c.family["options"])} for c in claims if c.family}
    write_json(_safe({"figure": figure, "registry": {"version": REGISTRY.version, "hash": REGISTRY.hash},
                      "claims": rows, "all_hold": all(c.holds for c in claims),
                      "verdicts": counts, "families": families, **extra}), path)
