"""Optimizers of the one training loop: full-batch GD, minibatch SGD, Adam, RMSprop and Clipped-Ada.

One :class:`Optimizer` per run, built from a run's :class:`~eosflow.training.state.TrainConfig`
(:func:`make_optimizer`). A loop step is one epoch. Full-batch methods (``batch_size`` null, or
at least the number of training examples) take one step per epoch with the loop's full-batch
gradient ``∇L(θ_t)``; minibatch methods take the epoch's ``⌈N / B⌉`` steps in an order fixed by
the run's seed and the epoch (:func:`epoch_order`; the last batch may be smaller), so the loop's
metrics at step ``t`` still describe ``θ_t``. Plain ``gd`` is ``θ − η∇L`` exactly as before.

Update rules (``g`` the (minibatch) gradient, ``k`` the optimizer step, 1-based):

- ``gd``, ``sgd``: ``θ ← θ − η g`` (``torch.optim.SGD`` without momentum);
- ``adam``: ``m ← β₁m + (1−β₁)g``, ``v ← β₂v + (1−β₂)g²``, ``m̂ = m/(1−β₁ᵏ)``, ``v̂ = v/(1−β₂ᵏ)``,
  ``θ ← θ − η m̂/(√v̂ + ε)`` (``torch.optim.Adam``);
- ``rmsprop``: ``v ← β₂v + (1−β₂)g²``, ``θ ← θ − η g/(√v + ε)`` (``torch.optim.RMSprop`` with
  ``alpha = β₂``: no bias correction, no momentum);
- ``clipped_adam`` (Clipped-Ada, Wang & Roberts' follow-up, arXiv 2511.12558):
  ``θ ← θ − η m̂/(min(√v̂, c) + ε)``; ``clipped_rmsprop``: the same with ``β₁ = 0`` (bias-corrected,
  as in the authors' code: their "RMSprop" is Adam with ``β₁ = 0``).

Stability (Cohen et al. 2022, "Adaptive Gradient Methods at the Edge of Stability"): an adaptive
method is stable while the preconditioned sharpness ``λ_max(P⁻¹H)`` stays below
:meth:`Optimizer.threshold`, ``(2 + 2β₁)/((1 − β₁)η)`` for the Adam family (``2/η`` with
``β₁ = 0``), with ``P = diag(min(√v̂, c) + ε)`` (``c = ∞`` unclipped; ``√v + ε`` for ``rmsprop``).
:meth:`Optimizer.preconditioner` gives that diagonal at ``θ_t``: the one the step out of ``θ_t``
uses (for full-batch methods it includes ``∇L(θ_t)``). Runs may record it at their snapshot steps.

State (moments, step count, the epoch and the position in the epoch's order, recorded
preconditioners) goes into checkpoints (:meth:`Optimizer.state_dict`), so a killed run resumes
bit for bit.
"""

from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor

from ..config.optimizers import ADAPTIVE, CLIPPED, OPTIMIZERS, optimizer_problems, stability_threshold

__all__ = ["OPTIMIZERS", "ADAPTIVE", "CLIPPED", "Optimizer", "make_optimizer", "epoch_order", "optimizer_problems",
           "stability_threshold"]

def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The permutation of the ``n`` training examples for ``epoch`` of a run with ``seed``: a CPU
    generator seeded from both (the same on every device and after any restart)."""
    h = hashlib.sha256(f"eosflow-order {int(seed)} {int(epoch)}".encode()).digest()
    g = torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))
    return torch.randperm(int(n), generator=g)


class Optimizer:
    """One run's optimizer (see the module docstring). ``grad_fn(θ, idx) -> mean gradient over the
    examples idx`` is needed by minibatch methods only; ``n`` is the number of training examples.

    ``epoch`` is the loop step the next :meth:`step` performs; ``record_every`` (0: never): record
    :meth:`preconditioner` at the epochs it divides (adaptive methods), in ``records``.
    """

    def __init__(self, name: str = "gd", *, batch_size: int | None = None, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, clip: float | None = None, seed: int = 0,
                 n: int | None = None, first_epoch: int = 0, record_every: int = 0):
        problems = optimizer_problems({"optimizer": name, "batch_size": batch_size, "beta1": beta1,
                                       "beta2": beta2, "eps": eps, "clip": clip}, "train")
        if problems:
            raise ValueError("; ".join(problems))
        self.name, self.eps, self.seed = name, float(eps), int(seed)
        self.beta1 = 0.0 if name in ("rmsprop", "clipped_rmsprop") else float(beta1)
        self.beta2 = float(beta2)
        self.clip = math.inf if clip is None else float(clip)
        self.n = n
        self.minibatch = batch_size is not None and name != "gd" and (n is None or batch_size < n)
        self.batch_size = int(batch_size) if self.minibatch else None
        self.epoch, self.k, self.position = int(first_epoch), 0, 0
        self.m: Tensor | None = None
        self.v: Tensor | None = None
        self.record_every = int(record_every) if name in ADAPTIVE else 0
        self.records: dict[int, Tensor] = {}

    @property
    def adaptive(self) -> bool:
        return self.name in ADAPTIVE

    def threshold(self, lr: float) -> float:
        """Stability limit of ``λ_max(P⁻¹H)`` (:func:`stability_threshold`)."""
        return stability_threshold(self.name, lr, self.beta1)

    # -- one step on one (mini)batch gradient ---------------------------------------------------
    def _apply(self, theta: Tensor, g: Tensor, lr: float) -> Tensor:
        if self.name in ("gd", "sgd"):
            return theta - lr * g
        self.k += 1
        if self.v is None:
            self.v = torch.zeros_like(theta)
            if self.name != "rmsprop":
                self.m = torch.zeros_like(theta)
        self.v = self.v * self.beta2 + (1 - self.beta2) * g * g
        if self.name == "rmsprop":
            return theta - lr * g / (self.v.sqrt() + self.eps)
        self.m = self.m * self.beta1 + (1 - self.beta1) * g
        bc1, bc2 = 1 - self.beta1 ** self.k, 1 - self.beta2 ** self.k
        denom = self.v.sqrt() / math.sqrt(bc2)
        if self.clip != math.inf:
            denom = denom.clamp(max=self.clip)
        return theta - (lr / bc1) * self.m / (denom + self.eps)

    def step(self, theta: Tensor, g: Tensor, lr: float, grad_fn=None) -> Tensor:
        """One epoch from ``θ_t`` (``g = ∇L(θ_t)``, full batch) at learning rate ``lr``: one step
        for full-batch methods, the epoch's minibatch steps otherwise. Returns ``θ_{t+1}``."""
        if self.record_every and self.epoch % self.record_every == 0:
            self.record(self.epoch, g)  # a minibatch method has none before its first step
        if not self.minibatch:
            theta = self._apply(theta, g, lr)
        else:
            if grad_fn is None:
                raise ValueError("a minibatch optimizer needs grad_fn(theta, idx)")
            order = epoch_order(self.n, self.seed, self.epoch).to(theta.device)
            while self.position < self.n:
                idx = order[self.position:self.position + self.batch_size]
                theta = self._apply(theta, grad_fn(theta, idx), lr)
                self.position += idx.numel()
            self.position = 0
        self.epoch += 1
        return theta

    # -- stability ----------------------------------------------------------------------------
    def preconditioner(self, g: Tensor | None = None) -> Tensor | None:
        """``diag(P)`` at ``θ_t`` (None for ``gd``/``sgd``): the denominator of the next step,
        ``min(√v̂, c) + ε`` (``√v + ε`` for ``rmsprop``). For a full-batch method ``g = ∇L(θ_t)``
        enters ``v`` as in that step (nothing is changed); minibatch methods give their state on
        arrival at ``θ_t``."""
        if not self.adaptive:
            return None
        v, k = self.v, self.k
        if g is not None and not self.minibatch:
            v = (v * self.beta2 if v is not None else torch.zeros_like(g)) + (1 - self.beta2) * g * g
            k += 1
        if v is None or k == 0:
            return None
        if self.name == "rmsprop":
            return v.sqrt() + self.eps
        d = v.sqrt() / math.sqrt(1 - self.beta2 ** k)
        if self.clip != math.inf:
            d = d.clamp(max=self.clip)
        return d + self.eps

    def record(self, epoch: int, g: Tensor | None) -> None:
        """Record the preconditioner at ``θ_epoch`` (the run's last step; ``g = ∇L(θ_epoch)``)."""
        if self.record_every:
            p = self.preconditioner(g)
            if p is not None:
                self.records[int(epoch)] = p.cpu()

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Plain values and CPU tensors: the moments, the step count, the data-order position
        (``epoch``, ``position``: examples of that epoch's order already used) and the records."""
        cpu = lambda t: None if t is None else t.detach().cpu()  # noqa: E731
        return {"name": self.name, "k": self.k, "epoch": self.epoch, "position": self.position, "seed": self.seed,
                "m": cpu(self.m), "v": cpu(self.v), "records": {int(e): p for e, p in self.records.items()}}

    def load_state_dict(self, state: dict, device) -> None:
        if state["name"] != self.name or state["seed"] != self.seed:
            raise ValueError(f"optimizer state of {state['name']} (seed {state['seed']}) cannot resume "
                             f"{self.name} (seed {self.seed})")
        self.k, self.epoch, self.position = int(state["k"]), int(state["epoch"]), int(state["position"])
        self.m = None if state["m"] is None else state["m"].to(device)
        self.v = None if state["v"] is None else state["v"].to(device)
        self.records = {int(e): p for e, p in state["records"].items()}


def make_optimizer(cfg, n: int | None = None, first_epoch: int = 0) -> Optimizer:
    """The optimizer of a run's :class:`~eosflow.training.state.TrainConfig` (its ``optimizer``,
    ``batch_size``, ``beta1``, ``beta2``, ``eps``, ``clip``, ``order_seed``; adaptive methods
    record their preconditioner every ``snapshot_every`` steps)."""
    return Optimizer(getattr(cfg, "optimizer", "gd"), batch_size=getattr(cfg, "batch_size", None),
                     beta1=getattr(cfg, "beta1", 0.9), beta2=getattr(cfg, "beta2", 0.999),
                     eps=getattr(cfg, "eps", 1e-8), clip=getattr(cfg, "clip", None),
                     seed=getattr(cfg, "order_seed", 0), n=n, first_epoch=first_epoch,
                     record_every=cfg.snapshot_every)
