"""Figure 8: rank correlations across η₀ of validation accuracy with S_final, 1 − ρ and η₀, from the
fig5 sweep.

Per setting and seed, the Spearman correlation across that seed's η₀ grid of the final
validation accuracy with each of: the final sharpness S_final, the eigenspace rotation 1 − ρ
(:mod:`eosflow.figures.fig7`), and η₀. Bars: the mean over seeds, error bars ± sd over seeds,
grouped per setting; dots: the seeds. Diverged runs are excluded from the S_final and 1 − ρ
correlations (they have no final state) and **count at chance accuracy in the η₀ correlation**, as
in fig5 (:mod:`eosflow.figures.sweep_stats`: which runs and seeds enter).

Claims, per setting (registry ``fig8.sharpness``, ``fig8.rotation``, ``fig8.eta0``): the mean over
seeds (each with at least the registry's ``min_runs`` runs) of each per-seed Spearman correlation,
decided by the stratified permutation test (each seed's correlation against its exact null):
accuracy falls with S_final (< 0: flatter generalizes better); accuracy rises with 1 − ρ (> 0);
accuracy rises with η₀ (> 0).
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import seaborn as sns
import xarray as xr

from ..claims import REGISTRY, Claim
from ..files import json_safe
from .common import finish, new_figure
from .sweep_stats import diverged_runs, rank_claim, seed_spearman, setting_runs, settings_of

#: (label drawn, summary quantity, registry id, diverged runs at chance?) per correlation.
CORRELATIONS = [
    ("S_final", "sharpness_final", "fig8.sharpness", False),
    ("1 − ρ", "rotation", "fig8.rotation", False),
    ("η₀", "lr", "fig8.eta0", True),
]


def _rows(ds: xr.Dataset, q: str, cid: str, at_chance: bool) -> list[dict]:
    chance = float(REGISTRY.param(cid, "chance")) if at_chance else None
    return seed_spearman(ds, q, min_runs=int(REGISTRY.param(cid, "min_runs")), chance=chance)


def correlation_table(ds: xr.Dataset) -> dict[str, dict[str, list[dict]]]:
    """{setting: {quantity: per-seed rows (:func:`~eosflow.figures.sweep_stats.seed_spearman`)}}: diverged
    runs excluded, except at chance in the η₀ correlation."""
    return {name: {q: _rows(setting_runs(ds, name), q, cid, c) for _, q, cid, c in CORRELATIONS}
            for name in settings_of(ds)}


def setting_claims(name: str, table: dict[str, list[dict]]) -> list[Claim]:
    """fig8's claims for one setting from its per-seed correlations (module docstring)."""
    return [rank_claim(cid, table[q], name) for _, q, cid, _ in CORRELATIONS]


def long_frame(table: dict) -> dict[str, list]:
    """Columns (setting, quantity, seed, spearman) with one row per contributing seed of each setting and
    quantity: seaborn's long-form data."""
    label = {q: lab for lab, q, _, _ in CORRELATIONS}
    rows = [{"setting": s, "quantity": label[q], "seed": r["seed"], "spearman": r["spearman"]}
            for s, per_q in table.items() for q, seeds in per_q.items() for r in seeds if r["contributes"]]
    return {c: [r[c] for r in rows] for c in ("setting", "quantity", "seed", "spearman")}


def eta0_with_diverged_excluded(ds: xr.Dataset) -> dict:
    """Descriptive, no claim: per setting, each seed's Spearman(validation acc, η₀) with its diverged runs
    left out (the statistic before they counted at chance), and the mean over seeds: how much counting
    them moves the η₀ correlation."""
    out = {}
    for name in settings_of(ds):
        rows = seed_spearman(setting_runs(ds, name), "lr", min_runs=int(REGISTRY.param("fig8.eta0", "min_runs")))
        finite = [r["spearman"] for r in rows if r["contributes"]]
        out[name] = {"per_seed": {r["seed"]: r["spearman"] for r in rows},
                     "mean": float(np.mean(finite)) if finite else None}
    return out


def _fmt(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:+.2f}"


def make_fig8(ds: xr.Dataset, pdf_path, png_path, claims_path, keep_open: bool = False):
    """Draw figure 8 from the fig5 sweep summary (:func:`eosflow.summary.summarize_runs`); returns
    the claims (and the figure with ``keep_open``)."""
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    settings = settings_of(ds)
    table = correlation_table(ds)
    claims: list[Claim] = []
    for name in settings:
        claims += setting_claims(name, table[name])
    frame = long_frame(table)
    fig = new_figure(figsize=(3.2 + 2.6 * max(len(settings), 1), 5.6))
    gs = fig.add_gridspec(2, 1, height_ratios=[4.2, 1.4], hspace=0.35)
    ax = fig.add_subplot(gs[0])
    order, hue_order = settings, [lab for lab, _, _, _ in CORRELATIONS]
    min_runs = REGISTRY.param("fig8.eta0", "min_runs")
    palette = dict(zip(hue_order, sns.color_palette("colorblind", len(hue_order))))
    if frame["spearman"]:
        sns.barplot(frame, x="setting", y="spearman", hue="quantity", order=order, hue_order=hue_order,
                    errorbar="sd", capsize=0.1, palette=palette, alpha=0.8, ax=ax, err_kws={"linewidth": 1.2})
        sns.stripplot(frame, x="setting", y="spearman", hue="quantity", order=order, hue_order=hue_order,
                      dodge=True, palette=palette, edgecolor="k", linewidth=0.6, size=5, ax=ax, legend=False)
    else:
        ax.set_xticks(range(len(order)), order)
        ax.set_xlim(-0.5, len(order) - 0.5)
        ax.text(0.5, 0.7, f"no seed has ≥ {min_runs} usable runs:\nno correlation to draw", ha="center",
                va="center", transform=ax.transAxes, bbox={"facecolor": "w", "edgecolor": "0.7"})
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_ylim(-1.12, 1.12)
    ax.set_xlabel("")
    ax.set_ylabel("Spearman(validation accuracy, ·) across η₀")
    per_setting = []
    for name in settings:
        seeds = {r["seed"] for q in table[name].values() for r in q}
        used = min(sum(r["contributes"] for r in q) for q in table[name].values())
        per_setting.append(f"{name}: {used} of {len(seeds)} seeds")
    ax.set_title("Figure 8: rank correlation of validation accuracy with S_final, 1 − ρ and η₀\n"
                 "bars: mean over seeds ± sd; dots: seeds (" + "; ".join(per_setting) + ")", fontsize=10)
    if frame["spearman"]:
        ax.legend(title="", loc="upper center", bbox_to_anchor=(0.5, -0.07), fontsize=8, ncols=3, frameon=False)
    note = fig.add_subplot(gs[1])
    note.axis("off")
    lines = [f"Diverged runs ({len(diverged_runs(ds))}, listed in the claims file) are left out of the S_final and "
             "1 − ρ correlations (no final state) and count at chance accuracy in the η₀ one, as in fig5. "
             f"A seed counts with ≥ {min_runs} runs. Claims: the mean over seeds of their Spearman correlations, "
             "decided by the stratified permutation test (each seed's correlation against its exact null; "
             "the band: the null's central 95 %)."]
    for c in claims:
        iv = "" if c.interval is None else f" (null band [{c.interval[0]:+.2f}, {c.interval[1]:+.2f}])"
        need = ""
        if c.verdict == "undetermined":
            need = f", {c.needed} seeds needed" if c.needed is not None else ", more seeds do not help"
        lines.append(f"{c.name}: {_fmt(c.value)}{iv} → {c.verdict}{need}")
    width = int(fig.get_figwidth() * 15)
    lines = [w for line in lines for w in textwrap.wrap(line, width, subsequent_indent="    ")]
    note.text(0.0, 0.85, "\n".join(lines), va="top", ha="left", fontsize=7.5, transform=note.transAxes)
    return finish(fig, claims, pdf_path, png_path, claims_path, "fig8", keep_open,
                  correlations=json_safe(table), diverged_runs=diverged_runs(ds),
                  eta0_with_diverged_excluded=json_safe(eta0_with_diverged_excluded(ds)),
                  runs={s: int((ds["status"].values == s).sum()) for s in ("converged", "max_epochs", "diverged")})
