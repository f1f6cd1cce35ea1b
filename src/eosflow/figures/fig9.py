"""Figure 9: test accuracy and final sharpness against η on a ×2 grid, up to and past divergence.

The second setting (``fig9.setting``), η on an absolute ×2 grid (``fig9.lrs``), several seeds, each
run trained to completion (``fig9.train``). From the runs' summary (:func:`eosflow.summary.summarize_runs`):
(a) final validation accuracy, (b) the final sharpness ``S_final`` (with the edge-of-stability line
``2/η``), both against η (log2 x), mean ± sd over the seeds' trained runs and every seed's trained runs as
points; each seed's stability limit ``η_eos(θ₀) = 2/S(θ₀)`` (``S(θ₀)`` the run's first sharpness
measurement) as a dotted vertical line; failed runs on the axis bottom, labelled with their count per η:
diverged (red triangles) and *collapsed* (orange triangles: the run ended at chance training accuracy,
at most :data:`COLLAPSE_ACC`, a constant predictor with loss ln 10 that no stopping rule catches);
runs stopped by the epoch cap (status ``max_epochs``) as open markers.

Claims (the registry's ``fig9.peak`` and ``fig9.falls``; the median over seeds, decided by the sign
test over seeds, :mod:`eosflow.claims`: it cannot decide below 6 seeds), per seed, from its runs that
did not fail (neither diverged nor collapsed: *trained*):

1. *accuracy peaks above the stability limit*: ``log2(η_best / η_eos)``, η_best the η of the seed's
   best accuracy (ties: the smaller η), against 0. Every seed with a trained run and a measured limit
   counts: a seed whose runs above its limit all failed has its best below it.
2. *accuracy falls before divergence*: the accuracy at η_last, the largest trained η below the seed's
   smallest failed η (the last run before divergence or collapse), minus the median accuracy of the
   seed's other trained runs, against 0 (< 0: the last run is below the seed's typical accuracy).
   Under "no effect of η on accuracy" the last run is one more draw of the others, so the
   difference is centred on 0. A seed counts when one of its runs failed with a trained run below
   it, and it has another trained run.

The claims file keeps the per-seed table (:func:`seed_table`) and counts the diverged and the
collapsed runs per η.
"""

from __future__ import annotations

import math

import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from ..claims import REGISTRY, Claim, claim
from .common import finish, new_figure

#: A run that ends at or below this training accuracy (chance: 0.1) has collapsed: it failed as a
#: diverged run did, whatever its status (the registry's ``collapse_acc`` of both fig9 claims).
COLLAPSE_ACC = float(REGISTRY.param("fig9.falls", "collapse_acc"))


def run_rows(ds: xr.Dataset) -> list[dict]:
    """One dict per run of a summary dataset (:func:`eosflow.summary.summarize_runs`)."""
    rows = []
    for i in range(ds.sizes["run"]):
        rows.append({"lr": float(ds["lr"].values[i]), "seed": int(ds["seed"].values[i]),
                     "status": str(ds["status"].values[i]), "acc": float(ds["final_test_acc"].values[i]),
                     "train_acc": float(ds["final_train_acc"].values[i]),
                     "s_final": float(ds["sharpness_final"].values[i]),
                     "eta_eos": float(ds["eta_eos"].values[i])})
    return rows


def outcome(row: dict) -> str:
    """``diverged``, ``collapsed`` (ended at chance training accuracy) or ``trained``."""
    if row["status"] == "diverged":
        return "diverged"
    if not row["train_acc"] > COLLAPSE_ACC:  # NaN too
        return "collapsed"
    return "trained"


def _f(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def seed_table(rows: list[dict]) -> list[dict]:
    """Per seed: its limit, the peak (η_best, accuracy) and ``log2_best_over_eos`` (claim 1's value;
    None without a trained run or a limit), the smallest failed η, the last trained η before it
    (``eta_last``) and its accuracy, the median accuracy of the seed's other trained runs and
    ``fall`` = ``acc_last`` minus it (claim 2's value; None where undefined), and ``failed``: a
    diverged or collapsed run with a trained one below it."""
    out = []
    for seed in sorted({r["seed"] for r in rows}):
        runs = sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["lr"])
        eos = [r["eta_eos"] for r in runs if math.isfinite(r["eta_eos"])]
        eta_eos = float(np.median(eos)) if eos else math.nan
        ok = [r for r in runs if outcome(r) == "trained" and math.isfinite(r["acc"])]
        div = [r["lr"] for r in runs if outcome(r) != "trained"]
        row = {"seed": seed, "eta_eos": _f(eta_eos), "eta_best": None, "peak_acc": None, "log2_best_over_eos": None,
               "eta_first_failed": min(div) if div else None, "eta_last": None, "acc_last": None,
               "acc_others_median": None, "fall": None, "n_runs": len(runs), "n_trained": len(ok),
               "n_failed": len(div)}
        if ok:
            best = max(ok, key=lambda r: (r["acc"], -r["lr"]))  # ties: the smaller η
            row.update(eta_best=best["lr"], peak_acc=best["acc"])
            if math.isfinite(eta_eos):
                row["log2_best_over_eos"] = math.log2(best["lr"] / eta_eos)
        before = [r for r in ok if div and r["lr"] < min(div)]
        row["failed"] = bool(div and before)
        if row["failed"]:
            last = before[-1]
            row.update(eta_last=last["lr"], acc_last=last["acc"])
            others = [r["acc"] for r in ok if r is not last]
            if others:
                med = float(np.median(others))
                row.update(acc_others_median=med, fall=last["acc"] - med)
        out.append(row)
    return out


def fig9_claims(rows: list[dict]) -> list[Claim]:
    """The two claims of the module docstring from the runs' rows."""
    table = seed_table(rows)
    peak = [t for t in table if t["log2_best_over_eos"] is not None]
    falls = [t for t in table if t["fall"] is not None]
    no_peak = [t["seed"] for t in table if t["log2_best_over_eos"] is None]
    n_above = sum(t["log2_best_over_eos"] > 0 for t in peak)
    peak_note = (f"{n_above} of {len(peak)} seeds have their best eta above their limit"
                 if peak else "no seed has a trained (non-diverged, non-collapsed) run and a measured limit")
    if no_peak and peak:
        peak_note += f"; seeds {no_peak} have no trained run or no measured limit"
    failed = [t for t in table if t["failed"]]
    alone = [t["seed"] for t in failed if t["fall"] is None]
    if falls:
        n_below = sum(t["fall"] < 0 for t in falls)
        fall_note = (f"{n_below} of {len(falls)} seeds: the last trained eta before failure is below their other "
                     f"runs' median")
        if alone:
            fall_note += f"; seeds {alone} have no other trained run"
    else:
        fall_note = ("no run diverged or collapsed above a trained one: divergence not reached" if not failed else
                     "no seed that failed has a trained run besides the last before failure")
    return [
        claim("fig9.peak", [t["log2_best_over_eos"] for t in peak], note=peak_note),
        claim("fig9.falls", [t["fall"] for t in falls], note=fall_note),
    ]


def diverged_per_lr(rows: list[dict]) -> list[dict]:
    """``[{"lr", "runs", "diverged", "collapsed"}]`` per η of the grid."""
    return [{"lr": lr, "runs": sum(r["lr"] == lr for r in rows),
             "diverged": sum(r["lr"] == lr and outcome(r) == "diverged" for r in rows),
             "collapsed": sum(r["lr"] == lr and outcome(r) == "collapsed" for r in rows)}
            for lr in sorted({r["lr"] for r in rows})]


def _log2_axis(ax, lrs) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(lrs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)


def make_fig9(ds: xr.Dataset, pdf_path, png_path, claims_path, keep_open: bool = False):
    """Draw figure 9 from the runs' summary and write its claims."""
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.05)
    rows = run_rows(ds)
    table = seed_table(rows)
    setting = str(ds["setting"].values[0]) if ds.sizes.get("run", 0) else ""
    lrs = sorted({r["lr"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    pal = dict(zip(seeds, sns.color_palette("colorblind", len(seeds))))
    fig = new_figure(figsize=(11, 4.4))
    ax_a, ax_s = fig.subplots(1, 2)
    ok = [r for r in rows if outcome(r) == "trained"]
    for ax, key in ((ax_a, "acc"), (ax_s, "s_final")):
        mean, sd = np.full(len(lrs), np.nan), np.full(len(lrs), np.nan)  # NaN: no trained run (a gap)
        for i, lr in enumerate(lrs):
            v = np.array([r[key] for r in ok if r["lr"] == lr and math.isfinite(r[key])])
            if v.size:
                mean[i], sd[i] = v.mean(), (v.std(ddof=1) if v.size > 1 else 0.0)
        if np.isfinite(mean).any():
            ax.errorbar(lrs, mean, yerr=sd, color="k", lw=1.6, capsize=3, zorder=3, label="mean ± sd over seeds")
        for seed in seeds:
            for capped in (False, True):
                pts = [r for r in ok if r["seed"] == seed and math.isfinite(r[key])
                       and (r["status"] == "max_epochs") == capped]
                if pts:
                    jitter = 2 ** (0.06 * (seeds.index(seed) - (len(seeds) - 1) / 2))
                    ax.scatter([r["lr"] * jitter for r in pts], [r[key] for r in pts], s=26, zorder=4,
                               facecolors="none" if capped else pal[seed], edgecolors=pal[seed], linewidths=1.2)
        for t in table:
            if t["eta_eos"] is not None:
                ax.axvline(t["eta_eos"], color=pal[t["seed"]], ls=":", lw=1.4)
        _log2_axis(ax, lrs)
        ax.set_xlabel(r"learning rate $\eta$ (log$_2$)")
    ax_s.set_yscale("log")
    grid = np.array(lrs)
    ax_s.plot(grid, 2 / grid, color="tab:red", ls="--", lw=1, label=r"$2/\eta$")
    finite_s = [r["s_final"] for r in ok if math.isfinite(r["s_final"]) and r["s_final"] > 0]
    if finite_s:
        ax_s.set_ylim(min(finite_s + list(2 / grid)) / 2, max(finite_s + list(2 / grid)) * 2)
    accs = [r["acc"] for r in ok if math.isfinite(r["acc"])]
    ax_a.set_ylim(0.0, min(1.0, max(accs) + 0.08) if accs else 1.0)
    # failed runs: triangles on the bottom of each axis, with their count (diverged red, collapsed orange)
    for ax in (ax_a, ax_s):
        lo = ax.get_ylim()[0]
        ax.set_ylim(*ax.get_ylim())  # frozen: the markers sit on the bottom edge
        for d in diverged_per_lr(rows):
            text = [f"{d[k]}/{d['runs']} {abbr}" for k, abbr in (("diverged", "div."), ("collapsed", "coll.")) if d[k]]
            if text:
                colour = "tab:red" if d["diverged"] else "tab:orange"
                ax.scatter([d["lr"]], [lo], marker="v", s=70, color=colour, zorder=5, clip_on=False)
                ax.annotate("\n".join(text), (d["lr"], lo), textcoords="offset points",
                            xytext=(0, 8), ha="center", fontsize=6.5, color=colour)
    ax_a.set_ylabel("final validation accuracy")
    ax_a.set_title("(a) accuracy against $\\eta$")
    ax_s.set_ylabel(r"final sharpness $S_{final}$")
    ax_s.set_title("(b) final sharpness against $\\eta$")
    handles = [Line2D([], [], color="k", lw=1.6, marker="|", label="mean ± sd over seeds (trained runs)")]
    handles += [Line2D([], [], ls="", marker="o", color=pal[s], label=f"seed {s}") for s in seeds]
    handles += [Line2D([], [], ls="", marker="o", mfc="none", mec="0.3", label="stopped at the epoch cap"),
                Line2D([], [], ls=":", color="0.3", label=r"$\eta_{eos}(\theta_0) = 2/S(\theta_0)$ per seed"),
                Line2D([], [], ls="", marker="v", color="tab:red", label="diverged (div.: count per $\\eta$)"),
                Line2D([], [], ls="", marker="v", color="tab:orange",
                       label=f"collapsed (coll.): train acc $\\leq$ {COLLAPSE_ACC:g}"),
                Line2D([], [], ls="--", color="tab:red", label=r"$2/\eta$ (panel b)")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.13))
    fig.suptitle(f"fig9: accuracy and final sharpness against $\\eta$ on a ×2 grid, {setting} "
                 f"({len(seeds)} seed{'' if len(seeds) == 1 else 's'})", fontsize=11)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    return finish(fig, fig9_claims(rows), pdf_path, png_path, claims_path, "fig9", keep_open, setting=setting,
                  collapse_acc=COLLAPSE_ACC, diverged_per_lr=diverged_per_lr(rows), seeds=table,
                  runs=[{k: _f(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows])
