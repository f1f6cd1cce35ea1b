"""Symmetric linear operators for the eigensolvers: the protocol, and Hessian-vector products.

An operator has ``dim``, ``dtype`` and ``device`` (of the vectors it acts on), ``matvec(v)`` for a
``(dim,)`` vector and ``matvec_batch(V)`` for the rows of a ``(m, dim)`` matrix. The solvers of
:mod:`eosflow.spectral.lanczos` and :mod:`eosflow.spectral.block` touch the matrix only through
these. Three kinds are provided:

- :class:`FunctionOperator`: any ``v ↦ A v`` given as a function (a dense matrix, a test operator);
- :class:`ObjectiveHVP`: ``∇²L(θ) v`` of an objective at one ``θ`` by fresh products each time
  (``objective.hvp`` / ``objective.hvp_batch``; ``vmap``-batched forward-over-reverse on a GPU);
- :class:`CachedHVP`: the same products over a chunked loss (:class:`ChunkedLoss`, e.g.
  :class:`~eosflow.objective.Objective`), reusing each chunk's first-derivative graph.

Every Hessian-vector product (these two and :class:`~eosflow.spectral.rop.RopHVP`) is a
:class:`HessianOperator`: the Hessian of an objective at one ``θ``, which sets up ``dim``,
``dtype`` and ``device`` from them in one place.
"""

from __future__ import annotations

from typing import Callable, Iterator, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["LinearOperator", "ChunkedLoss", "FunctionOperator", "HessianOperator", "ObjectiveHVP", "CachedHVP",
           "DEFAULT_GRAPH_CACHE_BYTES"]

#: Default memory budget of :class:`CachedHVP` for the retained first-derivative graphs.
DEFAULT_GRAPH_CACHE_BYTES = 2 * 2**30


@runtime_checkable
class LinearOperator(Protocol):
    """A symmetric operator on ``R^dim`` as the eigensolvers use it."""

    dim: int
    dtype: torch.dtype
    device: torch.device

    def matvec(self, v: Tensor) -> Tensor: ...

    def matvec_batch(self, V: Tensor) -> Tensor: ...


@runtime_checkable
class ChunkedLoss(Protocol):
    """A loss summed over fixed data chunks and divided by ``n`` (what :class:`CachedHVP` needs)."""

    n: int
    dim: int

    def chunks(self) -> Iterator[tuple[Tensor, Tensor]]: ...

    def sum_loss(self, theta: Tensor, x: Tensor, y: Tensor) -> Tensor: ...


class FunctionOperator:
    """The operator ``v ↦ matvec(v)`` on ``R^dim``; ``matvec_batch`` (rows ↦ rows) is optional and
    defaults to one ``matvec`` per row. ``dtype`` and ``device`` are those of the Krylov vectors."""

    def __init__(self, matvec: Callable[[Tensor], Tensor], dim: int, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None,
                 matvec_batch: Callable[[Tensor], Tensor] | None = None):
        self.dim = int(dim)
        if self.dim < 1:
            raise ValueError(f"dim must be ≥ 1, got {self.dim}")
        self.dtype = dtype or torch.get_default_dtype()
        self.device = torch.device(device if device is not None else "cpu")
        self._matvec, self._batch = matvec, matvec_batch

    def matvec(self, v: Tensor) -> Tensor:
        return self._matvec(v)

    def matvec_batch(self, V: Tensor) -> Tensor:
        if self._batch is not None:
            return self._batch(V)
        return torch.stack([self._matvec(v) for v in V])


class HessianOperator:
    """The Hessian ``∇²L(θ)`` of ``objective`` at one ``θ`` as an operator: ``dim`` is the
    objective's, ``dtype`` and ``device`` those of ``θ`` (kept detached). Subclasses give
    :meth:`matvec` (and, where they batch, :meth:`matvec_batch`; by default one product per row)
    and name their product in ``product``. Calling the object is :meth:`matvec`; :meth:`batch` is
    :meth:`matvec_batch`."""

    product = "?"

    def __init__(self, objective, theta: Tensor):
        self.objective = objective
        self.theta = theta.detach()
        self.dim, self.dtype, self.device = int(objective.dim), self.theta.dtype, self.theta.device

    def matvec(self, v: Tensor) -> Tensor:
        raise NotImplementedError

    def matvec_batch(self, V: Tensor) -> Tensor:
        """Products for the rows of ``V``."""
        return torch.stack([self.matvec(v) for v in V])

    def __call__(self, v: Tensor) -> Tensor:
        return self.matvec(v)

    def batch(self, V: Tensor) -> Tensor:
        return self.matvec_batch(V)


class ObjectiveHVP(HessianOperator):
    """``v ↦ ∇²L(θ) v`` at one ``θ`` through ``objective.hvp`` and ``objective.hvp_batch`` (any
    object with those and ``dim``): a fresh product each time, ``vmap``-batched where the objective
    batches (forward-over-reverse :class:`~eosflow.objective.Objective`)."""

    product = "objective"

    def matvec(self, v: Tensor) -> Tensor:
        return self.objective.hvp(self.theta, v)

    def matvec_batch(self, V: Tensor) -> Tensor:
        return self.objective.hvp_batch(self.theta, V)


class CachedHVP(HessianOperator):
    """``v ↦ ∇²L(θ) v`` of a :class:`ChunkedLoss` at one ``θ``, reusing graphs.

    For each data chunk the gradient ``∇L_c(θ)`` is computed once with ``create_graph=True`` and
    its graph kept; every product is then one double-backward pass through it
    (``retain_graph=True``), skipping the forward and first backward that a fresh HVP repeats.
    Chunks are summed in order and divided by N as in ``Objective.hvp`` (equal up to rounding;
    this is reverse-over-reverse, so also right for BatchNorm nets).

    Memory: the graphs of the first chunks are kept while their saved tensors total at most
    ``max_bytes`` (measured on the first chunk); the other chunks are recomputed per product.
    ``cached_chunks`` and ``graph_bytes`` say what was kept. Drop the object to free them.
    ``product`` is ``"cached"``.
    """

    product = "cached"

    def __init__(self, objective: ChunkedLoss, theta: Tensor, max_bytes: int = DEFAULT_GRAPH_CACHE_BYTES):
        super().__init__(objective, theta)
        self._leaf = self.theta.detach().requires_grad_(True)
        self._graphs: list[Tensor] = []
        self._rest: list[tuple[Tensor, Tensor]] = []
        self.graph_bytes = 0
        per_chunk = None
        for xc, yc in objective.chunks():
            if per_chunk is not None and self.graph_bytes + per_chunk > max_bytes or max_bytes <= 0:
                self._rest.append((xc, yc))
                continue
            if per_chunk is None:
                g, per_chunk = self._first_graph(xc, yc)
                if per_chunk > max_bytes:
                    self._rest.append((xc, yc))
                    continue
            else:
                g = self._chunk_grad(self._leaf, xc, yc)
            self._graphs.append(g)
            self.graph_bytes += per_chunk
        self.cached_chunks = len(self._graphs)

    def _chunk_grad(self, leaf: Tensor, xc: Tensor, yc: Tensor) -> Tensor:
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self.objective.sum_loss(leaf, xc, yc), leaf, create_graph=True)
        return g

    def _first_graph(self, xc: Tensor, yc: Tensor) -> tuple[Tensor, int]:
        """The first chunk's gradient graph and the bytes of the tensors it saves."""
        saved: dict = {}

        def pack(t: Tensor) -> Tensor:
            saved[(t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)] = t.numel() * t.element_size()
            return t.detach()  # not t itself: a saved output would hold its own grad_fn (a leak)

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            g = self._chunk_grad(self._leaf, xc, yc)
        return g, sum(saved.values())

    def matvec(self, v: Tensor) -> Tensor:
        out = torch.zeros_like(self.theta)
        with torch.enable_grad():
            for g in self._graphs:
                out += torch.autograd.grad(g, self._leaf, grad_outputs=v, retain_graph=True)[0]
            for xc, yc in self._rest:
                t = self.theta.detach().requires_grad_(True)
                out += torch.autograd.grad(self._chunk_grad(t, xc, yc), t, grad_outputs=v)[0]
        return out / self.objective.n

