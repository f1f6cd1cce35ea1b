"""How a training step is computed: one run on a flat ``θ``, or K runs stacked and ``vmap``ped.

A stepper holds the parameters of the active runs in its own layout and offers what
:func:`eosflow.training.loop.run_loop` needs: the per-run training loss, accuracy, gradient norm
and gradient finiteness with the gradients (:meth:`loss_grad_acc`), test evaluation of some runs,
the finiteness of their parameters, one run's parameters (:meth:`row`), dropping ended runs
(:meth:`select`) and the update. Nothing else differs between a single and a batched run.

The update of a single run is its optimizer's epoch (:mod:`eosflow.training.optimizers`: full-batch
GD by default, or minibatch SGD, Adam, RMSprop, Clipped-Ada, whose state the stepper hands to the
checkpoint). Batched runs are full-batch GD only (stacked moments and per-run minibatch orders are
not implemented): :func:`check_batchable` says so before any work.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

from ..objective import Objective
from .optimizers import Optimizer

__all__ = ["ObjectiveStepper", "BatchedStepper", "check_batchable"]


def check_batchable(cfgs) -> None:
    """Batched runs (:class:`BatchedStepper`) are full-batch GD: any other optimizer is an error
    that says what to do."""
    for c in cfgs:
        name = getattr(c, "optimizer", "gd")
        if name not in ("gd", "sgd") or (name == "sgd" and getattr(c, "batch_size", None) is not None):
            raise ValueError(f"batched runs (train_group, fig5.batched) are full-batch GD only; run lr={c.lr:g} has "
                             f"optimizer {name!r} (batch_size {getattr(c, 'batch_size', None)}): train it as a "
                             "single run (fig5.batched: false)")


class ObjectiveStepper:
    """One run: the objective's own full-batch passes on ``θ`` of shape ``(P,)``. Any object with
    ``loss_grad_acc(θ) -> (loss, acc, ∇L)`` and ``evaluate(θ, x, y) -> (loss, acc)`` will do."""

    def __init__(self, objective, optimizer: Optimizer | None = None):
        self.objective = objective
        self.optimizer = optimizer  # None: plain GD

    def stack(self, rows: list[Tensor]) -> Tensor:
        (theta,) = rows
        return theta

    def loss_grad_acc(self, theta: Tensor):
        return self.packed(*self.objective.loss_grad_acc(theta))

    @staticmethod
    def packed(loss: float, acc: float, g: Tensor):
        """One run's ``(L, accuracy, ∇L)`` as :meth:`loss_grad_acc` returns them: lists of one loss,
        accuracy, gradient norm and all-finite flag, and the gradient."""
        return [loss], [acc], [float(g.norm())], [bool(torch.isfinite(g).all())], g

    def evaluate(self, theta: Tensor, rows: list[int], x, y) -> list[tuple[float, float]]:
        return [self.objective.evaluate(theta, x, y)] if rows else []

    def finite(self, theta: Tensor, rows: list[int]) -> list[bool]:
        return [bool(torch.isfinite(theta).all())] if rows else []

    def row(self, theta: Tensor, j: int) -> Tensor:
        return theta

    def select(self, theta: Tensor, g: Tensor, keep: list[int]) -> tuple[Tensor, Tensor]:
        if keep != [0]:
            raise ValueError(f"a single run cannot keep rows {keep}")
        return theta, g

    def update(self, theta: Tensor, g: Tensor, lrs: list[float]) -> Tensor:
        if self.optimizer is None:
            return theta - lrs[0] * g
        return self.optimizer.step(theta, g, lrs[0], self.batch_grad)

    def batch_grad(self, theta: Tensor, idx: Tensor) -> Tensor:
        """Mean gradient over the training examples ``idx`` (the objective's ``batch_grad`` when it
        has one; otherwise summed over chunks of ``chunk_size`` of ``objective.x[idx]``)."""
        obj = self.objective
        if hasattr(obj, "batch_grad"):
            return obj.batch_grad(theta, idx)
        if obj.x is None:
            raise ValueError("a minibatch optimizer draws its batches from tensors x, y; this objective reads a "
                             "loader (pass the data as tensors for SGD/Adam runs)")
        x, y, cs = obj.x[idx], obj.y[idx], obj.chunk_size
        g = None
        for i in range(0, x.shape[0], cs):
            gi = obj.chunk_loss_grad(theta, x[i:i + cs], y[i:i + cs])[2]
            g = gi if g is None else g + gi
        return g / x.shape[0]

    def finish(self, theta: Tensor, step: int, status: str) -> dict | None:
        """At the run's end: record an adaptive optimizer's preconditioner at ``θ_step`` (unless
        diverged) and return what :attr:`TrainResult.optimizer` holds (None for GD and SGD)."""
        opt = self.optimizer
        if opt is None or not opt.adaptive:
            return None
        if status != "diverged" and opt.record_every:
            g = None if opt.minibatch else self.objective.loss_grad_acc(theta)[2]
            opt.record(step, g)
        return {"name": opt.name, "beta1": opt.beta1, "clip": opt.clip,
                "preconditioner": dict(sorted(opt.records.items()))}

    def state_dict(self) -> dict | None:
        """The optimizer's checkpoint state (None for plain GD)."""
        return None if self.optimizer is None else self.optimizer.state_dict()

    def load_state_dict(self, state: dict | None, device) -> None:
        if (state is None) != (self.optimizer is None):
            raise ValueError("the checkpoint's optimizer state does not match this run's optimizer")
        if state is not None:
            self.optimizer.load_state_dict(state, device)


class BatchedStepper:
    """K runs of one architecture on one dataset: parameters stacked into ``(K, P)``; losses,
    gradients and accuracies in one ``torch.func.vmap`` over :meth:`Objective.sum_loss_correct`
    (``functional_call`` of the same model with each row's parameters; the data are shared, not
    copied). Rows of a vmap are independent, so a diverged run cannot disturb the others."""

    def __init__(self, objective: Objective):
        self.obj = objective
        self._gv = vmap(grad_and_value(objective.sum_loss_correct, has_aux=True), in_dims=(0, None, None))

        self._eval = vmap(objective.sum_loss_correct, in_dims=(0, None, None))
        self._lrs: list[float] | None = None
        self._lr: Tensor | None = None

    def stack(self, rows: list[Tensor]) -> Tensor:
        return torch.stack(rows)

    def loss_grad_acc(self, theta: Tensor):
        """For ``theta`` of shape ``(k, P)``: lists of k losses, accuracies, gradient norms and
        all-finite flags of the gradients, and the ``(k, P)`` gradients. One host sync."""
        obj, k = self.obj, theta.shape[0]
        g_total = torch.zeros_like(theta)
        ls, cs = [], []
        for xc, yc in obj.chunks():
            g, (l, c) = self._gv(theta, xc, yc)
            g_total += g
            ls.append(l.detach())
            cs.append(c)
        g = g_total / obj.n
        stats = torch.cat([torch.stack(ls).double().flatten(), torch.stack(cs).double().flatten(),
                           g.norm(dim=1).double(), torch.isfinite(g).all(dim=1).double()]).tolist()
        nc = len(ls)
        losses = [_chunk_sum(stats, 0, nc, k, j) / obj.n for j in range(k)]
        accs = [int(_chunk_sum(stats, nc, nc, k, j, as_int=True)) / obj.n if obj.has_accuracy else float("nan")
                for j in range(k)]
        gnorm = stats[2 * nc * k:(2 * nc + 1) * k]
        finite = [bool(v) for v in stats[(2 * nc + 1) * k:]]
        return losses, accs, gnorm, finite, g

    @torch.no_grad()
    def evaluate(self, theta: Tensor, rows: list[int], x: Tensor, y: Tensor) -> list[tuple[float, float]]:
        """``(mean loss, accuracy)`` on ``(x, y)`` for the given rows of ``theta``."""
        if not rows:
            return []
        sub, k = theta[rows], len(rows)
        ls, cs = [], []
        for xc, yc in self.obj.chunks(x, y):
            l, c = self._eval(sub, xc, yc)
            ls.append(l)
            cs.append(c)
        vals = torch.cat([torch.stack(ls).double().flatten(), torch.stack(cs).double().flatten()]).tolist()
        nc, n = len(ls), x.shape[0]
        return [(_chunk_sum(vals, 0, nc, k, j) / n, _chunk_sum(vals, nc, nc, k, j, as_int=True) / n)
                for j in range(k)]

    def finite(self, theta: Tensor, rows: list[int]) -> list[bool]:
        return torch.isfinite(theta[rows]).all(dim=1).tolist() if rows else []

    def row(self, theta: Tensor, j: int) -> Tensor:
        return theta[j]

    def select(self, theta: Tensor, g: Tensor, keep: list[int]) -> tuple[Tensor, Tensor]:
        return theta[keep], g[keep]

    def state_dict(self) -> None:
        return None  # full-batch GD: no optimizer state

    def load_state_dict(self, state, device) -> None:
        if state is not None:
            raise ValueError("the checkpoint holds optimizer state, but batched runs are full-batch GD")

    def update(self, theta: Tensor, g: Tensor, lrs: list[float]) -> Tensor:
        if lrs != self._lrs:  # a new (k, 1) tensor of rates only when they change (schedules, runs leaving)
            self._lrs, self._lr = lrs, torch.tensor(lrs, dtype=theta.dtype, device=theta.device).unsqueeze(1)
        return theta - self._lr * g


def _chunk_sum(values: list[float], first: int, n_chunks: int, k: int, j: int, as_int: bool = False):
    """Run ``j``'s total over chunks of a flat list laid out chunk by chunk (``k`` runs each),
    starting at chunk slot ``first``: summed chunk by chunk in Python, as
    :meth:`Objective.loss_grad_acc` does."""
    total = 0 if as_int else 0.0
    for i in range(first, first + n_chunks):
        total += int(values[i * k + j]) if as_int else values[i * k + j]
    return total
