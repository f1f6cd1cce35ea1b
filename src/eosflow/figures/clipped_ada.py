"""Extension target ``figures/ext/clipped_ada.pdf``: Adam against Clipped-Ada (the follow-up paper,
arXiv 2511.12558: "restoring instabilities in Adam, by capping its denominator, improves
generalization"), and RMSprop (the authors' form: Adam with β₁ = 0) against its clipped variant.

Per run: the final validation accuracy (a diverged run at chance, 1 / number of classes), the
final preconditioned sharpness over its stability threshold ``r = λ_max(P⁻¹H) / threshold``
(the run cube's ``precond_sharpness`` at its last measurement over ``stability_threshold``;
Cohen et al. 2022), and the number of loss spikes (rises of the full-batch training loss by more
than ``min_rise`` over their onset that come back; :func:`eosflow.instability.detect_instabilities`
with every epoch eligible). Drawn: (a) accuracy, (b) ``r`` (log, the threshold at 1), (c) spikes.

Claims, for each arm (statistics and thresholds fixed in the issue before any run; means over
seeds with 95 % bootstrap intervals, at least :data:`MIN_SEEDS` seeds):

- (a) some c improves validation accuracy over the unclipped optimizer: per c the paired
  difference (same seed) of accuracies, clipped − unclipped; holds when some c's interval lies
  above 0, fails when every c's lies at or below 0, else undetermined; the claim reports the
  deciding c (the best holding, else the best undecided, else the best);
- (b) the clipped runs cross their stability threshold where the unclipped one does not: per seed
  the margin ``min(min_c (r_c − 1), 1 − r_unclipped)`` (positive exactly when every clipped run
  ends above its threshold and the unclipped one below); holds when its interval lies above 0.
"""

from __future__ import annotations

import math

import numpy as np
import seaborn as sns
import xarray as xr

from ..claims import Claim, bootstrap_interval, check
from ..instability import detect_instabilities
from .common import finish, json_safe, new_figure

#: Minimum evidence (fixed before any run): seeds with every run the statistic needs.
MIN_SEEDS = 3
CHANCE = 0.1
ARM_NAMES = {"adam": "Adam", "rmsprop": "RMSprop"}


def loss_spikes(cube: xr.Dataset, min_rise: float) -> int:
    """Loss spikes of a run: rises of the training loss above ``1 + min_rise`` times their onset's
    that return (NaN/inf losses count as a spike's peak)."""
    loss = cube["train_loss"].values.astype(float)
    return len(detect_instabilities(loss, np.full(loss.shape, np.inf), 1.0, min_rise=min_rise))


def summarize(rows: list[dict], cubes: list[xr.Dataset], min_rise: float) -> list[dict]:
    out = []
    for r, c in zip(rows, cubes):
        acc = c["test_acc"].values.astype(float)
        acc = acc[np.isfinite(acc)]
        diverged = c.attrs["status"] == "diverged"
        p = c["precond_sharpness"].values.astype(float)
        thr = float(c.attrs["stability_threshold"])
        ratio = float(p[-1]) / thr if p.size and np.isfinite(p[-1]) and not diverged else math.nan
        out.append({"arm": r["arm"], "clip": r["clip"], "seed": int(r["seed"]), "lr": float(r["lr"]),
                    "optimizer": c.attrs["optimizer"], "status": c.attrs["status"], "n_steps": int(c["step"].values[-1]),
                    "final_test_acc": CHANCE if diverged or not acc.size else float(acc[-1]),
                    "precond_sharpness_final": float(p[-1]) if p.size else math.nan, "stability_threshold": thr,
                    "ratio_final": ratio, "spikes": loss_spikes(c, min_rise)})
    return out


def _by_seed(table, arm, clip, key) -> dict[int, float]:
    return {r["seed"]: r[key] for r in table if r["arm"] == arm and r["clip"] == clip and math.isfinite(r[key])}


def arm_claims(table: list[dict], arm: str) -> tuple[list[Claim], dict]:
    name = ARM_NAMES[arm]
    clips = sorted({r["clip"] for r in table if r["arm"] == arm and r["clip"] is not None})
    base = _by_seed(table, arm, None, "final_test_acc")
    per_c = {}
    for c in clips:
        got = _by_seed(table, arm, c, "final_test_acc")
        diffs = [got[s] - base[s] for s in sorted(set(got) & set(base))]
        iv = bootstrap_interval(diffs)
        v = check("", "", np.mean(diffs) if diffs else None, ">", 0.0, interval=iv, evidence={"seeds": len(diffs)},
                  minimum={"seeds": MIN_SEEDS}).verdict
        per_c[c] = {"diffs": diffs, "mean": float(np.mean(diffs)) if diffs else None, "interval": iv, "verdict": v}
    order = {"holds": 0, "undetermined": 1, "fails": 2}
    dc = min(clips, key=lambda c: (order[per_c[c]["verdict"]], -(per_c[c]["mean"] if per_c[c]["mean"] is not None
                                                               else -math.inf)))
    d = per_c[dc]
    claim_a = check(f"{name}: some c improves validation accuracy over the unclipped optimizer",
                    f"mean over seeds of acc(clipped, c) - acc(unclipped), paired by seed, at the deciding c ({dc:g})",
                    d["mean"], ">", 0.0,
                    note="every c: " + ", ".join(f"c={c:g}: {per_c[c]['mean']:+.4f} ({per_c[c]['verdict']})"
                                                 if per_c[c]["mean"] is not None else f"c={c:g}: n/a" for c in clips),
                    interval=d["interval"], evidence={"seeds": len(d["diffs"])}, minimum={"seeds": MIN_SEEDS})
    r0 = _by_seed(table, arm, None, "ratio_final")
    rc = {c: _by_seed(table, arm, c, "ratio_final") for c in clips}
    seeds = sorted(set(r0).intersection(*[set(v) for v in rc.values()]))
    margins = [min(min(rc[c][s] - 1.0 for c in clips), 1.0 - r0[s]) for s in seeds]
    claim_b = check(f"{name}: the clipped runs cross their stability threshold where the unclipped one does not",
                    "mean over seeds of min(min over c of (r_c - 1), 1 - r_unclipped), r = final lambda_max(P^-1 H) "
                    "/ threshold",
                    np.mean(margins) if margins else None, ">", 0.0,
                    note=(f"mean r unclipped {np.mean([r0[s] for s in seeds]):.3g}; " + ", ".join(
                        f"c={c:g}: {np.mean([rc[c][s] for s in seeds]):.3g}" for c in clips)) if seeds else
                    "no seed with every run's final preconditioned sharpness",
                    interval=bootstrap_interval(margins), evidence={"seeds": len(margins)},
                    minimum={"seeds": MIN_SEEDS})
    return [claim_a, claim_b], {f"{c:g}": per_c[c] for c in clips}


def make_clipped_ada(rows: list[dict], cubes: list[xr.Dataset], pdf_path, png_path, claims_path,
                     min_rise: float = 1.0, keep_open: bool = False):
    """Draw the figure from the runs (``rows``: :func:`~eosflow.optimizer_runs.clipped_ada_runs`,
    ``cubes`` in the same order) and write its claims."""
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    table = summarize(rows, cubes, min_rise)
    arms = list(dict.fromkeys(r["arm"] for r in table))
    groups = []  # (arm, clip) in drawing order
    for arm in arms:
        groups += [(arm, None)] + [(arm, c) for c in sorted({r["clip"] for r in table
                                                               if r["arm"] == arm and r["clip"] is not None})]
    xpos = {g: i + 0.6 * arms.index(g[0]) for i, g in enumerate(groups)}
    labels = [f"{ARM_NAMES[a]}" if c is None else f"c={c:g}" for a, c in groups]
    colours = dict(zip(arms, ("tab:blue", "tab:orange")))
    fig = new_figure(figsize=(13, 4.4))
    axes = fig.subplots(1, 3)
    keys = (("final_test_acc", "validation accuracy", "(a) final validation accuracy"),
            ("ratio_final", r"final $\lambda_{max}(P^{-1}H)$ / threshold", "(b) preconditioned sharpness / threshold"),
            ("spikes", "loss spikes", "(c) loss spikes"))
    rng = np.random.default_rng(0)
    for ax, (key, ylabel, title) in zip(axes, keys):
        for g in groups:
            vals = [r[key] for r in table if (r["arm"], r["clip"]) == g and math.isfinite(r[key])]
            x = xpos[g]
            if vals:
                ax.scatter(x + rng.uniform(-0.12, 0.12, len(vals)), vals, s=16, alpha=0.5, color=colours[g[0]],
                           marker="o" if g[1] is None else "D")
                ax.hlines(np.mean(vals), x - 0.3, x + 0.3, color="k", lw=1.5)
            dead = [r for r in table if (r["arm"], r["clip"]) == g and r["status"] == "diverged"]
            if dead and key == "final_test_acc":
                ax.scatter([x] * len(dead), [CHANCE] * len(dead), marker="v", color="tab:red")
        ax.set_xticks([xpos[g] for g in groups], labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
    axes[1].set_yscale("log")
    axes[1].axhline(1.0, color="k", ls=":", lw=1.2)
    fig.tight_layout()
    claims, per_c = [], {}
    for arm in arms:
        cl, pc = arm_claims(table, arm)
        claims += cl
        per_c[arm] = pc
    return finish(fig, claims, pdf_path, png_path, claims_path, "ext/clipped_ada", keep_open,
                  runs=json_safe(table), per_clip=json_safe(per_c))
