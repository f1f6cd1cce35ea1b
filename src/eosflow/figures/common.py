"""Shared figure helpers: the figure canvas and the save-and-write tail of every figure function
(the claims themselves: :mod:`eosflow.claims`).

Figures are plain :class:`matplotlib.figure.Figure` objects, not pyplot figures: drawing and
saving need no backend (nothing here sets one), and no figure is left open in a caller's
session.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ..claims import Claim, write_claims
from ..files import atomic_path


def new_figure(**kwargs) -> Figure:
    """A figure for the figure functions (keyword arguments: :class:`~matplotlib.figure.Figure`'s)."""
    return Figure(**kwargs)


def log_axis(axis) -> None:
    """Log ticks at 1, 2, 5 × 10^k labelled plainly (``0.02``, not ``2×10⁻²``), no minor labels."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


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
