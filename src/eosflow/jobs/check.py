"""The checks of a user's setting that need torch, run before any job (``python -m eosflow
check-config --deep``; the workflow runs it in a subprocess for the settings that
:func:`eosflow.config.usercode.needs_deep_check` names): the factory imports and returns an
``nn.Module``, the network runs on the dataset's input shape, its output fits the loss and the
number of classes. Each problem names its config key."""

from __future__ import annotations

import torch

from ..config.usercode import needs_deep_check
from ..losses import resolve_loss
from ..config.datasets import dataset_shape
from ..models import build_model, build_user_model
from ..objective import Objective

__all__ = ["check_settings", "data_shape"]

def data_shape(dataset, data_cfg: dict) -> tuple[tuple[int, ...], int]:
    """``(input shape, number of classes)`` of a setting's dataset, cheaply (no full read:
    :func:`eosflow.config.datasets.dataset_shape`)."""
    shape, n_classes = dataset_shape(dataset, data_cfg)
    return tuple(int(s) for s in shape), int(n_classes)


def check_settings(cfg: dict, names: list[str] | None = None) -> list[str]:
    """Problems of the settings ``names`` (default: those with a user's network, loss or data) of
    a validated config."""
    problems = []
    for name in needs_deep_check(cfg) if names is None else names:
        s = cfg["settings"][name]
        key, ds = f"config key settings.{name}", f"settings.{name}.dataset"
        try:
            shape, n_classes = data_shape(s["dataset"], cfg["data"])
        except Exception as e:  # noqa: BLE001 - every problem is reported with its key
            problems.append(f"{key}.dataset: {e}")
            continue
        try:
            m = dict(s["model"])
            model = (build_model(m, shape, n_classes, seed=0) if "arch" in m
                     else build_user_model(m, shape, n_classes, 0, what=f"{key}.model"))
        except Exception as e:  # noqa: BLE001
            msg = str(e)
            problems.append(msg if msg.startswith(key) else f"{key}.model: {msg}")
            continue
        try:
            loss = resolve_loss(s["loss"], what=f"{key}.loss")
        except Exception as e:  # noqa: BLE001
            problems.append(str(e))
            continue
        b = max(2, n_classes)  # every label once
        x = torch.zeros((b, *shape))
        y = torch.arange(b) % n_classes
        try:
            with torch.no_grad():
                out = model.eval()(x)
        except Exception as e:  # noqa: BLE001
            problems.append(f"{key}.model: the network does not run on the inputs of {ds} (shape {shape}): "
                            f"{type(e).__name__}: {e}")
            continue
        if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != b:
            problems.append(f"{key}.model: the network returns {type(out).__name__} "
                            f"{tuple(out.shape) if isinstance(out, torch.Tensor) else ''}; expected one tensor "
                            f"with a row per example")
            continue
        if loss.function is None and out.shape[-1] != n_classes:  # eosflow's and torch.nn's losses
            problems.append(f"{key}.model: the network has {out.shape[-1]} outputs but {ds} has {n_classes} "
                            "classes (a factory may take n_classes / num_classes)")
            continue
        try:
            Objective(model, x, y, loss, check_data=False)
        except Exception as e:  # noqa: BLE001
            msg = str(e)
            problems.append(f"{key}.loss: " + msg[6:] if msg.startswith("loss:") else f"{key}: {msg}")
    return problems
