"""The progressive-flattening protocol (fig4, fig6, ext/mse_flattening): its run grid and its checks.

A protocol block (``fig4``, ``fig6``, ``mse_flattening``: the same keys) trains a large η₀ for the
first ``e`` epochs, then ``lr_small`` to a fixed end (``train.max_epochs``), for every η₀, every
switch epoch ``e`` and every seed. η₀ is absolute (``lrs``) or a multiple of each run's own seed's
stability limit η_eos(θ₀) (``lrs_relative``: the sweep's ``x1.4`` run names); ``lr_small`` is always
absolute. ``e = 0`` is the η_small run from the start, the same run for every η₀. Loads without torch
(:func:`eosflow.config.validate_config` calls :func:`flattening_problems`).
"""

from __future__ import annotations

from .experiments import FLATTENING, grid_problems
from .tags import lr_grid, schedule_tag

__all__ = ["FIGURES", "flattening_problems", "flattening_rows", "flattening_title"]

#: The target name of each protocol block's figure.
FIGURES = {"fig4": "fig4", "fig6": "fig6", "mse_flattening": "ext/mse_flattening"}


def flattening_rows(cfg: dict, name: str, run_path) -> list[dict]:
    """The grid of protocol block ``name``: one row ``{lr0, epoch, seed, path}`` per (η₀, e, seed),
    seeds outermost, then η₀, then e (the block's orders). ``lr0`` is η₀, or its multiple of
    η_eos(θ₀) for a relative block; ``path`` is ``run_path(setting, lr, seed, sched, exp)``'s cube
    (``lr`` a number or a path name such as ``0.14`` or ``x1.4``, ``sched`` a schedule tag)."""
    if name not in FLATTENING:
        raise ValueError(f"unknown flattening block {name!r}; allowed: {list(FLATTENING)}")
    c = cfg[name]
    rows = []
    for seed in c["seeds"]:
        for lr0, tag in lr_grid(c):
            for e in c["switch_epochs"]:
                if e == 0:
                    path = run_path(c["setting"], c["lr_small"], seed, "const", name)
                else:
                    sched = schedule_tag({"kind": "switch", "epoch": e, "lr_small": c["lr_small"]})
                    path = run_path(c["setting"], tag, seed, sched, name)
                rows.append({"lr0": lr0, "epoch": e, "seed": seed, "path": path})
    return rows


def flattening_title(cfg: dict, name: str) -> str:
    """The figure's title: its name, the protocol, and the setting it shows (model and loss)."""
    setting = cfg[name]["setting"]
    s = cfg["settings"].get(setting, {})
    loss = {"ce": "cross-entropy", "mse": "MSE"}.get(s.get("loss"), s.get("loss", "?"))
    arch = s.get("model", {}).get("arch", "?")
    return (f"{FIGURES[name]}: progressive flattening, {setting} ({arch.upper()}, {s.get('n_train', '?')} "
            f"{s.get('dataset', '?')} images, {loss} loss)")


def flattening_problems(cfg: dict) -> list[str]:
    """Cross-key problems of every protocol block: its η₀ grid given exactly once (``lrs`` or
    ``lrs_relative``), and every switch epoch before the end of training."""
    problems = []
    for name in FLATTENING:
        block = cfg.get(name)
        if not block:
            continue
        problems += grid_problems(block, name)
        end = {**cfg["train"], **block.get("train", {})}["max_epochs"]
        late = [e for e in block["switch_epochs"] if e >= end]
        if late:
            problems.append(f"config key {name}.switch_epochs: {late} are not before the end of training "
                            f"({name}.train.max_epochs = {end}); switch earlier or train longer")
        if len(set(block["switch_epochs"])) != len(block["switch_epochs"]):
            problems.append(f"config key {name}.switch_epochs: {block['switch_epochs']} repeats a value")
    return problems
