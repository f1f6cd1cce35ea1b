"""Top Hessian eigenpairs of an objective (:func:`top_eigenpairs`) and along a trajectory,
warm-started from one measurement to the next (:class:`SpectrumTracker`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .block import block_lanczos
from .krylov import EigResult
from .lanczos import lanczos
from .operators import DEFAULT_GRAPH_CACHE_BYTES, CachedHVP, ChunkedLoss, LinearOperator, ObjectiveHVP
from .graph_rop import GraphRopHVP, graph_rop_supported
from .rop import RopHVP, rop_supported

__all__ = ["METHODS", "HVP_KINDS", "hvp_operator", "top_eigenpairs", "SpectrumTracker"]

#: Solvers of :func:`top_eigenpairs`: ``"auto"`` (``"block"``), ``"block"``
#: (:func:`~eosflow.spectral.block.block_lanczos`), ``"lanczos"``
#: (:func:`~eosflow.spectral.lanczos.lanczos` over fresh products: half the basis memory).
METHODS = ("auto", "block", "lanczos")
#: Hessian-vector products of :func:`hvp_operator`.
HVP_KINDS = ("auto", "rop", "graph_rop", "cached", "objective")


def _default_block_size(objective, theta: Tensor, k: int) -> int:
    """1 (single-vector Lanczos over cached graphs) on a CPU, where batching HVPs gains little;
    on a GPU a block of ``k`` (at most 16) when the objective can batch HVPs with ``vmap``."""
    if theta.device.type == "cuda" and getattr(objective, "hvp_mode", None) == "fwdrev":
        return max(1, min(int(k), 16))
    return 1


def hvp_operator(objective, theta: Tensor, kind: str = "auto", block_size: int = 1,
                 graph_cache_bytes: int = DEFAULT_GRAPH_CACHE_BYTES) -> LinearOperator:
    """The Hessian of ``objective`` at ``theta`` as an operator; its ``product`` names the kind.

    ``kind``: ``"rop"`` (:class:`~eosflow.spectral.rop.RopHVP`: the R-operator written out per
    layer, for the models :func:`~eosflow.spectral.rop.rop_supported` accepts), ``"cached"``
    (:class:`~eosflow.spectral.operators.CachedHVP`: double backward through retained graphs, for
    any :class:`~eosflow.spectral.operators.ChunkedLoss`), ``"objective"``
    (:class:`~eosflow.spectral.operators.ObjectiveHVP`: the objective's own ``hvp``/``hvp_batch``)
    or ``"auto"``: ``"objective"`` for blocks on a GPU with a forward-over-reverse objective,
    whose ``vmap`` batches pay off there, and for objectives that only offer ``hvp``/``hvp_batch``;
    else ``"rop"`` where supported (eosflow's ``nn.Sequential`` nets with its own losses), else
    ``"graph_rop"`` (:class:`~eosflow.spectral.graph_rop.GraphRopHVP`: the R-operator over a
    ``torch.fx`` trace, for residual, normalised and other non-Sequential models and any loss, where
    :func:`~eosflow.spectral.graph_rop.graph_rop_supported`), else ``"cached"`` (measured per
    architecture: ``benchmarks/hvp_choice.py``, ``benchmarks/graph_rop_cost.py``, ``python -m eosflow
    bench``). ``graph_cache_bytes`` bounds what ``"rop"``, ``"graph_rop"`` and ``"cached"`` keep
    between products (0: nothing).
    """
    if kind not in HVP_KINDS:
        raise ValueError(f"unknown hvp {kind!r}; allowed: {list(HVP_KINDS)}")
    theta = theta.detach()
    if kind == "auto":
        gpu_blocks = block_size > 1 and theta.device.type == "cuda" and getattr(objective, "hvp_mode", None) == "fwdrev"
        if gpu_blocks or not isinstance(objective, ChunkedLoss):
            kind = "objective"
        elif (getattr(objective, "loss_name", None) in ("ce", "mse") and hasattr(objective, "model")
              and rop_supported(objective.model, getattr(objective, "batch_norm", "batch"))):
            kind = "rop"
        elif (hasattr(objective, "model") and (getattr(objective, "loss_name", None) in ("ce", "mse")
                                                or hasattr(objective, "output_sum_loss"))
              and graph_rop_supported(objective.model, getattr(objective, "batch_norm", "batch"))):
            kind = "graph_rop"
        else:
            kind = "cached"
    if kind == "objective":
        return ObjectiveHVP(objective, theta)
    if kind == "rop":
        return RopHVP(objective, theta, max_bytes=graph_cache_bytes)
    if kind == "graph_rop":
        return GraphRopHVP(objective, theta, max_bytes=graph_cache_bytes)
    return CachedHVP(objective, theta, max_bytes=graph_cache_bytes)


def top_eigenpairs(objective, theta: Tensor, k: int, *, warm: Tensor | None = None, tol: float = 1e-3,
                   max_iter: int = 200, seed: int = 0, method: str = "auto", block_size: int | None = None,
                   n_guard: int = 0, hvp: str = "auto",
                   graph_cache_bytes: int = DEFAULT_GRAPH_CACHE_BYTES, warm_subspace: bool = False,
                   operator: LinearOperator | None = None) -> EigResult:
    """Top-k Hessian eigenpairs of ``objective`` at ``theta``.

    ``warm``: previous eigenvectors ``(m, P)`` (or one vector) to warm-start from.
    ``method``: ``"auto"``/``"block"``: :func:`~eosflow.spectral.block.block_lanczos` over
    :func:`hvp_operator` (``hvp``, ``graph_cache_bytes``; ``block_size``: default 1 on a CPU, on a
    GPU ``min(k, 16)`` with ``vmap``-batched products when the objective is forward-over-reverse);
    ``"lanczos"``: :func:`~eosflow.spectral.lanczos.lanczos` over the objective's own products.
    Both stop at relative residual ``tol`` and agree to that accuracy. ``n_guard``: also return
    that many further Ritz vectors as ``EigResult.guard`` (block engine only).
    ``warm_subspace``: start from the span of the rows of ``warm`` (block engine; see
    :func:`~eosflow.spectral.block.block_lanczos`) instead of their normalised sum.
    ``operator``: the Hessian at ``theta`` already built (an :func:`hvp_operator`, e.g. one whose
    primal passes gave the step's gradient; block engine) instead of a new one.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {list(METHODS)}")
    if method == "lanczos":
        return lanczos(ObjectiveHVP(objective, theta), k, v0=warm, tol=tol, max_iter=max_iter, seed=seed)
    b = _default_block_size(objective, theta, k) if block_size is None else int(block_size)
    op = hvp_operator(objective, theta, hvp, b, graph_cache_bytes) if operator is None else operator
    return block_lanczos(op, k, v0=warm, tol=tol, max_iter=max_iter, block_size=b, seed=seed, n_guard=n_guard,
                         warm_subspace=warm_subspace)


@dataclass
class SpectrumTracker:
    """Top-k Hessian eigenpairs along a trajectory, each solve warm-started from the previous one.

    ``records`` holds one dict per :meth:`measure` (eigenvalues, residuals and costs, on the CPU);
    ``eigvecs`` the latest eigenvectors (on the device of ``theta``). ``method`` and
    ``block_size`` are passed to :func:`top_eigenpairs`. With the block engine the next solve
    starts from the top k and ``n_guard`` further Ritz vectors (``guard``) of the previous one, so
    that an eigenvalue rising into the top k between two measurements is not missed.
    ``warm_subspace``: start each solve from the span of those vectors and of the eigenvectors of
    the measurement before (see :func:`~eosflow.spectral.block.block_lanczos`): along GD past the
    stability limit, measured at every step, the top eigenvector at step t is close to the one at
    t − 2 (overlap 0.8-0.99 on the benchmark MLP) but not to the one at t − 1 (0.1-0.4), and this
    saves products; for measurements far apart (snapshots) it costs the extra rows' products.
    """

    k: int
    tol: float = 1e-3
    max_iter: int = 200
    seed: int = 0
    eigvecs: Tensor | None = None
    records: list[dict] = field(default_factory=list)
    method: str = "auto"
    block_size: int | None = None
    n_guard: int = 2
    guard: Tensor | None = field(default=None, repr=False)
    n_measured: int = 0
    warm_subspace: bool = False
    previous: Tensor | None = field(default=None, repr=False)

    def warm_rows(self) -> Tensor | None:
        """The warm start: the latest eigenvectors, their guard vectors and (subspace warm start)
        the eigenvectors of the measurement before."""
        parts = [t for t in (self.eigvecs, self.guard) if t is not None and t.shape[0]]
        if self.warm_subspace and self.previous is not None and parts:
            parts.append(self.previous)
        return torch.cat(parts) if parts else None

    def measure(self, objective, theta: Tensor, step: int | None = None, operator=None) -> EigResult:
        """The next measurement, at ``theta`` (``operator``: its Hessian already built, see
        :func:`top_eigenpairs`)."""
        block = self.method != "lanczos"
        res = top_eigenpairs(objective, theta, self.k, warm=self.warm_rows(), tol=self.tol,
                             max_iter=self.max_iter, seed=self.seed + self.n_measured, method=self.method,
                             block_size=self.block_size, n_guard=self.n_guard if block else 0,
                             warm_subspace=self.warm_subspace and block, operator=operator if block else None)
        self.previous = self.eigvecs
        self.eigvecs, self.guard = res.eigvecs, res.guard
        self.n_measured += 1
        self.records.append({
            "step": step, "eigvals": res.eigvals.detach().cpu(), "residuals": res.residuals.detach().cpu(),
            "iterations": res.iterations, "n_matvec": res.n_matvec, "converged": res.converged,
            "product": res.product,
        })
        return res

    def state_dict(self) -> dict:
        """What the next measurement depends on (the warm start and the count that seeds it), on
        the CPU: a checkpoint holds it, so that a resumed trajectory measures what an
        uninterrupted one does."""
        cpu = lambda t: None if t is None else t.detach().cpu()  # noqa: E731
        return {"eigvecs": cpu(self.eigvecs), "guard": cpu(self.guard), "previous": cpu(self.previous),
                "n_measured": self.n_measured}

    def load_state_dict(self, state: dict, device=None) -> None:
        to = lambda t: None if t is None else t.to(device)  # noqa: E731
        self.eigvecs, self.guard, self.n_measured = to(state["eigvecs"]), to(state["guard"]), int(state["n_measured"])
        self.previous = to(state.get("previous"))

    def reset(self) -> None:
        """Forget the warm start (e.g. after a jump in parameters)."""
        self.eigvecs = self.guard = self.previous = None
