"""A claim as it is written: one expected effect of a figure, its statistic, the per-seed values it
was decided on, the decision (:mod:`eosflow.claims.decision`) and where it comes from in the registry
(:mod:`eosflow.claims.registry`, which also writes a figure's claims file). No torch here."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["VERDICTS", "Claim"]

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
