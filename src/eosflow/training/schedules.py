"""Learning-rate schedules (their path names: :func:`eosflow.config.tags.schedule_tag`).

``None`` or ``{"kind": "constant"}``: η₀ throughout. ``{"kind": "switch", "epoch": e,
"lr_small": η_small}``: η₀ for steps ``< e``, then η_small (fig2's branches, fig4).
"""

from __future__ import annotations

__all__ = ["lr_at"]


def lr_at(step: int, lr0: float, schedule: dict | None = None) -> float:
    """η at ``step``: constant ``lr0``, or ``{"kind": "switch", "epoch": e, "lr_small": η_small}``
    (``lr0`` for steps ``< e``, then ``η_small``)."""
    if not schedule or schedule.get("kind", "constant") == "constant":
        return lr0
    if schedule["kind"] == "switch":
        return lr0 if step < schedule["epoch"] else schedule["lr_small"]
    raise ValueError(f"unknown schedule kind {schedule['kind']!r}; allowed: ['constant', 'switch']")
