"""Extension figure ``ext/generalization_map``: where does fig5's headline hold?

For every setting of ``generalization_map.settings`` (a cell: fig5's setting with one thing
changed), fig5's headline statistics over that setting's sweep runs, each the mean (or median)
over seeds with its 95 % bootstrap interval, decided as fig5's claims are (:mod:`eosflow.claims`):

1. **gain**: best accuracy with η₀ > η_eos(θ₀) minus best with η₀ < η_eos(θ₀) (fig5's statistic) > 0;
2. **measured gain**: the same split by the runs' *measured* class (:mod:`eosflow.stability`): best
   unstable minus best stable > 0. A seed contributes with at least one run of each class; a cell
   where no run stayed stable says so;
3. **best η₀ / η_eos**: fig5's median over seeds of argmax accuracy / limit > 1;
4. **ablation**: the paired accuracy difference plain − clamped twin over the pairs above the limit
   (:func:`eosflow.figures.ablation.paired_claim`) > 0, for the cells with clamped twins
   (``generalization_map.ablation``).

Drawn as a map (setting × statistic): each cell coloured by its verdict (holds: the interval
clears the threshold; fails: it lies on the other side; undetermined), with the numbers printed.
"""

from __future__ import annotations

import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.patches import Patch, Rectangle

from ..claims import Claim, bootstrap_interval, check
from .ablation import MIN_SEEDS, pair_runs, paired_claim
from .common import finish, new_figure
from .fig5 import accuracy, setting_claims

__all__ = ["STATISTICS", "MIN_PER_CLASS", "measured_claim", "cell_claims", "make_map"]

#: The map's columns: (key, short title).
STATISTICS = (("gain", "best above - best below\n(by eta_eos(theta_0))"),
              ("measured_gain", "best unstable - best stable\n(measured class)"),
              ("best_ratio", "argmax eta_0 / eta_eos\n(median over seeds)"),
              ("ablation", "plain - clamped twin\n(paired accuracy)"))
#: Minimum evidence of the measured gain, fixed before any run: runs of each class per seed.
MIN_PER_CLASS = 1
NO_STABLE = "no run of this cell stayed stable"
COLOURS = {"holds": "#a6dba0", "fails": "#f4a582", "undetermined": "#e0e0e0", "n/a": "#ffffff"}


def measured_claim(name: str, ds: xr.Dataset) -> Claim:
    """Best unstable minus best stable validation accuracy, per seed, by the runs' measured class
    (a diverged run: unstable, at chance); mean over the contributing seeds > 0."""
    acc, cls = accuracy(ds), ds["stability"].values.astype(str)
    gains, counts = [], []
    for seed in np.unique(ds["seed"].values):
        one = ds["seed"].values == seed
        st, un = one & (cls == "stable"), one & (cls == "unstable")
        counts.append(f"seed {int(seed)}: {int(st.sum())} stable / {int(un.sum())} unstable")
        if st.sum() >= MIN_PER_CLASS and un.sum() >= MIN_PER_CLASS:
            gains.append(float(acc[un].max() - acc[st].max()))
    c = check(f"{name}: measured instability improves validation accuracy",
              "mean over seeds of (best acc of a measured-unstable run) - (best acc of a measured-stable run)",
              np.mean(gains) if gains else None, ">", 0, note="; ".join(counts),
              interval=bootstrap_interval(gains), evidence={"seeds": len(gains)}, minimum={"seeds": MIN_SEEDS})
    if not (cls == "stable").any():
        c.reason = f"{NO_STABLE} (every run crossed its limit): " + c.reason
    return c


def cell_claims(name: str, plain: xr.Dataset, clamped: xr.Dataset | None) -> dict[str, Claim | None]:
    """The four statistics of one cell (module docstring); ``ablation`` is None without twins."""
    gain, best_ratio, _ = setting_claims(name, plain)
    out = {"gain": gain, "measured_gain": measured_claim(name, plain), "best_ratio": best_ratio, "ablation": None}
    if clamped is not None and clamped.sizes.get("run", 0):
        out["ablation"] = paired_claim(f"{name}: plain GD beats its clamped twin in validation accuracy",
                                       pair_runs(plain, clamped))
    return out


def _subset(ds: xr.Dataset, setting: str) -> xr.Dataset:
    return ds.isel(run=np.flatnonzero(ds["setting"].values.astype(str) == setting))


def _cell_text(c: Claim | None) -> str:
    if c is None:
        return "no clamped twins"
    if c.value is None and c.reason.startswith(NO_STABLE):
        return "no stable run\n(all crossed their limit)\nundetermined"
    val = "n/a" if c.value is None else f"{c.value:+.3f}" if abs(c.value) < 10 else f"{c.value:.3g}"
    iv = "" if c.interval is None else f"\n[{c.interval[0]:+.3f}, {c.interval[1]:+.3f}]"
    return f"{val}{iv}\n{c.verdict}"


def make_map(plain: xr.Dataset, clamped: xr.Dataset, pdf_path, png_path, claims_path, keep_open: bool = False):
    """Draw the map from the summary of every cell's sweep runs and of the clamped twins
    (:func:`eosflow.summary.summarize_runs`); returns the claims (and the figure with ``keep_open``)."""
    sns.set_theme(style="white", context="paper", font_scale=1.0)
    settings = list(dict.fromkeys(plain["setting"].values.astype(str).tolist()))
    twins = set(clamped["setting"].values.astype(str).tolist()) if clamped.sizes.get("run", 0) else set()
    cells = {s: cell_claims(s, _subset(plain, s), _subset(clamped, s) if s in twins else None) for s in settings}
    fig = new_figure(figsize=(3.1 * len(STATISTICS) + 2.6, 1.15 * len(settings) + 1.8))
    ax = fig.subplots()
    for i, s in enumerate(settings):
        for j, (key, _) in enumerate(STATISTICS):
            c = cells[s][key]
            verdict = "n/a" if c is None else c.verdict
            ax.add_patch(Rectangle((j, i), 1, 1, facecolor=COLOURS[verdict], edgecolor="w", lw=2))
            ax.text(j + 0.5, i + 0.5, _cell_text(c), ha="center", va="center", fontsize=8.5)
    ax.set_xlim(0, len(STATISTICS))
    ax.set_ylim(len(settings), 0)
    ax.set_xticks(np.arange(len(STATISTICS)) + 0.5, [t for _, t in STATISTICS], fontsize=8.5)
    ax.xaxis.tick_top()
    runs = {s: int((plain["setting"].values.astype(str) == s).sum()) for s in settings}
    ax.set_yticks(np.arange(len(settings)) + 0.5, [f"{s}\n({runs[s]} runs)" for s in settings], fontsize=8.5)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.legend(handles=[Patch(facecolor=COLOURS[v], edgecolor="0.6", label=v) for v in ("holds", "fails", "undetermined")],
              loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=3, fontsize=8, frameon=False)
    ax.set_title("Where fig5's headline holds: mean (median for the ratio) over seeds, 95% bootstrap interval;\n"
                 "thresholds > 0, > 0, > 1, > 0", fontsize=9, pad=42)
    claims = [c for s in settings for key, _ in STATISTICS if (c := cells[s][key]) is not None]
    table = {s: {key: None if c is None else {"value": c.value, "interval": c.interval, "verdict": c.verdict}
                 for key, c in cells[s].items()} for s in settings}
    return finish(fig, claims, pdf_path, png_path, claims_path, "ext/generalization_map", keep_open, cells=table)
