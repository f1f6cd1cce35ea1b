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

Claims (statistics and minimum evidence fixed here, before any run; verdicts by :mod:`eosflow.claims`),
per seed, from its runs that did not fail (neither diverged nor collapsed):

1. *accuracy peaks above the stability limit*: ``log2(η_best / η_eos)``, η_best the η of the seed's
   best accuracy; the mean over seeds with a 95 % bootstrap interval must clear 0. A seed contributes
   when it has a measured limit and a trained run above it.
2. *accuracy falls before divergence*: ``peak − acc(η_last)``, η_last the largest η below the seed's
   smallest failed η (the last run before divergence or collapse); the mean over seeds, with its
   interval, must clear :data:`DROP_MARGIN`. A seed contributes when one of its runs failed and one
   below it did not.
   The fraction of seeds whose drop exceeds the margin is reported beside it.

Each needs :data:`MIN_SEEDS` contributing seeds; short of them (or with no failed run, or no run
above the limit) it is ``undetermined``. The claims file also counts the diverged and the collapsed
runs per η.
"""

from __future__ import annotations

import math

import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from ..claims import Claim, bootstrap_interval, check
from .common import finish, new_figure

#: Minimum evidence (fixed before any run): contributing seeds per claim.
MIN_SEEDS = 3
#: "Accuracy falls before divergence": the last run before divergence is below the peak by more than this.
DROP_MARGIN = 0.01
#: A run that ends at or below this training accuracy (chance: 0.1) has collapsed: it failed as a
#: diverged run did, whatever its status.
COLLAPSE_ACC = 0.15
#: Runs within this relative distance of their seed's limit are not above it.
AT_LIMIT = 0.01


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
    """Per seed: its limit, the peak (η_best, accuracy), log2(η_best / η_eos), the smallest failed η,
    the last η before it and its accuracy, the drop from the peak, and whether the seed contributes to
    each claim (``above``: a trained run above its limit; ``failed``: a diverged or collapsed run with a
    trained one below it)."""
    out = []
    for seed in sorted({r["seed"] for r in rows}):
        runs = sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["lr"])
        eos = [r["eta_eos"] for r in runs if math.isfinite(r["eta_eos"])]
        eta_eos = float(np.median(eos)) if eos else math.nan
        ok = [r for r in runs if outcome(r) == "trained" and math.isfinite(r["acc"])]
        div = [r["lr"] for r in runs if outcome(r) != "trained"]
        row = {"seed": seed, "eta_eos": _f(eta_eos), "eta_best": None, "peak_acc": None, "log2_best_over_eos": None,
               "eta_first_failed": min(div) if div else None, "eta_last": None, "acc_last": None, "drop": None,
               "n_runs": len(runs), "n_failed": len(div),
               "above": bool(math.isfinite(eta_eos) and any(r["lr"] > eta_eos * (1 + AT_LIMIT) for r in ok))}
        if ok:
            best = max(ok, key=lambda r: (r["acc"], -r["lr"]))  # ties: the smaller η
            row.update(eta_best=best["lr"], peak_acc=best["acc"])
            if math.isfinite(eta_eos):
                row["log2_best_over_eos"] = math.log2(best["lr"] / eta_eos)
        before = [r for r in ok if div and r["lr"] < min(div)]
        row["failed"] = bool(div and before)
        if row["failed"]:
            last = before[-1]
            row.update(eta_last=last["lr"], acc_last=last["acc"], drop=row["peak_acc"] - last["acc"])
        out.append(row)
    return out


def fig9_claims(rows: list[dict]) -> list[Claim]:
    """The two claims of the module docstring from the runs' rows."""
    table = seed_table(rows)
    peak = [t["log2_best_over_eos"] for t in table if t["above"] and t["log2_best_over_eos"] is not None]
    drops = [t["drop"] for t in table if t["failed"]]
    n_above = sum(t["above"] for t in table)
    n_div = sum(t["failed"] for t in table)
    peak_note = "" if n_above else "no trained (non-diverged, non-collapsed) run lies above its seed's limit"
    frac = (sum(d > DROP_MARGIN for d in drops) / len(drops)) if drops else None
    drop_note = (f"fraction of seeds whose drop exceeds {DROP_MARGIN:g}: {frac:.3g} ({len(drops)} seeds)"
                 if drops else "no run diverged or collapsed above a trained one: divergence not reached")
    return [
        check("accuracy peaks at an eta above the stability limit",
              "mean over seeds of log2(eta_best / eta_eos(theta_0)), eta_best the eta of the seed's best "
              "validation accuracy among its trained (non-diverged, non-collapsed) runs",
              np.mean(peak) if peak else None, ">", 0,
              note=peak_note, interval=bootstrap_interval(peak), evidence={"seeds": len(peak)},
              minimum={"seeds": MIN_SEEDS}),
        check("accuracy falls before divergence",
              "mean over seeds of (peak accuracy - accuracy at the largest eta below the seed's smallest "
              "diverged or collapsed eta)", np.mean(drops) if drops else None, ">", DROP_MARGIN, note=drop_note,
              interval=bootstrap_interval(drops), evidence={"seeds": n_div}, minimum={"seeds": MIN_SEEDS}),
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
                  drop_margin=DROP_MARGIN, collapse_acc=COLLAPSE_ACC, diverged_per_lr=diverged_per_lr(rows), seeds=table,
                  runs=[{k: _f(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows])
