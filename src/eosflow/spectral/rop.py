"""Hessian-vector products by Pearlmutter's R-operator, written out layer by layer (:class:`RopHVP`).

``H v = R_v{∇L(θ)} = d/dε ∇L(θ + εv)|₀``: forward-over-reverse differentiation, done by hand for
the layers of eosflow's models instead of by autograd. A **primal** pass (forward, then backward:
the activations ``a`` and the back-propagated gradients ``g`` of every layer at ``θ``) is followed by
a **tangent** pass per vector (``Ra`` forward, then ``Rg`` backward); the parameter entries of
``Rg`` are ``H v``. The primal pass does not depend on ``v``: it is computed once per chunk for a
block of vectors, and kept between calls within a memory budget. Per layer the tangent pass is a
few fused kernels (``aten.convolution_backward`` of ``(Rg, x, W)`` and of ``(g, Rx, RW)`` give
both terms of ``Rg_x`` and of ``Rg_W``; BatchNorm's rule is folded into per-channel coefficients),
where reverse-over-reverse (double backward) differentiates the whole backward graph and autograd's
forward mode (``torch.func.jvp``) runs generic formulas for the derivative of each backward
kernel (measurements: ``benchmarks/engine_choice.py``).

Supported: ``nn.Sequential`` (nested allowed) of ``Linear``, ``Conv2d`` (zero padding given as
numbers), ``BatchNorm1d/2d`` with batch statistics (an objective's ``batch_norm="batch"``
policy, as eosflow builds them), elementwise activations (:data:`ACTIVATIONS`), ``MaxPool2d``, ``AvgPool2d``,
``AdaptiveAvgPool2d``, ``Flatten`` and ``Identity``; the cross-entropy and MSE losses of
:mod:`eosflow.objective`. :func:`rop_unsupported_reason` says why a model does not qualify;
:func:`eosflow.spectral.hvp_operator` then falls back to double backward.

The products equal autograd's double-backward ones to rounding, at ReLU and max-pool kinks too,
where both take the same one-sided derivative (tested against float64 autograd Hessians).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .operators import HessianOperator

__all__ = ["RopHVP", "rop_supported", "rop_unsupported_reason", "ACTIVATIONS", "DEFAULT_PRIMAL_CACHE_BYTES"]

#: Elementwise activations, handled through their first and second derivatives.
ACTIVATIONS = (nn.ReLU, nn.Tanh, nn.GELU, nn.ELU, nn.Softplus, nn.SiLU, nn.Sigmoid, nn.LeakyReLU)
_LINEAR_MAPS = (nn.Flatten, nn.Identity, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
#: Default memory budget of :class:`RopHVP` for primal passes kept between products.
DEFAULT_PRIMAL_CACHE_BYTES = 2 * 2**30


def _leaves(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The layers of a (nested) ``nn.Sequential`` in order, with their parameter-name prefixes."""
    if isinstance(model, nn.Sequential):
        out = []
        for name, child in model.named_children():
            out += _leaves(child, f"{prefix}{name}.")
        return out
    return [(prefix, model)]


def _layer_problem(m: nn.Module, batch_norm: str = "batch") -> str | None:
    if isinstance(m, nn.Conv2d):
        if isinstance(m.padding, str) or m.padding_mode != "zeros":
            return f"{m}: only zero padding given as numbers"
        return None
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        if batch_norm != "batch":
            return f"{m}: running statistics (batch_norm={batch_norm!r}); the rule here is for batch statistics"
        return None
    if isinstance(m, nn.MaxPool2d):
        return f"{m}: return_indices" if m.return_indices else None
    if isinstance(m, (nn.Linear,) + ACTIVATIONS + _LINEAR_MAPS):
        return None
    return f"{type(m).__name__} has no R-operator rule"


def rop_unsupported_reason(model: nn.Module, batch_norm: str = "batch") -> str | None:
    """None when :class:`RopHVP` handles ``model``, else why not (the first layer it cannot).
    ``batch_norm``: the objective's BatchNorm policy (the rule here normalises with the batch's
    statistics, the ``"batch"`` policy, whatever the layer's ``track_running_stats``)."""
    if not isinstance(model, nn.Sequential):
        return f"{type(model).__name__} is not an nn.Sequential"
    for _, m in _leaves(model):
        problem = _layer_problem(m, batch_norm)
        if problem:
            return problem
    return None


def rop_supported(model: nn.Module, batch_norm: str = "batch") -> bool:
    """Whether :class:`RopHVP` can differentiate ``model`` (see :func:`rop_unsupported_reason`)."""
    return rop_unsupported_reason(model, batch_norm) is None


# -- the layers ---------------------------------------------------------------------------------
# A rule has four steps. Primal: forward(x) -> y, then backward(g_y) -> g_x, both recording what
# the tangent pass needs in the layer's dict P. Tangent: forward(Rx) -> Ry, recording in T, then
# backward(Rg_y) -> (Rg_x, {parameter: Rg}). ``need_in`` (static: does any earlier layer have
# parameters?) says whether the input depends on θ; when it does not, Rx is None and g_x, Rg_x
# are not formed. Gradients are those of the chunk's summed loss.

class _Rule:
    def __init__(self, m: nn.Module, prefix: str, need_in: bool):
        self.m, self.prefix, self.need_in = m, prefix, need_in

    def params(self, flat: dict) -> dict:
        n = len(self.prefix)
        return {k[n:]: t for k, t in flat.items() if k.startswith(self.prefix) and "." not in k[n:]}

    def param_grads(self, p, P) -> dict:
        """The gradient of the chunk's summed loss by this layer's parameters, from the primal pass."""
        return {}

    def backward_grads(self, p, P, g) -> tuple:
        """:meth:`backward` and :meth:`param_grads` in one: ``(g_x, {parameter: gradient})``."""
        g_x = self.backward(p, P, g)
        return g_x, self.param_grads(p, P)


class _Linear(_Rule):
    def forward(self, p, P, x):
        P["x"] = x
        return F.linear(x, p["weight"], p.get("bias"))

    def backward(self, p, P, g):
        P["g"] = g
        return g @ p["weight"] if self.need_in else None

    def param_grads(self, p, P):
        flat = lambda t: t.reshape(-1, t.shape[-1])  # noqa: E731
        grads = {"weight": flat(P["g"]).T @ flat(P["x"])}
        if "bias" in p:
            grads["bias"] = flat(P["g"]).sum(0)
        return grads

    def tangent_forward(self, p, rp, P, T, rx):
        ry = F.linear(P["x"], rp["weight"], rp.get("bias"))
        if rx is not None:
            T["rx"] = rx
            ry = ry + F.linear(rx, p["weight"])
        return ry

    def tangent_backward(self, p, rp, P, T, rg):
        x, g = P["x"], P["g"]
        flat = lambda t: t.reshape(-1, t.shape[-1])  # noqa: E731
        rgw = flat(rg).T @ flat(x)
        grads = {}
        if "bias" in p:
            grads["bias"] = flat(rg).sum(0)
        if not self.need_in:
            grads["weight"] = rgw
            return None, grads
        grads["weight"] = torch.addmm(rgw, flat(g).T, flat(T["rx"]))
        return rg @ p["weight"] + g @ rp["weight"], grads


class _Conv(_Rule):
    def __init__(self, m: nn.Module, prefix: str, need_in: bool, channels_last: bool = False):
        super().__init__(m, prefix, need_in)
        #: lay the outputs out channels-last (:class:`RopHVP`'s choice); an input with one channel
        #: is both layouts at once, and the convolution would otherwise answer in NCHW
        self.channels_last = channels_last

    def _conv(self, x, w, b):
        m = self.m
        y = F.conv2d(x, w, b, m.stride, m.padding, m.dilation, m.groups)
        return y.contiguous(memory_format=torch.channels_last) if self.channels_last else y

    def _cb(self, grad_out, inp, w, mask):
        m = self.m
        return torch.ops.aten.convolution_backward(
            grad_out, inp, w, [w.shape[0]] if mask[2] else None, list(m.stride), list(m.padding),
            list(m.dilation), False, [0, 0], m.groups, mask)

    def forward(self, p, P, x):
        P["x"] = x
        return self._conv(x, p["weight"], p.get("bias"))

    def backward(self, p, P, g):
        P["g"] = g
        return self._cb(g, P["x"], p["weight"], [True, False, False])[0] if self.need_in else None

    def param_grads(self, p, P):
        return self._grads(p, P, False)[1]

    def backward_grads(self, p, P, g):
        P["g"] = g
        return self._grads(p, P, self.need_in)

    def _grads(self, p, P, need_in: bool):
        # one convolution_backward for the input's gradient (when asked) and the parameters'
        gi, gw, gb = self._cb(P["g"], P["x"], p["weight"], [need_in, True, "bias" in p])
        return gi, ({"weight": gw, "bias": gb} if "bias" in p else {"weight": gw})

    def tangent_forward(self, p, rp, P, T, rx):
        ry = self._conv(P["x"], rp["weight"], rp.get("bias"))
        if rx is not None:
            T["rx"] = rx
            ry = ry + self._conv(rx, p["weight"], None)
        return ry

    def tangent_backward(self, p, rp, P, T, rg):
        # Rg_x = conv_inputgrad(Rg, W) + conv_inputgrad(g, RW); Rg_W = conv_weightgrad(Rg, x) +
        # conv_weightgrad(g, Rx): one convolution_backward of (Rg, x, W) gives the first term of
        # each, one of (g, Rx, RW) the second
        has_bias = "bias" in p
        gi1, gw1, gb = self._cb(rg, P["x"], p["weight"], [self.need_in, True, has_bias])
        grads = {"weight": gw1}
        if has_bias:
            grads["bias"] = gb
        if not self.need_in:
            return None, grads
        gi2, gw2, _ = self._cb(P["g"], T["rx"], rp["weight"], [True, True, False])
        grads["weight"] = gw1 + gw2
        return gi1 + gi2, grads


class _BatchNorm(_Rule):
    """Batch statistics over every dimension but the channel one: ``x̂ = (x − μ)s``,
    ``s = (σ² + ε)^(-1/2)``, ``y = w x̂ + b``. With ``q = mean(x̂ Rx)`` and ``r = mean(Rx)``:
    ``Rs = −s² q``, ``Rx̂ = s Rx − s q x̂ − s r``, so ``Ry = (ws) Rx + (Rw − wsq) x̂ + (Rb − wsr)``;
    the backward rule ``g_x = s(w g − w mean(g) − x̂ w mean(g x̂))`` and its R likewise fold into
    per-channel coefficients of whole tensors: a few fused passes over the activations."""

    def _coeffs(self, p, x):
        shape = [1, -1] + [1] * (x.dim() - 2)
        c = x.shape[1]
        w = p["weight"].view(shape) if "weight" in p else x.new_ones(c).view(shape)
        b = p["bias"].view(shape) if "bias" in p else x.new_zeros(c).view(shape)
        return w, b

    def forward(self, p, P, x):
        dims = [0] + list(range(2, x.dim()))
        var, mean = torch.var_mean(x, dims, correction=0, keepdim=True)
        s = torch.rsqrt(var + self.m.eps)
        xh = torch.addcmul(-mean * s, x, s)
        w, b = self._coeffs(p, x)
        P.update(dims=dims, xh=xh, s=s)
        return torch.addcmul(b, xh, w)

    def backward(self, p, P, g):
        dims, xh, s = P["dims"], P["xh"], P["s"]
        if not self.need_in:
            P["g"] = g
            return None
        w, _ = self._coeffs(p, xh)
        g1 = g.mean(dims, keepdim=True)
        g2 = (g * xh).mean(dims, keepdim=True)
        sw = s * w
        P.update(g=g, g1=g1, g2=g2)
        return torch.addcmul(torch.addcmul(-sw * g1, g, sw), xh, -sw * g2)

    def param_grads(self, p, P):
        grads = {}
        if "weight" in p:
            grads["weight"] = (P["g"] * P["xh"]).sum(P["dims"])
        if "bias" in p:
            grads["bias"] = P["g"].sum(P["dims"])
        return grads

    def tangent_forward(self, p, rp, P, T, rx):
        xh, s, dims = P["xh"], P["s"], P["dims"]
        w, _ = self._coeffs(p, xh)
        rw, rb = self._coeffs(rp, xh)
        if "weight" not in p:
            rw = torch.zeros_like(rw)
        if rx is None:
            return torch.addcmul(rb, xh, rw)
        q = (xh * rx).mean(dims, keepdim=True)
        r = rx.mean(dims, keepdim=True)
        T.update(rx=rx, q=q, r=r)
        return torch.addcmul(torch.addcmul(rb - w * s * r, rx, w * s), xh, rw - w * s * q)

    def tangent_backward(self, p, rp, P, T, rg):
        dims, xh, s = P["dims"], P["xh"], P["s"]
        count = xh.numel() // xh.shape[1]
        rg1 = rg.mean(dims, keepdim=True)
        rg2 = (rg * xh).mean(dims, keepdim=True)
        grads = {}
        if "bias" in p:
            grads["bias"] = (count * rg1).reshape(-1)
        if not self.need_in:
            if "weight" in p:
                grads["weight"] = (count * rg2).reshape(-1)
            return None, grads
        w, _ = self._coeffs(p, xh)
        rw = rp["weight"].view_as(w) if "weight" in p else torch.zeros_like(w)
        g, g1, g2 = P["g"], P["g1"], P["g2"]
        rx, q, r = T["rx"], T["q"], T["r"]
        g_rxh = s * (g * rx).mean(dims, keepdim=True) - s * q * g2 - s * r * g1  # mean(g Rx̂)
        if "weight" in p:
            grads["weight"] = (count * (rg2 + g_rxh)).reshape(-1)
        sw = s * w
        b_ = w * g2                                    # mean(g_x̂ x̂), g_x̂ = w g
        ra = rw * g1 + w * rg1                         # R mean(g_x̂)
        rb_ = rw * g2 + w * rg2 + w * g_rxh            # R mean(g_x̂ x̂)
        # Rg_x = s(b_ s r − ra) − s q g_x + sw Rg + s Rw g − b_ s² Rx + s(b_ s q − rb_) x̂, with
        # g_x = sw (g − g1 − g2 x̂) folded into the coefficients of g, x̂ and the constant
        sqsw = s * q * sw
        rgx = torch.addcmul(s * (b_ * s * r - ra) + sqsw * g1, rg, sw)
        rgx = torch.addcmul(rgx, g, s * rw - sqsw)
        rgx = torch.addcmul(rgx, rx, -b_ * s * s)
        return torch.addcmul(rgx, xh, s * (b_ * s * q - rb_) + sqsw * g2), grads


class _Activation(_Rule):
    def _derivatives(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``φ'(x)`` and ``φ''(x)`` (None: zero almost everywhere, as for ReLU)."""
        m = self.m
        if isinstance(m, nn.ReLU):
            return x > 0, None
        if isinstance(m, nn.Tanh):
            t = torch.tanh(x)
            d1 = 1 - t * t
            return d1, -2 * t * d1
        with torch.enable_grad():  # elementwise: the gradient of Σφ is φ' entry by entry, and so on
            xx = x.detach().requires_grad_(True)
            (d1,) = torch.autograd.grad(m(xx).sum(), xx, create_graph=True)
            d2 = torch.autograd.grad(d1.sum(), xx, allow_unused=True)[0] if d1.requires_grad else None
        return d1.detach(), None if d2 is None else d2.detach()

    def forward(self, p, P, x):
        y = self.m(x)
        if self.need_in:
            P["d1"], P["d2"] = self._derivatives(x)
        return y

    def backward(self, p, P, g):
        if not self.need_in:
            return None
        if P["d2"] is not None:
            P["g"] = g
        return g * P["d1"]

    def tangent_forward(self, p, rp, P, T, rx):
        if rx is None:
            return None
        if P["d2"] is not None:
            T["rx"] = rx
        return rx * P["d1"]

    def tangent_backward(self, p, rp, P, T, rg):
        if not self.need_in:
            return None, {}
        rgx = rg * P["d1"]
        if P["d2"] is not None:
            rgx = torch.addcmul(rgx, P["g"] * P["d2"], T["rx"])
        return rgx, {}


def _nhwc(t: Tensor) -> bool:
    """Whether ``t`` is a 4-d tensor laid out channels-last (and not also NCHW-contiguous)."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


class _MaxPool(_Rule):
    """``Ry`` gathers ``Rx`` at the primal's argmax, the backward scatters back there. On
    channels-last activations both run over the ``(n, h·w, c)`` view of the memory, so the layout
    is kept (the pixel indices are the same); otherwise over ``(n, c, h·w)``."""

    def forward(self, p, P, x):
        m = self.m
        y, idx = F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, return_indices=True)
        if self.need_in:
            P.update(shape=x.shape, nhwc=_nhwc(y), out_shape=y.shape[1:])
            P["idx"] = self._flat(P, idx)[0]
        return y

    @staticmethod
    def _flat(P, t):
        """``t`` ``(n, c, h, w)`` as the flat view the indices address, and its pixels' dimension."""
        if P["nhwc"]:
            return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1, t.shape[1]), 1
        return t.flatten(2), 2

    @staticmethod
    def _unflat(P, t, h, w):
        """:meth:`_flat`'s inverse for a flat ``t`` of ``h·w`` pixels."""
        if P["nhwc"]:
            return t.view(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)
        return t.view(*t.shape[:2], h, w)

    def _scatter(self, P, t):
        h, w = P["shape"][2:]
        src, d = self._flat(P, t)
        size = list(src.shape)
        size[d] = h * w
        return self._unflat(P, t.new_zeros(size).scatter_add_(d, P["idx"], src), h, w)

    def backward(self, p, P, g):
        return self._scatter(P, g) if self.need_in else None

    def tangent_forward(self, p, rp, P, T, rx):
        if rx is None:
            return None
        src, d = self._flat(P, rx)
        return self._unflat(P, src.gather(d, P["idx"]), *P["out_shape"][1:])

    def tangent_backward(self, p, rp, P, T, rg):
        return (self._scatter(P, rg) if self.need_in else None), {}


class _LinearMap(_Rule):
    """Parameter-free linear layers (flatten, average pools): ``Ry = m(Rx)``; the backward is the
    adjoint, from ``torch.func.vjp`` (a reshape for ``Flatten``)."""

    def forward(self, p, P, x):
        if not self.need_in:
            return self.m(x)
        if isinstance(self.m, (nn.Flatten, nn.Identity)):
            P["shape"] = x.shape
            return self.m(x)
        y, P["vjp"] = torch.func.vjp(self.m, x)
        return y

    def _adjoint(self, P, g):
        return g.reshape(P["shape"]) if "shape" in P else P["vjp"](g)[0]

    def backward(self, p, P, g):
        return self._adjoint(P, g) if self.need_in else None

    def tangent_forward(self, p, rp, P, T, rx):
        return None if rx is None else self.m(rx)

    def tangent_backward(self, p, rp, P, T, rg):
        return (self._adjoint(P, rg) if self.need_in else None), {}


def _rule(m: nn.Module, prefix: str, need_in: bool, channels_last: bool = False) -> _Rule:
    if isinstance(m, nn.Conv2d):
        return _Conv(m, prefix, need_in, channels_last)
    for kinds, cls in (((nn.Linear,), _Linear), ((nn.modules.batchnorm._BatchNorm,), _BatchNorm),
                       ((nn.MaxPool2d,), _MaxPool), (ACTIVATIONS, _Activation)):
        if isinstance(m, kinds):
            return cls(m, prefix, need_in)
    return _LinearMap(m, prefix, need_in)


def _loss_primal(loss: str, z: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None]:
    """``∂ℓ/∂z`` of the chunk's summed loss, and the softmax (cross-entropy) for its R."""
    if loss == "ce":
        prob = torch.softmax(z, dim=-1)
        g = prob.clone()
        g[torch.arange(z.shape[0], device=z.device), y] -= 1
        return g, prob
    if loss == "mse":
        return z - F.one_hot(y, z.shape[-1]).to(z.dtype), None
    raise ValueError(f"unknown loss {loss!r}")


def _loss_tangent(prob: Tensor | None, rz: Tensor) -> Tensor:
    if prob is None:  # MSE: ∂ℓ/∂z = z − target
        return rz
    pr = prob * rz
    return torch.addcmul(pr, prob, pr.sum(-1, keepdim=True), value=-1)


def _nbytes(obj, seen: set | None = None) -> int:
    """Bytes of the tensors in ``obj`` (dicts, lists), each counted once however often it is held
    (a layer's output is the next layer's input: one tensor, kept once)."""
    seen = set() if seen is None else seen
    if isinstance(obj, Tensor):
        key = (obj.data_ptr(), obj.numel() * obj.element_size())
        if key in seen:
            return 0
        seen.add(key)
        return key[1]
    if isinstance(obj, dict):
        return sum(_nbytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v, seen) for v in obj)
    return 0


def kept_primal(op, i: int, xc: Tensor, yc: Tensor, size_of, out: dict | None = None):
    """Chunk ``i``'s primal pass for an R-operator ``op`` (:class:`RopHVP`,
    :class:`~eosflow.spectral.graph_rop.GraphRopHVP`): the one kept from an earlier call, or
    ``op._primal(xc, yc)``, kept while the first chunks' passes total at most ``op.max_bytes``
    (``size_of(primal)``: its bytes). ``out``: a fresh pass (never a kept one) that also adds the
    chunk's loss, correct predictions and gradient to it (``op._primal(xc, yc, out)``)."""
    if i < len(op._cache) and out is None:
        return op._cache[i]
    primal = op._primal(xc, yc) if out is None else op._primal(xc, yc, out)
    if not op._cache_full and i == len(op._cache):
        size = size_of(primal)
        if op.cache_bytes + size <= op.max_bytes:
            op._cache.append(primal)
            op.cache_bytes += size
        else:
            op._cache_full = True
    return primal


def _add_grads(out: dict, prefix: str, grads: dict) -> None:
    """Add a layer's terms (by parameter name) into ``out``, keyed by the full parameter names."""
    for name, t in grads.items():
        key = prefix + name
        out[key] = t if key not in out else out[key] + t


def stack_products(outs: list[dict], obj, theta: Tensor) -> Tensor:
    """The rows ``(m, P)`` of the products accumulated per parameter name in ``outs`` (a parameter
    without a term is zero), divided by the objective's ``n``."""
    return torch.stack([torch.cat([out[n].reshape(-1) if n in out else theta.new_zeros(s)
                                   for n, s in zip(obj.names, obj.sizes)]) / obj.n for out in outs])


class RopHVP(HessianOperator):
    """``v ↦ ∇²L(θ) v`` of an :class:`~eosflow.objective.Objective` at one ``θ`` by the R-operator.

    Summed over the objective's chunks and divided by N, as ``Objective.hvp``. The primal pass of
    each chunk (activations and gradients at ``θ``) is computed once per :meth:`matvec_batch` call
    and shared by its vectors; those of the first chunks are kept for later calls while they
    total at most ``max_bytes`` (0: nothing kept, the memory of one chunk's primal and tangent
    passes at a time). ``cached_chunks`` and ``cache_bytes`` say what was kept. ``product`` is
    ``"rop"``. Raises ``ValueError`` for a model outside :func:`rop_supported`.

    ``channels_last``: run the passes of a convolutional model (one with a ``Conv2d``) on
    channels-last activations (the chunk's images are converted once, each convolution answers in
    that layout, and BatchNorm, activations and pools keep it). None (default): on a CPU, for
    images with more than one channel. There oneDNN's convolutions and their backward on few
    channels are several times faster channels-last, and a product of the benchmark VGG (CIFAR's
    3 x 32 x 32 images, 8-32 channels) takes a fifth to a third less time; on the default
    pipeline's CNN (1 x 14 x 14 images, 8 and 16 channels) the difference was small and changed
    sign between runs, so one-channel images keep NCHW (``benchmarks/hvp_choice.py``), and the
    default pipeline's numbers stay what they were. The products are the same to rounding either way.
    """

    product = "rop"

    def __init__(self, objective, theta: Tensor, max_bytes: int = DEFAULT_PRIMAL_CACHE_BYTES,
                 channels_last: bool | None = None):
        reason = rop_unsupported_reason(objective.model, getattr(objective, "batch_norm", "batch"))
        if reason is None and getattr(objective, "loss_name", None) not in ("ce", "mse"):
            reason = f"loss {getattr(objective, 'loss_fn', '?')}: the rule here is for eosflow's 'ce' and 'mse'"
        if reason:
            raise ValueError(f"RopHVP: {reason}")
        super().__init__(objective, theta)
        self.max_bytes = int(max_bytes)
        leaves = _leaves(objective.model)
        convs = [m for _, m in leaves if isinstance(m, nn.Conv2d)]
        if channels_last is None:  # see the class docstring
            channels_last = self.theta.device.type == "cpu" and bool(convs) and convs[0].in_channels > 1
        self.channels_last = bool(convs) and bool(channels_last)
        rules, has_params = [], False
        for prefix, m in leaves:
            rules.append(_rule(m, prefix, need_in=has_params, channels_last=self.channels_last))
            has_params = has_params or any(True for _ in m.parameters(recurse=False))
        self.rules = rules
        flat = objective.unflatten(self.theta)
        self._p = [r.params(flat) for r in rules]
        self._cache: list = []
        self._cache_full = self.max_bytes <= 0
        self.cache_bytes = 0

    @property
    def cached_chunks(self) -> int:
        return len(self._cache)

    def _primal(self, x: Tensor, y: Tensor, out: dict | None = None) -> tuple[list[dict], Tensor | None]:
        """The chunk's primal pass; ``out``: also add its summed loss (``"loss"``), correct predictions
        (``"correct"``) and gradient (per parameter name) to ``out`` (:meth:`loss_grad_acc`)."""
        obj = self.objective
        Ps: list[dict] = [{} for _ in self.rules]
        a = x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x
        for r, p, P in zip(self.rules, self._p, Ps):
            a = r.forward(p, P, a)
        g, prob = _loss_primal(obj.loss_name, a, y)
        if out is not None:
            out["loss"] = out.get("loss", 0.0) + float(obj.output_sum_loss(a, y))
            out["correct"] = out.get("correct", 0) + int(obj.correct(a, y))
        for r, p, P in zip(reversed(self.rules), reversed(self._p), reversed(Ps)):
            if out is None:
                g = r.backward(p, P, g)
            else:
                g, grads = r.backward_grads(p, P, g)
                _add_grads(out, r.prefix, grads)
            if g is None:
                break
        return Ps, prob

    @torch.no_grad()
    def loss_grad_acc(self) -> tuple[float, float, Tensor]:
        """``(L(θ), training accuracy, ∇L(θ))`` from this operator's own primal passes (as
        :meth:`eosflow.objective.Objective.loss_grad_acc`, equal to rounding), kept for the products
        that follow as :meth:`matvec_batch` keeps them: a clamped GD step and its sharpness solve share
        one forward and backward pass. Call it before any product."""
        obj = self.objective
        out: dict = {}
        for i, (xc, yc) in enumerate(obj.chunks()):
            kept_primal(self, i, xc, yc, _nbytes, out)
        loss, correct = out.pop("loss"), out.pop("correct")
        grad = stack_products([out], obj, self.theta)[0]
        return loss / obj.n, (correct / obj.n if obj.has_accuracy else float("nan")), grad

    def _tangent(self, Ps: list[dict], prob: Tensor | None, rps: list[dict], out: dict) -> None:
        Ts: list[dict] = [{} for _ in self.rules]
        ra = None
        for r, p, rp, P, T in zip(self.rules, self._p, rps, Ps, Ts):
            ra = r.tangent_forward(p, rp, P, T, ra)
        rg = _loss_tangent(prob, ra)
        for r, p, rp, P, T in zip(reversed(self.rules), reversed(self._p), reversed(rps), reversed(Ps), reversed(Ts)):
            rg, grads = r.tangent_backward(p, rp, P, T, rg)
            _add_grads(out, r.prefix, grads)
            if rg is None:
                break

    @torch.no_grad()
    def matvec_batch(self, V: Tensor) -> Tensor:
        """Products for the rows of ``V``: one primal pass per chunk (or the kept one), then a
        tangent pass per row."""
        obj = self.objective
        V = V.to(self.dtype)
        rps = [[r.params(obj.unflatten(v)) for r in self.rules] for v in V]
        outs: list[dict] = [{} for _ in V]
        for i, (xc, yc) in enumerate(obj.chunks()):
            Ps, prob = kept_primal(self, i, xc, yc, _nbytes)
            for rp, out in zip(rps, outs):
                self._tangent(Ps, prob, rp, out)
        return stack_products(outs, obj, self.theta)

    def matvec(self, v: Tensor) -> Tensor:
        return self.matvec_batch(v[None])[0]
