"""The two-parameter diagonal linear network (DLN) of fig1, in float64.

The loss is ``L(θ₁, θ₂) = z(Θ)`` with ``Θ = θ₁θ₂`` and ``z(Θ) = Θ²``, trained by plain gradient
descent ``θ ← θ − η∇L`` from ``θ₀ = (−0.1, 10)``. With ``g = |z'(Θ)| = |2Θ|``,
``k = |θ₁/θ₂| + |θ₂/θ₁|`` and ``x = ηg``, one GD step maps exactly (derivation in the docstrings
of the ``gamma_*`` functions)

* ``Θ → γ_Θ · Θ`` with ``γ_Θ = 1 + x² − kx`` (signed: negative means Θ flips sign),
* ``θ₂² − θ₁² → (1 − x²)(θ₂² − θ₁²)``, so ``γ_{|θ₂²−θ₁²|} = |1 − x²|``,
* ``β → γ_β · β`` with ``β = |θ₂² − θ₁²| / |θ₁θ₂|`` (the imbalance relative to the product;
  ``k² = β² + 4``) and ``γ_β = |1 − x²| / |1 + x² − kx|``.

The factors hold for one step from the *current* point (x and k change along the trajectory).
``γ_Θ`` has roots at ``x = (k ∓ √(k² − 4))/2``; the small one, ``≈ 1/k``, is the asymptote of γ_β.
``|γ_Θ| = 1`` at ``x = 2/k`` (i.e. ``η · tr H = 2``): the stability limit; above it γ_β < 1 and
GD balances the parameters, which turns the top Hessian eigenvector.

Numerics use numpy; :func:`hessian_autograd` uses ``torch.func.hessian`` as an independent oracle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .cubes import provenance

THETA0: tuple[float, float] = (-0.1, 10.0)
#: Status codes of a trajectory (the ``status`` variable of :func:`simulate`).
STATUS = {"converged": 0, "max_epochs": 1, "diverged": 2}
#: A run whose loss exceeds this is recorded as diverged.
LOSS_BOUND = 1e12
#: Default GD steps per trajectory (all four caption runs have converged well before this).
DEFAULT_STEPS = 3000
#: A run whose final loss is at or below this is recorded as converged.
CONVERGED_TOL = 1e-16


# --------------------------------------------------------------------------- loss and derivatives
def _split(theta):
    t = np.asarray(theta, dtype=np.float64)
    return t[..., 0], t[..., 1]


def loss(theta) -> np.ndarray:
    """``L = (θ₁θ₂)²``; ``theta`` has shape ``(..., 2)``."""
    t1, t2 = _split(theta)
    return (t1 * t2) ** 2


def grad(theta) -> np.ndarray:
    """``∇L = z'(Θ) (θ₂, θ₁)`` with ``z'(Θ) = 2Θ``; shape ``(..., 2)``."""
    t1, t2 = _split(theta)
    zp = 2.0 * t1 * t2
    return np.stack([zp * t2, zp * t1], axis=-1)


def hessian_closed_form(theta) -> np.ndarray:
    """``[[2θ₂², 4θ₁θ₂], [4θ₁θ₂, 2θ₁²]]``; shape ``(..., 2, 2)``."""
    t1, t2 = _split(theta)
    off = 4.0 * t1 * t2
    return np.stack([np.stack([2.0 * t2**2, off], -1), np.stack([off, 2.0 * t1**2], -1)], -2)


def hessian_autograd(theta) -> np.ndarray:
    """The Hessian of ``L`` at one point by ``torch.func.hessian`` in float64 (test oracle)."""
    import torch

    def f(t):
        return (t[0] * t[1]) ** 2

    t = torch.as_tensor(np.asarray(theta, dtype=np.float64), dtype=torch.float64)
    return torch.func.hessian(f)(t).detach().cpu().numpy()


def sharpness(theta):
    """Largest Hessian eigenvalue ``S(θ)`` (a float for one point); NaN where θ is not finite."""
    lam = _eig(theta)[0]
    return float(lam) if lam.ndim == 0 else lam


def top_eigvec(theta) -> np.ndarray:
    """Unit top Hessian eigenvector, sign-normalised so its θ₁ component is ≥ 0 (θ₂ ≥ 0 on ties)."""
    return _eig(theta)[1]


def _eig(theta):
    t = np.asarray(theta, dtype=np.float64)
    h = hessian_closed_form(t)
    ok = np.all(np.isfinite(t), axis=-1)
    lam = np.full(t.shape[:-1], np.nan)
    vec = np.full(t.shape, np.nan)
    if np.any(ok):
        w, v = np.linalg.eigh(h[ok])  # ascending eigenvalues, vectors in columns
        top = v[..., :, -1]
        flip = (top[..., 0] < 0) | ((top[..., 0] == 0) & (top[..., 1] < 0))
        top = np.where(flip[..., None], -top, top)
        lam[ok], vec[ok] = w[..., -1], top
    return lam, vec


def eta_eos(theta0=THETA0) -> float:
    """Stability limit ``2 / S(θ₀)`` (≈ 0.009996 at the default θ₀)."""
    return float(2.0 / sharpness(theta0))


# --------------------------------------------------------------------------- growth factors
def g_of(theta) -> np.ndarray:
    """``g = |z'(θ₁θ₂)| = |2θ₁θ₂|``."""
    t1, t2 = _split(theta)
    return np.abs(2.0 * t1 * t2)


def k_of(theta) -> np.ndarray:
    """``k = |θ₁/θ₂| + |θ₂/θ₁|`` (≥ 2, = 2 on the balanced lines |θ₁| = |θ₂|)."""
    t1, t2 = _split(theta)
    with np.errstate(divide="ignore"):
        return np.abs(t1 / t2) + np.abs(t2 / t1)


def beta_of(theta) -> np.ndarray:
    """``β = |θ₂² − θ₁²| / |θ₁θ₂|``, the quantity whose per-step factor is γ_β."""
    t1, t2 = _split(theta)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(t2**2 - t1**2) / np.abs(t1 * t2)


def gamma_Theta(x, k):
    """Signed one-step factor of ``Θ = θ₁θ₂``: ``Θ_{t+1}/Θ_t = 1 + x² − kx``.

    From ``θ₁' = θ₁ − ηz'θ₂``, ``θ₂' = θ₂ − ηz'θ₁``: ``θ₁'θ₂' = Θ − ηz'(θ₁² + θ₂²) + η²z'²Θ`` and
    ``ηz'(θ₁² + θ₂²)/Θ = x·k`` because ``z'`` and ``Θ`` share their sign.
    """
    x = np.asarray(x, dtype=np.float64)
    return 1.0 + x**2 - k * x


def gamma_diff(x):
    """One-step factor of ``|θ₂² − θ₁²|``: ``|1 − x²|`` (the cross terms ``±2ηz'Θ`` cancel)."""
    x = np.asarray(x, dtype=np.float64)
    return np.abs(1.0 - x**2)


def gamma_beta(x, k):
    """One-step factor of ``β = |θ₂² − θ₁²|/|Θ|``: ``|1 − x²| / |1 + x² − kx|``."""
    with np.errstate(divide="ignore"):
        return gamma_diff(x) / np.abs(gamma_Theta(x, k))


def asymptote_x(k) -> float:
    """The small root of ``1 + x² − kx``: ``(k − √(k² − 4))/2 ≈ 1/k``, where γ_β → ∞."""
    return (k - math.sqrt(k * k - 4.0)) / 2.0


def limit_x(k) -> float:
    """The stability limit ``x = 2/k`` where ``γ_Θ = −1 + x²`` and γ_β = 1."""
    return 2.0 / k


# --------------------------------------------------------------------------- gradient descent
def gd_trajectory(lr: float, theta0=THETA0, steps: int = DEFAULT_STEPS, loss_bound: float = LOSS_BOUND,
                  tol: float = CONVERGED_TOL) -> dict:
    """Run ``steps`` GD steps at learning rate ``lr`` from ``theta0``.

    Returns a dict of arrays over ``steps + 1`` iterates (index 0 is θ₀): ``theta`` (n, 2),
    ``loss``, ``sharpness``, ``eigvec`` (n, 2), plus ``status`` (a key of :data:`STATUS`) and
    ``steps_run``. If an iterate is non-finite or its loss exceeds ``loss_bound`` the run stops
    as ``"diverged"`` (that iterate is kept if finite) and the rest is padded with NaN.
    """
    theta = np.full((steps + 1, 2), np.nan)
    t1, t2 = float(theta0[0]), float(theta0[1])
    theta[0] = t1, t2
    status, last = "max_epochs", steps
    with np.errstate(over="ignore", invalid="ignore"):
        for s in range(1, steps + 1):
            zp = 2.0 * t1 * t2
            t1, t2 = t1 - lr * zp * t2, t2 - lr * zp * t1
            finite = math.isfinite(t1) and math.isfinite(t2)
            if finite:
                theta[s] = t1, t2
            if not finite or (t1 * t2) ** 2 > loss_bound:
                status, last = "diverged", s if finite else s - 1
                break
    l_ = loss(theta)
    if status != "diverged" and l_[-1] <= tol:
        status = "converged"
    lam, vec = _eig(theta)
    return {"theta": theta, "loss": l_, "sharpness": lam, "eigvec": vec,
            "status": status, "steps_run": last}


def simulate(lrs: Sequence[float], steps: int = DEFAULT_STEPS, theta0=THETA0):
    """GD trajectories for each learning rate, as an ``xarray.Dataset`` over (lr, step).

    Variables: ``theta1``, ``theta2``, ``loss``, ``sharpness`` (lr, step); ``eigvec``
    (lr, step, component); ``status`` (lr; flag codes) and ``steps_run`` (lr).
    """
    import xarray as xr

    lrs = [float(v) for v in lrs]
    runs = [gd_trajectory(lr, theta0, steps) for lr in lrs]
    stack = lambda key: np.stack([r[key] for r in runs])  # noqa: E731
    th, dims = stack("theta"), ("lr", "step")
    codes = np.array([STATUS[r["status"]] for r in runs], dtype=np.int8)
    ds = xr.Dataset(
        {
            "theta1": (dims, th[..., 0], {"long_name": "parameter theta_1", "units": "1"}),
            "theta2": (dims, th[..., 1], {"long_name": "parameter theta_2", "units": "1"}),
            "loss": (dims, stack("loss"), {"long_name": "loss L = (theta_1 theta_2)^2", "units": "1"}),
            "sharpness": (dims, stack("sharpness"),
                          {"long_name": "sharpness S, largest Hessian eigenvalue", "units": "1"}),
            "eigvec": (dims + ("component",), stack("eigvec"),
                       {"long_name": "top Hessian eigenvector (unit, theta_1 component >= 0)",
                        "units": "1"}),
            "status": ("lr", codes, {"long_name": "run status", "units": "1",
                                     "flag_values": np.array(list(STATUS.values()), dtype=np.int8),
                                     "flag_meanings": " ".join(STATUS)}),
            "steps_run": ("lr", np.array([r["steps_run"] for r in runs], dtype=np.int32),
                          {"long_name": "GD steps completed before stopping", "units": "1"}),
        },
        coords={
            "lr": ("lr", np.array(lrs), {"long_name": "learning rate eta", "units": "1"}),
            "step": ("step", np.arange(steps + 1, dtype=np.int32),
                     {"long_name": "GD step (full batch: one step per epoch)", "units": "1"}),
            "component": ("component", np.array([1, 2], dtype=np.int8),
                          {"long_name": "parameter index i of theta_i", "units": "1"}),
        },
        attrs={
            **provenance("eosflow.dln.simulate, rule dln_trajectories"),
            "title": "GD trajectories of the two-parameter diagonal linear network",
            "model": "L = z(theta_1 theta_2), z(Theta) = Theta^2",
            "theta0": np.asarray(theta0, dtype=np.float64),
            "eta_eos": eta_eos(theta0),
            "loss_bound": LOSS_BOUND,
            "converged_tol": CONVERGED_TOL,
        },
    )
    return ds
