"""Batched sweeps: K full-batch GD runs of one architecture on one dataset in one process.

The K parameter vectors are stacked into a ``(K, P)`` tensor and every step computes the K losses,
gradients and accuracies in one ``torch.func.vmap`` over :meth:`Objective._sum_loss_correct`
(``functional_call`` of the same model with each row's parameters; the data are shared, not
copied). Each run keeps its own learning rate, schedule, stopping rule, divergence test, test
evaluation, snapshots and in-loop sharpness, exactly as :func:`eosflow.training.train` would
apply them: ``train_group(obj, theta0s, cfgs)[i]`` equals ``train(obj, theta0s[i], cfgs[i])``
up to floating-point rounding (the batched matrix products sum in another order: float64 results
agree to ~1e-13 relative over short runs, float32 ones are close but not bitwise equal). A run
that converges, diverges or reaches its ``max_epochs`` leaves the stack at that step, so it costs
nothing afterwards; a diverged run cannot disturb the others (rows of a vmap are independent).

The group writes one atomic checkpoint (every step at which some active run's
``checkpoint_every`` divides the step, and on SIGTERM, after which it exits with status 143) and
resumes from it when its fingerprint (every run's :meth:`TrainConfig.fingerprint` plus the
initial parameters) matches; a resumed group gives results identical to an uninterrupted one.

:func:`run_train_group` is the pipeline's ``run_train`` for a group: each run's metrics NetCDF
and snapshot file are what ``run_train`` writes for that run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import signal
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.func import grad_and_value, vmap
from tqdm.auto import tqdm

from .data import load_prepared
from .device import resolve_device
from .hessian import SpectrumTracker
from .io import save_torch
from .objective import Objective, per_example_loss
from .pipeline import _objective, train_config, write_run_outputs
from .training import METRICS, TrainConfig, TrainResult, _StopRequest, lr_at

log = logging.getLogger(__name__)


def group_fingerprint(cfgs: list[TrainConfig], theta0s: Tensor) -> str:
    """Identity of a group for its checkpoint: every run's configuration and the initial parameters
    (their values, shape and dtype)."""
    h = hashlib.sha256(json.dumps([c.fingerprint() for c in cfgs]).encode())
    h.update(f"{tuple(theta0s.shape)} {theta0s.dtype}".encode())
    h.update(theta0s.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class _Batched:
    """``Objective.loss_grad_acc`` and ``Objective.evaluate`` for a stack of parameter vectors."""

    def __init__(self, objective: Objective):
        self.obj = objective
        self._gv = vmap(grad_and_value(objective._sum_loss_correct, has_aux=True), in_dims=(0, None, None))

        def sum_loss_correct(theta, x, y):
            logits = objective.logits(theta, x)
            return per_example_loss(logits, y, objective.loss_name).sum(), (logits.argmax(-1) == y).sum()

        self._eval = vmap(sum_loss_correct, in_dims=(0, None, None))

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
        chunk_loss = [stats[i * k:(i + 1) * k] for i in range(nc)]
        chunk_correct = [stats[(nc + i) * k:(nc + i + 1) * k] for i in range(nc)]
        losses, accs = [], []
        for j in range(k):
            l_total, correct = 0.0, 0  # summed chunk by chunk in Python, as Objective.loss_grad_acc does
            for i in range(nc):
                l_total += chunk_loss[i][j]
                correct += int(chunk_correct[i][j])
            losses.append(l_total / obj.n)
            accs.append(correct / obj.n)
        gnorm = stats[2 * nc * k:(2 * nc + 1) * k]
        finite = [bool(v) for v in stats[(2 * nc + 1) * k:]]
        return losses, accs, gnorm, finite, g

    @torch.no_grad()
    def evaluate(self, theta: Tensor, x: Tensor, y: Tensor):
        """Lists of ``(mean loss, accuracy)`` on ``(x, y)`` for the rows of ``theta``."""
        k = theta.shape[0]
        ls, cs = [], []
        for xc, yc in self.obj.chunks(x, y):
            l, c = self._eval(theta, xc, yc)
            ls.append(l)
            cs.append(c)
        vals = torch.cat([torch.stack(ls).double().flatten(), torch.stack(cs).double().flatten()]).tolist()
        nc, n = len(ls), x.shape[0]
        out = []
        for j in range(k):
            total, correct = 0.0, 0
            for i in range(nc):
                total += vals[i * k + j]
                correct += int(vals[(nc + i) * k + j])
            out.append((total / n, correct / n))
        return out


def train_group(objective: Objective, theta0s: Tensor, cfgs: list[TrainConfig],
                test: tuple[Tensor, Tensor] | None = None, checkpoint: str | Path | None = None,
                sharpness_fns: list | None = None, progress: bool | object = True,
                desc: str = "train group") -> list[TrainResult]:
    """Run ``len(cfgs)`` full-batch GD runs from the rows of ``theta0s`` (shape ``(K, P)``) together.

    Result ``i`` is what :func:`eosflow.training.train` gives for ``(theta0s[i], cfgs[i])`` (same
    status, steps, metrics, snapshots; values up to rounding). ``sharpness_fns[i](theta) -> float``,
    when given, is called for run ``i`` every ``cfgs[i].sharpness_every`` steps (one run at a time).
    ``checkpoint``: one file for the whole group, resumed from when it matches
    (:func:`group_fingerprint`). ``progress``: False, True (tqdm to stderr) or a file object.
    """
    theta0s = theta0s.detach()
    if theta0s.ndim != 2 or theta0s.shape[0] != len(cfgs) or not cfgs:
        raise ValueError(f"theta0s must have shape (K, P) with K = len(cfgs) = {len(cfgs)} >= 1; "
                         f"got {tuple(theta0s.shape)}")
    n_runs = len(cfgs)
    sharpness_fns = list(sharpness_fns) if sharpness_fns is not None else [None] * n_runs
    if len(sharpness_fns) != n_runs:
        raise ValueError(f"sharpness_fns has {len(sharpness_fns)} entries for {n_runs} runs")
    metrics = [{m: [] for m in METRICS} for _ in range(n_runs)]
    snaps: list[list[Tensor]] = [[] for _ in range(n_runs)]
    snap_steps: list[list[int]] = [[] for _ in range(n_runs)]
    status: list[str | None] = [None] * n_runs
    end_step: list[int | None] = [None] * n_runs
    final = theta0s.clone()  # row i: run i's current θ when it was last written back (its last θ once it ended)
    t = 0
    fp = group_fingerprint(cfgs, theta0s)
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=theta0s.device, weights_only=False)
        if state.get("fingerprint") == fp and state["theta"].shape == theta0s.shape:
            final, t = state["theta"].to(theta0s.dtype), state["step"]
            metrics = [{m: list(r[m]) for m in METRICS} for r in state["metrics"]]
            snaps = [[s.to(theta0s.device) for s in r] for r in state["snapshots"]]
            snap_steps = [list(r) for r in state["snapshot_steps"]]
            status, end_step = list(state["status"]), list(state["end_step"])
            log.info("resumed group of %d runs from checkpoint %s at step %d (%d still running)", n_runs, ckpt, t,
                     sum(s is None for s in status))
        else:
            log.warning("checkpoint %s belongs to another group; starting afresh", ckpt)

    active = [i for i in range(n_runs) if status[i] is None]
    theta = final[active].clone()
    batched = _Batched(objective)

    def save_checkpoint():
        if ckpt is None:
            return
        full = final.clone()
        if active:
            full[active] = theta
        save_torch({"fingerprint": fp, "step": t, "theta": full.cpu(), "metrics": metrics,
                    "snapshots": [[s.cpu() for s in r] for r in snaps], "snapshot_steps": snap_steps,
                    "status": status, "end_step": end_step}, ckpt)

    file = progress if progress not in (True, False) else sys.stderr
    bar = tqdm(total=max(c.max_epochs for c in cfgs), initial=t, desc=desc, disable=progress is False, file=file,
               mininterval=1.0 if file is sys.stderr else 15.0, dynamic_ncols=False)
    stop = _StopRequest()
    lr_list, lr = None, None
    with stop.installed():
        while active:
            losses, accs, gnorms, finite, g = batched.loss_grad_acc(theta)
            lrs, diverged = [], []
            for j, i in enumerate(active):
                c, loss = cfgs[i], losses[j]
                div = not math.isfinite(loss) or loss > c.diverge_loss or not finite[j]
                if div:
                    status[i] = "diverged"
                elif c.acc_goal is not None and accs[j] >= c.acc_goal:
                    status[i] = "converged"
                elif t >= c.max_epochs:
                    status[i] = "max_epochs"
                diverged.append(div)
                lrs.append(lr_at(t, c.lr, c.schedule))
                m = metrics[i]
                m["train_loss"].append(loss)
                m["train_acc"].append(accs[j])
                m["grad_norm"].append(gnorms[j])
                m["lr"].append(lrs[j])
            # test evaluation: at each run's cadence and at its last step, batched over those runs
            evals = [j for j, i in enumerate(active)
                     if test is not None and (t % cfgs[i].eval_every == 0 or status[i] is not None)]
            tests = dict(zip(evals, batched.evaluate(theta[evals], *test))) if evals else {}
            for j, i in enumerate(active):
                tl, ta = tests.get(j, (math.nan, math.nan))
                metrics[i]["test_loss"].append(tl)
                metrics[i]["test_acc"].append(ta)
                c, s = cfgs[i], math.nan
                if sharpness_fns[i] is not None and c.sharpness_every and t % c.sharpness_every == 0 \
                        and not diverged[j]:
                    s = float(sharpness_fns[i](theta[j]))
                metrics[i]["sharpness_inloop"].append(s)
            # snapshots of finite parameters at each run's cadence and at its last step
            due = [j for j, i in enumerate(active) if t % cfgs[i].snapshot_every == 0 or status[i] is not None]
            if due:
                ok = torch.isfinite(theta[due]).all(dim=1).tolist()
                for j, fin in zip(due, ok):
                    if fin:
                        snaps[active[j]].append(theta[j].clone())
                        snap_steps[active[j]].append(t)
            # ended runs leave the stack
            keep = [j for j, i in enumerate(active) if status[i] is None]
            if len(keep) < len(active):
                for j, i in enumerate(active):
                    if status[i] is not None:
                        final[i] = theta[j]
                        end_step[i] = t
                        log.info("run %d (lr=%g) ended at step %d: %s (train loss %.4g, train acc %.4f)", i,
                                 cfgs[i].lr, t, status[i], losses[j], accs[j])
                active = [active[j] for j in keep]
                if not active:
                    break
                theta, g, lrs = theta[keep], g[keep], [lrs[j] for j in keep]
            if lrs != lr_list:  # a new (k, 1) tensor of rates only when they change (schedules, runs leaving)
                lr_list, lr = lrs, torch.tensor(lrs, dtype=theta.dtype, device=theta.device).unsqueeze(1)
            theta = theta - lr * g
            t += 1
            bar.update(1)
            if t % 50 == 0:
                bar.set_postfix(running=len(active), refresh=False)
            if any(t % cfgs[i].checkpoint_every == 0 for i in active) or stop.requested:
                save_checkpoint()
                if stop.requested:
                    bar.close()
                    log.warning("SIGTERM: group checkpoint written at step %d; exiting", t)
                    raise SystemExit(128 + signal.SIGTERM)
    bar.close()
    results = []
    for i in range(n_runs):
        results.append(TrainResult(
            status=status[i], metrics={m: np.asarray(v, dtype=np.float64) for m, v in metrics[i].items()},
            steps=np.arange(end_step[i] + 1),
            snapshots=torch.stack(snaps[i]) if snaps[i] else final.new_zeros((0, final.shape[1])),
            snapshot_steps=np.asarray(snap_steps[i], dtype=np.int64), theta=final[i].clone()))
    return results


def run_train_group(cfg: dict, setting: str, runs: list[tuple[float, int, dict | None]], data_path,
                    outputs: list[tuple], checkpoint=None, progress=True) -> list[str]:
    """Train the runs ``(lr, seed, schedule)`` of one setting as one group; write run ``i``'s metrics
    NetCDF and snapshots to ``outputs[i] = (metrics_path, snapshots_path)`` exactly as
    :func:`eosflow.pipeline.run_train` does for that run. Returns the statuses. Resumes from
    ``checkpoint`` if present; removes it at the end."""
    if len(outputs) != len(runs) or not runs:
        raise ValueError(f"{len(runs)} runs but {len(outputs)} output pairs")
    device = resolve_device(cfg["device"])
    dtype = getattr(torch, cfg["train"]["dtype"])
    data = load_prepared(data_path)
    tc = cfg["train"]
    theta0 = {}
    obj = None
    for _, seed, _ in runs:  # the model is the same for every seed; only θ₀ differs
        if int(seed) not in theta0:
            o = _objective(cfg, setting, data, device, dtype, int(seed))
            obj = o if obj is None else obj
            theta0[int(seed)] = o.flatten()
    theta0s = torch.stack([theta0[int(seed)] for _, seed, _ in runs])
    cfgs = [train_config(cfg, lr, schedule) for lr, _, schedule in runs]
    sharpness_fns = None
    if tc["sharpness_every"]:
        def tracker_fn():
            tracker = SpectrumTracker(k=1, tol=1e-3, max_iter=100)
            return lambda th: float(tracker.measure(obj, th).eigvals[0])
        sharpness_fns = [tracker_fn() for _ in runs]
    log.info("group of %d runs of %s on %s: %d parameters each, %d training examples; %s", len(runs), setting,
             device, obj.dim, obj.n, ", ".join(f"lr={float(lr):g} seed={int(s)}" for lr, s, _ in runs))
    test = (data["x_test"].to(device, dtype), data["y_test"].to(device))
    results = train_group(obj, theta0s, cfgs, test=test, checkpoint=checkpoint, sharpness_fns=sharpness_fns,
                          progress=progress, desc=f"{setting} group of {len(runs)}")
    for (lr, seed, schedule), result, (out_metrics, out_snapshots) in zip(runs, results, outputs):
        write_run_outputs(cfg, setting, lr, seed, schedule, result, obj.dim, out_metrics, out_snapshots)
    if checkpoint is not None:
        Path(checkpoint).unlink(missing_ok=True)
    return [r.status for r in results]
