"""Shared figure helpers: the figure canvas and the save-and-write tail of every figure function
(the claims themselves: :mod:`eosflow.claims`).

Figures are plain :class:`matplotlib.figure.Figure` objects, not pyplot figures: drawing and
saving need no backend (nothing here sets one), and no figure is left open in a caller's
session.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from ..claims import Claim, write_claims
from ..files import atomic_path


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
