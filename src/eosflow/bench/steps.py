"""The benchmark's rows about whole GD steps: the stability-clamped step against a plain one
(:func:`bench_clamp`, the issue's target 5) and eosflow's full-batch GD step against a loop written
with nothing but torch (:func:`bench_gd_vs_torch`, target 6).

Both time the GD step the pipeline really takes: :class:`eosflow.training.steppers.ObjectiveStepper`
(``loss_grad_acc`` then ``update``), which :func:`eosflow.training.loop.run_loop` drives for a
single run; the clamped step adds what the loop adds for ``train.clamp``: the in-loop sharpness
(:class:`eosflow.jobs.run.InloopSharpness`) and the clamped step size
(:meth:`eosflow.training.state.RunState.clamped_lr`).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from ..objective import Objective
from ..jobs.run import UNIT_MAX_ITER, UNIT_TOL, InloopSharpness
from ..spectral import top_eigenpairs
from ..training.loop import connect_clamp, step_loss_grad
from ..training.state import RunState, TrainConfig
from ..training.steppers import ObjectiveStepper
from .measure import median, product_of, timed
from .references import _model_at


#: Relative residual of the every-step check's float64 solves: float64 products of the 199k MLP cost
#: about 4 float32 ones, and 1e-5 is a hundredth of the clamp's default tolerance.
EVERY_STEP_TOL = 1e-5


def eosflow_gd_step(stepper: ObjectiveStepper, theta, lr: float):
    """One full-batch GD step as the training loop takes it for a single run: the stepper's
    ``loss_grad_acc`` (loss, accuracy, gradient norm and finiteness, gradient) then its
    ``update``. Returns ``θ − η ∇L(θ)``."""
    *_, g = stepper.loss_grad_acc(theta)
    return stepper.update(theta, g, [lr])


def bench_clamp(obj, theta0, lr: float, clamp: float, clamp_tol: float, max_iter: int, steps: int,
                check_at, device, exact_tol: float = UNIT_TOL, exact_max_iter: int = UNIT_MAX_ITER,
                margin: float = 0.0, check_every_step: bool | str = False) -> dict:
    """GD at ``lr`` (above the stability limit) with the stability clamp, as a clamped training run
    steps: at every step the bound ``U_t`` of :class:`~eosflow.jobs.run.InloopSharpness` (a
    warm-started top-1 solve to ``clamp_tol``, at most ``max_iter`` products, or between solves the
    bound :class:`~eosflow.training.clamp.ClampBound` predicts within ``margin``) and ``η_t =
    min(η, clamp·2/U_t)`` by :meth:`~eosflow.training.state.RunState.clamped_lr`. At each visited
    ``θ_t`` a plain GD step from the same ``θ_t`` is timed too (which of the two goes first
    alternates, so machine noise hits both); the trajectory follows the clamped one. The ratio is
    the clamped run's total time over the plain steps' (amortised: a step with a solve costs
    several plain ones, one without about one); medians are reported beside it.

    Validity: at the steps nearest ``check_at`` where the clamp was binding (:func:`_check_steps`)
    S is recomputed from a cold start (:func:`exact_sharpness`) to relative residual
    ``exact_tol`` and ``η_t·S_exact ≤ 2·clamp·(1 + exact_tol)`` is checked: what the clamp promises
    (``η_t·λ_max ≤ 2·clamp``). ``check_every_step``: besides, at every step by a float64 tracker of
    its own (:func:`_every_step_checks`, to :data:`EVERY_STEP_TOL`; ``"predicted"``: at the steps
    without a solve only)."""
    state = RunState(TrainConfig(lr=lr, clamp=clamp, clamp_tol=clamp_tol, clamp_margin=margin, acc_goal=None,
                                 max_epochs=steps))
    stepper = ObjectiveStepper(obj)
    sharp = InloopSharpness(obj, clamp_tol, max_iter, clamped=True, margin=margin)
    connect_clamp(state, sharp)  # as run_loop does
    results = []  # each in-loop solve's costs, residual, convergence and Hessian-vector product

    def clamped_step(t, theta):
        """The loop's step ``t`` of a clamped run: gradient, metrics, U_t, η_t, update. Returns
        ``(θ_{t+1} or None when diverged, η_t, S (NaN: predicted), seconds spent on U_t)``."""
        losses, accs, gnorms, finite, g = step_loss_grad(stepper, theta, t, [0], [state], [sharp])
        lr_t, diverged = state.observe(t, losses[0], accs[0], gnorms[0], finite[0])
        state.record_test()
        if diverged:
            return None, lr_t, math.nan, 0.0
        dt_m, s = timed(lambda: sharp(theta), device) if state.sharpness_due(t, diverged) else (0.0, math.nan)
        if sharp.last is not None and not math.isnan(s):
            res = sharp.last
            results.append({"n_matvec": res.n_matvec, "residual": float(res.residuals[0]),
                            "converged": bool(res.converged), "product": res.product})
        state.record_sharpness(s, sharp.bound)
        lr_t = state.clamped_lr(lr_t)
        return stepper.update(theta, g, [lr_t]), lr_t, s, dt_m

    theta = theta0.clone()
    plain_s, clamped_s, measure_s, lrs, sharpness, visited, bounds = [], [], [], [], [], [], []
    status = "ran"
    for t in range(steps):
        if t % 2 == 0:
            dt_p, _ = timed(lambda: eosflow_gd_step(stepper, theta, lr), device)
            dt_c, (nxt, lr_t, s, dt_m) = timed(lambda: clamped_step(t, theta), device)
        else:
            dt_c, (nxt, lr_t, s, dt_m) = timed(lambda: clamped_step(t, theta), device)
            dt_p, _ = timed(lambda: eosflow_gd_step(stepper, theta, lr), device)
        if nxt is None:
            status = f"diverged at step {t}"
            break
        plain_s.append(dt_p)
        clamped_s.append(dt_c)
        measure_s.append(dt_m)
        lrs.append(lr_t)
        sharpness.append(s)
        bounds.append(sharp.bound)
        visited.append(theta)  # θ_t (steps make new tensors: no copy needed)
        theta = nxt
    checks = _clamp_checks(obj, visited, lrs, sharpness, _check_steps(check_at, lrs, lr), lr, clamp, exact_tol,
                           exact_max_iter)
    only = [t for t, s in enumerate(sharpness) if math.isnan(s)] if check_every_step == "predicted" else None
    every = _every_step_checks(obj, visited, lrs, clamp, EVERY_STEP_TOL, exact_max_iter, only) if check_every_step else None
    ok = bool(checks) and all(c["holds"] and c["exact_converged"] for c in checks) and (every is None or every["ok"])
    return {
        "clamp": clamp, "clamp_tol": clamp_tol, "clamp_margin": margin, "max_iter": max_iter, "lr": lr,
        "steps": len(plain_s), "status": status, **_clamp_costs(plain_s, clamped_s, measure_s, results, sharp.bounds),
        "binding_steps": sum(1 for x in lrs if x < lr),
        "lr_t": lrs, "sharpness_inloop": sharpness, "bound_inloop": bounds,
        "validity": {"exact_tol": exact_tol, "exact_max_iter": exact_max_iter, "exact_dtype": "float32, then float64",
                     "steps": [c["step"] for c in checks],
                     "max_lr_s_exact_over_2clamp": _largest([c["lr_s_exact_over_2clamp"] for c in checks]
                                                            + [(every or {}).get("max_lr_s_over_2clamp")]),
                     "ok": ok, "checks": checks, "every_step": every},
    }


def _largest(values: list) -> float | None:
    """The largest of the values that are not None (None when none is)."""
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _clamp_costs(plain_s, clamped_s, measure_s, results, bounds) -> dict:
    """:func:`bench_clamp`'s times, ratios and solver costs."""
    nmv = [r["n_matvec"] for r in results]
    n = len(plain_s)
    return {
        "median_gd_step_s": median(plain_s), "median_clamped_step_s": median(clamped_s),
        "mean_gd_step_s": sum(plain_s) / n if n else None, "mean_clamped_step_s": sum(clamped_s) / n if n else None,
        "median_measure_s": median(measure_s),
        "ratio_clamped_vs_plain": (sum(clamped_s) / sum(plain_s)) if n else None,
        "ratio_kind": "total clamped time / total plain time (amortised over the run)",
        "ratio_median_steps": (median(clamped_s) / median(plain_s)) if n else None,
        "solves": bounds.solves, "predicted_steps": bounds.predictions, "misses": bounds.misses,
        "hvps_per_step": sum(nmv) / n if n else None,
        "n_matvec_per_measurement": {"first": nmv[0] if nmv else None, "median": median(nmv),
                                     "median_warm": median(nmv[1:]), "mean": sum(nmv) / len(nmv) if nmv else None,
                                     "max": max(nmv, default=None)},
        "all_converged": all(r["converged"] for r in results) if results else None,
        "max_residual": max((r["residual"] for r in results), default=None),
        "gd_step_times_s": [round(x, 5) for x in plain_s], "clamped_step_times_s": [round(x, 5) for x in clamped_s],
        "product": product_of(r["product"] for r in results),
    }


def _every_step_checks(obj, visited, lrs, clamp: float, tol: float, max_iter: int, only=None) -> dict:
    """``η_t·λ_max(θ_t) ≤ 2·clamp·(1 + tol)`` at every visited step (``only``: at those steps), ``λ_max``
    by a float64 tracker of the benchmark's own (top 1 and two guard vectors, warm-started from the
    step before, to relative residual ``tol``): independent of the clamp's float32 tracker and its
    predictions. A run whose steps were all solved checks nothing under ``only`` (ok)."""
    from ..spectral import SpectrumTracker

    obj64 = float64_objective(obj)
    tracker = SpectrumTracker(k=1, tol=tol, max_iter=max_iter, n_guard=2, warm_subspace=True)
    ratios, unconverged = [], 0
    at = list(range(len(visited))) if only is None else list(only)
    for t in at:
        res = tracker.measure(obj64, visited[t].double())
        unconverged += not res.converged
        ratios.append(lrs[t] * float(res.eigvals[0]) / (2 * clamp))
    worst = max(ratios, default=None)
    return {"steps": len(ratios), "which": "every step" if only is None else "the predicted steps",
            "tol": tol, "dtype": "float64", "max_lr_s_over_2clamp": worst,
            "n_above_1_plus_tol": sum(r > 1 + tol for r in ratios), "unconverged": unconverged,
            "ok": unconverged == 0 and (worst is None or worst <= 1 + tol) and (bool(ratios) or only is not None),
            "at": None if only is None else at, "lr_s_over_2clamp": [round(r, 7) for r in ratios]}


def _clamp_checks(obj, visited, lrs, sharpness, at, lr: float, clamp: float, exact_tol: float,
                  exact_max_iter: int) -> list[dict]:
    """:func:`bench_clamp`'s validity checks at the steps ``at``: ``S`` of the visited ``θ_t`` from a
    cold start to ``exact_tol`` against the in-loop ``S`` and the clamp's promise."""
    checks = []
    obj64 = float64_objective(obj)
    for t in at:
        th, lr_t, s = visited[t], lrs[t], sharpness[t]
        res, n32 = exact_sharpness(obj, obj64, th, exact_tol, exact_max_iter, seed=1000 + t)
        s_exact = float(res.eigvals[0])
        checks.append({"step": t, "lr_t": lr_t, "s_inloop": s, "s_exact": s_exact,
                       "rel_diff_inloop_vs_exact": abs(s - s_exact) / abs(s_exact),
                       "lr_s_exact_over_2clamp": lr_t * s_exact / (2 * clamp), "binding": lr_t < lr,
                       "holds": lr_t * s_exact <= 2 * clamp * (1 + exact_tol),
                       "exact_residual": float(res.residuals[0]), "exact_converged": bool(res.converged),
                       "exact_n_matvec_float32": n32, "exact_n_matvec_float64": res.n_matvec,
                       "product": getattr(res, "product", None)})
    return checks


def float64_objective(obj: Objective) -> Objective:
    """The same loss in float64: a float64 copy of the model and the data, the same chunks."""
    return Objective(copy.deepcopy(obj.model).double(), obj.x.double(), obj.y, obj.loss_name,
                     chunk_size=obj.chunk_size)


def exact_sharpness(obj: Objective, obj64: Objective, theta, tol: float, max_iter: int, seed: int):
    """S(θ) to relative residual ``tol``, independently of the in-loop tracker: a cold float32 solve
    to ``10·tol``, then a float64 one (``obj64``, :func:`float64_objective`) warm-started from its
    vector. Float32 products alone cannot reach 1e-6 on the benchmark's MLP (their rounding leaves
    residuals of a few 1e-6 after 1,000 products), and float64 products of the VGG cost about 4x
    float32 ones on a CPU, so float64 only finishes the solve. Returns ``(float64 result, float32
    products)``."""
    r32 = top_eigenpairs(obj, theta, 1, tol=10 * tol, max_iter=max_iter, seed=seed)
    r64 = top_eigenpairs(obj64, theta.double(), 1, warm=r32.eigvecs.double(), tol=tol, max_iter=max_iter, seed=seed)
    return r64, r32.n_matvec


def _check_steps(check_at, lrs: list[float], lr: float) -> list[int]:
    """The steps whose S is recomputed: for each step asked for, the nearest one at which the clamp
    was binding (``η_t < η``: there ``η_t·S`` sits at the bound, so the check is tight); any
    visited step when it never was."""
    binding = [t for t, x in enumerate(lrs) if x < lr] or list(range(len(lrs)))
    return sorted({min(binding, key=lambda b: (abs(b - c), b)) for c in check_at}) if binding else []


def bench_gd_vs_torch(obj, theta0, lr: float, steps: int, device) -> dict:
    """Median time of eosflow's full-batch GD step (:func:`eosflow_gd_step`) against a loop
    written with nothing but torch over the same chunks (``p.grad = None``; summed cross-entropy
    ``.backward()`` per chunk; ``p -= η·p.grad/N``), on a copy of the model at ``θ₀``. Timed
    steps alternate bare, eosflow, bare, eosflow, ... so machine noise hits both. One untimed
    step of each first warms both up and checks that they make the same update."""
    if obj.loss_name != "ce":
        raise ValueError(f"the bare torch loop is written for cross-entropy; got loss {obj.loss_name!r}")
    model = _model_at(obj, theta0)
    params = list(model.parameters())
    chunks = list(obj.chunks())
    n = obj.n

    def bare_step():
        for p in params:
            p.grad = None
        for xc, yc in chunks:
            F.cross_entropy(model(xc), yc, reduction="sum").backward()
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad / n

    stepper = ObjectiveStepper(obj)
    bare_step()
    theta = eosflow_gd_step(stepper, theta0, lr)
    bare_theta = torch.nn.utils.parameters_to_vector(params).detach()
    diff = float(torch.linalg.vector_norm(bare_theta - theta) / torch.linalg.vector_norm(theta - theta0))
    bare_s, eos_s = [], []
    for _ in range(steps):
        dt, _ = timed(bare_step, device)
        bare_s.append(dt)
        dt, theta = timed(lambda: eosflow_gd_step(stepper, theta, lr), device)
        eos_s.append(dt)
    return {"steps": steps, "lr": lr, "n_chunks": len(chunks), "order": "interleaved: bare, eosflow, bare, ...",
            "eosflow_step": "eosflow.training.steppers.ObjectiveStepper.loss_grad_acc + update (run_loop's step)",
            "median_bare_s": median(bare_s), "median_eosflow_s": median(eos_s),
            "ratio_eosflow_vs_bare": median(eos_s) / median(bare_s) if steps else None,
            "bare_times_s": [round(x, 5) for x in bare_s], "eosflow_times_s": [round(x, 5) for x in eos_s],
            "first_update_rel_diff": diff, "same_update": diff <= 1e-3}

