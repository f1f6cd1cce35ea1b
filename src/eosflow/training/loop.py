"""The one training loop: full-batch GD for one run (:func:`train`) or K runs at once
(:func:`train_group`), with the same per-run rules (:class:`~eosflow.training.state.RunState`).

One step is one epoch (full batch). Every step the stepper computes the active runs' losses and
gradients; each run records its metrics and decides whether it ends; due test evaluations,
in-loop sharpness and snapshots follow; ended runs leave the stack (so they cost nothing
afterwards); the rest take their GD step, a clamped run (``TrainConfig.clamp``) with
``η_t = min(η₀, clamp · 2 / S(θ_t))`` from the sharpness it measures at every step
(:meth:`~eosflow.training.state.RunState.clamped_lr`); at a step where that sharpness makes a full
solve, a single GD run's gradient comes from the solve's primal pass (:func:`step_loss_grad`). A checkpoint (one file for all the runs, written
atomically) is written whenever some active run's ``checkpoint_every`` divides the step, and on
SIGTERM (``scancel``, Snakemake stopping), after which the process exits with status 143. A run
resumes from its checkpoint when the fingerprint (every run's configuration and the initial
parameters) matches, and a resumed run gives results identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import signal
import sys
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..files import save_torch
from .state import RunState, TrainConfig, TrainResult
from .optimizers import make_optimizer
from .steppers import BatchedStepper, ObjectiveStepper, check_batchable

__all__ = ["StopRequest", "connect_clamp", "fingerprint", "run_loop", "step_loss_grad", "train", "train_group"]

log = logging.getLogger(__name__)


class StopRequest:
    """Turns SIGTERM (e.g. ``scancel``, Snakemake stopping) into a checkpoint-and-exit: while
    :meth:`installed`, a SIGTERM sets ``requested`` and the loop stops at the end of its step."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        self.requested = True

    @contextlib.contextmanager
    def installed(self):
        try:
            old = signal.signal(signal.SIGTERM, self)
        except ValueError:  # not in the main thread
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, old)


def fingerprint(cfgs: list[TrainConfig], theta0s: list[Tensor]) -> str:
    """Identity of a set of runs for its checkpoint: every run's configuration and the initial
    parameters (their values, shape and dtype)."""
    stacked = torch.stack([t.detach() for t in theta0s])
    h = hashlib.sha256(json.dumps([c.fingerprint() for c in cfgs]).encode())
    h.update(f"{tuple(stacked.shape)} {stacked.dtype}".encode())
    h.update(stacked.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class _Checkpoint:
    """The runs' checkpoint file: step, every run's parameters and state, the stepper's
    optimizer state (moments, data-order position; :meth:`ObjectiveStepper.state_dict`) and the
    in-loop sharpness functions' warm starts (their ``state_dict``, where they have one), as
    tensors and plain values read with ``weights_only=True``. A file that cannot be read, or that
    belongs to other runs, is moved aside to ``<name>.bad`` with a warning, and the runs start
    afresh: it never blocks them."""

    def __init__(self, path, fp: str, stepper=None, sharpness_fns=()):
        self.path, self.fp, self.stepper = (Path(path) if path else None), fp, stepper
        self.sharpness_fns = list(sharpness_fns)

    def _set_aside(self, why: str) -> None:
        bad = self.path.with_name(self.path.name + ".bad")
        os.replace(self.path, bad)
        log.warning("checkpoint %s %s; moved aside to %s, starting afresh", self.path, why, bad)

    def resume(self, states: list[RunState], thetas: list[Tensor], t: int) -> int:
        """Restore ``states`` and ``thetas`` (in place) when the file matches; returns the step."""
        if self.path is None or not self.path.exists():
            return t
        ref = thetas[0]
        try:
            state = torch.load(self.path, map_location=ref.device, weights_only=True)
            ok = state.get("fingerprint") == self.fp and len(state["runs"]) == len(states)
        except Exception as e:  # truncated, random bytes, not a torch file, code inside: all unreadable
            self._set_aside(f"cannot be read ({type(e).__name__}: {str(e)[:160]})")
            return t
        if not ok:
            self._set_aside("belongs to another configuration or initialisation")
            return t
        if self.stepper is not None and hasattr(self.stepper, "load_state_dict"):
            self.stepper.load_state_dict(state.get("optimizer"), ref.device)
        for fn, saved in zip(self.sharpness_fns, state.get("sharpness") or []):
            if saved is not None and hasattr(fn, "load_state_dict"):
                fn.load_state_dict(saved, ref.device)
        for i, (s, saved) in enumerate(zip(states, state["runs"])):
            s.load_state_dict(saved, ref.device)
            thetas[i] = state["theta"][i].to(ref.dtype)
        log.info("resumed from checkpoint %s at step %d: %d of %d runs still running", self.path, state["step"],
                 sum(s.status is None for s in states), len(states))
        return int(state["step"])

    def save(self, t: int, states: list[RunState], thetas: list[Tensor]) -> None:
        if self.path is not None:
            optimizer = self.stepper.state_dict() if hasattr(self.stepper, "state_dict") else None
            sharpness = [fn.state_dict() if hasattr(fn, "state_dict") else None for fn in self.sharpness_fns]
            save_torch({"fingerprint": self.fp, "step": t, "theta": torch.stack(thetas).cpu(),
                        "runs": [s.state_dict() for s in states], "optimizer": optimizer, "sharpness": sharpness},
                       self.path)


def _bar(states: list[RunState], t: int, progress, desc: str):
    file = progress if progress not in (True, False) else sys.stderr
    return tqdm(total=max(s.cfg.max_epochs for s in states), initial=t, desc=desc, disable=progress is False,
                file=file, mininterval=1.0 if file is sys.stderr else 15.0, dynamic_ncols=False)


def _measure(stepper, theta: Tensor, t: int, active: list[int], states: list[RunState], diverged: list[bool],
             test, sharpness_fns) -> None:
    """Step ``t``'s test evaluations (batched over the runs due), in-loop sharpness and snapshots."""
    due = [j for j, i in enumerate(active) if test is not None and states[i].eval_due(t)]
    tests = dict(zip(due, stepper.evaluate(theta, due, *test))) if due else {}
    for j, i in enumerate(active):
        states[i].record_test(*tests.get(j, (math.nan, math.nan)))
        fn = sharpness_fns[i]
        due_s = fn is not None and states[i].sharpness_due(t, diverged[j])
        value = float(fn(stepper.row(theta, j))) if due_s else math.nan
        states[i].record_sharpness(value, getattr(fn, "bound", None) if due_s else None)
    due = [j for j, i in enumerate(active) if states[i].snapshot_due(t)]
    for j, fin in zip(due, stepper.finite(theta, due)):
        if fin:
            states[active[j]].add_snapshot(t, stepper.row(theta, j))


def step_loss_grad(stepper, theta: Tensor, t: int, active: list[int], states: list[RunState], sharpness_fns):
    """The stepper's ``loss_grad_acc`` at step ``t``; for a single GD run whose in-loop sharpness
    solves at this step, from that solve's primal pass instead (its ``loss_grad_acc``, where it has
    one and can: :meth:`eosflow.jobs.run.InloopSharpness.loss_grad_acc`)."""
    if len(active) == 1 and getattr(stepper, "optimizer", True) is None:
        i = active[0]
        share = getattr(sharpness_fns[i], "loss_grad_acc", None)
        out = share(theta) if share is not None and states[i].sharpness_due(t, False) else None
        if out is not None:
            return ObjectiveStepper.packed(*out)
    return stepper.loss_grad_acc(theta)


def connect_clamp(state: RunState, fn) -> None:
    """Check a run's in-loop sharpness ``fn`` against its clamp and hand ``fn``'s bound predictor the
    run's limit ``2 · clamp / η_t`` (it solves while S approaches it). Raises ``ValueError`` for a
    clamped run without ``fn`` or with a predictor whose margin is not the run's
    ``train.clamp_margin``. Nothing to do for a run that is not clamped."""
    if state.cfg.clamp is None:
        return
    if fn is None:
        raise ValueError(f"run lr={state.cfg.lr:g}: train.clamp needs its in-loop sharpness function "
                         "(eosflow.jobs.run.inloop_sharpness); got none")
    bounds = getattr(fn, "bounds", None)
    margin = getattr(bounds, "margin", None)
    if margin is not None and margin != state.cfg.clamp_margin:
        raise ValueError(f"run lr={state.cfg.lr:g}: train.clamp_margin is {state.cfg.clamp_margin:g} but its in-loop "
                         f"sharpness predicts with margin {margin:g}; give both the same")
    if hasattr(bounds, "limit"):
        bounds.limit = state.clamp_limit


def run_loop(stepper, theta0s: list[Tensor], states: list[RunState], *, start_step: int = 0, test=None,
             checkpoint=None, sharpness_fns: list | None = None, progress=True, desc: str = "train") -> list[TrainResult]:
    """Train the runs ``states`` from ``theta0s`` (one ``(P,)`` tensor each) with ``stepper``; see the
    module docstring. ``sharpness_fns[i](θ) -> float`` is run ``i``'s in-loop sharpness (or None).
    ``progress``: False, True (tqdm to stderr) or a file object for tqdm (a rule's log)."""
    final = [th.detach().clone() for th in theta0s]  # run i's latest θ (its last θ once it ended)
    sharpness_fns = list(sharpness_fns) if sharpness_fns is not None else [None] * len(states)
    for s, fn in zip(states, sharpness_fns):
        connect_clamp(s, fn)
    ckpt = _Checkpoint(checkpoint, fingerprint([s.cfg for s in states], final), stepper, sharpness_fns)
    t = ckpt.resume(states, final, start_step)
    active = [i for i, s in enumerate(states) if s.status is None]
    theta = stepper.stack([final[i] for i in active]) if active else None
    bar, stop = _bar(states, t, progress, desc), StopRequest()
    with stop.installed():
        while active:
            losses, accs, gnorms, finite, g = step_loss_grad(stepper, theta, t, active, states, sharpness_fns)
            steps = [states[i].observe(t, losses[j], accs[j], gnorms[j], finite[j]) for j, i in enumerate(active)]
            _measure(stepper, theta, t, active, states, [d for _, d in steps], test, sharpness_fns)
            lrs = [states[i].clamped_lr(lr) for (lr, _), i in zip(steps, active)]
            keep = [j for j, i in enumerate(active) if states[i].status is None]
            for j in sorted(set(range(len(active))) - set(keep)):
                i = active[j]
                final[i], states[i].end_step = stepper.row(theta, j), t
                log.info("run %d (lr=%g) ended at step %d: %s (train loss %.4g, train acc %.4f)", i, states[i].cfg.lr,
                         t, states[i].status, losses[j], accs[j])
            if len(keep) < len(active):
                active = [active[j] for j in keep]
                if not active:
                    break
                theta, g = stepper.select(theta, g, keep)
            theta = stepper.update(theta, g, [lrs[j] for j in keep])
            t += 1
            bar.update(1)
            if t % 50 == 0:
                bar.set_postfix(loss=f"{losses[keep[0]]:.4g}", acc=f"{accs[keep[0]]:.3f}", running=len(active),
                                refresh=False)
            if any(states[i].checkpoint_due(t) for i in active) or stop.requested:
                for j, i in enumerate(active):
                    final[i] = stepper.row(theta, j)
                ckpt.save(t, states, final)
                if stop.requested:
                    bar.close()
                    log.warning("SIGTERM: checkpoint written at step %d; exiting", t)
                    raise SystemExit(128 + signal.SIGTERM)
    bar.close()
    return [s.result(th) for s, th in zip(states, final)]


def train(objective, theta0: Tensor, cfg: TrainConfig, test: tuple[Tensor, Tensor] | None = None,
          checkpoint: str | Path | None = None, sharpness_fn=None, progress: bool | object = True,
          desc: str = "train", start: dict | None = None) -> TrainResult:
    """Run full-batch GD from ``theta0``; resume from ``checkpoint`` when it exists and matches.

    ``start``: fork from another run instead of step 0: ``{"step": t, "theta": θ_t, "metrics":
    {name: values of steps 0..t-1}}`` (the parent's history; snapshots start at ``t``). A run
    forked from a parent with the same η schedule up to ``t`` equals one trained from scratch.

    ``sharpness_fn(theta) -> float`` is called every ``cfg.sharpness_every`` steps when given.
    ``progress``: False, True (tqdm to stderr) or a file object for tqdm (a rule's log).
    """
    state = RunState(cfg, start)
    if start is not None:
        theta0 = start["theta"].detach().to(theta0.device, theta0.dtype)
    optimizer = None
    if getattr(cfg, "optimizer", "gd") != "gd":
        if start is not None:
            raise ValueError(f"start: a forked run is full-batch GD (its parent's optimizer state is not kept); "
                             f"got optimizer {cfg.optimizer!r}")
        optimizer = make_optimizer(cfg, n=getattr(objective, "n", None), first_epoch=state.first_step)
    stepper = ObjectiveStepper(objective, optimizer)
    result = run_loop(stepper, [theta0], [state], start_step=state.first_step, test=test, checkpoint=checkpoint,
                      sharpness_fns=[sharpness_fn], progress=progress, desc=desc)[0]
    result.optimizer = stepper.finish(result.theta, int(result.steps[-1]), result.status)
    return result


def train_group(objective, theta0s: Tensor, cfgs: list[TrainConfig], test: tuple[Tensor, Tensor] | None = None,
                checkpoint: str | Path | None = None, sharpness_fns: list | None = None,
                progress: bool | object = True, desc: str = "train group") -> list[TrainResult]:
    """Run ``len(cfgs)`` full-batch GD runs from the rows of ``theta0s`` (shape ``(K, P)``) together,
    stacked and ``vmap``ped (:class:`~eosflow.training.steppers.BatchedStepper`).

    Result ``i`` is what :func:`train` gives for ``(theta0s[i], cfgs[i])`` (same status, steps,
    metrics, snapshots) up to floating-point rounding: the batched matrix products sum in another
    order (float64 results agree to ~1e-13 relative over short runs, float32 ones are close but not
    bitwise equal). ``sharpness_fns[i](theta) -> float``, when given, is called for run ``i``
    every ``cfgs[i].sharpness_every`` steps. ``checkpoint``: one file for the whole group.
    """
    theta0s = theta0s.detach()
    if theta0s.ndim != 2 or theta0s.shape[0] != len(cfgs) or not cfgs:
        raise ValueError(f"theta0s must have shape (K, P) with K = len(cfgs) = {len(cfgs)} >= 1; "
                         f"got {tuple(theta0s.shape)}")
    if sharpness_fns is not None and len(sharpness_fns) != len(cfgs):
        raise ValueError(f"sharpness_fns has {len(sharpness_fns)} entries for {len(cfgs)} runs")
    check_batchable(cfgs)
    return run_loop(BatchedStepper(objective), list(theta0s), [RunState(c) for c in cfgs], test=test,
                    checkpoint=checkpoint, sharpness_fns=sharpness_fns, progress=progress, desc=desc)
