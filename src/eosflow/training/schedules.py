"""Learning-rate schedules and their path-safe names.

``None`` or ``{"kind": "constant"}``: η₀ throughout. ``{"kind": "switch", "epoch": e,
"lr_small": η_small}``: η₀ for steps ``< e``, then η_small (fig2's branches, fig4).
"""

from __future__ import annotations

__all__ = ["lr_at", "schedule_tag", "schedule_from_tag"]


def lr_at(step: int, lr0: float, schedule: dict | None = None) -> float:
    """η at ``step``: constant ``lr0``, or ``{"kind": "switch", "epoch": e, "lr_small": η_small}``
    (``lr0`` for steps ``< e``, then ``η_small``)."""
    if not schedule or schedule.get("kind", "constant") == "constant":
        return lr0
    if schedule["kind"] == "switch":
        return lr0 if step < schedule["epoch"] else schedule["lr_small"]
    raise ValueError(f"unknown schedule kind {schedule['kind']!r}; allowed: ['constant', 'switch']")


def schedule_tag(schedule: dict | None) -> str:
    """Path-safe name of a schedule: ``const`` or ``e{epoch}to{lr_small:g}``."""
    if not schedule or schedule.get("kind", "constant") == "constant":
        return "const"
    return f"e{int(schedule['epoch'])}to{float(schedule['lr_small']):g}"


def schedule_from_tag(tag: str) -> dict:
    """Inverse of :func:`schedule_tag`."""
    if tag == "const":
        return {"kind": "constant"}
    if tag.startswith("e") and "to" in tag:
        epoch, lr_small = tag[1:].split("to", 1)
        return {"kind": "switch", "epoch": int(epoch), "lr_small": float(lr_small)}
    raise ValueError(f"unknown schedule tag {tag!r}; expected 'const' or 'e<epoch>to<lr_small>'")
