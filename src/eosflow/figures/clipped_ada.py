"""Extension target ``figures/ext/clipped_ada.pdf``: Adam against Clipped-Ada (the follow-up paper,
arXiv 2511.12558: "restoring instabilities in Adam, by capping its denominator, improves
generalization"), and RMSprop (the authors' form: Adam with β₁ = 0) against its clipped variant.

Per run: the final validation accuracy (a diverged run at chance, 1 / number of classes), the
final preconditioned sharpness over its stability threshold ``r = λ_max(P⁻¹H) / threshold``
(the run cube's ``precond_sharpness`` at its last measurement over ``stability_threshold``;
Cohen et al. 2022), and the number of loss spikes (rises of the full-batch training loss by more
than ``min_rise`` over their onset that come back; :func:`eosflow.instability.detect_instabilities`
with every epoch eligible). Drawn per run (bars: the means of (a) and (c), the median of (b), as the
claims summarise them): (a) accuracy, (b) ``r`` (log, the threshold at 1), (c) spikes.

Claims, for each arm (registry entries ``clipped.some_c`` and ``clipped.crosses``, fixed before any
run; every seed with both runs of a comparison counts):

- (a) ``clipped.some_c``, some c improves validation accuracy over the unclipped optimizer: per c
  and seed the paired difference clipped − unclipped of final accuracies (a diverged run at
  chance, the registry's ``chance``), each c decided by the exact sign-flip test of the mean
  paired difference; a family over c fixed beforehand: holds when the c with the smallest
  p-value holds at 2.5 % / (number of c) (Holm), fails when every c fails, else undetermined
  (:data:`eosflow.claims.decision.FAMILY_RULES`). The claim reports the deciding c, and every c's
  decision in its ``family`` (and ``per_clip``);
- (b) ``clipped.crosses``, the clipped runs cross their stability threshold where the unclipped
  one does not: per seed the margin ``min(min_c (r_c − 1), 1 − r_unclipped)`` (positive exactly
  when every clipped run ends above its threshold and the unclipped one below), decided by the
  sign test of its median over seeds. A diverged run crossed its threshold for good: its ``r`` is
  inf (its seed counts, on the side the run puts it). A seed where some run has no measurement has no
  margin and does not count (the claim's note says which).

Both tests need at least 6 seeds to decide (their smallest p-value is 2^-seeds), and (a) over three
c at least 7 to hold (2^-7 <= 2.5 % / 3); with fewer the claims are undetermined and say how many
seeds would decide them (``needed``).
"""

from __future__ import annotations

import math

import numpy as np
import seaborn as sns
import xarray as xr

from ..claims import REGISTRY, Claim, claim, family_claim
from ..instability import detect_instabilities
from ..files import json_safe
from .common import finish, new_figure

#: The accuracy a diverged run counts at (fixed in the registry before any run: 1 / number of classes).
CHANCE = float(REGISTRY.param("clipped.some_c", "chance"))
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
        # a diverged run crossed its threshold for good: r = inf (the sign test counts it on its side)
        ratio = math.inf if diverged else float(p[-1]) / thr if p.size and np.isfinite(p[-1]) else math.nan
        out.append({"arm": r["arm"], "clip": r["clip"], "seed": int(r["seed"]), "lr": float(r["lr"]),
                    "optimizer": c.attrs["optimizer"], "status": c.attrs["status"], "n_steps": int(c["step"].values[-1]),
                    "final_test_acc": CHANCE if diverged or not acc.size else float(acc[-1]),
                    "precond_sharpness_final": float(p[-1]) if p.size else math.nan, "stability_threshold": thr,
                    "ratio_final": ratio, "spikes": loss_spikes(c, min_rise)})
    return out


def _by_seed(table, arm, clip, key) -> dict[int, float]:
    """{seed: value} of one arm and c (None: unclipped), values that are not NaN (a diverged run's
    r = inf counts)."""
    return {r["seed"]: r[key] for r in table if r["arm"] == arm and r["clip"] == clip and not math.isnan(r[key])}


def arm_claims(table: list[dict], arm: str) -> tuple[list[Claim], dict]:
    """The two claims of one arm (module docstring) and, per c, the paired differences of (a) with
    their decision."""
    name = ARM_NAMES[arm]
    clips = sorted({r["clip"] for r in table if r["arm"] == arm and r["clip"] is not None})
    all_seeds = sorted({r["seed"] for r in table if r["arm"] == arm})
    base = _by_seed(table, arm, None, "final_test_acc")
    diffs, seeds_of = {}, {}
    for c in clips:
        got = _by_seed(table, arm, c, "final_test_acc")
        seeds_of[c] = sorted(set(got) & set(base))
        diffs[f"{c:g}"] = [got[s] - base[s] for s in seeds_of[c]]
    lost = [s for s in all_seeds if any(s not in seeds_of[c] for c in clips)]
    claim_a = family_claim("clipped.some_c", diffs, fmt={"arm": name},
                           note=f"a diverged run counts at chance ({CHANCE:g}); "
                                + (f"seeds without both runs of some c (not counted there): {lost}" if lost
                                   else f"every seed has every run ({len(all_seeds)} seeds)"))
    options = claim_a.family["options"]
    per_c = {f"{c:g}": {"seeds": seeds_of[c], "diffs": diffs[f"{c:g}"], **options[f"{c:g}"]} for c in clips}

    r0 = _by_seed(table, arm, None, "ratio_final")
    rc = {c: _by_seed(table, arm, c, "ratio_final") for c in clips}
    seeds = sorted(set(r0).intersection(*[set(v) for v in rc.values()]))
    margins = [min(min(rc[c][s] - 1.0 for c in clips), 1.0 - r0[s]) for s in seeds]
    dropped = [s for s in all_seeds if s not in seeds]
    note = (f"median r unclipped {np.median([r0[s] for s in seeds]):.3g}; " + ", ".join(
        f"c={c:g}: {np.median([rc[c][s] for s in seeds]):.3g}" for c in clips)) if seeds else \
        "no seed with every run's final preconditioned sharpness"
    if dropped:
        note += f"; seeds {dropped} not counted: some run has no final preconditioned sharpness"
    claim_b = claim("clipped.crosses", margins, fmt={"arm": name}, note=note)
    return [claim_a, claim_b], per_c


def make_clipped_ada(rows: list[dict], cubes: list[xr.Dataset], pdf_path, png_path, claims_path,
                     min_rise: float = 1.0, keep_open: bool = False):
    """Draw the figure from the runs (``rows``: :func:`~eosflow.config.optimizers.clipped_ada_runs`,
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
    keys = (("final_test_acc", "validation accuracy", "(a) final validation accuracy (diverged: at chance; bars: means)"),
            ("ratio_final", r"final $\lambda_{max}(P^{-1}H)$ / threshold", "(b) preconditioned sharpness / threshold (bars: medians)"),
            ("spikes", "loss spikes", "(c) loss spikes (bars: means)"))
    rng = np.random.default_rng(0)
    for ax, (key, ylabel, title) in zip(axes, keys):
        for g in groups:
            vals = [r[key] for r in table if (r["arm"], r["clip"]) == g and math.isfinite(r[key])]
            x = xpos[g]
            if vals:
                ax.scatter(x + rng.uniform(-0.12, 0.12, len(vals)), vals, s=16, alpha=0.5, color=colours[g[0]],
                           marker="o" if g[1] is None else "D")
                centre = np.median(vals) if key == "ratio_final" else np.mean(vals)  # as the claims summarise
                ax.hlines(centre, x - 0.3, x + 0.3, color="k", lw=1.5)
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
