"""The full-batch training objective of a network as a function of one flat parameter vector.

``L(θ) = Σ_i ℓ(f(x_i; θ), y_i) / D``, ``D`` the loss's denominator over the whole dataset (the
number of examples for eosflow's ``"ce"`` and ``"mse"``; see :mod:`eosflow.losses` for any
``torch.nn`` loss or a function). The loss, its gradient and Hessian-vector products are summed
over chunks of the data and divided once, so they are exact whatever the chunking (only peak
memory changes). Everything is a pure function of ``theta`` through
``torch.func.functional_call``; nothing here mutates the model.

**Data**: tensors ``(x, y)`` (chunked by ``chunk_size``), or any re-iterable of ``(x, y)``
batches (a ``DataLoader``): each batch is a chunk. A loader is read twice when the objective is
made and must give the same batches both times; every later pass checks the batch sizes and a
checksum, so a loader that augments at random or shuffles without a fixed generator (which would
make the loss, and its Hessian, random) is an error that names the cause.

**Modes**: the network is evaluated in eval mode (Dropout is the identity), except BatchNorm under
``batch_norm="batch"`` (the default): each chunk is normalised with its own statistics and no running
buffer changes ("ghost batch" normalisation; the chunking is then part of the loss's definition).
``batch_norm="eval"`` uses the running statistics (a fixed affine map, so forward-over-reverse
products apply). The model's own ``training`` flags are restored after every call. Attention
(``scaled_dot_product_attention``) runs on its math kernel, whose second derivatives exist.
"""

from __future__ import annotations

import hashlib
import logging

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from .losses import BUILTIN_LOSSES, _builtin_per_example, resolve_loss

log = logging.getLogger(__name__)

#: eosflow's own losses (``"ce"``, ``"mse"``); :func:`eosflow.losses.resolve_loss` takes any other.
LOSSES = BUILTIN_LOSSES
#: BatchNorm policies of :class:`Objective`.
BATCH_NORM_POLICIES = ("batch", "eval")


def per_example_loss(logits: Tensor, y: Tensor, loss: str) -> Tensor:
    """Cross-entropy, or MSE ``½ Σ_c (f_c − onehot(y)_c)²`` (Cohen et al.'s convention), per example."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; allowed: {list(LOSSES)}")
    return _builtin_per_example(loss, logits, y)


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def _moved(xb: Tensor, yb: Tensor, device, dtype) -> tuple[Tensor, Tensor]:
    """A batch on ``device``, floating inputs in ``dtype`` (integer inputs, e.g. token ids, stay)."""
    return (xb.to(device, dtype if xb.is_floating_point() else None, non_blocking=True),
            yb.to(device, non_blocking=True))


class DataChangedError(ValueError):
    """A loader gave other batches than on its first pass."""


class _Batches:
    """A re-iterable of ``(x, y)`` batches moved to a device (and floating inputs to a dtype), with
    the checks of :class:`Objective`'s docstring."""

    def __init__(self, data, device, dtype, check: bool = True):
        if iter(data) is data:
            raise TypeError("data: an iterator can be read only once; pass a re-iterable of (x, y) batches "
                            "(a DataLoader, a list of batches) or tensors x, y")
        self.data, self.device, self.dtype = data, device, dtype
        self.sizes: list[int] = []
        self.sums: list[float] = []
        digests = self._pass(record=True)
        if not self.sizes:
            raise ValueError("data: the loader gave no batches")
        if check:
            self._pass(record=False, digests=digests)

    def _raw(self):
        for i, batch in enumerate(self.data):
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2
                    and all(isinstance(t, Tensor) for t in batch)):
                what = type(batch).__name__ if not isinstance(batch, (tuple, list)) else f"{len(batch)} items"
                raise TypeError(f"data: batch {i} is {what}; expected (x, y), two tensors (a dataset of "
                                "(input, target) pairs through a DataLoader)")
            xb, yb = batch
            if xb.shape[0] != yb.shape[0]:
                raise ValueError(f"data: batch {i} has {xb.shape[0]} inputs but {yb.shape[0]} targets")
            yield i, xb, yb

    @staticmethod
    def _checksum(x: Tensor, y: Tensor) -> float:
        return float(x.double().sum()) + 1e-3 * float(y.double().sum())

    def _changed(self, i: int, detail: str) -> DataChangedError:
        return DataChangedError(
            f"data: the loader's batch {i} changed between passes ({detail}). The loss and its Hessian would be "
            "random: random augmentation, shuffle=True or a sampler without a fixed generator do this. Use "
            "shuffle=False and deterministic transforms (or pass tensors x, y)")

    def _pass(self, record: bool, digests: list | None = None):
        out = []
        n = 0
        for i, xb, yb in self._raw():
            h = hashlib.sha256()
            for t in (xb, yb):
                h.update(f"{tuple(t.shape)} {t.dtype}".encode())
                h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
            d = h.hexdigest()
            if record:
                self.sizes.append(int(xb.shape[0]))
                self.sums.append(self._checksum(xb, yb))
                out.append(d)
            elif i >= len(digests) or d != digests[i]:
                raise self._changed(i, "its contents differ" if i < len(digests) else "more batches")
            n += 1
        if not record and n != len(digests):
            raise self._changed(n, f"{n} batches instead of {len(digests)}")
        return out

    def __iter__(self):
        n = 0
        for i, xb, yb in self._raw():
            if i >= len(self.sizes) or xb.shape[0] != self.sizes[i]:
                raise self._changed(i, "its size differs" if i < len(self.sizes) else "more batches")
            if self._checksum(xb, yb) != self.sums[i]:
                raise self._changed(i, "its checksum differs")
            n += 1
            yield _moved(xb, yb, self.device, self.dtype)
        if n != len(self.sizes):
            raise self._changed(n, f"{n} batches instead of {len(self.sizes)}")

    @property
    def n(self) -> int:
        return sum(self.sizes)


class _Modes:
    """The context of :meth:`Objective.modes` (a class: a few microseconds a call, against tens for
    a generator-based context manager)."""

    __slots__ = ("obj", "saved", "sdpa")

    def __init__(self, obj):
        self.obj = obj

    def __enter__(self):
        o = self.obj
        self.saved = ([m.training for m in o._mods], [m.track_running_stats for m in o._bns])
        for m in o._mods:  # plain attributes: set in the instance dict (Module.__setattr__ is slow)
            m.__dict__["training"] = False
        if o.batch_norm == "batch":
            for m in o._bns:
                m.__dict__["training"] = True
                m.__dict__["track_running_stats"] = False
        self.sdpa = None
        if o._attention:  # attention twice differentiable (the fused CPU kernels are not)
            self.sdpa = sdpa_kernel(SDPBackend.MATH)
            self.sdpa.__enter__()

    def __exit__(self, *exc):
        if self.sdpa is not None:
            self.sdpa.__exit__(*exc)
        o = self.obj
        for m, t in zip(o._mods, self.saved[0]):
            m.__dict__["training"] = t
        for m, t in zip(o._bns, self.saved[1]):
            m.__dict__["track_running_stats"] = t
        return False


def _may_use_attention(m: nn.Module) -> bool:
    """Whether a module may call ``scaled_dot_product_attention``: torch's attention layers, and any
    module defined outside torch.nn and eosflow's own networks (a user's forward may call it)."""
    mod = type(m).__module__
    if isinstance(m, (nn.MultiheadAttention, nn.Transformer, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        return True
    return not (mod.startswith("torch.nn.") or mod == "eosflow.models")


class Objective:
    """Loss, gradient and HVPs of ``model`` on a dataset as functions of a flat ``theta``.

    Parameters
    ----------
    model: any ``nn.Module``; only its structure is used (parameters come from ``theta``).
    x, y: the data the loss averages over: tensors (in-memory; kept where they are, e.g. already on
        the device), or ``x`` a re-iterable of ``(x, y)`` batches such as a ``DataLoader`` and ``y``
        None (each batch moved to the model's device; floating inputs to its dtype).
    loss: ``"ce"``, ``"mse"``, a ``torch.nn`` loss (module or class name), ``{"name": ..., **kwargs}``,
        ``"pkg.module:function"`` or a callable ``(output, target)`` returning per-example losses or
        their mean (:func:`eosflow.losses.resolve_loss`); averaged exactly over the whole dataset.
    chunk_size: examples per chunk for tensors (``None``: all at once; a loader's batches are its
        chunks). For BatchNorm nets this is also the normalisation batch, so it is part of the
        loss's definition.
    hvp_mode: ``"fwdrev"`` (forward-over-reverse, ``jvp(grad(f))``), ``"revrev"`` (double
        backward) or ``"auto"`` (revrev for BatchNorm nets with batch statistics, fwdrev
        otherwise). Nested forward-mode AD through batch_norm has given silent errors in some
        torch releases; with torch 2.14 both modes match finite differences on BN nets
        (tests/test_hessian.py).
    batch_norm: ``"batch"`` (each chunk normalises itself; running buffers untouched) or ``"eval"``
        (running statistics). Every other module runs in eval mode.
    check_data: read a loader twice and compare (see the module docstring).
    """

    def __init__(self, model: nn.Module, x, y: Tensor | None = None, loss="ce",
                 chunk_size: int | None = None, hvp_mode: str = "auto", *, batch_norm: str = "batch",
                 check_data: bool = True):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        params = list(model.named_parameters())
        if not params:
            raise ValueError(f"model: {type(model).__name__} has no parameters")
        if batch_norm not in BATCH_NORM_POLICIES:
            raise ValueError(f"batch_norm: {batch_norm!r} is not allowed; allowed: {list(BATCH_NORM_POLICIES)} "
                             "(batch: each chunk normalises itself; eval: running statistics)")
        self.model, self.batch_norm = model, batch_norm
        self.loss_fn = resolve_loss(loss)
        #: ``"ce"`` / ``"mse"`` for eosflow's own losses (the R-operator's), else None
        self.loss_name = self.loss_fn.builtin
        self.names = [n for n, _ in params]
        self.shapes = [p.shape for _, p in params]
        self.sizes = [p.numel() for _, p in params]
        self.dim = sum(self.sizes)
        p0 = params[0][1]
        if y is None and isinstance(x, (tuple, list)) and len(x) == 2 and all(isinstance(t, Tensor) for t in x):
            x, y = x
        self.loader: _Batches | None = None
        if isinstance(x, Tensor):
            if not isinstance(y, Tensor):
                raise TypeError("y: the targets are missing (a tensor); pass Objective(model, x, y) or "
                                "Objective(model, loader) with a re-iterable of (x, y) batches")
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"x, y: x has {x.shape[0]} examples, y has {y.shape[0]}")
            self.x, self.y = x, y
            self.n = int(x.shape[0])
            self.chunk_size = int(chunk_size) if chunk_size else self.n
            self._device, self._dtype = x.device, (x.dtype if x.is_floating_point() else p0.dtype)
        else:
            if y is not None:
                raise TypeError("y: give y only with a tensor x; a loader's batches carry their targets")
            if chunk_size:
                raise ValueError("chunk_size: a loader's batches are the chunks; set the DataLoader's batch_size")
            if not hasattr(x, "__iter__"):
                raise TypeError(f"x: expected a tensor or a re-iterable of (x, y) batches (a DataLoader); got "
                                f"{type(x).__name__}" + (" (a Dataset: wrap it in a DataLoader with shuffle=False)"
                                                         if hasattr(x, "__getitem__") else ""))
            self._device, self._dtype = p0.device, p0.dtype
            self.loader = _Batches(x, self._device, self._dtype, check=check_data)
            self.x = self.y = None
            self.n = self.loader.n
            self.chunk_size = max(self.loader.sizes)
        self._mods = list(model.modules())
        self._bns = [m for m in self._mods if _is_bn(m)]
        self._attention = any(_may_use_attention(m) for m in self._mods)
        bn_batch = batch_norm == "batch" and any(_is_bn(m) for m in model.modules())
        if hvp_mode == "auto":
            hvp_mode = "revrev" if bn_batch else "fwdrev"
        if hvp_mode not in ("fwdrev", "revrev"):
            raise ValueError(f"hvp_mode: unknown {hvp_mode!r}; allowed: ['auto', 'fwdrev', 'revrev']")
        self.hvp_mode = hvp_mode
        #: each chunk's summed loss is multiplied by this so that summed chunks / n is the exact
        #: dataset loss (1 for eosflow's own losses; ``n / D`` for others, :mod:`eosflow.losses`)
        self.scale = 1.0
        self.has_accuracy = True
        self._check_loss()

    def _check_loss(self) -> None:
        """One pass without gradients: the output and targets fit the loss (an error naming the
        shapes), the loss's denominator over the dataset, whether accuracy is defined."""
        first = True
        den = 0.0
        with torch.no_grad():
            for xc, yc in self.chunks():
                if first:
                    try:
                        out = self.logits(self.flatten(), xc)
                    except Exception as e:
                        raise ValueError(f"model: {type(self.model).__name__} failed on a batch of inputs of shape "
                                         f"{tuple(xc.shape)} ({xc.dtype}): {type(e).__name__}: {e}") from e
                    if not isinstance(out, Tensor):
                        raise TypeError(f"model: {type(self.model).__name__} returned {type(out).__name__}; the "
                                        "objective needs one output tensor")
                    self.has_accuracy = (out.dim() == 2 and yc.dim() == 1 and not yc.is_floating_point())
                    if self.loss_name is not None:
                        self._check_builtin(out, yc)
                        return
                    first = False
                else:
                    out = self.logits(self.flatten(), xc)
                try:
                    _, d = self.loss_fn.chunk(out, yc)
                except Exception as e:
                    raise ValueError(f"loss: {self.loss_fn.name} failed on the model's output of shape "
                                     f"{tuple(out.shape)} and targets of shape {tuple(yc.shape)} ({yc.dtype}): "
                                     f"{type(e).__name__}: {e}") from e
                den += float(d)
        if self.loss_fn.is_sum:
            self.scale = float(self.n)
        elif den <= 0:
            raise ValueError(f"loss: {self.loss_fn.name} has denominator {den} over the data (every target ignored?)")
        else:
            self.scale = self.n / den

    def _check_builtin(self, out: Tensor, y: Tensor) -> None:
        if not (out.dim() == 2 and y.dim() == 1 and not y.is_floating_point()):
            raise ValueError(f"loss: {self.loss_name!r} needs outputs (B, classes) and integer labels (B,); got output "
                             f"{tuple(out.shape)} and targets {tuple(y.shape)} ({y.dtype})")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= out.shape[1]:
            raise ValueError(f"loss: labels run from {lo} to {hi}, but the model has {out.shape[1]} outputs")

    @property
    def device(self) -> torch.device:
        """Device of the data (and of the parameters the objective expects)."""
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the data (and of the parameters)."""
        return self._dtype

    def modes(self) -> _Modes:
        """The model in the objective's modes (module docstring); its own flags restored after."""
        return _Modes(self)

    # -- parameters ------------------------------------------------------------------------
    def flatten(self, model: nn.Module | None = None) -> Tensor:
        """The model's parameters as one flat vector (a copy)."""
        model = model or self.model
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        return {n: t.view(s) for n, t, s in zip(self.names, torch.split(theta, self.sizes), self.shapes)}

    def chunks(self, x=None, y: Tensor | None = None):
        """The data's chunks ``(x, y)``: the objective's own (``x`` None), or those of tensors
        ``x, y`` (by ``chunk_size``) or of a re-iterable of batches ``x`` (moved to the device)."""
        if x is None:
            if self.loader is not None:
                yield from self.loader
                return
            x, y = self.x, self.y
        elif not isinstance(x, Tensor):
            if isinstance(x, _Batches):
                yield from x
            else:
                for xb, yb in x:
                    yield _moved(xb, yb, self.device, self.dtype)
            return
        for i in range(0, x.shape[0], self.chunk_size):
            yield x[i:i + self.chunk_size], y[i:i + self.chunk_size]

    # -- the objective ---------------------------------------------------------------------
    def logits(self, theta: Tensor, x: Tensor) -> Tensor:
        """The network's output on ``x`` at ``theta`` (in the objective's modes)."""
        with self.modes():
            return functional_call(self.model, self.unflatten(theta), (x,))

    def output_sum_loss(self, out: Tensor, y: Tensor) -> Tensor:
        """A chunk's summed loss from the network's output ``out``, scaled so that summed chunks
        divided by ``n`` are the dataset's loss (:attr:`scale`)."""
        if self.loss_name is not None:
            return per_example_loss(out, y, self.loss_name).sum()
        return self.loss_fn.chunk(out, y)[0] * self.scale

    def correct(self, out: Tensor, y: Tensor) -> Tensor:
        """Correct predictions (argmax against integer labels) in a chunk; 0 where accuracy is
        undefined (``has_accuracy`` False: accuracies are then NaN)."""
        if not self.has_accuracy:
            return torch.zeros((), dtype=torch.long, device=out.device)
        return (out.detach().argmax(-1) == y).sum()

    def sum_loss(self, theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """The loss summed over one chunk ``(x, y)`` (not averaged; :meth:`output_sum_loss`)."""
        return self.output_sum_loss(self.logits(theta, x), y)

    def loss(self, theta: Tensor) -> Tensor:
        with torch.no_grad():
            return sum(self.sum_loss(theta, xc, yc) for xc, yc in self.chunks()) / self.n

    def chunk_loss_grad(self, theta: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(Σ loss, number correct, ∇ Σ loss)`` over one chunk, by reverse-mode autograd on a flat
        leaf (about 1.25x faster than ``torch.func.grad`` on the BatchNorm VGG on a CPU, and within a
        few per cent of a loop over ``nn.Module`` parameters: ``python -m eosflow bench``)."""
        with torch.enable_grad():
            t = theta.detach().requires_grad_(True)
            loss, correct = self.sum_loss_correct(t, x, y)
            (g,) = torch.autograd.grad(loss, t)
        return loss.detach(), correct, g

    def loss_grad(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """``(L(θ), ∇L(θ))``."""
        g_total = torch.zeros_like(theta)
        l_total = theta.new_zeros(())
        for xc, yc in self.chunks():
            l, _, g = self.chunk_loss_grad(theta, xc, yc)
            g_total += g
            l_total += l
        return l_total / self.n, g_total / self.n

    def sum_loss_correct(self, theta: Tensor, x: Tensor, y: Tensor):
        """``(summed loss, number of correct predictions)`` over one chunk."""
        logits = self.logits(theta, x)
        return self.output_sum_loss(logits, y), self.correct(logits, y)

    def loss_grad_acc(self, theta: Tensor) -> tuple[float, float, Tensor]:
        """``(L(θ), training accuracy, ∇L(θ))`` from one forward/backward pass over the chunks
        (accuracy NaN where undefined)."""
        g_total = torch.zeros_like(theta)
        l_total, correct = 0.0, 0
        for xc, yc in self.chunks():
            l, c, g = self.chunk_loss_grad(theta, xc, yc)
            g_total += g
            l_total += float(l)
            correct += int(c)
        return l_total / self.n, (correct / self.n if self.has_accuracy else float("nan")), g_total / self.n

    def grad(self, theta: Tensor) -> Tensor:
        return self.loss_grad(theta)[1]

    def _hvp_chunk(self, theta: Tensor, v: Tensor, x: Tensor, y: Tensor) -> Tensor:
        if self.hvp_mode == "fwdrev":
            return jvp(lambda t: grad(self.sum_loss)(t, x, y), (theta,), (v,))[1]
        with torch.enable_grad():
            t = theta.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.sum_loss(t, x, y), t, create_graph=True)
            (hv,) = torch.autograd.grad(g, t, grad_outputs=v)
        return hv

    def _forward_ad_missing(self, err: NotImplementedError) -> bool:
        """A layer or loss without a forward-mode derivative (e.g. ``huber_loss_backward``): this
        objective switches to double backward for good, with a warning, and the product is redone."""
        if self.hvp_mode != "fwdrev" or "forward AD" not in str(err):
            return False
        log.warning("forward-over-reverse HVP unavailable (%s); this objective uses double backward",
                    str(err).splitlines()[0])
        self.hvp_mode = "revrev"
        return True

    def hvp(self, theta: Tensor, v: Tensor) -> Tensor:
        """Hessian-vector product ``∇²L(θ) v``."""
        try:
            out = torch.zeros_like(theta)
            for xc, yc in self.chunks():
                out += self._hvp_chunk(theta, v, xc, yc).detach()
        except NotImplementedError as e:
            if not self._forward_ad_missing(e):
                raise
            return self.hvp(theta, v)
        return out / self.n

    def hvp_batch(self, theta: Tensor, vs: Tensor) -> Tensor:
        """HVPs for the rows of ``vs`` (shape ``(m, P)``); ``vmap``-batched in fwdrev mode."""
        if self.hvp_mode != "fwdrev":
            return torch.stack([self.hvp(theta, v) for v in vs])
        try:
            out = torch.zeros_like(vs)
            for xc, yc in self.chunks():
                f = lambda v, xc=xc, yc=yc: self._hvp_chunk(theta, v, xc, yc)  # noqa: E731
                out += vmap(f)(vs).detach()
        except NotImplementedError as e:
            if not self._forward_ad_missing(e):
                raise
            return self.hvp_batch(theta, vs)
        return out / self.n

    @torch.no_grad()
    def evaluate(self, theta: Tensor, x=None, y: Tensor | None = None) -> tuple[float, float]:
        """``(mean loss, accuracy)`` on ``(x, y)`` (tensors, or ``x`` a re-iterable of batches;
        default: the objective's own data). The mean is exact for that data (its own denominator)."""
        total, correct, den, n = 0.0, 0, 0.0, 0
        for xc, yc in self.chunks(x, y):
            logits = self.logits(theta, xc)
            if self.loss_name is not None:
                total += float(per_example_loss(logits, yc, self.loss_name).sum())
            else:
                s, d = self.loss_fn.chunk(logits, yc)
                total, den = total + float(s), den + float(d)
            correct += int(self.correct(logits, yc))
            n += int(xc.shape[0])
        if self.loss_name is None:
            total = total / den * n if not self.loss_fn.is_sum else total * n
        return total / n, (correct / n if self.has_accuracy else float("nan"))
