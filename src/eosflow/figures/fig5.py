"""Figure 5: validation accuracy against η₀, below (X) and above (O) the stability limit.

(a) one panel per setting: accuracy vs η₀ (log x), the limit η_eos = 2 / S(θ₀) dotted (median over
seeds; each run is marked X or O against its own seed's limit), the seed-mean line with a band of
± one standard deviation over seeds, colour
from dark purple to light yellow by η₀ (viridis); (b) accuracy vs η₀ / η_eos, pooled: the
jump past 1 and the fall-off at too-large η₀ (the "Goldilocks zone"); (c) the same, each run marked
by its *measured* class (:mod:`eosflow.stability`: did its tracked η_t·S(θ_t) cross 2 and its loss
spike), whatever η_eos(θ₀) predicted. The claims file counts the classes on each side of the limit.

Diverged runs are drawn as red triangles at chance accuracy, never dropped; for the claims a
diverged run counts at chance accuracy (1 / number of classes). The η₀ grid may be absolute or
relative (multiples of each seed's own limit, ``fig5.lrs_relative``); the claims are statistics
over the seeds with enough runs on both sides of their limit (:func:`seed_table`), each with a
bootstrap interval and a verdict (:mod:`eosflow.claims`); the claims file lists every seed's row.
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

from ..claims import Claim, bootstrap_interval, check
from .common import finish, log_axis, new_figure

CHANCE = 0.1
#: Panel (c)'s markers of the measured class (:mod:`eosflow.stability`).
MEASURED_MARKERS = {"stable": "X", "unstable": "o", "unmeasured": "d"}


def accuracy(ds: xr.Dataset) -> np.ndarray:
    """Final validation accuracy; diverged runs (or runs without a finite value) at chance."""
    acc = ds["final_test_acc"].values.astype(float).copy()
    bad = (ds["status"].values == "diverged") | ~np.isfinite(acc)
    acc[bad] = CHANCE
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


#: Minimum evidence, fixed before any run: a seed contributes when it has at least MIN_PER_SIDE runs
#: on each side of its own limit; a claim needs MIN_SEEDS contributing seeds (its interval is then
#: computed from as many values).
MIN_SEEDS = 3
MIN_PER_SIDE = 2
#: Runs whose η₀ is within this relative distance of their seed's η_eos are on neither side.
AT_LIMIT = 0.01


def sides(lr: np.ndarray, eos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(above, below) masks of runs against their own seed's limit; runs within :data:`AT_LIMIT`
    of it (and runs without a measured limit) are on neither side."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = lr / eos
    return ratio > 1 + AT_LIMIT, ratio < 1 - AT_LIMIT


def seed_table(ds: xr.Dataset) -> list[dict]:
    """Per seed of one setting: runs on each side, whether it contributes, and its statistics
    (best above minus best below, argmax η₀ / η_eos, acc at its largest η₀ minus its best)."""
    lr, acc, eos = ds["lr"].values.astype(float), accuracy(ds), ds["eta_eos"].values.astype(float)
    above, below = sides(lr, eos)
    rows = []
    for seed in np.unique(ds["seed"].values):
        one = ds["seed"].values == seed
        n_above, n_below = int((one & above).sum()), int((one & below).sum())
        row = {"seed": int(seed), "runs_above": n_above, "runs_below": n_below,
               "contributes": n_above >= MIN_PER_SIDE and n_below >= MIN_PER_SIDE}
        i = np.flatnonzero(one)[int(np.argmax(acc[one]))]
        j = np.flatnonzero(one)[int(np.argmax(lr[one]))]
        row.update(gain=float(acc[one & above].max() - acc[one & below].max()) if n_above and n_below else None,
                   best_ratio=float(lr[i] / eos[i]) if np.isfinite(eos[i]) else None,
                   falloff=float(acc[j] - acc[one].max()))
        rows.append(row)
    return rows


def setting_claims(name: str, ds: xr.Dataset) -> list[Claim]:
    """The claims of one setting. Each run is placed against its own seed's limit
    η_eos = 2 / S(θ₀) (the initialisation, hence S(θ₀), differs between seeds); each claim is a
    statistic over the contributing seeds with its 95 % bootstrap interval."""
    table = seed_table(ds)
    used = [r for r in table if r["contributes"]]
    gains = [r["gain"] for r in used]
    ratios = [r["best_ratio"] for r in used if r["best_ratio"] is not None]
    falloffs = [r["falloff"] for r in used]
    counts = "; runs below/above per seed: " + ", ".join(
        f"seed {r['seed']}: {r['runs_below']}/{r['runs_above']}" for r in table)
    need = {"minimum": {"seeds": MIN_SEEDS}}
    return [
        check(f"{name}: validation accuracy improves past the stability limit",
              "mean over seeds of (best acc with eta0 > eta_eos) - (best acc with eta0 < eta_eos)",
              np.mean(gains) if gains else None, ">", 0, note=f"{len(used)} of {len(table)} seeds contribute" + counts,
              interval=bootstrap_interval(gains), evidence={"seeds": len(gains)}, **need),
        check(f"{name}: the best eta0 lies above the stability limit",
              "median over seeds of argmax_eta0(acc) / eta_eos", np.median(ratios) if ratios else None, ">", 1,
              interval=bootstrap_interval(ratios, np.median), evidence={"seeds": len(ratios)}, **need),
        check(f"{name}: too-large eta0 falls off (Goldilocks zone)",
              "mean over seeds of (acc at the seed's largest eta0 - the seed's best acc) (diverged = chance)",
              np.mean(falloffs) if falloffs else None, "<", 0, interval=bootstrap_interval(falloffs),
              evidence={"seeds": len(falloffs)}, **need),
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
               Line2D([], [], marker="D", ls="", color="0.3", label=r"within 1 % of $\eta_{eos}$"),
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
