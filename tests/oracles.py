"""Test oracles that the package does not ship: the dense Hessian of a (tiny) objective."""

from __future__ import annotations

import torch
from torch import Tensor


def dense_hessian(objective, theta: Tensor, *, mode: str | None = None) -> Tensor:
    """The full ``(P, P)`` Hessian of the objective's loss at ``theta`` (tiny nets only).

    The loss is summed over the objective's chunks (so BatchNorm batches match :meth:`Objective.hvp`)
    and divided by N. ``mode``: ``"fwdrev"`` (``jacfwd(grad(f))``, forward-over-reverse) or
    ``"revrev"`` (``jacrev(grad(f))``, reverse-over-reverse); default the objective's ``hvp_mode``.
    Computed in the dtype of ``theta`` — pass float64 parameters, model and data for oracle use.

    The inner derivative is ``torch.func.grad``, not ``jacrev``: in torch 2.14 differentiating a
    ``jacrev`` (hence ``torch.func.hessian = jacfwd(jacrev)`` and ``jacrev(jacrev)``) through
    ``F.batch_norm`` in training mode gives a wrong, non-symmetric Hessian; ``grad``-based
    compositions agree with plain autograd and finite differences. For nets without BatchNorm
    this equals ``torch.func.hessian``.
    """
    mode = mode or objective.hvp_mode
    if mode not in ("fwdrev", "revrev"):
        raise ValueError(f"unknown mode {mode!r}; allowed: ['fwdrev', 'revrev']")

    def f(t: Tensor) -> Tensor:
        return sum(objective.sum_loss(t, xc, yc) for xc, yc in objective.chunks()) / objective.n

    outer = torch.func.jacfwd if mode == "fwdrev" else torch.func.jacrev
    return outer(torch.func.grad(f))(theta.detach()).detach()  # (jacrev(grad) through BN leaks a grad_fn)
