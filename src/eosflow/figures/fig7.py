"""Figure 7: the fig5 sweep in three dimensions, (η₀, 1 − ρ, S_final) coloured by validation accuracy,
with a table of the rotation ρ per η₀.

ρ is the subspace similarity (:func:`eosflow.similarity.subspace_similarity`) of the top-k Hessian
eigenspace between the first measurement (θ₀) and the end of training (the end of the large-η
phase: the sweep trains at a constant η₀); ``1 − ρ`` is how far the eigenspace turned
(:func:`eosflow.similarity.rotation`, stored per run by :func:`eosflow.summary.summarize_runs`).

One 3-D panel per setting: x is log10 η₀ (labelled in η₀), y is 1 − ρ, z is S_final; X markers
below, O markers above the run's own seed's stability limit (as in fig5); drop lines to the floor.
Below each panel, the table: ρ mean ± sd over seeds per grid point. A relative sweep's η₀ are
multiples of each seed's own η_eos(θ₀) (different η₀ per seed), so its rows are the multiples
η₀/η_eos, with the range of η₀ over the seeds beside them. Diverged runs are not drawn and not
tabulated (no meaningful S_final or eigenspace; :mod:`eosflow.figures.sweep_stats`): each panel
and each table row counts them, and the claims file lists them.

Claims, per setting (registry ``fig7.rotation``, ``fig7.flatter``; :mod:`eosflow.figures.sweep_stats`
for which runs and seeds enter): per seed, the Spearman correlation over its runs (at least the
registry's ``min_runs``) of η₀/η_eos with 1 − ρ (> 0: a larger η₀ turns the eigenspace more) and
with S_final (< 0: a larger η₀ ends flatter, S → 2/η₀ at the edge of stability), a diverged run
counted at the end that speaks against the claim (1 − ρ = −∞, S_final = +∞: :data:`AGAINST`); the
mean over seeds, decided by the stratified permutation test (each seed's correlation against its
exact null).
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.ticker import FuncFormatter

from ..claims import REGISTRY, Claim
from ..files import json_safe
from .common import finish, new_figure
from .fig5 import sides
from .sweep_stats import (
    column, diverged_runs, grid_points, rank_claim, rho_table, seed_spearman, setting_runs, settings_of, usable,
)

#: The colour map of validation accuracy (fig5 uses viridis for η₀).
ACC_CMAP = "plasma"


#: fig7's claims: registry id -> the quantity correlated with η₀/η_eos.
CLAIMS = {"fig7.rotation": "rotation", "fig7.flatter": "sharpness_final"}
#: A diverged run's value in each claim: the end that speaks against it (it sits at the largest η₀).
AGAINST = {"fig7.rotation": -math.inf, "fig7.flatter": math.inf}


def correlation_table(ds: xr.Dataset) -> dict[str, list[dict]]:
    """{claim id: per-seed rows (:func:`~eosflow.figures.sweep_stats.seed_spearman`)} of one setting."""
    return {cid: seed_spearman(ds, "ratio", q, min_runs=int(REGISTRY.param(cid, "min_runs")),
                               against=AGAINST[cid])
            for cid, q in CLAIMS.items()}


def setting_claims(name: str, ds: xr.Dataset) -> list[Claim]:
    """fig7's claims for one setting's runs (module docstring)."""
    table = correlation_table(ds)
    return [rank_claim(cid, table[cid], name) for cid in CLAIMS]


def _fmt(v, digits=3) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.{digits}g}"


def table_cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(column labels, cells) of the ρ table drawn under a panel (rows from :func:`rho_table`)."""
    relative = bool(rows and rows[0]["relative"])
    if relative:
        labels = ["η₀/η_eos", "η₀ (seeds' range)", "ρ mean ± sd", "runs", "diverged"]
    else:
        labels = ["η₀", "η₀/η_eos (seeds' range)", "ρ mean ± sd", "runs", "diverged"]
    cells = []
    for r in rows:
        lo, hi = (r["lr_min"], r["lr_max"]) if relative else (r["ratio_min"], r["ratio_max"])
        span = "-" if lo is None else _fmt(lo) if _fmt(lo) == _fmt(hi) else f"{_fmt(lo)}–{_fmt(hi)}"
        rho = "-" if r["rho_mean"] is None else f"{r['rho_mean']:.3f}" + (
            f" ± {r['rho_sd']:.3f}" if r["rho_sd"] is not None else "")
        cells.append([f"{r['grid']:g}", span, rho, str(r["runs"]), str(r["diverged"])])
    return labels, cells


def _panel(fig, ax, ds: xr.Dataset, name: str, k: int | None) -> None:
    ok = usable(ds) & np.isfinite(column(ds, "rotation")) & np.isfinite(column(ds, "sharpness_final"))
    lr, rot, sharp = column(ds, "lr"), column(ds, "rotation"), column(ds, "sharpness_final")
    acc = column(ds, "final_test_acc")
    above, below = sides(lr, column(ds, "eta_eos"))
    x = np.log10(lr)
    finite_acc = acc[ok]
    norm = Normalize(vmin=finite_acc.min() if finite_acc.size else 0.0,
                     vmax=max(finite_acc.max(), finite_acc.min() + 1e-6) if finite_acc.size else 1.0)
    cmap = colormaps[ACC_CMAP]
    floor = float(sharp[ok].min()) if ok.any() else 0.0
    for i in np.flatnonzero(ok):
        ax.plot([x[i], x[i]], [rot[i], rot[i]], [floor, sharp[i]], color="0.7", lw=0.6, zorder=1)
    for mask, marker in ((ok & below, "X"), (ok & above, "o"), (ok & ~below & ~above, "D")):
        if mask.any():
            ax.scatter(x[mask], rot[mask], sharp[mask], c=acc[mask], cmap=cmap, norm=norm, marker=marker, s=45,
                       edgecolor="k", linewidth=0.5, depthshade=False)
    if ok.any():  # ticks at 1, 2, 5 x 10^n within the drawn eta_0 range, as the 2-D figures' log axes
        lo, hi = x[ok].min(), x[ok].max()
        nice = [math.log10(m * 10.0 ** e) for e in range(math.floor(lo) - 1, math.ceil(hi) + 1) for m in (1, 2, 5)]
        nice = [t for t in nice if lo - 1e-9 <= t <= hi + 1e-9]
        if len(nice) >= 2:
            ax.set_xticks(nice)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{10 ** v:.2g}"))
    ax.set_xlabel(r"$\eta_0$ (log scale)")
    ax.set_ylabel(r"$1 - \rho$" + (f" (top-{k})" if k else ""))
    ax.set_zlabel(r"$S_{final}$")
    ax.view_init(elev=22, azim=-55)
    n_div = int((ds["status"].values == "diverged").sum())
    n_missing = int((usable(ds) & ~ok).sum())
    extra = f"; {n_div} diverged not drawn" if n_div else ""
    extra += f"; {n_missing} without 1 − ρ or S_final" if n_missing else ""
    ax.set_title(f"{name}: {int(ok.sum())} runs{extra}\nX below, O above the run's own η_eos(θ₀)", fontsize=9)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, shrink=0.55, pad=0.12, label="validation accuracy")


def _table(ax, rows: list[dict]) -> None:
    ax.axis("off")
    labels, cells = table_cells(rows)
    if not cells:
        ax.text(0.5, 0.5, "no runs", ha="center", va="center")
        return
    t = ax.table(cellText=cells, colLabels=labels, cellLoc="center", bbox=[0.02, 0.0, 0.96, 1.0],
                 colWidths=[0.15, 0.3, 0.27, 0.11, 0.14])
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    for (r, _), cell in t.get_celld().items():
        cell.set_linewidth(0.3)
        if r == 0:
            cell.set_facecolor("0.9")


def make_fig7(ds: xr.Dataset, pdf_path, png_path, claims_path, k: int | None = None, keep_open: bool = False):
    """Draw figure 7 from the fig5 sweep summary (:func:`eosflow.summary.summarize_runs`); ``k``:
    the eigenspace's dimension (hessian.k), for the labels. Returns the claims (and the figure
    with ``keep_open``)."""
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.0)
    settings = settings_of(ds)
    n_rows = max([len(np.unique(grid_points(setting_runs(ds, s))[0])) for s in settings] + [1])
    table_h = 0.2 * (n_rows + 1)
    width = 6.4 * max(len(settings), 1)
    fig = new_figure(figsize=(width, 4.6 + table_h + 1.0))
    gs = fig.add_gridspec(3, max(len(settings), 1), height_ratios=[4.6, table_h, 1.0], hspace=0.12,
                          left=0.02, right=0.98, top=0.9, bottom=0.01)
    claims: list[Claim] = []
    tables = {}
    for j, name in enumerate(settings):
        sub = setting_runs(ds, name)
        ax = fig.add_subplot(gs[0, j], projection="3d")
        _panel(fig, ax, sub, name, k)
        rows = rho_table(sub)
        tables[name] = rows
        _table(fig.add_subplot(gs[1, j]), rows)
        claims += setting_claims(name, sub)
    min_runs = REGISTRY.param("fig7.rotation", "min_runs")
    note = fig.add_subplot(gs[2, :])
    note.axis("off")
    space = f"top-{k}" if k else "top-k"
    text = (f"ρ: similarity of the {space} Hessian eigenspace at the first measurement (θ₀) and at the end of "
            "training (1 = unchanged, 0 = orthogonal); mean ± sd over seeds per grid point. A relative sweep's "
            "rows are multiples η₀/η_eos of each seed's own limit (η₀ differs between seeds: its range "
            "is shown).\n"
            "Diverged runs are not drawn or tabulated, and are counted; in the claims they count against the claim "
            "(1 − ρ = −∞, S_final = +∞). Claims: per seed, Spearman of η₀/η_eos with 1 − ρ (> 0) and with S_final "
            "(< 0) over its runs "
            f"(a seed counts with ≥ {min_runs}); the mean over seeds, decided by the stratified permutation test "
            "(each seed's correlation against its exact null; decides at 3 seeds for strong effects): "
            + "; ".join(f"{c.name}: {_fmt(c.value, 2)} ({c.verdict})" for c in claims))
    lines = [w for para in text.split("\n") for w in textwrap.wrap(para, int(width * 17))]
    note.text(0.0, 0.9, "\n".join(lines), va="top", ha="left", fontsize=7.5, transform=note.transAxes)
    fig.suptitle("Figure 7: η₀, eigenspace rotation 1 − ρ and final sharpness, coloured by validation accuracy "
                 f"({', '.join(settings)})", y=0.995)
    return finish(fig, claims, pdf_path, png_path, claims_path, "fig7", keep_open, rho_tables=json_safe(tables),
                  correlations=json_safe({s: correlation_table(setting_runs(ds, s)) for s in settings}),
                  diverged_runs=diverged_runs(ds),
                  runs={s: int((ds["status"].values == s).sum()) for s in ("converged", "max_epochs", "diverged")})
