"""The stability clamp's bound on ``S(θ_t)`` between full solves (:class:`ClampBound`).

A clamped run steps with ``η_t = min(η₀, clamp · 2 / U_t)``, where ``U_t ≥ λ_max(θ_t)`` is an upper
bound on the sharpness. A full solve (warm-started top-1 Lanczos to relative residual
``clamp_tol``) gives ``U_t = S_t · (1 + clamp_tol)``: a Ritz value within that factor below
``λ_max``. Solving at every step makes a clamped step 5-35 times a plain one
(``benchmarks/results/cpu-2026-12-02.json``). Most of those solves repeat what the last one said:
under the clamp GD is stable, and ``S`` moves smoothly, in a period-two oscillation (the top
direction's component flips sign each step, ``|1 − η_t S| < 1``): ``S_t`` is close to
``S_{t−2}``, not always to ``S_{t−1}`` (4 % apart on the default MLP).

So between full solves the bound is *predicted* from the measured trend of ``S``, per parity of
the step. With ``(t₀, S₀)`` the last solve of step ``t``'s parity, ``r`` the log-rate of ``S``
per step between its last two solves, and ``d`` the largest change of that rate between
consecutive pairs of solves over the last ``window`` pairs,

    ``U_t = S₀ · (1 + clamp_tol) · exp((max(r, 0) + κ) · (t − t₀))``,  ``κ = max(margin / max_gap, safety · d)``:

the trend (never a fall: a falling ``S`` is bounded by its last value) plus an allowance that
grows with the distance to the last solve. A full solve is due when the allowance
``exp(κ (t − t₀)) − 1`` would exceed ``margin``, when ``t − t₀ > max_gap`` (8: a change the
trend did not announce goes at most 7 steps unseen), until the parity has ``window`` pairs of
solves, and while ``S`` approaches the clamp's limit ``2 · clamp / η_t`` from below (``U_t`` within
``near``, a quarter, of it while the last solve of the parity did not bind; the loop gives the
limit, :attr:`limit`): a run whose rate of change itself moves (the first steps, a
chaotic stretch) is solved at every step, as before; a run sharpening at a steady rate is solved
every ``log(1 + margin) / κ`` steps per parity. The price is a step size up to ``margin`` below
the exact clamp's (and ``r`` above the trend where ``S`` falls).

Each solve checks the prediction it replaces: ``S_t · (1 + clamp_tol)`` above the ``U_t`` the
last solves predict for step ``t`` is a **miss** (the rate moved faster than the allowance): it
doubles ``safety`` for the rest of the run and is counted (``misses``) and logged. On the default
MLP (300 clamped steps at 2 η_eos, ``clamp_tol`` 1e-3, ``margin`` 0.02) a simulation over the
exact clamp's trajectory solves 28 % of the steps with no miss and no step above the bound; tests
and the benchmark check ``η_t · λ_max(θ_t) ≤ 2 · clamp`` at every step of real runs with fresh
float64 solves. ``margin = 0`` solves at every step (the exact clamp, the bound of the one before
this class). Between solves ``U_t`` is a prediction checked after the fact, not a certificate:
a rise of S within a few steps of a solve, faster than the trend plus the allowance, would step
above the bound unless the next solve of its parity catches it. ``max_gap`` stays 8: a trial at
12 on the default MLP at 2 η_eos (before the solves shared the step's primal pass) found two
predicted steps above the bound, two steps after a solve; the committed clamp-cost file's
``max_gap`` 12 row, on today's trajectory, happens to hold. On the benchmark's BatchNorm VGG the
predicted steps went 4 % above the bound where the period-two pattern changed
(``benchmarks/results/cpu-vgg-clamp-2026-12-06.json``): so ``train.clamp_margin`` defaults to 0
(:data:`DEFAULT_CLAMP_MARGIN`), and a margin is an opt-in, for networks where such checks hold.

No torch here: the state is a few numbers per parity, and part of a run's checkpoint.
"""

from __future__ import annotations

import math

__all__ = ["ClampBound", "DEFAULT_CLAMP_MARGIN"]

#: ``train.clamp_margin``'s default (the config schema's; a test keeps the two equal).
DEFAULT_CLAMP_MARGIN = 0.0


class ClampBound:
    """When a clamped run needs a full solve of ``S``, and the bound ``U_t`` it steps with between
    them (module docstring). Call :meth:`due` at each step ``t``; after a solve, :meth:`solved`
    gives ``U_t``; otherwise :meth:`predicted` does."""

    def __init__(self, tol: float, margin: float = 0.0, *, safety: float = 4.0, window: int = 3,
                 max_gap: int = 8, near: float = 0.25):
        if margin < 0:
            raise ValueError(f"clamp_margin must be >= 0; got {margin}")
        self.tol, self.margin, self.safety = float(tol), float(margin), float(safety)
        self.window, self.max_gap, self.near = int(window), int(max_gap), float(near)
        #: ``t ↦`` the sharpness at which the run's clamp binds at step ``t`` (``2 · clamp / η_t``), set
        #: by the loop (:meth:`eosflow.training.state.RunState.clamp_limit`); None: not known
        self.limit = None
        self.history: dict[int, list[tuple[int, float]]] = {0: [], 1: []}  # (step, S) of the solves
        self.misses = self.solves = self.predictions = 0

    def _bound(self, t: int, limited: bool = True) -> float | None:
        """``U_t`` predicted from the solves of ``t``'s parity; None while the parity has too few
        solves, or (``limited``) when a solve is due."""
        h = self.history[t % 2][-(self.window + 1):]
        if len(h) < self.window + 1 or not all(s > 0 for _, s in h):
            return None
        rates = [math.log(sb / sa) / (tb - ta) for (ta, sa), (tb, sb) in zip(h[:-1], h[1:])]
        kappa = max(self.margin / self.max_gap, self.safety * max(abs(b - a) for a, b in zip(rates[:-1], rates[1:])))
        t0, s0 = h[-1]
        gap = t - t0
        if limited and not (0 < gap <= self.max_gap and math.expm1(kappa * gap) <= self.margin):
            return None
        return s0 * (1.0 + self.tol) * math.exp((max(rates[-1], 0.0) + kappa) * gap)

    def _approaching(self, t: int, u: float) -> bool:
        """Whether the predicted ``U_t`` is within ``near`` below the sharpness at which the clamp binds
        while the last solve of ``t``'s parity did not bind: S may be about to reach the limit, and how
        fast it gets there is not its trend's to say (on the benchmark VGG S rose 24 % in the three
        steps before the clamp first bound)."""
        if self.limit is None:
            return False
        t0, s0 = self.history[t % 2][-1]
        return u * (1.0 + self.near) >= self.limit(t) and s0 * (1.0 + self.tol) < self.limit(t0)

    def due(self, t: int) -> bool:
        """Whether step ``t`` needs a full solve."""
        if self.margin <= 0:
            return True
        u = self._bound(t)
        return u is None or self._approaching(t, u)

    def predicted(self, t: int) -> float:
        """``U_t`` for a step ``t`` that :meth:`due` let pass without a solve."""
        u = self._bound(t) if self.margin > 0 else None
        if u is None or self._approaching(t, u):
            raise RuntimeError(f"step {t}: a full solve is due; no prediction")
        self.predictions += 1
        return u

    def solved(self, t: int, s: float) -> tuple[float, bool]:
        """Record step ``t``'s solve ``S_t = s``. Returns ``(U_t, miss)``: ``U_t = s · (1 +
        clamp_tol)``, and whether it exceeds the bound the earlier solves predict for ``t``
        after a skipped step of its parity (then ``safety`` doubles)."""
        self.solves += 1
        u = s * (1.0 + self.tol)
        h = self.history[t % 2]
        miss = False
        if self.margin > 0 and h and t - h[-1][0] > 2:
            predicted = self._bound(t, limited=False)
            miss = predicted is not None and u > predicted
            if miss:
                self.misses += 1
                self.safety *= 2.0
        if math.isfinite(s):
            h.append((int(t), float(s)))
            del h[:-(self.window + 1)]
        return u, miss

    def state_dict(self) -> dict:
        return {"history": {p: list(h) for p, h in self.history.items()}, "safety": self.safety,
                "misses": self.misses, "solves": self.solves, "predictions": self.predictions}

    def load_state_dict(self, state: dict) -> None:
        self.history = {int(p): [(int(t), float(s)) for t, s in h] for p, h in state["history"].items()}
        self.safety, self.misses = float(state["safety"]), int(state["misses"])
        self.solves, self.predictions = int(state["solves"]), int(state["predictions"])
