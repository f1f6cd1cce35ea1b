"""Shared figure helpers: the claims JSON beside every figure, and saving PDF + PNG atomically."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ..io import atomic_path, write_json


@dataclass
class Claim:
    """One expected effect of a figure, stated as a number against a threshold.

    ``holds`` is computed by the caller from ``value`` and the threshold; a claim that does not
    hold is reported as such (``holds: false``), never tuned away. ``value`` may be ``None``
    when the statistic cannot be computed (then ``holds`` is false and ``note`` says why).
    """

    name: str
    statistic: str
    value: float | None
    threshold: str
    holds: bool
    note: str = ""


def check(name: str, statistic: str, value, op: str, bound: float, note: str = "") -> Claim:
    """Build a :class:`Claim` for ``value <op> bound`` with op in ``<, <=, >, >=``."""
    ops = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__}
    ok = value is not None and math.isfinite(float(value)) and ops[op](float(value), float(bound))
    value = None if value is None or not math.isfinite(float(value)) else float(value)
    return Claim(name, statistic, value, f"{op} {bound:g}", bool(ok), note)


def write_claims(claims: list[Claim], path, figure: str, **extra) -> None:
    """Write ``{"figure": ..., "claims": [...], "all_hold": ..., **extra}`` atomically."""
    write_json({"figure": figure, "claims": [asdict(c) for c in claims],
                "all_hold": all(c.holds for c in claims), **extra}, path)


def save_figure(fig, *paths) -> None:
    """Save a matplotlib figure to each path (format from the suffix), atomically."""
    for p in paths:
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=Path(p).suffix.lstrip("."), bbox_inches="tight", dpi=150)
