"""Where a setting's dataset comes from, checked without torch: fashion-mnist, cifar10, a
torchvision dataset by name, an ImageFolder folder or an ``.npz`` file (filled in by the data
sources work)."""

from __future__ import annotations

__all__ = ["dataset_problems"]


def dataset_problems(cfg: dict) -> list[str]:
    """Problems of every setting's ``dataset`` key, each naming the key."""
    problems = []
    for name, s in cfg["settings"].items():
        if s["dataset"] not in ("fashion-mnist", "cifar10"):
            problems.append(f"config key settings.{name}.dataset: {s['dataset']!r} is not allowed; "
                            "allowed values: ['fashion-mnist', 'cifar10']")
    return problems
