"""Extension target ``figures/ext/sgd_flattening.pdf``: flattening under minibatch SGD (the follow-up
paper, arXiv 2511.12558: "the flattening that instabilities drive persists under minibatch SGD,
and its effect outweighs minibatch noise").

A batch-size sweep, each batch size ``B`` at a small and a large η (``η(B) = η·min(1, B/512)``
below 512, :func:`eosflow.optimizer_runs.sgd_flattening_runs`). (a) S(θ) over epochs (seed mean);
(b) the final S against ``B``. ``S_final`` is the run's last Hessian measurement (its last epoch);
a diverged run has none (it counts as missing evidence, never as flat).

Claims (statistics and thresholds fixed in the issue before any run; each a mean over seeds with
a 95 % bootstrap interval, at least :data:`MIN_SEEDS` seeds):

- (a) at every batch size the larger η ends flatter: per seed ``S_final(η_large) / S_final(η_small)``
  at each ``B``; holds when every ``B``'s interval lies below 1, fails when some ``B``'s lies at or
  above 1, else undetermined; the claim reports the deciding ``B`` (the failing, else the
  undecided, else the least flat one);
- (b) the reduction of ``S_final`` from the small to the large η (at full batch) is at least the
  reduction from full batch to the smallest batch (at the small η): per seed
  ``[(S_fs − S_fl) − (S_fs − S_ss)] / S_fs = (S_ss − S_fl) / S_fs ≥ 0`` (``f``: full batch,
  the largest ``B``; ``s`` the smallest ``B``, or the small η).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import seaborn as sns
import xarray as xr

from ..claims import Claim, bootstrap_interval, check
from .common import finish, json_safe, new_figure

#: Minimum evidence (fixed before any run): seeds with both runs of a comparison.
MIN_SEEDS = 3


def final_sharpness(cube: xr.Dataset) -> float:
    """S at the run's last measurement (NaN for a diverged run or none measured)."""
    if cube.attrs.get("status") == "diverged":
        return math.nan
    s = cube["sharpness"].values.astype(float)
    return float(s[-1]) if s.size and np.isfinite(s[-1]) else math.nan


def summarize(rows: list[dict], cubes: list[xr.Dataset]) -> list[dict]:
    """One row per run: batch size, η kind and value, seed, status, S_final, final accuracies."""
    out = []
    for r, c in zip(rows, cubes):
        acc = c["test_acc"].values.astype(float)
        acc = acc[np.isfinite(acc)]
        out.append({"batch_size": int(r["batch_size"]), "eta": r["eta"], "lr": float(r["lr"]), "seed": int(r["seed"]),
                    "status": c.attrs["status"], "n_steps": int(c["step"].values[-1]),
                    "s_final": final_sharpness(c), "final_train_loss": float(c["train_loss"].values[-1]),
                    "final_test_acc": float(acc[-1]) if acc.size else math.nan})
    return out


def _s(rows, b, eta) -> dict[int, float]:
    return {r["seed"]: r["s_final"] for r in rows if r["batch_size"] == b and r["eta"] == eta
            and math.isfinite(r["s_final"])}


def _paired(a: dict, b: dict, fn) -> list[float]:
    return [fn(a[s], b[s]) for s in sorted(set(a) & set(b))]


def flattening_claims(rows: list[dict]) -> tuple[list[Claim], dict]:
    """The two claims (module docstring) and the per-batch-size statistics behind (a)."""
    sizes = sorted({r["batch_size"] for r in rows}, reverse=True)
    per_b = {}
    for b in sizes:
        ratios = _paired(_s(rows, b, "large"), _s(rows, b, "small"), lambda l, s: l / s)
        iv = bootstrap_interval(ratios)
        verdict = check("", "", np.mean(ratios) if ratios else None, "<", 1.0, interval=iv,
                        evidence={"seeds": len(ratios)}, minimum={"seeds": MIN_SEEDS}).verdict
        per_b[b] = {"ratios": ratios, "mean": float(np.mean(ratios)) if ratios else None, "interval": iv,
                    "verdict": verdict}
    order = {"fails": 0, "undetermined": 1, "holds": 2}
    decide = min(sizes, key=lambda b: (order[per_b[b]["verdict"]], -(per_b[b]["mean"] or math.inf)))
    d = per_b[decide]
    reason = {"fails": f"batch size {decide} fails", "undetermined": f"batch size {decide} is undetermined",
              "holds": f"every batch size holds; the least flat is {decide}"}[d["verdict"]]
    claim_a = check("at every batch size, the larger eta ends flatter",
                    f"mean over seeds of S_final(eta_large) / S_final(eta_small), at the deciding batch size ({decide})",
                    d["mean"], "<", 1.0, note=reason + "; every batch size: " + ", ".join(
                        f"B={b}: {per_b[b]['mean']:.3g} ({per_b[b]['verdict']})" if per_b[b]["mean"] is not None
                        else f"B={b}: n/a" for b in sizes),
                    interval=d["interval"], evidence={"seeds": len(d["ratios"])}, minimum={"seeds": MIN_SEEDS})
    full, small = sizes[0], sizes[-1]
    fs, fl, ss = _s(rows, full, "small"), _s(rows, full, "large"), _s(rows, small, "small")
    seeds = sorted(set(fs) & set(fl) & set(ss))
    vals = [(ss[s] - fl[s]) / fs[s] for s in seeds]
    claim_b = check("the flattening by a large eta outweighs that by minibatch noise",
                    f"mean over seeds of [(S_fs - S_fl) - (S_fs - S_ss)] / S_fs = (S_ss - S_fl) / S_fs, f: batch "
                    f"{full}, s: batch {small} (or the small eta), l: the large eta",
                    np.mean(vals) if vals else None, ">=", 0.0,
                    note=f"reduction by eta (S_fs - S_fl)/S_fs: {np.mean([(fs[s] - fl[s]) / fs[s] for s in seeds]):.3g}; "
                         f"by batch size (S_fs - S_ss)/S_fs: {np.mean([(fs[s] - ss[s]) / fs[s] for s in seeds]):.3g}"
                    if seeds else "no seed with all three runs",
                    interval=bootstrap_interval(vals), evidence={"seeds": len(vals)}, minimum={"seeds": MIN_SEEDS})
    return [claim_a, claim_b], {str(b): {k: v for k, v in per_b[b].items()} for b in sizes}


def make_sgd_flattening(rows: list[dict], cubes: list[xr.Dataset], pdf_path, png_path, claims_path,
                        keep_open: bool = False):
    """Draw the figure from the runs (``rows``: :func:`~eosflow.optimizer_runs.sgd_flattening_runs`,
    ``cubes`` in the same order) and write its claims."""
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    table = summarize(rows, cubes)
    sizes = sorted({r["batch_size"] for r in table}, reverse=True)
    pal = dict(zip(sizes, sns.color_palette("viridis", len(sizes))))
    fig = new_figure(figsize=(11.5, 4.4))
    ax, ax_b = fig.subplots(1, 2)
    for b in sizes:
        for eta, ls in (("small", "--"), ("large", "-")):
            runs = [c for r, c in zip(table, cubes) if r["batch_size"] == b and r["eta"] == eta]
            if not runs:
                continue
            h = runs[0]["hstep"].values
            s = np.full((len(runs), h.size), np.nan)
            for i, c in enumerate(runs):
                v = c["sharpness"].values.astype(float)[: h.size]
                s[i, : v.size] = v
            lr = next(r["lr"] for r in table if r["batch_size"] == b and r["eta"] == eta)
            with warnings.catch_warnings():  # a step where every seed's run had ended: NaN, not drawn
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(s, axis=0)
            ax.plot(h, mean, color=pal[b], ls=ls, lw=1.3, label=f"B = {b}, $\\eta$ = {lr:.3g} ({eta})")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(r"sharpness $S(\theta)$ (mean over seeds)")
    ax.set_title(r"(a) $S(\theta)$ over training (solid: large $\eta$, dashed: small)")
    ax.legend(fontsize=7, ncol=2)
    for eta, marker, col in (("small", "s", "tab:blue"), ("large", "o", "tab:red")):
        pts = [r for r in table if r["eta"] == eta and math.isfinite(r["s_final"])]
        ax_b.scatter([r["batch_size"] for r in pts], [r["s_final"] for r in pts], marker=marker, color=col,
                     alpha=0.45, s=18)
        means = [(b, np.mean([r["s_final"] for r in pts if r["batch_size"] == b])) for b in sizes
                 if any(r["batch_size"] == b for r in pts)]
        if means:
            ax_b.plot(*zip(*means), marker=marker, color=col, lw=1.5, label=f"{eta} $\\eta$ (mean over seeds)")
        dead = [r for r in table if r["eta"] == eta and r["status"] == "diverged"]
        if dead:
            ax_b.scatter([r["batch_size"] for r in dead], [ax_b.get_ylim()[1]] * len(dead), marker="v",
                         color="tab:red", label=f"diverged ({eta})")
    ax_b.set_xscale("log")
    ax_b.set_yscale("log")
    ax_b.set_xlabel("batch size B (largest: full batch)")
    ax_b.set_ylabel(r"final sharpness $S_{final}$")
    ax_b.set_title("(b) final S against batch size")
    ax_b.legend(fontsize=8)
    fig.tight_layout()
    claims, per_b = flattening_claims(table)
    return finish(fig, claims, pdf_path, png_path, claims_path, "ext/sgd_flattening", keep_open,
                  runs=json_safe(table), per_batch_size=json_safe(per_b))
