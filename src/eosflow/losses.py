"""The loss an objective averages: eosflow's own (``"ce"``, ``"mse"``), any ``torch.nn`` loss, or a
user's function, and how its average over a whole dataset is made exact from batches.

:func:`resolve_loss` turns what a user gives (a name, a ``{name: ..., kwargs}`` mapping, a
``"pkg.module:function"`` path, an ``nn.Module`` or a callable) into a :class:`Loss`, whose
:meth:`Loss.chunk` returns a batch's **summed** loss and its **denominator**: the dataset's loss is
``Σ sums / Σ denominators`` over all batches, which equals the loss module (``reduction="mean"``)
applied to the whole dataset at once:

- ``CrossEntropyLoss`` / ``NLLLoss`` with class indices: the denominator is the sum of the class
  weights of the targets that are not ``ignore_index`` (the batch size without weights);
- ``KLDivLoss(reduction="batchmean")``: the batch size;
- every other ``torch.nn`` loss with ``reduction="mean"`` (or ``"none"``): the number of loss
  elements (``MSELoss`` averages over examples *and* outputs);
- ``reduction="sum"``: the dataset's loss is the plain sum (denominator 1 for the whole dataset);
- a function ``f(output, target)``: per-example losses ``(B,)`` are summed over the batch, a scalar
  is read as the batch's mean (times ``B``); the denominator is the number of examples.

Integer class labels meet an output of shape ``(B, C)`` as one-hot targets for the losses that
compare tensors of the output's shape (:data:`ONE_HOT_LOSSES`: ``MSELoss``, ``BCEWithLogitsLoss``…).
eosflow's ``"mse"`` is Cohen et al.'s ``½ Σ_c (f_c − onehot(y)_c)²`` per example, averaged over
examples (not ``MSELoss``, which averages over outputs too and has no ½).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Loss", "resolve_loss", "load_object", "source_hash", "BUILTIN_LOSSES", "ONE_HOT_LOSSES"]

#: eosflow's own losses (per example: cross-entropy; ``½ Σ_c (f_c − onehot(y)_c)²``).
BUILTIN_LOSSES = ("ce", "mse")
#: ``torch.nn`` losses whose target has the output's shape: integer labels become one-hot for them.
ONE_HOT_LOSSES = ("MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "BCELoss", "BCEWithLogitsLoss",
                  "SoftMarginLoss", "MultiLabelSoftMarginLoss", "KLDivLoss", "PoissonNLLLoss")
_INDEX_TARGET = (nn.CrossEntropyLoss, nn.NLLLoss)


def _builtin_per_example(name: str, out: Tensor, y: Tensor) -> Tensor:
    if name == "ce":
        return F.cross_entropy(out, y, reduction="none")
    target = F.one_hot(y, out.shape[-1]).to(out.dtype)
    return 0.5 * ((out - target) ** 2).sum(-1)


def load_object(path: str, what: str = "loss"):
    """The object ``"pkg.module:name"`` (importable) or ``"path/to/file.py:name"`` (a file,
    relative to the working directory). Errors name ``what`` (the argument or config key)."""
    if ":" not in path:
        raise ValueError(f"{what}: {path!r} is not 'pkg.module:name' or 'path/to/file.py:name'")
    mod_path, _, attr = path.rpartition(":")
    if not attr.isidentifier():
        raise ValueError(f"{what}: {attr!r} in {path!r} is not a Python name")
    if mod_path.endswith(".py"):
        file = Path(mod_path)
        if not file.is_file():
            raise ValueError(f"{what}: no file {file} (relative to {Path.cwd()})")
        name = f"eosflow_user_{hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:12]}"
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as e:
                del sys.modules[name]
                raise ValueError(f"{what}: importing {file} failed: {type(e).__name__}: {e}") from e
    else:
        try:
            module = importlib.import_module(mod_path)
        except Exception as e:
            raise ValueError(f"{what}: cannot import {mod_path!r} ({type(e).__name__}: {e}); is it installed, "
                             "or on PYTHONPATH? A file is named with its .py path") from e
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"{what}: {mod_path} has no {attr!r}") from None


def source_hash(obj) -> str | None:
    """sha256 (16 hex) of the source file that defines ``obj`` (None where there is none)."""
    try:
        file = inspect.getsourcefile(obj)
    except TypeError:
        return None
    if not file or not Path(file).is_file():
        return None
    return hashlib.sha256(Path(file).read_bytes()).hexdigest()[:16]


def qualified_name(obj) -> str:
    mod = getattr(obj, "__module__", None) or type(obj).__module__
    return f"{mod}:{getattr(obj, '__qualname__', type(obj).__qualname__)}"


class Loss:
    """A loss with exact dataset averaging; see the module docstring. ``name``: a short label for
    records; ``builtin``: ``"ce"``/``"mse"`` or None; ``record()``: what a cube stores about it."""

    def __init__(self, fn: str | nn.Module | Callable, name: str, what: str = "loss", origin: dict | None = None):
        self.what = what
        self.builtin = fn if isinstance(fn, str) else None
        self.module = fn if isinstance(fn, nn.Module) else None
        self.function = fn if self.builtin is None and self.module is None else None
        self.name = name
        self.origin = origin or {}
        self.reduction = getattr(self.module, "reduction", "mean") if self.module is not None else "mean"
        if self.module is not None:
            if self.reduction not in ("mean", "sum", "none", "batchmean"):
                raise ValueError(f"{what}: {name} has reduction {self.reduction!r}; use 'mean' or 'sum'")
            self._none = copy.copy(self.module)
            self._none.reduction = "none"
        #: the dataset's loss is the plain sum over examples (``reduction="sum"``)
        self.is_sum = self.reduction == "sum"

    def record(self) -> dict:
        return {"name": self.name, **self.origin}

    def _target(self, out: Tensor, y: Tensor) -> Tensor:
        if (self.module is not None and type(self.module).__name__ in ONE_HOT_LOSSES and out.dim() == 2
                and y.dim() == 1 and not y.is_floating_point()):
            return F.one_hot(y, out.shape[-1]).to(out.dtype)
        return y

    def chunk(self, out: Tensor, y: Tensor) -> tuple[Tensor, Tensor | float]:
        """``(summed loss, denominator)`` of a batch (see the module docstring)."""
        b = out.shape[0]
        if self.builtin is not None:
            return _builtin_per_example(self.builtin, out, y).sum(), float(b)
        if self.module is not None:
            t = self._target(out, y)
            vals = self._none(out, t)
            total = vals.sum()
            if self.is_sum:
                return total, 0.0
            if isinstance(self.module, _INDEX_TARGET) and not t.is_floating_point():
                mask = (t != self.module.ignore_index)
                w = self.module.weight
                den = mask.sum() if w is None else (w.to(out.dtype)[t.clamp(min=0)] * mask).sum()
                return total, den
            if self.reduction == "batchmean":
                return total, float(b)
            return total, float(vals.numel())
        val = self.function(out, y)
        if not isinstance(val, Tensor):
            raise TypeError(f"{self.what}: {self.name} returned {type(val).__name__}; expected a tensor "
                            f"(per-example losses of shape ({b},) or their mean)")
        if val.dim() == 0:
            return val * b, float(b)
        if val.shape == (b,):
            return val.sum(), float(b)
        raise ValueError(f"{self.what}: {self.name} returned shape {tuple(val.shape)} for a batch of {b}; "
                         f"expected per-example losses of shape ({b},) or their mean (a scalar)")

    def __repr__(self) -> str:
        return f"Loss({self.name})"


def resolve_loss(loss, what: str = "loss") -> Loss:
    """A :class:`Loss` from ``"ce"`` / ``"mse"``, a ``torch.nn`` loss class name (``"HuberLoss"``),
    a mapping ``{"name": <that or a path>, **kwargs}``, a path ``"pkg.module:function"`` or
    ``"file.py:function"`` (a function of (output, target), or an ``nn.Module`` class, built with
    the kwargs), an ``nn.Module`` instance, or any callable ``(output, target) -> loss``.
    Errors name ``what`` (the argument or config key) and what is allowed."""
    if isinstance(loss, Loss):
        return loss
    kwargs: dict = {}
    if isinstance(loss, dict):
        if "name" not in loss:
            raise ValueError(f"{what}: a mapping needs 'name' (e.g. {{name: CrossEntropyLoss, label_smoothing: 0.1}})")
        kwargs = {k: v for k, v in loss.items() if k != "name"}
        loss = loss["name"]
    if isinstance(loss, str):
        if loss in BUILTIN_LOSSES:
            if kwargs:
                raise ValueError(f"{what}: {loss!r} takes no keyword arguments; got {sorted(kwargs)}")
            return Loss(loss, loss, what)
        if ":" in loss:
            obj = load_object(loss, what)
            origin = {"path": loss, "qualname": qualified_name(obj), "source_sha256": source_hash(obj)}
            if isinstance(obj, type) and issubclass(obj, nn.Module):
                return _module_loss(_construct(obj, kwargs, what), what, origin)
            if not callable(obj):
                raise ValueError(f"{what}: {loss} is a {type(obj).__name__}, not a function or nn.Module class")
            if kwargs:
                fn = obj
                obj = lambda out, y: fn(out, y, **kwargs)  # noqa: E731
            return Loss(obj, loss + (f"({_kw(kwargs)})" if kwargs else ""), what, origin)
        cls = getattr(nn, loss, None)
        if not (isinstance(cls, type) and issubclass(cls, nn.modules.loss._Loss)):
            allowed = sorted(n for n in dir(nn) if n.endswith("Loss") and isinstance(getattr(nn, n), type))
            raise ValueError(f"{what}: unknown loss {loss!r}; allowed: 'ce', 'mse', a torch.nn loss ({', '.join(allowed)}) "
                             "or 'pkg.module:function'")
        return _module_loss(_construct(cls, kwargs, what), what, {"torch_nn": loss, "kwargs": kwargs} if kwargs else
                            {"torch_nn": loss})
    if kwargs:
        raise ValueError(f"{what}: keyword arguments go with a loss given by name")
    if isinstance(loss, nn.Module):
        return _module_loss(loss, what, {"qualname": qualified_name(type(loss))})
    if callable(loss):
        return Loss(loss, getattr(loss, "__qualname__", repr(loss)), what, {"qualname": qualified_name(loss)})
    raise TypeError(f"{what}: expected 'ce', 'mse', a torch.nn loss (name or module), a mapping with 'name', "
                    f"'pkg.module:function' or a callable (output, target) -> loss; got {type(loss).__name__}")


def _kw(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _construct(cls, kwargs: dict, what: str):
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"{what}: {cls.__name__}({_kw(kwargs)}) failed: {e}") from None


def _module_loss(module: nn.Module, what: str, origin: dict) -> Loss:
    if isinstance(module, (nn.CTCLoss, nn.MarginRankingLoss, nn.CosineEmbeddingLoss, nn.TripletMarginLoss,
                           nn.TripletMarginWithDistanceLoss, nn.GaussianNLLLoss)):
        raise ValueError(f"{what}: {type(module).__name__} takes more than (output, target); wrap it in a function "
                         "of (output, target)")
    return Loss(module, repr(module), what, origin)
