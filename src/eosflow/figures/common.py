"""Shared figure helpers: the figure canvas, the claims JSON beside every figure, and the
save-and-write tail of every figure function.

Figures are plain :class:`matplotlib.figure.Figure` objects, not pyplot figures: drawing and
saving need no backend (nothing here sets one), and no figure is left open in a caller's
session.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from matplotlib.figure import Figure

from ..files import atomic_path, write_json


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


def new_figure(**kwargs) -> Figure:
    """A figure for the figure functions (keyword arguments: :class:`~matplotlib.figure.Figure`'s)."""
    return Figure(**kwargs)


def save_figure(fig, *paths) -> None:
    """Save a matplotlib figure to each path (format from the suffix), atomically."""
    for p in paths:
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=Path(p).suffix.lstrip("."), bbox_inches="tight", dpi=150)


def finish(fig, claims: list[Claim], pdf_path, png_path, claims_path, figure: str, keep_open: bool = False,
           **extra):
    """The tail of every figure function: save the PDF and PNG, write the claims JSON (with
    ``extra`` entries); return the claims, and the figure too with ``keep_open`` (for tests)."""
    save_figure(fig, pdf_path, png_path)
    write_claims(claims, claims_path, figure, **extra)
    return (claims, fig) if keep_open else claims
