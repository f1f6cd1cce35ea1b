"""Hessian-vector products by the R-operator over a ``torch.fx`` graph (:class:`GraphRopHVP`).

:mod:`eosflow.spectral.rop` writes Pearlmutter's ``H v = R_v{∇L(θ)}`` out layer by layer for an
``nn.Sequential``; here the same four passes run over the nodes of a ``torch.fx.symbolic_trace`` of
any model, so residual additions, normalisation layers, embeddings and other non-Sequential graphs
get the fast product too. Per chunk, a **primal** pass (values forward, then the gradients ``g`` of
every node backward, from the loss) is computed once and kept within a byte budget; each vector
then costs one **tangent** pass (``Ra`` forward, ``Rg`` backward). The ``Rg`` of the parameters is
``H v``. A tensor used by several nodes (the skip connection) receives the sum of their ``g`` and
``Rg``.

Rules (exact, no approximation; a node's rule is used only where the node depends on ``θ``):

- from :mod:`~eosflow.spectral.rop`: ``Linear``, ``Conv2d`` (zero padding given as numbers),
  ``BatchNorm`` with batch statistics (training mode, or no running statistics), elementwise
  activations, ``MaxPool2d``;
- here: ``BatchNorm`` in eval mode with running statistics (a fixed per-channel affine map),
  ``GroupNorm`` and ``LayerNorm`` (one rule: statistics over a group of entries, affine after),
  ``Embedding`` (integer inputs: no tangent flows into the indices), functional and method forms of
  the activations (``torch.relu``, ``F.gelu``, ``x.tanh()`` …), ``Dropout`` (the identity in eval
  mode; in training mode with ``p > 0`` unsupported), ``add``/``sub``/``neg`` (``x + y``,
  ``operator.add``, ``torch.add``, broadcasting), ``mul``/``div`` (by constants, or the product of
  two ``θ``-dependent tensors), ``cat``, and the linear maps ``flatten``/``reshape``/``view``/
  ``squeeze``/``unsqueeze``/``permute``/``transpose``/indexing, ``mean``/``sum`` over dims, average
  and adaptive average pools (module and functional), ``Identity``/``Flatten``/``Unflatten``.
- Nodes that do not depend on ``θ`` (input preprocessing, ``x.shape``/``x.size()``) are evaluated
  as they are, whatever they are.

The loss: closed forms for the objective's ``"ce"`` and ``"mse"`` (those of rop.py); any other loss
through ``objective.output_sum_loss(out, y)``, whose gradient and Hessian-vector product with
respect to the network's output come from autograd (the output is small, ``(B, C)``).

:func:`graph_rop_unsupported_reason` says why a model does not qualify (a trace that fails, a node
without a rule); :func:`eosflow.spectral.hvp_operator` can then fall back to double backward.
"""

from __future__ import annotations

import copy
import operator
import weakref

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from .operators import HessianOperator
from .rop import (ACTIVATIONS, DEFAULT_PRIMAL_CACHE_BYTES, _Activation, _BatchNorm, _Conv, _layer_problem, _Linear,
                  _loss_primal, _loss_tangent, _MaxPool, _nbytes, kept_primal, stack_products)

__all__ = ["GraphRopHVP", "graph_rop_supported", "graph_rop_unsupported_reason"]


class _Unsupported(Exception):
    pass


#: Elementwise activation modules beyond rop.py's (their derivatives by autograd, entry by entry).
_MORE_ACTIVATIONS = (nn.ReLU6, nn.Hardtanh, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.LogSigmoid, nn.SELU,
                     nn.CELU, nn.Softsign, nn.Tanhshrink)
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
          nn.AdaptiveAvgPool3d)


class _Fn(nn.Module):
    """An elementwise function ``fn(x, *args, **kwargs)`` as a module (for rop.py's activation rule)."""

    def __init__(self, fn, args=(), kwargs=None):
        super().__init__()
        self.fn, self.args, self.kw = fn, tuple(args), dict(kwargs or {})

    def forward(self, x):
        return self.fn(x, *self.args, **self.kw)


# functional/method activations: name -> module maker from the node's constant extra args and kwargs
def _act_module(name: str, args: tuple, kwargs: dict) -> nn.Module:
    kwargs = {k: v for k, v in kwargs.items() if k != "inplace"}
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    fn = {"gelu": F.gelu, "silu": F.silu, "sigmoid": torch.sigmoid, "elu": F.elu, "softplus": F.softplus,
          "leaky_relu": F.leaky_relu, "mish": F.mish, "relu6": F.relu6, "hardtanh": F.hardtanh,
          "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid, "logsigmoid": F.logsigmoid,
          "selu": F.selu, "celu": F.celu, "softsign": F.softsign}[name]
    args = tuple(args)
    while args and isinstance(args[-1], bool):  # a positional inplace flag: evaluated out of place
        args = args[:-1]
    return _Fn(fn, args, kwargs)


_ACT_FUNCTIONS = {torch.relu: "relu", F.relu: "relu", torch.relu_: "relu", F.relu_: "relu", torch.tanh: "tanh",
                  F.tanh: "tanh", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", F.gelu: "gelu", F.silu: "silu",
                  F.elu: "elu", F.softplus: "softplus", F.leaky_relu: "leaky_relu", F.mish: "mish",
                  F.relu6: "relu6", F.hardtanh: "hardtanh", F.hardswish: "hardswish",
                  F.hardsigmoid: "hardsigmoid", F.logsigmoid: "logsigmoid", F.selu: "selu", F.celu: "celu",
                  F.softsign: "softsign"}
_ACT_METHODS = {"relu": "relu", "relu_": "relu", "tanh": "tanh", "tanh_": "tanh", "sigmoid": "sigmoid",
                "sigmoid_": "sigmoid"}
_ADD = {operator.add, operator.iadd, torch.add}
_SUB = {operator.sub, operator.isub, torch.sub}
_MUL = {operator.mul, operator.imul, torch.mul}
_DIV = {operator.truediv, operator.itruediv, torch.div}
_RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "contiguous", "view_as", "reshape_as"}
_LINEAR_FUNCTIONS = {torch.permute, torch.transpose, torch.mean, torch.sum, torch.narrow, torch.select,
                     operator.getitem, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
                     F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, torch.t, torch.movedim}
_LINEAR_METHODS = {"permute", "transpose", "t", "mean", "sum", "narrow", "select", "expand", "movedim",
                   "__getitem__"}
_METADATA_METHODS = {"size", "dim", "numel", "ndimension", "nelement"}
_CAT = {torch.cat, torch.concat, torch.concatenate}


def _sum_to(t: Tensor, shape) -> Tensor:
    return t if t.shape == shape else t.sum_to_size(shape)


# -- rules ----------------------------------------------------------------------------------------
# A graph rule sees a node's tensor inputs ``xs`` (the values of ``self.inputs``, the fx nodes it
# differentiates through; ``need[i]``: does input i depend on θ) and its resolved ``args``/
# ``kwargs``. forward(p, P, xs, args, kwargs) -> y; backward(p, P, g) -> [g_i]; tangent_forward(p,
# rp, P, T, rxs) -> Ry; tangent_backward(p, rp, P, T, rg) -> ([Rg_i], {param: Rg}). Entries for
# inputs that do not need them are None. ``p``/``rp``: the node's module parameters at θ and in v.

class _GRule:
    def __init__(self, node: fx.Node, inputs: list, need: list, m: nn.Module | None = None, prefix: str = ""):
        self.node, self.inputs, self.need, self.m, self.prefix = node, inputs, need, m, prefix

    def params(self, flat: dict) -> dict:
        if not self.prefix:
            return {}
        n = len(self.prefix)
        return {k[n:]: t for k, t in flat.items() if k.startswith(self.prefix) and "." not in k[n:]}


class _FromRop(_GRule):
    """A one-input layer rule of rop.py."""

    def __init__(self, node, inputs, need, m, prefix, cls):
        super().__init__(node, inputs, need, m, prefix)
        self.r = cls(m, prefix, need[0])

    def forward(self, p, P, xs, args, kwargs):
        return self.r.forward(p, P, xs[0])

    def backward(self, p, P, g):
        return [self.r.backward(p, P, g)]

    def tangent_forward(self, p, rp, P, T, rxs):
        return self.r.tangent_forward(p, rp, P, T, rxs[0])

    def tangent_backward(self, p, rp, P, T, rg):
        rgx, grads = self.r.tangent_backward(p, rp, P, T, rg)
        return [rgx], grads


class _Norm(_GRule):
    """LayerNorm: ``x̂ = (x − μ)s``, ``s = (σ² + ε)^(-1/2)`` with the statistics over the last
    dims ``S`` of each example, then ``y = w x̂ + b`` (their gradients: sums over the leading dims
    ``A``). With ``m`` the mean over ``S``, ``r = m(Rx)``, ``q = m(x̂ Rx)``: ``Rx̂ = s(Rx − r − q x̂)``;
    the backward ``g_x = s(g_x̂ − m(g_x̂) − x̂ m(g_x̂ x̂))``, ``g_x̂ = w g``, and its R:
    ``Rg_x = s(Rg_x̂ − m(Rg_x̂) − x̂ (m(Rg_x̂ x̂) + m(g_x̂ Rx̂))) − s q g_x − s m(g_x̂ x̂) Rx̂`` with
    ``Rg_x̂ = Rw g + w Rg``."""

    def _view(self, x: Tensor):
        k, d = len(self.m.normalized_shape), x.dim()
        return x, tuple(range(d - k, d)), tuple(range(d - k)), tuple(self.m.normalized_shape)

    def forward(self, p, P, xs, args, kwargs):
        x = xs[0]
        xv, S, A, wshape = self._view(x)
        var, mean = torch.var_mean(xv, S, correction=0, keepdim=True)
        s = torch.rsqrt(var + self.m.eps)
        xh = torch.addcmul(-mean * s, xv, s)
        w = p["weight"].view(wshape) if "weight" in p else None
        b = p["bias"].view(wshape) if "bias" in p else None
        y = xh if w is None else xh * w
        if b is not None:
            y = y + b
        P.update(xh=xh, s=s, S=S, A=A, wshape=wshape, shape=x.shape)
        return y.view(x.shape)

    def _w(self, p, P):
        return p["weight"].view(P["wshape"]) if "weight" in p else None

    def backward(self, p, P, g):
        if not self.need[0]:
            return [None]
        xh, s, S = P["xh"], P["s"], P["S"]
        gv = g.reshape(xh.shape)
        w = self._w(p, P)
        gxh = gv if w is None else gv * w
        c1 = gxh.mean(S, keepdim=True)
        c2 = (gxh * xh).mean(S, keepdim=True)
        gx = s * torch.addcmul(gxh - c1, xh, c2, value=-1)
        P.update(g=gv, gxh=gxh, c2=c2, gx=gx)
        return [gx.view(P["shape"])]

    def tangent_forward(self, p, rp, P, T, rxs):
        xh, s, S = P["xh"], P["s"], P["S"]
        ry = None
        if "weight" in rp:
            ry = xh * rp["weight"].view(P["wshape"])
        if "bias" in rp:
            rb = rp["bias"].view(P["wshape"])
            ry = rb.expand(xh.shape) if ry is None else ry + rb
        rx = rxs[0]
        if rx is not None:
            rxv = rx.reshape(xh.shape)
            r = rxv.mean(S, keepdim=True)
            q = (xh * rxv).mean(S, keepdim=True)
            rxh = s * torch.addcmul(rxv - r, xh, q, value=-1)
            T.update(rxh=rxh, q=q)
            w = self._w(p, P)
            t = rxh if w is None else rxh * w
            ry = t if ry is None else ry + t
        return None if ry is None else ry.reshape(P["shape"])

    def tangent_backward(self, p, rp, P, T, rg):
        xh, s, S, A = P["xh"], P["s"], P["S"], P["A"]
        rgv = rg.reshape(xh.shape)
        grads = {}
        if "weight" in p:
            gw = rgv * xh
            if self.need[0]:
                gw = torch.addcmul(gw, P["g"], T["rxh"])
            grads["weight"] = gw.sum(A).reshape(p["weight"].shape)
        if "bias" in p:
            grads["bias"] = rgv.sum(A).reshape(p["bias"].shape)
        if not self.need[0]:
            return [None], grads
        w = self._w(p, P)
        rgxh = rgv if w is None else rgv * w
        if "weight" in rp:
            rgxh = torch.addcmul(rgxh, P["g"], rp["weight"].view(P["wshape"]))
        rxh, q = T["rxh"], T["q"]
        a1 = rgxh.mean(S, keepdim=True)
        a2 = (rgxh * xh).mean(S, keepdim=True) + (P["gxh"] * rxh).mean(S, keepdim=True)
        out = s * torch.addcmul(rgxh - a1, xh, a2, value=-1)
        out = torch.addcmul(out, P["gx"], s * q, value=-1)
        out = torch.addcmul(out, rxh, s * P["c2"], value=-1)
        return [out.view(P["shape"])], grads


class _GroupNorm(_GRule):
    """GroupNorm through ATen's fused kernels. With the normalised input ``x̂`` kept (as ``(N, C, L)``)
    and ``J₁ = I − 11ᵀ/K − x̂x̂ᵀ/K`` per group of ``K`` entries (``native_group_norm_backward`` of
    ``x̂`` with mean 0 and rstd 1; symmetric), the Jacobian of ``x ↦ x̂`` is ``s J₁``:
    ``Rx̂ = s u``, ``u = J₁ Rx``; ``g_x = s J₁(w g)``; and, with ``q = m(x̂ Rx)``,
    ``c₂ = m(g_x̂ x̂)``, ``d = m(g_x̂ Rx̂)`` (``m``: the group mean, ``g_x̂ = w g``),
    ``Rg_x = s J₁(w Rg + Rw g) − s q g_x − s² c₂ u − s d x̂`` (the rule of :class:`_Norm`). The
    per-group dot products are ``vecdot``s per channel, summed over the channels of a group."""

    def _dims(self, x):
        n, c = x.shape[:2]
        return n, c, x.numel() // (n * c), self.m.num_groups

    def _nbk(self, P, grad, weight, mask):
        n, c, hw, G = P["dims"]
        return torch.ops.aten.native_group_norm_backward(grad, P["xh"], P["zero"], P["one"], weight, n, c, hw, G, mask)

    def _group_sum(self, P, t):  # (N, C) -> (N, G, 1), summed over the channels of each group
        n, c, hw, G = P["dims"]
        return t.view(n, G, c // G).sum(-1, keepdim=True)

    def forward(self, p, P, xs, args, kwargs):
        x = xs[0]
        n, c, hw, G = dims = self._dims(x)
        xh, _, rstd = torch.native_group_norm(x, None, None, n, c, hw, G, self.m.eps)
        zero = rstd.new_zeros(rstd.shape)
        P.update(xh=xh, s=rstd.view(n, G, 1), dims=dims, zero=zero, one=torch.ones_like(zero), K=c // G * hw)
        w, b = p.get("weight"), p.get("bias")
        xc = xh.view(n, c, hw)
        if w is None:
            y = xh if b is None else xc + b.view(1, c, 1)
        elif b is None:
            y = xc * w.view(1, c, 1)
        else:
            y = torch.addcmul(b.view(1, c, 1), xc, w.view(1, c, 1))
        return y.view(x.shape)

    def _ws(self, p, P):  # w_c s_(n, group of c), (N, C, 1)
        n, c, hw, G = P["dims"]
        s = P["s"].expand(n, G, c // G).reshape(n, c, 1)
        return s * p["weight"].view(1, c, 1) if "weight" in p else s

    def backward(self, p, P, g):
        if not self.need[0]:
            return [None]
        n, c, hw, G = P["dims"]
        g = g.contiguous()
        gx = self._nbk(P, g, p.get("weight"), [True, False, False])[0]
        gx = (gx.view(n, G, -1) * P["s"]).view(g.shape)
        t = torch.linalg.vecdot(g.view(n, c, hw), P["xh"].view(n, c, hw))
        if "weight" in p:
            t = t * p["weight"]
        P.update(g=g, gx=gx, c2=self._group_sum(P, t) / P["K"])
        return [gx]

    def tangent_forward(self, p, rp, P, T, rxs):
        n, c, hw, G = P["dims"]
        xc, rx, ry = P["xh"].view(n, c, hw), rxs[0], None
        if "weight" in rp:
            ry = xc * rp["weight"].view(1, c, 1) if "bias" not in rp else torch.addcmul(
                rp["bias"].view(1, c, 1), xc, rp["weight"].view(1, c, 1))
        elif "bias" in rp:
            ry = rp["bias"].view(1, c, 1).expand(n, c, hw)
        if rx is not None:
            rx = rx.contiguous()
            u = self._nbk(P, rx, None, [True, False, False])[0]
            T.update(u=u, q=self._group_sum(P, torch.linalg.vecdot(xc, rx.view(n, c, hw))) / P["K"])
            ws = self._ws(p, P)
            ry = u.view(n, c, hw) * ws if ry is None else torch.addcmul(ry, u.view(n, c, hw), ws)
        return None if ry is None else ry.reshape(P["xh"].shape)

    def tangent_backward(self, p, rp, P, T, rg):
        n, c, hw, G = P["dims"]
        rg = rg.contiguous()
        need, grads = self.need[0], {}
        has_w = "weight" in p
        a1, dw, db = self._nbk(P, rg, p.get("weight"), [need, has_w, "bias" in p])
        if "bias" in p:
            grads["bias"] = db
        if not need:
            if has_w:
                grads["weight"] = dw
            return [None], grads
        u, s = T["u"], P["s"]
        t = torch.linalg.vecdot(P["g"].view(n, c, hw), u.view(n, c, hw))  # Σ_l g u, (N, C)
        if has_w:
            grads["weight"] = dw + (t.view(n, G, -1) * s).sum(0).reshape(-1)
            a1 = a1 + self._nbk(P, P["g"], rp["weight"], [True, False, False])[0]
            t = t * p["weight"]
        d = s * self._group_sum(P, t) / P["K"]
        out = (a1.view(n, G, -1) * s).addcmul_(P["gx"].view(n, G, -1), s * T["q"], value=-1)
        out.addcmul_(u.view(n, G, -1), s * s * P["c2"], value=-1)
        out.addcmul_(P["xh"].view(n, G, -1), s * d, value=-1)
        return [out.view(rg.shape)], grads


class _ReLU(_GRule):
    """ReLU through its output ``y`` (which the next layer usually keeps anyway): every product by
    ``φ'`` is ``threshold_backward(·, y, 0)``, autograd's own ReLU backward."""

    def forward(self, p, P, xs, args, kwargs):
        y = torch.relu(xs[0])
        P["y"] = y
        return y

    def _d(self, P, t):
        return torch.ops.aten.threshold_backward(t, P["y"], 0)

    def backward(self, p, P, g):
        return [self._d(P, g)]

    def tangent_forward(self, p, rp, P, T, rxs):
        return None if rxs[0] is None else self._d(P, rxs[0])

    def tangent_backward(self, p, rp, P, T, rg):
        return [self._d(P, rg)], {}


class _BatchNormEval(_GRule):
    """BatchNorm with its running statistics (eval mode): ``y = w x̂ + b``, ``x̂ = (x − μ_run) c``,
    ``c = (σ²_run + ε)^(-1/2)`` fixed: linear in ``x``, bilinear in ``(x, w)``."""

    def _shape(self, x):
        return [1, -1] + [1] * (x.dim() - 2)

    def forward(self, p, P, xs, args, kwargs):
        x, m = xs[0], self.m
        sh = self._shape(x)
        c = torch.rsqrt(m.running_var + m.eps).to(x.dtype).view(sh)
        xh = (x - m.running_mean.to(x.dtype).view(sh)) * c
        P.update(c=c, sh=sh, dims=[0] + list(range(2, x.dim())))
        if "weight" in p:
            P["xh"] = xh
            xh = xh * p["weight"].view(sh)
        return xh + p["bias"].view(sh) if "bias" in p else xh

    def _scale(self, p, P):
        return P["c"] * p["weight"].view(P["sh"]) if "weight" in p else P["c"]

    def backward(self, p, P, g):
        if not self.need[0]:
            return [None]
        P["g"] = g
        return [g * self._scale(p, P)]

    def tangent_forward(self, p, rp, P, T, rxs):
        ry = None
        if "weight" in rp:
            ry = P["xh"] * rp["weight"].view(P["sh"])
        if "bias" in rp:
            rb = rp["bias"].view(P["sh"])
            ry = rb if ry is None else ry + rb
        rx = rxs[0]
        if rx is not None:
            T["rx"] = rx
            t = rx * self._scale(p, P)
            ry = t if ry is None else ry + t
        return ry

    def tangent_backward(self, p, rp, P, T, rg):
        dims, grads = P["dims"], {}
        if "weight" in p:
            gw = rg * P["xh"]
            if self.need[0]:
                gw = torch.addcmul(gw, P["g"] * P["c"], T["rx"])
            grads["weight"] = gw.sum(dims)
        if "bias" in p:
            grads["bias"] = rg.sum(dims)
        if not self.need[0]:
            return [None], grads
        out = rg * self._scale(p, P)
        if "weight" in rp:
            out = torch.addcmul(out, P["g"], P["c"] * rp["weight"].view(P["sh"]))
        return [out], grads


class _Embedding(_GRule):
    """``y = W[idx]``: linear in ``W``, no tangent into the (integer) indices. The ``padding_idx``
    row is a constant to autograd (its gradient is masked), so here too: no tangent from it and no
    gradient into it."""

    def forward(self, p, P, xs, args, kwargs):
        P["idx"] = xs[0]
        if self.m.padding_idx is not None:
            P["pad"] = (xs[0] == self.m.padding_idx).unsqueeze(-1)
        return F.embedding(xs[0], p["weight"], self.m.padding_idx)

    def backward(self, p, P, g):
        return [None]

    def tangent_forward(self, p, rp, P, T, rxs):
        ry = F.embedding(P["idx"], rp["weight"])
        return ry.masked_fill_(P["pad"], 0) if "pad" in P else ry

    def tangent_backward(self, p, rp, P, T, rg):
        w = p["weight"]
        out = w.new_zeros(w.shape).index_add_(0, P["idx"].reshape(-1), rg.reshape(-1, w.shape[1]))
        if self.m.padding_idx is not None:
            out[self.m.padding_idx] = 0
        return [None], {"weight": out}


class _Reshape(_GRule):
    """Reshapes and identities: ``Ry`` is ``Rx`` in the output's shape, the adjoint the reverse."""

    def forward(self, p, P, xs, args, kwargs):
        y = _run(self.node, self.m, args, kwargs)
        P.update(in_shape=xs[0].shape, out_shape=y.shape)
        return y

    def backward(self, p, P, g):
        return [g.reshape(P["in_shape"])]

    def tangent_forward(self, p, rp, P, T, rxs):
        return rxs[0].reshape(P["out_shape"])

    def tangent_backward(self, p, rp, P, T, rg):
        return [rg.reshape(P["in_shape"])], {}


class _LinearFn(_GRule):
    """A map linear in its first argument (the others fixed): ``Ry`` is the map of ``Rx``, the
    adjoint from ``torch.func.vjp``."""

    def forward(self, p, P, xs, args, kwargs):
        rest = args[1:]
        node, m = self.node, self.m
        f = lambda t: _run(node, m, (t,) + tuple(rest), kwargs)  # noqa: E731
        y, P["vjp"] = torch.func.vjp(f, xs[0])
        P["f"] = f
        return y

    def backward(self, p, P, g):
        return [P["vjp"](g)[0]]

    def tangent_forward(self, p, rp, P, T, rxs):
        return P["f"](rxs[0])

    def tangent_backward(self, p, rp, P, T, rg):
        return [P["vjp"](rg)[0]], {}


class _LinComb(_GRule):
    """``y = Σ c_i x_i + constants`` (add, sub, neg, with broadcasting): ``g_i = c_i g`` summed to
    ``x_i``'s shape, ``Ry = Σ c_i Rx_i``."""

    def __init__(self, node, inputs, need, coeffs):
        super().__init__(node, inputs, need)
        self.coeffs = coeffs

    def forward(self, p, P, xs, args, kwargs):
        y = _run(self.node, None, args, kwargs)
        P.update(shapes=[x.shape for x in xs], out_shape=y.shape)
        return y

    def _back(self, P, g):
        return [_sum_to(g if c == 1 else c * g, s) if need else None
                for c, s, need in zip(self.coeffs, P["shapes"], self.need)]

    def backward(self, p, P, g):
        return self._back(P, g)

    def tangent_forward(self, p, rp, P, T, rxs):
        ry = None
        for c, rx in zip(self.coeffs, rxs):
            if rx is not None:
                t = rx if c == 1 else c * rx
                ry = t if ry is None else ry + t
        if ry is not None and ry.shape != P["out_shape"]:
            ry = ry.expand(P["out_shape"])
        return ry

    def tangent_backward(self, p, rp, P, T, rg):
        return self._back(P, rg), {}


class _Mul(_GRule):
    """``y = a b`` (``b`` may be a constant, or ``1/d`` for ``a / d`` with ``d`` constant):
    ``g_a = g b``, ``Ry = Ra b + a Rb``, ``Rg_a = Rg b + g Rb`` (summed to ``a``'s shape)."""

    def __init__(self, node, inputs, need, divide: bool):
        super().__init__(node, inputs, need)
        self.divide = divide

    def forward(self, p, P, xs, args, kwargs):
        a, b = args[0], args[1]
        if self.divide:
            b = 1.0 / b
        y = a * b
        P.update(a=a, b=b, out_shape=y.shape)
        return y

    def backward(self, p, P, g):
        a, b = P["a"], P["b"]
        P["g"] = g
        out = [_sum_to(g * b, a.shape)]
        if len(self.need) > 1:
            out.append(_sum_to(g * a, b.shape) if self.need[1] else None)
        return out

    def tangent_forward(self, p, rp, P, T, rxs):
        a, b = P["a"], P["b"]
        ra, rb = rxs[0], (rxs[1] if len(rxs) > 1 else None)
        T.update(ra=ra, rb=rb)
        ry = None if ra is None else ra * b
        if rb is not None:
            ry = a * rb if ry is None else torch.addcmul(ry, a, rb)
        if ry is not None and ry.shape != P["out_shape"]:
            ry = ry.expand(P["out_shape"])
        return ry

    def tangent_backward(self, p, rp, P, T, rg):
        a, b, g, ra, rb = P["a"], P["b"], P["g"], T["ra"], T["rb"]
        t = rg * b
        if rb is not None:
            t = torch.addcmul(t, g, rb)
        out = [_sum_to(t, a.shape) if self.need[0] else None]
        if len(self.need) > 1:
            if self.need[1]:
                t = rg * a
                if ra is not None:
                    t = torch.addcmul(t, g, ra)
                out.append(_sum_to(t, b.shape))
            else:
                out.append(None)
        return out, {}


class _Cat(_GRule):
    """``torch.cat``: ``Ry`` the concatenation of the tangents (zeros for constant pieces), the
    adjoint a split."""

    def __init__(self, node, inputs, need, positions):
        super().__init__(node, inputs, need)
        self.positions = positions  # index of each input in the concatenated list

    def forward(self, p, P, xs, args, kwargs):
        y = _run(self.node, None, args, kwargs)
        pieces = args[0]
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        dim = dim % y.dim()
        P.update(dim=dim, sizes=[t.shape[dim] for t in pieces], shapes=[t.shape for t in pieces])
        return y

    def backward(self, p, P, g):
        parts = g.split(P["sizes"], P["dim"])
        return [parts[i] if need else None for i, need in zip(self.positions, self.need)]

    def tangent_forward(self, p, rp, P, T, rxs):
        if all(r is None for r in rxs):
            return None
        ref = next(r for r in rxs if r is not None)
        pieces = [None] * len(P["sizes"])
        for i, r in zip(self.positions, rxs):
            if r is not None:
                pieces[i] = r
        pieces = [ref.new_zeros(s) if t is None else t for t, s in zip(pieces, P["shapes"])]
        return torch.cat(pieces, P["dim"])

    def tangent_backward(self, p, rp, P, T, rg):
        return self.backward(p, P, rg), {}


# -- the graph ------------------------------------------------------------------------------------

def _run(node: fx.Node, m: nn.Module | None, args, kwargs):
    """Evaluate ``node``'s operation on resolved arguments."""
    if node.op == "call_module":
        return m(*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    self_obj, *rest = args
    return getattr(self_obj, node.target)(*rest, **kwargs)


def _inplace_ok(node: fx.Node) -> None:
    first = node.args[0] if node.args else None
    if isinstance(first, fx.Node) and len(first.users) > 1:
        raise _Unsupported(f"{node.format_node()}: an in-place operation on a tensor that is also used elsewhere")


def _is_inplace(node: fx.Node, m: nn.Module | None) -> bool:
    if m is not None:
        return bool(getattr(m, "inplace", False))
    if node.op == "call_method" and node.target.endswith("_") and not node.target.endswith("__"):
        return True
    if node.target in (operator.iadd, operator.isub, operator.imul, operator.itruediv, torch.relu_, F.relu_):
        return True
    return bool(node.kwargs.get("inplace", False))


def _module_rule(node, m, prefix, ins, need, batch_norm):
    """The rule of a ``call_module`` node, or raise :class:`_Unsupported`."""
    args = (node, ins[:1], need[:1], m, prefix)
    if isinstance(m, (nn.Linear, nn.Conv2d, nn.MaxPool2d)):
        problem = _layer_problem(m)
        if problem:
            raise _Unsupported(f"{node.target}: {problem}")
        return _FromRop(*args, _Linear if isinstance(m, nn.Linear) else _Conv if isinstance(m, nn.Conv2d) else _MaxPool)
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        if batch_norm == "batch" or m.running_mean is None:  # as F.batch_norm: batch statistics
            return _FromRop(*args, _BatchNorm)
        return _BatchNormEval(*args)
    if isinstance(m, nn.GroupNorm):
        return _GroupNorm(*args)
    if isinstance(m, nn.LayerNorm):
        return _Norm(*args)
    if isinstance(m, ACTIVATIONS + _MORE_ACTIVATIONS):
        if getattr(m, "inplace", False):
            _inplace_ok(node)
            m = copy.copy(m)
            m.inplace = False
        if type(m) is nn.ReLU and need[0]:
            return _ReLU(*args)
        return _FromRop(node, ins[:1], need[:1], m, prefix, _Activation)
    if isinstance(m, _DROPOUTS):
        if m.training and m.p > 0:
            raise _Unsupported(f"{node.target}: {type(m).__name__} in training mode (random)")
        return _Reshape(*args)
    if isinstance(m, (nn.Identity, nn.Flatten, nn.Unflatten)):
        return _Reshape(*args)
    if isinstance(m, _POOLS):
        return _LinearFn(*args)
    if isinstance(m, nn.Embedding):
        if m.max_norm is not None or m.scale_grad_by_freq or m.sparse:
            raise _Unsupported(f"{node.target}: Embedding with max_norm, scale_grad_by_freq or sparse")
        return _Embedding(*args)
    raise _Unsupported(f"{node.target}: {type(m).__name__} has no R-operator rule")


def _op_name(node: fx.Node) -> str:
    return node.target if node.op == "call_method" else getattr(node.target, "__name__", str(node.target))


def _function_rule(node, dep):
    """The rule of a ``call_function``/``call_method`` node that depends on θ, or raise."""
    t, method = node.target, node.op == "call_method"
    first = node.args[0] if node.args else None
    if not isinstance(first, fx.Node) or not dep[first]:
        if not ((t in _ADD or t in _MUL or (method and t in ("add", "add_", "mul", "mul_")))
                or t in _CAT):
            raise _Unsupported(f"{node.format_node()}: θ enters {_op_name(node)} through an argument other than "
                               "the first")
    if _is_inplace(node, None):
        _inplace_ok(node)
    name = t.rstrip("_") if method else None
    unary = (node, [first], [True])

    def const(a):
        return not (isinstance(a, fx.Node) and dep[a])

    if (not method and t in _ACT_FUNCTIONS) or (method and t in _ACT_METHODS):
        act = _ACT_FUNCTIONS[t] if not method else _ACT_METHODS[t]
        rest = node.args[1:]
        if any(isinstance(a, fx.Node) for a in list(rest) + list(node.kwargs.values())):
            raise _Unsupported(f"{node.format_node()}: an activation with tensor arguments")
        if act == "relu":
            return _ReLU(*unary)
        return _FromRop(*unary, _act_module(act, rest, dict(node.kwargs)), "", _Activation)
    if (not method and t in _RESHAPE_FUNCTIONS) or (method and t in _RESHAPE_METHODS):
        return _Reshape(*unary)
    if (not method and t in _LINEAR_FUNCTIONS) or (method and t in _LINEAR_METHODS):
        if not all(const(a) for a in list(node.args[1:]) + list(node.kwargs.values())):
            raise _Unsupported(f"{node.format_node()}: θ in an argument of a linear map")
        return _LinearFn(*unary)
    if t is F.dropout or (method and t == "dropout"):
        training = node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True)
        p = node.kwargs.get("p", node.args[1] if len(node.args) > 1 else 0.5)
        if training and p > 0:
            raise _Unsupported(f"{node.format_node()}: dropout in training mode (random)")
        return _Reshape(*unary)
    if t in _ADD or t in _SUB or (method and name in ("add", "sub")) or t in (operator.neg, torch.neg) or (
            method and name == "neg"):
        sub = t in _SUB or name == "sub"
        if t in (operator.neg, torch.neg) or name == "neg":
            return _LinComb(node, [first], [True], [-1.0])
        alpha = node.kwargs.get("alpha", 1)
        if isinstance(alpha, fx.Node) or len(node.args) != 2:
            raise _Unsupported(f"{node.format_node()}: add/sub with a tensor alpha or extra arguments")
        ins, need, coeffs = [], [], []
        for a, c in zip(node.args, (1.0, -alpha if sub else alpha)):
            if isinstance(a, fx.Node) and dep[a]:
                ins.append(a)
                need.append(True)
                coeffs.append(c)
        return _LinComb(node, ins, need, coeffs)
    if t in _MUL or t in _DIV or (method and name in ("mul", "div")):
        divide = t in _DIV or name == "div"
        if len(node.args) != 2 or node.kwargs:
            raise _Unsupported(f"{node.format_node()}: mul/div with extra arguments")
        a, b = node.args
        if not const(a) and not const(b):
            if divide:
                raise _Unsupported(f"{node.format_node()}: division by a tensor that depends on θ")
            return _Mul(node, [a, b], [True, True], False)
        if const(a):  # θ only in b (mul is commutative)
            return _SwappedMul(node, [b], [True], divide)
        return _Mul(node, [a], [True], divide)
    if t in _CAT:
        pieces = node.args[0] if node.args else node.kwargs.get("tensors")
        if not isinstance(pieces, (list, tuple)):
            raise _Unsupported(f"{node.format_node()}: cat of something other than a list")
        positions = [i for i, a in enumerate(pieces) if isinstance(a, fx.Node) and dep[a]]
        return _Cat(node, [pieces[i] for i in positions], [True] * len(positions), positions)
    raise _Unsupported(f"{node.format_node()}: {_op_name(node)} has no R-operator rule")


class _SwappedMul(_Mul):
    """``c * x`` with a constant ``c`` first."""

    def forward(self, p, P, xs, args, kwargs):
        if self.divide:
            raise RuntimeError("unreachable: c / x is refused at planning")
        return super().forward(p, P, xs, (args[1], args[0]), kwargs)


def _is_metadata(node: fx.Node, dep: dict) -> bool:
    """``x.shape``, ``x.size(0)``, ``x.dim()`` …: no derivative flows through them."""
    if node.op == "call_method" and node.target in _METADATA_METHODS:
        return True
    if node.op == "call_function" and node.target is getattr:
        return True
    if node.op == "call_function" and node.target is operator.getitem:
        src = node.args[0]
        return isinstance(src, fx.Node) and src.op != "placeholder" and _is_metadata(src, dep)
    return False


class _Modes:
    """The modes an :class:`~eosflow.objective.Objective` evaluates a model in: every module in eval
    mode (Dropout the identity), BatchNorm with batch statistics under ``batch_norm="batch"``; the
    model's own flags restored after. The model is traced (and its rules chosen) in them."""

    def __init__(self, model: nn.Module, batch_norm: str):
        self.mods, self.batch_norm = list(model.modules()), batch_norm

    def __enter__(self):
        self.saved = [(m.training, getattr(m, "track_running_stats", None)) for m in self.mods]
        for m in self.mods:
            m.__dict__["training"] = False
            if self.batch_norm == "batch" and isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.__dict__["training"] = True
                m.__dict__["track_running_stats"] = False

    def __exit__(self, *exc):
        for m, (t, r) in zip(self.mods, self.saved):
            m.__dict__["training"] = t
            if r is not None:
                m.__dict__["track_running_stats"] = r
        return False


class _Plan:
    """The traced model: per node, how to evaluate it and (where it depends on θ) its rule."""

    def __init__(self, model: nn.Module, batch_norm: str = "batch"):
        if batch_norm not in ("batch", "eval"):
            raise ValueError(f"batch_norm: {batch_norm!r}; allowed: ['batch', 'eval']")
        self.batch_norm = batch_norm
        with _Modes(model, batch_norm):
            self._build(model)

    def _build(self, model: nn.Module) -> None:
        try:
            gm = fx.symbolic_trace(model)
        except Exception as e:  # noqa: BLE001 (any tracing failure means: not this product)
            raise _Unsupported(f"torch.fx cannot trace {type(model).__name__}: {type(e).__name__}: {e}") from None
        self.gm = gm
        canon: dict[int, str] = {}
        self.alias: dict[str, str] = {}
        for name, prm in model.named_parameters(remove_duplicate=False):
            self.alias[name] = canon.setdefault(id(prm), name)
        self.nodes = list(gm.graph.nodes)
        self.dep: dict[fx.Node, bool] = {}
        self.rules: dict[fx.Node, _GRule] = {}
        self.sources: dict[fx.Node, str] = {}  # get_attr of a parameter -> its (canonical) name
        self.modules: dict[fx.Node, nn.Module] = {}
        self.input = None
        self.output = None
        for node in self.nodes:
            self._plan_node(node)
        if self.output is None or not self.dep.get(self.output, False):
            raise _Unsupported("the model's output does not depend on its parameters")
        # the last node that reads each value (to free primal values early)
        self.last_use = {}
        for i, node in enumerate(self.nodes):
            for a in node.all_input_nodes:
                self.last_use[a] = i

    def _plan_node(self, node: fx.Node) -> None:
        dep = self.dep
        if node.op == "placeholder":
            if self.input is None:
                self.input = node
            elif not node.args:
                raise _Unsupported(f"forward takes a second input {node.target!r} without a default")
            dep[node] = False
            return
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, fx.Node):
                raise _Unsupported("the model returns something other than one tensor")
            self.output = out
            return
        if node.op == "get_attr":
            if node.target in self.alias:
                self.sources[node] = self.alias[node.target]
                dep[node] = True
            else:
                dep[node] = False
            return
        m = self.gm.get_submodule(node.target) if node.op == "call_module" else None
        if m is not None:
            self.modules[node] = m
        has_params = m is not None and any(True for _ in m.parameters())
        ins_dep = any(dep[a] for a in node.all_input_nodes)
        if _is_metadata(node, dep) or not (ins_dep or has_params):
            dep[node] = False
            return
        dep[node] = True
        if m is not None:
            first = node.args[0] if node.args else None
            if len(node.args) != 1 or node.kwargs or not isinstance(first, fx.Node):
                raise _Unsupported(f"{node.target}: a module called with other than one tensor")
            self.rules[node] = _module_rule(node, m, node.target + ".", [first], [dep[first]], self.batch_norm)
        else:
            self.rules[node] = _function_rule(node, dep)


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _plan_of(model: nn.Module, batch_norm: str) -> _Plan:
    """The model's plan under a BatchNorm policy, traced once per model and kept while the model
    lives (an eigensolve per training step would otherwise trace it each time); a model that
    cannot be handled raises :class:`_Unsupported` each time, from the kept reason."""
    plans = _PLANS.setdefault(model, {})
    if batch_norm not in plans:
        try:
            plans[batch_norm] = _Plan(model, batch_norm)
        except _Unsupported as e:
            plans[batch_norm] = e
    plan = plans[batch_norm]
    if isinstance(plan, _Unsupported):
        raise plan
    return plan


def graph_rop_unsupported_reason(model: nn.Module, batch_norm: str = "batch") -> str | None:
    """None when :class:`GraphRopHVP` handles ``model``, else why not (a trace that fails, the first
    node that depends on the parameters and has no rule). ``batch_norm``: the objective's BatchNorm
    policy (``"batch"``: batch statistics; ``"eval"``: running statistics)."""
    try:
        _plan_of(model, batch_norm)
    except _Unsupported as e:
        return str(e)
    return None


def graph_rop_supported(model: nn.Module, batch_norm: str = "batch") -> bool:
    """Whether :class:`GraphRopHVP` can differentiate ``model`` (:func:`graph_rop_unsupported_reason`)."""
    return graph_rop_unsupported_reason(model, batch_norm) is None


class GraphRopHVP(HessianOperator):
    """``v ↦ ∇²L(θ) v`` of an objective at one ``θ`` by the R-operator over the fx graph of its model.

    The objective provides ``model``, ``chunks()``, ``unflatten``, ``names``, ``sizes``, ``n`` and
    either ``loss_name`` in ``("ce", "mse")`` or ``output_sum_loss(out, y)`` (any loss, by autograd
    on the output). Products are summed over the chunks and divided by ``n``. The primal pass of
    each chunk is computed once per :meth:`matvec_batch` call and shared by its vectors; those of
    the first chunks are kept for later calls while they total at most ``max_bytes`` (0: nothing
    kept); ``cached_chunks`` and ``cache_bytes`` say what was kept. ``product`` is ``"graph_rop"``.
    Raises ``ValueError`` for a model :func:`graph_rop_unsupported_reason` refuses.
    """

    product = "graph_rop"

    def __init__(self, objective, theta: Tensor, max_bytes: int = DEFAULT_PRIMAL_CACHE_BYTES):
        try:
            self.plan = _plan_of(objective.model, getattr(objective, "batch_norm", "batch"))
        except _Unsupported as e:
            raise ValueError(f"GraphRopHVP: {e}") from None
        super().__init__(objective, theta)
        self.max_bytes = int(max_bytes)
        loss = getattr(objective, "loss_name", None)
        if loss in ("ce", "mse"):
            self.loss = loss
        elif hasattr(objective, "output_sum_loss"):
            self.loss = None
        else:
            raise ValueError(f"GraphRopHVP: loss {loss!r} is neither 'ce'/'mse' nor given by output_sum_loss")
        self._flat = self._extend(objective.unflatten(self.theta))
        self._p = {n: r.params(self._flat) for n, r in self.plan.rules.items()}
        self._cache: list = []
        self._cache_full = self.max_bytes <= 0
        self.cache_bytes = 0

    def _extend(self, flat: dict) -> dict:
        """Parameters under every name that reaches them (tied weights under each of their names)."""
        return {a: flat[c] for a, c in self.plan.alias.items()}

    @property
    def cached_chunks(self) -> int:
        return len(self._cache)

    # -- the primal pass ------------------------------------------------------------------------
    def _primal(self, x: Tensor, y: Tensor):
        # nodes that do not depend on θ are evaluated as the objective evaluates the model
        modes = self.objective.modes() if hasattr(self.objective, "modes") else _Modes(
            self.objective.model, self.plan.batch_norm)
        with modes:
            return self._primal_pass(x, y)

    def _primal_pass(self, x: Tensor, y: Tensor):
        plan, dep = self.plan, self.plan.dep
        vals: dict = {}
        Ps: dict = {}
        for i, node in enumerate(plan.nodes):
            if node.op == "output":
                break
            if node.op == "placeholder":
                vals[node] = x if node is plan.input else node.args[0]
            elif node.op == "get_attr":
                vals[node] = self._flat[node.target] if node in plan.sources else _fetch(plan.gm, node.target)
            else:
                args = fx.node.map_arg(node.args, lambda a: vals[a])
                kwargs = fx.node.map_arg(node.kwargs, lambda a: vals[a])
                rule = plan.rules.get(node)
                if rule is None:
                    vals[node] = _run(node, plan.modules.get(node), args, kwargs)
                else:
                    P = Ps[node] = {}
                    xs = [vals[a] for a in rule.inputs]
                    vals[node] = rule.forward(self._p[node], P, xs, args, kwargs)
            for a in node.all_input_nodes:  # free values nobody reads any more
                if plan.last_use.get(a) == i and a is not plan.output:
                    vals.pop(a, None)
        z = vals[plan.output]
        loss_state = self._loss_primal(z, y)
        g = {plan.output: loss_state[0]}
        for node in reversed(plan.nodes):
            gn = g.pop(node, None)
            if gn is None:
                continue
            rule = plan.rules.get(node)
            if rule is None:  # a parameter read by get_attr: its gradient is not needed
                continue
            for a, ga in zip(rule.inputs, rule.backward(self._p[node], Ps[node], gn)):
                if ga is not None and dep[a]:
                    g[a] = ga if a not in g else g[a] + ga
        return Ps, loss_state[1]

    def _loss_primal(self, z: Tensor, y: Tensor):
        if self.loss is not None:
            return _loss_primal(self.loss, z, y)
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            (gz,) = torch.autograd.grad(self.objective.output_sum_loss(zz, y), zz, create_graph=True)
        return gz.detach(), (zz, gz)

    def _loss_tangent(self, state, rz: Tensor) -> Tensor:
        if self.loss is not None:
            return _loss_tangent(state, rz)
        zz, gz = state
        if not gz.requires_grad:  # a loss linear in the output
            return torch.zeros_like(rz)
        with torch.enable_grad():
            (r,) = torch.autograd.grad(gz, zz, rz, retain_graph=True)
        return r

    # -- the tangent pass -----------------------------------------------------------------------
    def _tangent(self, Ps: dict, loss_state, rflat: dict, out: dict) -> None:
        plan, dep = self.plan, self.plan.dep
        rps = {n: r.params(rflat) for n, r in plan.rules.items()}
        Ra: dict = {}
        Ts: dict = {n: {} for n in plan.rules}
        for i, node in enumerate(plan.nodes):
            if not dep.get(node, False):
                continue
            if node in plan.sources:
                Ra[node] = rflat[node.target]
                continue
            rule = plan.rules[node]
            ry = rule.tangent_forward(self._p[node], rps[node], Ps[node], Ts[node], [Ra.get(a) for a in rule.inputs])
            if ry is not None:
                Ra[node] = ry
            for a in node.all_input_nodes:
                if plan.last_use.get(a) == i and a is not plan.output:
                    Ra.pop(a, None)
        rz = Ra.get(plan.output)
        if rz is None:
            return
        Rg = {plan.output: self._loss_tangent(loss_state, rz)}
        alias = plan.alias
        for node in reversed(plan.nodes):
            rg = Rg.pop(node, None)
            if rg is None:
                continue
            if node in plan.sources:
                key = plan.sources[node]
                out[key] = rg if key not in out else out[key] + rg
                continue
            rule = plan.rules[node]
            rgs, grads = rule.tangent_backward(self._p[node], rps[node], Ps[node], Ts[node], rg)
            for name, t in grads.items():
                key = alias[rule.prefix + name]
                out[key] = t if key not in out else out[key] + t
            for a, ra in zip(rule.inputs, rgs):
                if ra is not None and dep[a]:
                    Rg[a] = ra if a not in Rg else Rg[a] + ra

    @torch.no_grad()
    def matvec_batch(self, V: Tensor) -> Tensor:
        """Products for the rows of ``V``: one primal pass per chunk (or the kept one), then a
        tangent pass per row."""
        obj = self.objective
        V = V.to(self.dtype)
        rflats = [self._extend(obj.unflatten(v)) for v in V]
        outs: list[dict] = [{} for _ in V]
        for i, (xc, yc) in enumerate(obj.chunks()):
            # a tensor held by two nodes counts once
            Ps, state = kept_primal(self, i, xc, yc, _nbytes)
            for rflat, out in zip(rflats, outs):
                self._tangent(Ps, state, rflat, out)
        return stack_products(outs, obj, self.theta)

    def matvec(self, v: Tensor) -> Tensor:
        return self.matvec_batch(v[None])[0]


def _fetch(gm: nn.Module, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
