"""A setting's network and loss, checked without torch: eosflow's own architectures (``arch``), a
user's ``factory`` (``"pkg.module:function"`` or ``"path/to/file.py:function"``) or a
``torchvision`` model by name, and the loss: ``ce``, ``mse``, a ``torch.nn`` loss by name (with its
keyword arguments in a mapping) or a ``"pkg.module:function"`` path.

What needs torch (importing the factory, building the network, a forward pass on the data's
shapes, the loss on its output) is checked by ``python -m eosflow check-settings``, which the
workflow runs in a subprocess before any job (:func:`needs_deep_check` says which settings);
:func:`eosflow.jobs.check.check_settings` does the work.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["USER_MODEL_KEYS", "TORCH_NN_LOSSES", "model_loss_problems", "needs_deep_check", "drop_default_init"]

#: The keys a user's network takes (``init: lecun`` re-initialises its Linear/Conv2d layers).
USER_MODEL_KEYS = {"factory": {"factory", "kwargs", "init"}, "torchvision": {"torchvision", "kwargs", "init"}}
#: ``torch.nn`` losses of (output, target) (torch 2.x), accepted by name.
TORCH_NN_LOSSES = ("BCELoss", "BCEWithLogitsLoss", "CrossEntropyLoss", "HingeEmbeddingLoss", "HuberLoss", "KLDivLoss",
                   "L1Loss", "MSELoss", "MultiLabelMarginLoss", "MultiLabelSoftMarginLoss", "MultiMarginLoss",
                   "NLLLoss", "PoissonNLLLoss", "SmoothL1Loss", "SoftMarginLoss")


def _path_problem(value: str, key: str) -> str | None:
    """A ``"pkg.module:name"`` / ``"file.py:name"`` path that cannot be right, without importing it."""
    if ":" not in value:
        return f"config key {key}: {value!r} is not 'pkg.module:function' or 'path/to/file.py:function'"
    mod, _, attr = value.rpartition(":")
    if not attr.isidentifier():
        return f"config key {key}: {attr!r} in {value!r} is not a Python name"
    if mod.endswith(".py"):
        if not Path(mod).is_file():
            return f"config key {key}: no file {mod} (paths are relative to the working directory, {Path.cwd()})"
        return None
    top = mod.split(".")[0]
    if not all(part.isidentifier() for part in mod.split(".")):
        return f"config key {key}: {mod!r} is not a module name (a file is named with its .py path)"
    if importlib.util.find_spec(top) is None:
        return (f"config key {key}: no module {top!r} on the path; install it, add its folder to PYTHONPATH, "
                "or name the file: 'path/to/file.py:function'")
    return None


def _model_problems(name: str, model: dict) -> list[str]:
    key = f"settings.{name}.model"
    kinds = [k for k in ("arch", "factory", "torchvision") if k in model]
    if len(kinds) != 1:
        return [f"config key {key}: give exactly one of arch (mlp, cnn, vgg), factory ('pkg.module:function' or "
                f"'file.py:function') or torchvision (a model name); got {kinds or 'none'}"]
    kind = kinds[0]
    if kind == "arch":
        return [f"config key {key}.kwargs: keyword arguments go with factory or torchvision; arch {model['arch']!r} "
                "takes its keys directly"] if "kwargs" in model else []
    extra = sorted(set(model) - USER_MODEL_KEYS[kind])
    if extra:
        return [f"config key {key}: {extra} do not apply to a {kind} model; allowed keys: {sorted(USER_MODEL_KEYS[kind])}"]
    if kind == "factory":
        p = _path_problem(model["factory"], f"{key}.factory")
        return [p] if p else []
    if not model["torchvision"].isidentifier():
        return [f"config key {key}.torchvision: {model['torchvision']!r} is not a model name (e.g. resnet18)"]
    return []


def _loss_problems(name: str, loss) -> list[str]:
    key = f"settings.{name}.loss"
    kwargs = {}
    if isinstance(loss, dict):
        kwargs = {k: v for k, v in loss.items() if k != "name"}
        loss, key = loss["name"], f"{key}.name"
    if loss in ("ce", "mse"):
        return [f"config key {key}: {loss!r} takes no keyword arguments; got {sorted(kwargs)}"] if kwargs else []
    if ":" in loss:
        p = _path_problem(loss, key)
        return [p] if p else []
    if loss not in TORCH_NN_LOSSES:
        return [f"config key {key}: unknown loss {loss!r}; allowed: 'ce', 'mse', a torch.nn loss "
                f"({', '.join(TORCH_NN_LOSSES)}) or 'pkg.module:function'"]
    return []


def model_loss_problems(cfg: dict, given: dict) -> list[str]:
    """Problems of every setting's ``model`` and ``loss`` keys, each naming the key."""
    problems = []
    for name, s in cfg["settings"].items():
        problems += _model_problems(name, s["model"]) + _loss_problems(name, s["loss"])
    return problems


def drop_default_init(cfg: dict, given: dict) -> None:
    """A user's network keeps its own initialisation unless ``init`` is given: the schema's
    default (``lecun``, for eosflow's nets) is taken out of its ``model`` block."""
    for name, s in cfg["settings"].items():
        written = given.get("settings", {}).get(name, {}).get("model", {})
        if "arch" not in s["model"] and "init" not in written:
            s["model"].pop("init", None)


def needs_deep_check(cfg: dict) -> list[str]:
    """The settings with a user's network, loss or dataset (checked with torch before any job)."""
    out = []
    for name, s in cfg["settings"].items():
        user_loss = not (isinstance(s["loss"], str) and s["loss"] in ("ce", "mse"))
        if "arch" not in s["model"] or user_loss or s["dataset"] not in ("fashion-mnist", "cifar10"):
            out.append(name)
    return out
