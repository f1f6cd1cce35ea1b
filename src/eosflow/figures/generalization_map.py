"""Extension figure ``ext/generalization_map``: where does fig5's headline hold?

For every setting of ``generalization_map.settings`` (a cell: fig5's setting with one thing
changed), fig5's headline claims over that setting's sweep runs, each a per-seed value decided
over seeds as the registry says (:mod:`eosflow.claims`):

1. **gain** (``fig5.gain``): per seed, the best accuracy among the k runs above η_eos(θ₀) nearest
   to it minus the best among the k below nearest to it (k the smaller count) > 0;
2. **measured gain** (``map.measured_gain``): the same split by the runs' *measured* class
   (:mod:`eosflow.stability`; a diverged run unstable, at chance): per seed, with k the smaller of
   its numbers of measured-unstable and measured-stable runs (at least 1 each), the best accuracy
   among the k unstable runs of smallest η₀ minus the best among the k stable runs of largest η₀
   > 0. A cell where no run stayed stable says so;
3. **best η₀ / η_eos** (``fig5.best_above``): the median over seeds of argmax accuracy / limit > 1;
4. **ablation** (``ablation.accuracy``): per seed the mean paired accuracy difference plain −
   clamped twin over its pairs above the limit (:func:`eosflow.figures.ablation.paired_claim`) > 0,
   for the cells with clamped twins (``generalization_map.ablation``).

The gain, the measured gain and the ablation are decided by the exact sign-flip test of the mean
over seeds, the ratio by the sign test of the median; their intervals invert the tests (none below
6 seeds). Drawn as a map (setting × statistic): each cell coloured by its verdict, with its value,
its interval (or why there is none), its verdict and, when undetermined, the seeds that would
decide it (``needed``).
"""

from __future__ import annotations

import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.patches import Patch, Rectangle

from ..claims import REGISTRY, Claim, claim
from ..claims.procedures import min_deciding_seeds
from .ablation import pair_runs, paired_claim
from .common import finish, new_figure
from .fig5 import accuracy, nearest_gain, setting_claims

__all__ = ["STATISTICS", "measured_table", "measured_claim", "cell_claims", "make_map"]

#: The map's columns: (key, short title).
STATISTICS = (("gain", "best above - best below\n(k nearest eta_eos(theta_0) each side)"),
              ("measured_gain", "best unstable - best stable\n(measured class, k each)"),
              ("best_ratio", "argmax eta_0 / eta_eos\n(median over seeds)"),
              ("ablation", "plain - clamped twin\n(paired accuracy)"))
NO_STABLE = "no run of this cell stayed stable"
COLOURS = {"holds": "#a6dba0", "fails": "#f4a582", "undetermined": "#e0e0e0", "n/a": "#ffffff"}


def measured_table(ds: xr.Dataset) -> list[dict]:
    """Per seed: its numbers of measured-stable and measured-unstable runs (a diverged run unstable),
    ``k`` the smaller, and ``gain`` (``map.measured_gain``'s per-seed value; None when k = 0): the best
    accuracy (diverged at chance) among the k unstable runs of smallest η₀ minus the best among the k
    stable runs of largest η₀."""
    acc = accuracy(ds, float(REGISTRY.param("map.measured_gain", "chance")))
    cls = ds["stability"].values.astype(str).copy()
    cls[ds["status"].values == "diverged"] = "unstable"
    lr = ds["lr"].values.astype(float)
    rows = []
    for seed in np.unique(ds["seed"].values):
        one = ds["seed"].values == seed
        st, un = np.flatnonzero(one & (cls == "stable")), np.flatnonzero(one & (cls == "unstable"))
        k, gain = nearest_gain(acc, lr, un, st)
        rows.append({"seed": int(seed), "stable": int(st.size), "unstable": int(un.size), "k": k, "gain": gain})
    return rows


def measured_claim(name: str, ds: xr.Dataset) -> Claim:
    """``map.measured_gain`` for one cell (module docstring) from :func:`measured_table`."""
    table = measured_table(ds)
    gains = [r["gain"] for r in table if r["gain"] is not None]
    counts = "; ".join(f"seed {r['seed']}: {r['stable']} stable / {r['unstable']} unstable (k {r['k']})"
                       for r in table)
    c = claim("map.measured_gain", gains, fmt={"setting": name},
              note=f"{len(gains)} of {len(table)} seeds have runs of both classes; {counts}")
    if not (ds["stability"].values.astype(str) == "stable").any():
        c.reason = f"{NO_STABLE} (every run crossed its limit): " + c.reason
    return c


def cell_claims(name: str, plain: xr.Dataset, clamped: xr.Dataset | None) -> dict[str, Claim | None]:
    """The four statistics of one cell (module docstring); ``ablation`` is None without twins."""
    gain, best_ratio, _ = setting_claims(name, plain)
    out = {"gain": gain, "measured_gain": measured_claim(name, plain), "best_ratio": best_ratio, "ablation": None}
    if clamped is not None and clamped.sizes.get("run", 0):
        out["ablation"] = paired_claim("ablation.accuracy", pair_runs(plain, clamped), setting=name)
    return out


def _subset(ds: xr.Dataset, setting: str) -> xr.Dataset:
    return ds.isel(run=np.flatnonzero(ds["setting"].values.astype(str) == setting))


def _cell_text(c: Claim | None) -> str:
    """Value, interval (or why none), verdict and, for an undetermined cell, the seeds that would decide it."""
    if c is None:
        return "no clamped twins"
    if c.value is None and c.reason.startswith(NO_STABLE):
        return "no stable run\n(all crossed their limit)\nundetermined"
    val = "n/a" if c.value is None else f"{c.value:+.3f}" if abs(c.value) < 10 else f"{c.value:.3g}"
    if c.interval is not None:
        iv = f"[{c.interval[0]:+.3f}, {c.interval[1]:+.3f}]"
    elif c.value is None:
        iv = "no value"
    else:
        iv = f"no interval: < {min_deciding_seeds(c.kind)} seeds"
    lines = [val, iv, c.verdict]
    if c.verdict == "undetermined":
        lines.append(f"needed: {c.needed} seeds" if c.needed is not None else "needed: more seeds do not help")
    return "\n".join(lines)


def make_map(plain: xr.Dataset, clamped: xr.Dataset, pdf_path, png_path, claims_path, keep_open: bool = False):
    """Draw the map from the summary of every cell's sweep runs and of the clamped twins
    (:func:`eosflow.summary.summarize_runs`); returns the claims (and the figure with ``keep_open``)."""
    sns.set_theme(style="white", context="paper", font_scale=1.0)
    settings = list(dict.fromkeys(plain["setting"].values.astype(str).tolist()))
    twins = set(clamped["setting"].values.astype(str).tolist()) if clamped.sizes.get("run", 0) else set()
    cells = {s: cell_claims(s, _subset(plain, s), _subset(clamped, s) if s in twins else None) for s in settings}
    fig = new_figure(figsize=(3.1 * len(STATISTICS) + 2.6, 1.4 * len(settings) + 1.9))
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
    ax.set_title("Where fig5's headline holds: per-seed values; the mean over seeds by the exact sign-flip test "
                 "(the ratio: median, sign test);\nintervals invert the tests (none below 6 seeds); "
                 "thresholds > 0, > 0, > 1, > 0", fontsize=9, pad=48)
    claims = [c for s in settings for key, _ in STATISTICS if (c := cells[s][key]) is not None]
    table = {s: {key: None if c is None else {"value": c.value, "interval": c.interval, "verdict": c.verdict,
                                              "needed": c.needed}
                 for key, c in cells[s].items()} for s in settings}
    measured = {s: measured_table(_subset(plain, s)) for s in settings}
    return finish(fig, claims, pdf_path, png_path, claims_path, "ext/generalization_map", keep_open, cells=table,
                  measured_gain_seeds=measured)
