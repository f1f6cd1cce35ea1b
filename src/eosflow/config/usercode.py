"""A setting's network and loss, checked without torch: eosflow's own architectures, a user's
factory or a torchvision model, and the loss by name, with keyword arguments or as a function."""

from __future__ import annotations

__all__ = ["model_loss_problems"]


def model_loss_problems(cfg: dict, given: dict) -> list[str]:
    """Problems of every setting's ``model`` and ``loss`` keys, each naming the key."""
    problems = []
    for name, s in cfg["settings"].items():
        if "arch" not in s["model"]:
            problems.append(f"config key settings.{name}.model: needs arch (mlp, cnn or vgg)")
        if s["loss"] not in ("ce", "mse"):
            problems.append(f"config key settings.{name}.loss: {s['loss']!r} is not allowed; allowed values: ['ce', 'mse']")
    return problems
