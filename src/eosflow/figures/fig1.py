"""Figure 1: the two-parameter DLN. Regimes of γ_β, the loss landscape with four GD trajectories,
and the map of top-Hessian-eigenvector orientations.

Input is the cube written by :func:`eosflow.dln.simulate`. The claims (spec, fig1 "Expected")
are computed from the cube; their thresholds were fixed before any run and are not tuned:

* ``fig1.limit``: ``η_eos = 2/S(θ₀)`` (the cube's closed form) is the stability limit of the GD
  iterates: each run's first step shrinks ``Θ = θ₁θ₂`` (``|Θ₁/Θ₀| < 1``) when ``η < η_eos`` and
  grows it (``|Θ₁/Θ₀| > 1``) when ``η > η_eos``. Statistic: the smaller margin of the two sides,
  ``min(min_{η>η_eos} |Θ₁/Θ₀| − 1, min_{η<η_eos} 1 − |Θ₁/Θ₀|) > 0``. (That the closed form gives
  the caption's 0.01 is a unit test of :mod:`eosflow.dln`, not a claim: it cannot fail here.)
* ``fig1.ends_stable``: η ∈ {0.011, 0.013} end with ``S < 2/η``: statistic ``η·S_final/2 < 1``.
* ``fig1.balances``: η ∈ {0.011, 0.013} move toward the balanced region: the imbalance
  ``|θ₂² − θ₁²|`` (conserved by gradient flow, shrunk by ``|1 − x²|`` per GD step) falls by at
  least 10 %: ``|θ₂²−θ₁²|_T / |θ₂²−θ₁²|_0 < 0.9``.
* ``fig1.barely_moves``: η ∈ {0.001, 0.0095} barely move: ``‖θ_T − θ₀‖ / ‖θ₀‖ < 0.05``.

The thresholds are the registry's (:mod:`eosflow.claims.registry`, ``registry.yaml``). The toy
model is deterministic (no seed, no data): each claim is of kind ``exact``, and needs only its runs
in the cube (the registry's minimum evidence); then its one value decides ``holds`` or ``fails``.
A run missing from the cube leaves its claims ``undetermined``.
"""

from __future__ import annotations

import numpy as np

from .. import dln
from ..claims import Claim, claim
from .common import finish, new_figure

#: Learning rates of the caption, split by the expected behaviour.
UNSTABLE_LRS = (0.011, 0.013)
STABLE_LRS = (0.001, 0.0095)
#: Factor applied to the θ₂ component of the eigenvector arrows (right panel).
Y_MAGNIFY = 10.0


# --------------------------------------------------------------------------- claims
def _final(ds, lr):
    """Final state of the run at ``lr`` (None if the cube has no such run)."""
    hit = np.flatnonzero(np.isclose(ds["lr"].values, lr, rtol=1e-9, atol=0))
    if hit.size == 0:
        return None
    run = ds.isel(lr=int(hit[0]))
    th = np.stack([run["theta1"].values, run["theta2"].values], axis=-1)
    codes = dict(zip(run["status"].attrs["flag_meanings"].split(),
                     np.atleast_1d(run["status"].attrs["flag_values"]).tolist()))
    status = next((k for k, v in codes.items() if v == int(run["status"])), "?")
    return {"theta0": th[0], "thetaT": th[-1], "S_T": float(run["sharpness"].values[-1]),
            "status": status}


def first_step_factors(ds) -> dict[float, float]:
    """``|Θ₁/Θ₀|`` (``Θ = θ₁θ₂``) of each run's first GD step, from the trajectories."""
    prod = ds["theta1"].values[:, :2] * ds["theta2"].values[:, :2]
    return {float(lr): float(abs(p[1] / p[0])) for lr, p in zip(ds["lr"].values, prod)}


def limit_claim(ds) -> Claim:
    """The closed-form ``η_eos`` against the iterates: see the module docstring."""
    eta_eos = float(ds.attrs["eta_eos"])
    factors = first_step_factors(ds)
    above = [f - 1 for lr, f in factors.items() if lr > eta_eos]
    below = [1 - f for lr, f in factors.items() if lr < eta_eos]
    margin = min(min(above), min(below)) if above and below else None
    note = (f"eta_eos = {eta_eos:.7f}; |Theta_1/Theta_0| by eta: "
            + ", ".join(f"{lr:g}: {f:.4f}" for lr, f in sorted(factors.items())))
    if margin is None:
        note += "; the runs do not lie on both sides of eta_eos"
    return claim("fig1.limit", [margin], note=note, evidence={"runs above": len(above), "runs below": len(below)})


def fig1_claims(ds) -> list[Claim]:
    """The fig1 claims (registry ``fig1.*``), computed from the trajectory cube."""
    claims = [limit_claim(ds)]
    for lr in UNSTABLE_LRS:
        r = _final(ds, lr)
        note = "run missing from the cube" if r is None else f"status {r['status']}"
        runs = {"runs": int(r is not None)}
        s_stat = None if r is None else lr * r["S_T"] / 2
        bal = None if r is None else abs(r["thetaT"][1] ** 2 - r["thetaT"][0] ** 2) / abs(
            r["theta0"][1] ** 2 - r["theta0"][0] ** 2)
        claims += [claim("fig1.ends_stable", [s_stat], fmt={"lr": lr}, note=note, evidence=runs),
                   claim("fig1.balances", [bal], fmt={"lr": lr}, note=note, evidence=runs)]
    for lr in STABLE_LRS:
        r = _final(ds, lr)
        note = "run missing from the cube" if r is None else f"status {r['status']}"
        move = None if r is None else float(
            np.linalg.norm(r["thetaT"] - r["theta0"]) / np.linalg.norm(r["theta0"]))
        claims.append(claim("fig1.barely_moves", [move], fmt={"lr": lr}, note=note,
                            evidence={"runs": int(r is not None)}))
    return claims


# --------------------------------------------------------------------------- plotting
def _thin(xy, frac=0.035):
    """Indices of points at least ``frac`` of the span apart, in order (drops the converged tail)."""
    xy = np.asarray(xy)
    ok = np.flatnonzero(np.all(np.isfinite(xy), axis=1))
    if ok.size == 0:
        return ok
    span = np.ptp(xy[ok], axis=0)
    span[span == 0] = 1.0
    keep = [ok[0]]
    for i in ok[1:]:
        if np.linalg.norm((xy[i] - xy[keep[-1]]) / span) >= frac:
            keep.append(i)
    return np.array(keep)


def _arrows(vec, magnify):
    """Unit display vectors ``(v₁, m·v₂)/norm`` (orientation only; eigenvector sign is arbitrary)."""
    u, v = vec[..., 0], magnify * vec[..., 1]
    n = np.hypot(u, v)
    n = np.where(n > 0, n, 1.0)
    return u / n, v / n


def _lr_label(lr, eta_eos):
    return rf"$\eta$ = {lr:g} ({'>' if lr > eta_eos else '<'} $\eta_{{eos}}$)"


def make_fig1(ds, pdf_path, png_path, claims_path, y_magnify: float = Y_MAGNIFY) -> list[Claim]:
    """Draw fig1 from the :func:`eosflow.dln.simulate` cube; write PDF, PNG and claims JSON."""
    import seaborn as sns
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    claims = fig1_claims(ds)
    theta0 = np.asarray(ds.attrs["theta0"], dtype=float)
    eta_eos = float(ds.attrs["eta_eos"])
    lrs = ds["lr"].values
    colors = sns.color_palette("colorblind", len(lrs))
    th = np.stack([ds["theta1"].values, ds["theta2"].values], axis=-1)  # (lr, step, 2)

    with sns.axes_style("ticks"), sns.plotting_context("notebook", font_scale=0.95):
        fig = new_figure(figsize=(15, 4.7), layout="constrained")
        ax_g, ax_l, ax_v = fig.subplots(1, 3)

        # ---- left: regimes of gamma_beta at theta0
        k0, g0 = float(dln.k_of(theta0)), float(dln.g_of(theta0))
        xa, xl, xmax = dln.asymptote_x(k0), dln.limit_x(k0), 0.04
        # (lo, hi, colour, label, label y, vertical alignment): labels kept clear of the curve
        bands = [(0, xa, "#4daf4a", "stable,\nmonotone\n$0<\\gamma_\\Theta<1$", 0.08, "bottom"),
                 (xa, xl, "#ffbf00", "stable,\noscillating\n$-1<\\gamma_\\Theta<0$", 0.08, "bottom"),
                 (xl, xmax, "#e41a1c", "unstable, $\\gamma_\\Theta<-1$:\nparameters balance\n"
                                       "($\\gamma_\\beta<1$),\neigenvectors rotate", 4.85, "top")]
        for lo, hi, c, txt, y, va in bands:
            ax_g.axvspan(lo, hi, color=c, alpha=0.12, lw=0)
            ax_g.text((lo + hi) / 2, y, txt, ha="center", va=va, fontsize=8.5)
        x = np.linspace(0, xmax, 4001)
        gb = dln.gamma_beta(x, k0)
        ax_g.plot(x, np.where(gb < 6, gb, np.nan), color="k", lw=1.6, label=r"$\gamma_\beta$")
        ax_g.axhline(1.0, color="k", ls=":", lw=1.2, label=r"$\gamma_\beta = 1$")
        ax_g.axvline(xa, color="0.35", ls="--", lw=1.2, label=rf"asymptote $x\approx 1/k$ = {xa:.4f}")
        ax_g.axvline(xl, color="0.1", ls="-.", lw=1.2, label=rf"stability limit $x = 2/k$ = {xl:.4f}")
        for lr, c in zip(lrs, colors):
            xm = lr * g0
            ax_g.plot(xm, dln.gamma_beta(xm, k0), "o", ms=8, color=c, mec="k", mew=0.8, zorder=5)
        ax_g.set(xlim=(0, xmax), ylim=(0, 5), xlabel=r"$x = \eta\,|z'(\theta_1\theta_2)|$",
                 ylabel=r"$\gamma_\beta$ (per-step factor of $\beta$)",
                 title=rf"regimes of $\gamma_\beta$ at $\theta_0$ ($k$ = {k0:.2f})")
        ax_g.legend(loc="center right", fontsize=8, framealpha=0.9, bbox_to_anchor=(1.0, 0.45))

        # ---- domain shared by the middle and right panels
        fin = th[np.all(np.isfinite(th), axis=-1)]
        lo, hi = fin.min(axis=0), fin.max(axis=0)
        pad = 0.08 * np.maximum(hi - lo, 1e-3)
        lo, hi = lo - pad, hi + pad
        t1 = np.linspace(lo[0], hi[0], 400)
        t2 = np.linspace(lo[1], hi[1], 300)
        T1, T2 = np.meshgrid(t1, t2)

        # ---- middle: log loss landscape + trajectories
        with np.errstate(divide="ignore"):
            ll = np.log10(dln.loss(np.stack([T1, T2], -1)))
        levels = np.arange(-3.0, np.ceil(np.nanmax(ll)) + 0.5, 0.5)
        cf = ax_l.contourf(T1, T2, np.clip(ll, levels[0], None), levels=levels, cmap="mako", alpha=0.85)
        ax_l.contour(T1, T2, ll, levels=levels[::2], colors="w", linewidths=0.4, alpha=0.6)
        fig.colorbar(cf, ax=ax_l, label=r"$\log_{10} L(\theta)$", pad=0.01, fraction=0.05)
        for i, (lr, c) in enumerate(zip(lrs, colors)):
            ax_l.plot(th[i, :, 0], th[i, :, 1], "-o", color=c, lw=1.0, ms=2.5, label=_lr_label(lr, eta_eos))
            last = np.flatnonzero(np.all(np.isfinite(th[i]), axis=-1))[-1]
            ax_l.plot(*th[i, last], "s", color=c, mec="w", ms=7, zorder=6)
        ax_l.plot(*theta0, "*", color="w", mec="k", ms=14, zorder=7, label=r"$\theta_0$ = (%g, %g)" % tuple(theta0))
        ax_l.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), xlabel=r"$\theta_1$", ylabel=r"$\theta_2$",
                 title="loss landscape and GD trajectories (■ = end)")
        ax_l.legend(loc="lower right", fontsize=8, framealpha=0.9)
        # inset: the runs below eta_eos barely move, so zoom on theta0
        small = [i for i, lr in enumerate(lrs) if lr < eta_eos]
        zs = th[small].reshape(-1, 2)
        zs = zs[np.all(np.isfinite(zs), axis=1)]
        if zs.size:
            zlo, zhi = zs.min(axis=0), zs.max(axis=0)
            zpad = 0.12 * np.maximum(zhi - zlo, 1e-6)
            axi = ax_l.inset_axes([0.12, 0.04, 0.25, 0.26])
            for i in small:
                axi.plot(th[i, :, 0], th[i, :, 1], "-o", color=colors[i], lw=0.8, ms=2)
            axi.plot(*theta0, "*", color="w", mec="k", ms=10, zorder=7)
            axi.set(xlim=(zlo[0] - zpad[0], zhi[0] + zpad[0]), ylim=(zlo[1] - zpad[1], zhi[1] + zpad[1]))
            axi.set_title(r"zoom: $\eta < \eta_{eos}$", fontsize=7.5, pad=2)
            axi.tick_params(labelsize=6.5, pad=1)
            axi.xaxis.set_major_locator(MaxNLocator(3))
            axi.yaxis.set_major_locator(MaxNLocator(3))
            axi.yaxis.get_offset_text().set_fontsize(6.5)
            axi.set_facecolor((1, 1, 1, 0.92))

        # ---- right: orientation field of the top eigenvector
        G1, G2 = np.meshgrid(np.linspace(lo[0], hi[0], 23), np.linspace(lo[1], hi[1], 17))
        u, v = _arrows(dln.top_eigvec(np.stack([G1, G2], -1)), y_magnify)
        quiv = dict(pivot="middle", headwidth=0, headlength=0, headaxislength=0, angles="uv")
        ax_v.quiver(G1, G2, u, v, color="0.6", scale=28, width=0.0035, **quiv)
        vec = ds["eigvec"].values
        for i, (lr, c) in enumerate(zip(lrs, colors)):  # smaller eta drawn on top
            ax_v.plot(th[i, :, 0], th[i, :, 1], color=c, lw=0.6, alpha=0.5, zorder=2)
            idx = _thin(th[i])
            u, v = _arrows(vec[i, idx], y_magnify)
            ax_v.quiver(th[i, idx, 0], th[i, idx, 1], u, v, color=c, scale=22, width=0.006,
                        zorder=10 - i, **quiv)
        ax_v.plot(*theta0, "*", color="w", mec="k", ms=14, zorder=3)
        handles = [Line2D([], [], color=c, lw=2.5, label=rf"$\eta$ = {lr:g}") for lr, c in zip(lrs, colors)]
        handles.append(Line2D([], [], color="0.6", lw=1.5, label="field"))
        ax_v.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), xlabel=r"$\theta_1$",
                 ylabel=rf"$\theta_2$   (arrows: $\theta_2$-component $\times${y_magnify:g})",
                 title="top-Hessian-eigenvector orientations")
        ax_v.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.9)

        for ax, letter in zip((ax_g, ax_l, ax_v), "abc"):
            ax.text(-0.02, 1.02, f"({letter})", transform=ax.transAxes, ha="right", va="bottom",
                    fontweight="bold")
    return finish(fig, claims, pdf_path, png_path, claims_path, "fig1")
