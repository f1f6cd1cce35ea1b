"""Figure 5: validation accuracy against η₀, below (X) and above (O) the stability limit.

(a) one panel per setting: accuracy vs η₀ (log x), the limit η_eos = 2 / S(θ₀) dotted, colour
from dark purple to light yellow by η₀ (viridis); (b) accuracy vs η₀ / η_eos, pooled: the
jump past 1 and the fall-off at too-large η₀ (the "Goldilocks zone").

Diverged runs are drawn as red triangles at chance accuracy, never dropped; for the claims a
diverged run counts at chance accuracy (1 / number of classes).
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from .common import Claim, check, save_figure, write_claims  # noqa: E402

CHANCE = 0.1


def _log_axis(axis) -> None:
    """Log ticks at 1, 2, 5 × 10^k labelled plainly (``0.02``, not ``2×10⁻²``), no minor labels."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _accuracy(ds: xr.Dataset) -> np.ndarray:
    """Final validation accuracy; diverged runs (or runs without a finite value) at chance."""
    acc = ds["final_test_acc"].values.astype(float).copy()
    bad = (ds["status"].values == "diverged") | ~np.isfinite(acc)
    acc[bad] = CHANCE
    return acc


def eta_eos_of(ds: xr.Dataset) -> float:
    """The setting's stability limit: median over its runs of 2 / S(θ₀) (NaN if never measured)."""
    v = ds["eta_eos"].values.astype(float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else math.nan


def seed_means(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(η₀ grid, seed-mean accuracy per η₀) for one setting."""
    lr, acc = ds["lr"].values.astype(float), _accuracy(ds)
    grid = np.unique(lr)
    return grid, np.array([acc[lr == g].mean() for g in grid])


def setting_claims(name: str, ds: xr.Dataset) -> list[Claim]:
    eos = eta_eos_of(ds)
    grid, mean = seed_means(ds)
    above, below = grid > eos, grid < eos
    claims = []
    gain = mean[above].max() - mean[below].max() if above.any() and below.any() else None
    claims.append(check(f"{name}: validation accuracy improves past the stability limit",
                        "max seed-mean acc over eta0 > eta_eos minus max over eta0 < eta_eos", gain, ">", 0,
                        note="" if gain is not None else "the grid does not reach both sides of eta_eos"))
    best = grid[int(np.argmax(mean))] / eos if math.isfinite(eos) else None
    claims.append(check(f"{name}: the best eta0 lies above the stability limit",
                        "argmax_eta0 (seed-mean acc) / eta_eos", best, ">", 1))
    fall = mean[-1] - mean.max()
    claims.append(check(f"{name}: too-large eta0 falls off (Goldilocks zone)",
                        "seed-mean acc at the largest eta0 minus the best seed-mean acc (diverged = chance)",
                        fall, "<", 0))
    return claims


def make_fig5(ds: xr.Dataset, pdf_path, png_path, claims_path) -> list[Claim]:
    """Draw figure 5 from a sweep summary (:func:`eosflow.pipeline.summarize_runs`)."""
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    settings = list(dict.fromkeys(ds["setting"].values.tolist()))
    fig, axes = plt.subplots(1, len(settings) + 1, figsize=(5.2 * (len(settings) + 1), 4.2), squeeze=False)
    axes = axes[0]
    lr_all = ds["lr"].values.astype(float)
    norm = LogNorm(vmin=lr_all.min(), vmax=max(lr_all.max(), lr_all.min() * 1.0001))
    cmap = plt.get_cmap("viridis")
    claims: list[Claim] = []
    pooled_ax = axes[-1]
    for ax, name in zip(axes[:-1], settings):
        sub = ds.isel(run=np.flatnonzero(ds["setting"].values == name))
        eos = eta_eos_of(sub)
        lr, acc = sub["lr"].values.astype(float), _accuracy(sub)
        diverged = sub["status"].values == "diverged"
        capped = sub["status"].values == "max_epochs"
        ratio = lr / eos if math.isfinite(eos) else np.full_like(lr, np.nan)
        for target, xs in ((ax, lr), (pooled_ax, ratio)):
            for i in range(len(lr)):
                if diverged[i]:
                    target.scatter(xs[i], CHANCE, marker="v", s=60, color="tab:red", zorder=3)
                    continue
                marker = "X" if lr[i] < eos else "o"
                target.scatter(xs[i], acc[i], marker=marker, s=70, color=cmap(norm(lr[i])),
                               edgecolor="0.5" if capped[i] else "k", linewidth=0.6, zorder=3)
        grid, mean = seed_means(sub)
        ax.plot(grid, mean, color="0.6", lw=1, zorder=1)
        pooled_ax.plot(grid / eos, mean, lw=1, zorder=1, label=name)
        if math.isfinite(eos):
            ax.axvline(eos, ls=":", color="k", lw=1.2)
        ax.set_xscale("log")
        _log_axis(ax.xaxis)
        ax.set_xlabel(r"learning rate $\eta_0$")
        ax.set_ylabel("validation accuracy")
        ax.set_title(f"(a) {name}   " + (rf"$\eta_{{eos}}$ = {eos:.3g}" if math.isfinite(eos) else ""))
        claims += setting_claims(name, sub)
    pooled_ax.axvline(1.0, ls=":", color="k", lw=1.2)
    pooled_ax.set_xscale("log")
    _log_axis(pooled_ax.xaxis)
    pooled_ax.set_xlabel(r"$\eta_0 / \eta_{eos}$")
    pooled_ax.set_ylabel("validation accuracy")
    pooled_ax.set_title("(b) phase transition at the stability limit")
    handles = [Line2D([], [], marker="X", ls="", color="0.3", label=r"$\eta_0 < \eta_{eos}$ (stable)"),
               Line2D([], [], marker="o", ls="", color="0.3", label=r"$\eta_0 > \eta_{eos}$ (unstable)"),
               Line2D([], [], marker="v", ls="", color="tab:red", label="diverged (at chance)"),
               Line2D([], [], marker="o", ls="", mfc="w", mec="0.5", label="grey edge: hit max_epochs")]
    pooled_ax.legend(handles=handles + pooled_ax.get_legend_handles_labels()[0], fontsize=8, loc="lower left")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    cbar = fig.colorbar(sm, ax=axes, label=r"$\eta_0$", pad=0.01, fraction=0.025)
    _log_axis(cbar.ax.yaxis)
    save_figure(fig, pdf_path, png_path)
    plt.close(fig)
    write_claims(claims, claims_path, figure="fig5")
    return claims
