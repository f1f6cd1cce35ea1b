"""Path tags: how a run's learning rate, schedule and optimizer are written in its path (and so in
the workflow's wildcards), and how each is read back. Every tag is defined here once, with the
regular expression its wildcard is constrained to (:data:`WILDCARDS`); ``parse(format(x)) == x``
for each kind (tested).

- learning rate: ``0.14`` (η₀ itself) or ``x1.4`` (a multiple of the stability limit η_eos);
- schedule: ``const`` or ``e<epoch>to<η_small>`` (η₀ before the epoch, then η_small);
- optimizer: ``<optimizer>[_c<clip>][_m<β₁>][_b<batch>]`` (``gd``, ``sgd_b50``, ``adam_m0.9_b64``).

Numbers are written in ``{:g}`` form (six significant digits), so a path never depends on a
float's repr.
"""

from __future__ import annotations

__all__ = ["OPTIMIZERS", "WILDCARDS", "number_tag", "lr_tag", "relative_tag", "parse_lr_tag", "lr_grid",
           "sweep_lr_tags", "schedule_tag", "schedule_from_tag", "opt_tag", "parse_opt_tag"]

#: The optimizers a run may name (:mod:`eosflow.training.optimizers` implements them).
OPTIMIZERS = ("gd", "sgd", "adam", "rmsprop", "clipped_adam", "clipped_rmsprop")

_NUMBER = r"[0-9][0-9.e+-]*"
#: The regular expression of each wildcard that carries a tag (or a seed), for ``wildcard_constraints``.
WILDCARDS = {
    "lr": rf"x?{_NUMBER}",
    "sched": rf"const|e\d+to{_NUMBER}",
    "opt": rf"({'|'.join(OPTIMIZERS)})(_[cmb]{_NUMBER})*",
    "seed": r"\d+",
    "setting": r"[A-Za-z][A-Za-z0-9_]*",
}


def number_tag(x) -> str:
    """A number as every tag writes it: ``f"{float(x):g}"``."""
    return f"{float(x):g}"


def lr_tag(lr) -> str:
    """The canonical string of a learning rate in paths and wildcards: ``f"{float(lr):g}"``."""
    return number_tag(lr)


def relative_tag(ratio) -> str:
    """The path name of an η given as a multiple of the stability limit: ``x{ratio:g}``."""
    return "x" + number_tag(ratio)


def parse_lr_tag(tag: str) -> tuple[float, bool]:
    """``(value, relative)`` of a path's learning rate: ``"0.1"`` → ``(0.1, False)``,
    ``"x0.5"`` (0.5 × η_eos) → ``(0.5, True)``."""
    relative = tag.startswith("x")
    return float(tag[1:] if relative else tag), relative


def lr_grid(block: dict) -> list[tuple[float, str]]:
    """``(value, path name)`` of a block's η grid in grid order: relative (``lrs_relative``: ``x1.4``)
    or absolute (``lrs``: ``0.14``)."""
    if block.get("lrs_relative") is not None:
        return [(float(r), relative_tag(r)) for r in block["lrs_relative"]]
    return [(float(v), lr_tag(v)) for v in block["lrs"]]


def sweep_lr_tags(block: dict) -> list[str]:
    """The path names of a sweep's η grid (``lrs`` or ``lrs_relative``) in grid order."""
    return [tag for _, tag in lr_grid(block)]


def schedule_tag(schedule: dict | None) -> str:
    """Path-safe name of a schedule: ``const`` or ``e{epoch}to{lr_small:g}``."""
    if not schedule or schedule.get("kind", "constant") == "constant":
        return "const"
    return f"e{int(schedule['epoch'])}to{number_tag(schedule['lr_small'])}"


def schedule_from_tag(tag: str) -> dict:
    """Inverse of :func:`schedule_tag`."""
    if tag == "const":
        return {"kind": "constant"}
    if tag.startswith("e") and "to" in tag:
        epoch, lr_small = tag[1:].split("to", 1)
        return {"kind": "switch", "epoch": int(epoch), "lr_small": float(lr_small)}
    raise ValueError(f"unknown schedule tag {tag!r}; expected 'const' or 'e<epoch>to<lr_small>'")


def opt_tag(optimizer: str, batch_size: int | None = None, beta1: float | None = None,
            clip: float | None = None) -> str:
    """Path name of an optimizer: ``<optimizer>[_c<clip>][_m<β₁>][_b<batch>]`` (β₁ for ``adam`` and
    ``clipped_adam`` only; no batch: full batch). Numbers in ``{:g}`` form."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; allowed: {list(OPTIMIZERS)}")
    tag = optimizer
    if clip is not None:
        tag += "_c" + number_tag(clip)
    if optimizer in ("adam", "clipped_adam"):
        tag += "_m" + number_tag(0.9 if beta1 is None else beta1)
    if batch_size is not None:
        tag += f"_b{int(batch_size)}"
    return tag


def parse_opt_tag(tag: str) -> dict:
    """Inverse of :func:`opt_tag`: the ``train`` keys it sets (``beta1`` only where it applies)."""
    name = next((o for o in sorted(OPTIMIZERS, key=len, reverse=True) if tag == o or tag.startswith(o + "_")), None)
    if name is None:
        raise ValueError(f"unknown optimizer tag {tag!r}; expected <optimizer>[_c<clip>][_m<beta1>][_b<batch>] "
                         f"with optimizer in {list(OPTIMIZERS)}")
    out = {"optimizer": name, "batch_size": None, "clip": None}
    for part in filter(None, tag[len(name):].split("_")):
        key, value = part[0], part[1:]
        try:
            if key == "c":
                out["clip"] = float(value)
            elif key == "m":
                out["beta1"] = float(value)
            elif key == "b":
                out["batch_size"] = int(value)
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"optimizer tag {tag!r}: cannot read {part!r}") from None
    return out
