"""Figure 5: validation accuracy against η₀, below (X) and above (O) the stability limit.

(a) one panel per setting: accuracy vs η₀ (log x), the limit η_eos = 2 / S(θ₀) dotted (median over
seeds; each run is marked X or O against its own seed's limit), the seed-mean line with a band of
± one standard deviation over seeds, colour
from dark purple to light yellow by η₀ (viridis); (b) accuracy vs η₀ / η_eos, pooled: the
jump past 1 and the fall-off at too-large η₀ (the "Goldilocks zone"); (c) the same, each run marked
by its *measured* class (:mod:`eosflow.stability`: did its tracked η_t·S(θ_t) cross 2 and its loss
spike), whatever η_eos(θ₀) predicted. The claims file counts the classes on each side of the limit.

Diverged runs are drawn as red triangles at chance accuracy, never dropped; for the claims a
diverged run counts at chance accuracy (the registry's ``chance``, 1 / number of classes). The η₀
grid may be absolute or relative (multiples of each seed's own limit, ``fig5.lrs_relative``).

The claims (registry ``fig5.gain``, ``fig5.best_above``, ``fig5.falloff``; :func:`seed_table` has
each seed's values, written to the claims file) are per-seed values decided over seeds
(:mod:`eosflow.claims`): the gain by the exact sign-flip test of the mean paired difference, the
two others by the sign test of the median; their intervals invert the tests and need 6 seeds.
Every seed counts where its value is defined (the gain needs a run on each side of the seed's limit).
"""

from __future__ import annotations

import math

import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D

from ..claims import REGISTRY, Claim, claim
from .common import finish, log_axis, new_figure

#: A diverged run's accuracy (1 / number of classes) and the relative distance from a seed's limit
#: within which a run is on neither side: the registry's params of ``fig5.gain``.
CHANCE = float(REGISTRY.param("fig5.gain", "chance"))
AT_LIMIT = float(REGISTRY.param("fig5.gain", "at_limit"))
#: Panel (c)'s markers of the measured class (:mod:`eosflow.stability`).
MEASURED_MARKERS = {"stable": "X", "unstable": "o", "unmeasured": "d"}


def accuracy(ds: xr.Dataset, chance: float = CHANCE) -> np.ndarray:
    """Final validation accuracy; diverged runs (or runs without a finite value) at ``chance``."""
    acc = ds["final_test_acc"].values.astype(float).copy()
    bad = (ds["status"].values == "diverged") | ~np.isfinite(acc)
    acc[bad] = chance
    return acc


def eta_eos_of(ds: xr.Dataset) -> float:
    """The setting's stability limit drawn as the dotted line: the median over its runs of
    2 / S(θ₀) (NaN if never measured); markers and claims use each run's own seed's limit."""
    v = ds["eta_eos"].values.astype(float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else math.nan


def seed_means(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(η₀ grid, seed-mean accuracy, its standard deviation over seeds) per grid point of one
    setting. A relative grid's point is a multiple of η_eos (its η₀ differs between seeds: the
    mean η₀ is drawn). Diverged runs count at chance, as drawn."""
    lr, acc = ds["lr"].values.astype(float), accuracy(ds)
    rel = ds["lr_relative"].values.astype(float) if "lr_relative" in ds else np.full(lr.shape, np.nan)
    key = rel if np.isfinite(rel).all() else lr
    grid = np.unique(key)
    sd = [acc[key == g].std(ddof=1) if (key == g).sum() > 1 else 0.0 for g in grid]
    return (np.array([lr[key == g].mean() for g in grid]), np.array([acc[key == g].mean() for g in grid]),
            np.array(sd))


def limit_ratio(lr: np.ndarray, eos: np.ndarray) -> np.ndarray:
    """η₀ / η_eos of each run against its own seed's limit (NaN or inf where the limit is unknown)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return lr / eos


def sides(lr: np.ndarray, eos: np.ndarray, at_limit: float = AT_LIMIT) -> tuple[np.ndarray, np.ndarray]:
    """(above, below) masks of runs against their own seed's limit; runs within ``at_limit``
    (relative) of it, and runs without a measured limit, are on neither side."""
    ratio = limit_ratio(lr, eos)
    return ratio > 1 + at_limit, ratio < 1 - at_limit


def nearest_gain(acc: np.ndarray, key: np.ndarray, upper: np.ndarray, lower: np.ndarray) -> tuple[int, float | None]:
    """(k, gain): k the smaller of the two index sets' sizes; the best ``acc`` among the k of ``upper``
    with the smallest ``key`` minus the best among the k of ``lower`` with the largest (the k runs on
    each side nearest the boundary between them; ties in ``key`` in index order); None when k = 0."""
    k = min(upper.size, lower.size)
    if not k:
        return 0, None
    near_up = upper[np.argsort(key[upper], kind="stable")][:k]
    near_down = lower[np.argsort(-key[lower], kind="stable")][:k]
    return k, float(acc[near_up].max() - acc[near_down].max())


def _best(idx: np.ndarray, acc: np.ndarray, lr: np.ndarray) -> int:
    """The run of ``idx`` with the best accuracy; ties: the smaller η₀."""
    top = idx[acc[idx] == acc[idx].max()]
    return int(top[np.argmin(lr[top])])


def seed_table(ds: xr.Dataset) -> list[dict]:
    """Per seed of one setting, the claims' values (registry ``fig5.*``; a diverged run at chance):

    - ``k``: the smaller of its numbers of runs above and below its own limit (``runs_above``,
      ``runs_below``; runs within :data:`AT_LIMIT` of it on neither side); ``gain``: the best
      accuracy among the k runs above nearest the limit minus the best among the k below nearest it
      (None when k = 0);
    - ``best_ratio``: η₀ / η_eos of its best run (ties: the smaller η₀; None without a limit);
    - ``falloff``: the accuracy at its largest η₀ minus the median accuracy of its other runs
      (None with one run).
    """
    lr, acc, eos = ds["lr"].values.astype(float), accuracy(ds), ds["eta_eos"].values.astype(float)
    above, below = sides(lr, eos)
    ratio = limit_ratio(lr, eos)
    rows = []
    for seed in np.unique(ds["seed"].values):
        one = ds["seed"].values == seed
        idx = np.flatnonzero(one)
        up, down = np.flatnonzero(one & above), np.flatnonzero(one & below)
        k, gain = nearest_gain(acc, ratio, up, down)
        i = _best(idx, acc, lr)
        j = int(idx[np.argmax(lr[idx])])
        others = idx[idx != j]
        rows.append({"seed": int(seed), "runs_above": int(up.size), "runs_below": int(down.size), "k": int(k),
                     "gain": gain,
                     # a best run within at_limit of the limit is at the limit (1): on neither side
                     "best_ratio": (float(ratio[i]) if above[i] or below[i] else 1.0)
                     if math.isfinite(ratio[i]) else None,
                     "falloff": float(acc[j] - np.median(acc[others])) if others.size else None})
    return rows


def _undefined(table: list[dict], key: str) -> str:
    missing = [str(r["seed"]) for r in table if r[key] is None]
    return f"; undefined for seed(s) {', '.join(missing)}" if missing else ""


def setting_claims(name: str, ds: xr.Dataset) -> list[Claim]:
    """The claims of one setting (``fig5.gain``, ``fig5.best_above``, ``fig5.falloff``), each from
    the per-seed values of :func:`seed_table`. Each run is placed against its own seed's limit
    η_eos = 2 / S(θ₀) (the initialisation, hence S(θ₀), differs between seeds)."""
    table = seed_table(ds)
    fmt = {"setting": name}
    counts = "runs below/above per seed (k): " + ", ".join(
        f"seed {r['seed']}: {r['runs_below']}/{r['runs_above']} ({r['k']})" for r in table)
    values = {key: [r[key] for r in table if r[key] is not None] for key in ("gain", "best_ratio", "falloff")}
    return [
        claim("fig5.gain", values["gain"], fmt=fmt,
              note=f"{len(values['gain'])} of {len(table)} seeds have runs on both sides of their limit; "
                   + counts + _undefined(table, "gain") + f"; a diverged run at chance ({CHANCE:g})"),
        claim("fig5.best_above", values["best_ratio"], fmt=fmt,
              note="best eta0 / eta_eos per seed: " + ", ".join(
                  f"seed {r['seed']}: {r['best_ratio']:.3g}" for r in table if r["best_ratio"] is not None)
                   + _undefined(table, "best_ratio")),
        claim("fig5.falloff", values["falloff"], fmt=fmt,
              note=f"{len(values['falloff'])} of {len(table)} seeds" + _undefined(table, "falloff")
                   + f"; a diverged run at chance ({CHANCE:g})"),
    ]


def make_fig5(ds: xr.Dataset, pdf_path, png_path, claims_path, keep_open: bool = False):
    """Draw figure 5 from a sweep summary (:func:`eosflow.summary.summarize_runs`); returns the
    claims (and the figure too with ``keep_open``, for tests)."""
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    settings = list(dict.fromkeys(ds["setting"].values.tolist()))
    fig = new_figure(figsize=(5.2 * (len(settings) + 2), 4.2))
    axes = fig.subplots(1, len(settings) + 2, squeeze=False)[0]
    lr_all = ds["lr"].values.astype(float)
    norm = LogNorm(vmin=lr_all.min(), vmax=max(lr_all.max(), lr_all.min() * 1.0001))
    cmap = colormaps["viridis"]
    claims: list[Claim] = []
    tables = {}
    pooled_ax, measured_ax = axes[-2], axes[-1]
    measured = ds["stability"].values.astype(str) if "stability" in ds else np.full(ds.sizes["run"], "unmeasured")
    for ax, name in zip(axes[:-2], settings):
        sub = ds.isel(run=np.flatnonzero(ds["setting"].values == name))
        eos = eta_eos_of(sub)
        lr, acc = sub["lr"].values.astype(float), accuracy(sub)
        diverged = sub["status"].values == "diverged"
        capped = sub["status"].values == "max_epochs"
        run_eos = sub["eta_eos"].values.astype(float)
        ratio = lr / run_eos
        above, below = sides(lr, run_eos)
        for target, xs in ((ax, lr), (pooled_ax, ratio)):
            for i in range(len(lr)):
                if diverged[i]:
                    target.scatter(xs[i], CHANCE, marker="v", s=60, color="tab:red", zorder=3)
                    continue
                marker = "X" if below[i] else "o" if above[i] else "D"
                target.scatter(xs[i], acc[i], marker=marker, s=70, color=cmap(norm(lr[i])),
                               edgecolor="0.5" if capped[i] else "k", linewidth=0.6, zorder=3)
        cls = measured[ds["setting"].values == name]
        for i in range(len(lr)):
            y = CHANCE if diverged[i] else acc[i]
            measured_ax.scatter(ratio[i], y, marker=MEASURED_MARKERS[cls[i]], s=70, color=cmap(norm(lr[i])),
                                edgecolor="tab:red" if diverged[i] else "k", linewidth=0.6, zorder=3)
        grid, mean, sd = seed_means(sub)
        ax.plot(grid, mean, color="0.4", lw=1.2, zorder=1)
        ax.fill_between(grid, mean - sd, mean + sd, color="0.6", alpha=0.25, lw=0, zorder=0)
        if math.isfinite(eos):
            ax.axvline(eos, ls=":", color="k", lw=1.2)
        ax.set_xscale("log")
        log_axis(ax.xaxis)
        ax.set_xlabel(r"learning rate $\eta_0$")
        ax.set_ylabel("validation accuracy")
        spread = np.unique(run_eos[np.isfinite(run_eos)])
        ax.set_title(f"(a) {name}   " + (rf"$\eta_{{eos}}$ = {eos:.3g}" + (
            f" (seeds {spread.min():.2g}-{spread.max():.2g})" if spread.size > 1 else "") if math.isfinite(eos) else ""))
        claims += setting_claims(name, sub)
        tables[name] = seed_table(sub)
    pooled_ax.axvline(1.0, ls=":", color="k", lw=1.2)
    pooled_ax.set_xscale("log")
    log_axis(pooled_ax.xaxis)
    pooled_ax.set_xlabel(r"$\eta_0 / \eta_{eos}$ (each run against its own seed's limit)")
    pooled_ax.set_ylabel("validation accuracy")
    pooled_ax.set_title("(b) phase transition at the stability limit")
    handles = [Line2D([], [], marker="X", ls="", color="0.3",
                      label=r"$\eta_0 < \eta_{eos}(\theta_0)$ (predicted stable)"),
               Line2D([], [], marker="o", ls="", color="0.3",
                      label=r"$\eta_0 > \eta_{eos}(\theta_0)$ (predicted unstable)"),
               Line2D([], [], marker="D", ls="", color="0.3", label=rf"within {AT_LIMIT:.0%} of $\eta_{{eos}}$"),
               Line2D([], [], marker="v", ls="", color="tab:red", label="diverged (at chance)"),
               Line2D([], [], marker="o", ls="", mfc="w", mec="0.5", label="grey edge: hit max_epochs")]
    pooled_ax.legend(handles=handles, fontsize=8, loc="lower left")
    measured_ax.axvline(1.0, ls=":", color="k", lw=1.2)
    measured_ax.set_xscale("log")
    log_axis(measured_ax.xaxis)
    measured_ax.set_xlabel(r"$\eta_0 / \eta_{eos}(\theta_0)$")
    measured_ax.set_ylabel("validation accuracy")
    measured_ax.set_title(r"(c) measured: did $\eta_t S(\theta_t)$ cross 2?")
    measured_ax.legend(handles=[
        Line2D([], [], marker=MEASURED_MARKERS["stable"], ls="", color="0.3", label="stayed stable (measured)"),
        Line2D([], [], marker=MEASURED_MARKERS["unstable"], ls="", color="0.3", label="unstable (measured)"),
        Line2D([], [], marker=MEASURED_MARKERS["unmeasured"], ls="", color="0.3", label="no in-loop sharpness"),
        Line2D([], [], marker="o", ls="", mfc="w", mec="tab:red", label="red edge: diverged (at chance)")],
        fontsize=8, loc="lower left")
    sm = ScalarMappable(norm=norm, cmap=cmap)
    cbar = fig.colorbar(sm, ax=axes, label=r"$\eta_0$", pad=0.01, fraction=0.025)
    log_axis(cbar.ax.yaxis)
    status = ds["status"].values
    runs = {s: int((status == s).sum()) for s in ("converged", "max_epochs", "diverged")}
    diverged = [{"setting": str(st), "lr": float(lr), "seed": int(sd)} for st, lr, sd, s in
                zip(ds["setting"].values, ds["lr"].values, ds["seed"].values, status) if s == "diverged"]
    return finish(fig, claims, pdf_path, png_path, claims_path, "fig5", keep_open, runs=runs,
                  diverged_runs=diverged, seeds=tables, measured_stability=measured_table(ds, measured))


def measured_table(ds: xr.Dataset, measured: np.ndarray) -> dict:
    """Counts of measured classes on each side of the runs' own limits (descriptive, no claim)."""
    above, below = sides(ds["lr"].values.astype(float), ds["eta_eos"].values.astype(float))
    out = {}
    for side, mask in (("below_limit", below), ("at_limit", ~above & ~below), ("above_limit", above)):
        out[side] = {c: int((mask & (measured == c)).sum()) for c in ("stable", "unstable", "unmeasured")}
    return out
