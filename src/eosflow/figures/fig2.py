"""Figure 2: the top Hessian eigenvectors rotate during instabilities; stable training undoes it.

One baseline per seed (``fig2.seeds``): a full-batch GD run above its stability limit (η =
``fig2.lr_relative`` × that seed's own η_eos(θ₀), or an absolute ``fig2.lr``) with the top-k
eigenvalues measured every epoch. :func:`eosflow.plans.plan_fig2` (the ``fig2_instabilities``
checkpoint rule, one job per seed) detects its loss spikes, picks the largest, and derives from them
the epochs whose eigenvectors are stored (``vector_steps``), the branch runs' switch epochs and
fig3's snapshot steps. :func:`make_fig2` draws the FIRST seed in detail (k: the number of stored
eigenvectors, ``fig2.hessian.k``):

- left: L(θ) and S(θ) over epochs with 2/η, the chosen instabilities shaded and numbered;
- top row, one panel per chosen instability: ``|⟨vᵢ(t), vᵢ(onset)⟩|`` for i = 1..k (coloured) and
  the top-k subspace similarity to the onset's eigenspace (black), from onset to end, the rising
  part (onset to peak: the instability proper, where η·S > 2 and the loss rises) shaded;
- bottom: the branch runs (switch to a small η at several timings inside one instability,
  coloured): subspace similarity of their top-k eigenspace to the baseline's at the onset; the
  baseline's own curve in black.

The claims (registry ``fig2.*``) take one value per seed (:func:`seed_values`), never replicates
within one run: the number of spikes of the seed's baseline (``fig2.instabilities``); the median
over its chosen spikes of the rising part's Spearman(epoch, subspace similarity)
(``fig2.rotation``); the mean over its branch runs of the similarity's change from switch to end
(``fig2.revert``). Each is the median over seeds, decided by the sign test. A seed whose value
cannot be computed (no chosen spike with eigenvectors, no branch run) drops out of that claim with
a note; ``evidence`` counts the seeds used, against the registry's minimum.
"""

from __future__ import annotations

import math

import numpy as np
import seaborn as sns
import xarray as xr

from ..claims import Claim, claim
from ..similarity import eigvec_similarity, spearman, subspace_similarity
from .common import finish, new_figure


def _vectors(ds: xr.Dataset) -> dict[int, np.ndarray]:
    return {int(t): ds["eigvec"].sel(vstep=t).values for t in ds["vstep"].values} if "eigvec" in ds else {}


def rotation_curves(vecs: dict[int, np.ndarray], ref: np.ndarray, steps) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps with vectors, per-eigenvector |cos| to ``ref`` (n, k), top-k subspace similarity (n,))."""
    steps = np.array([t for t in steps if t in vecs], dtype=int)
    per = np.array([np.asarray(eigvec_similarity(vecs[t], ref)) for t in steps]).reshape(len(steps), -1)
    sub = np.array([subspace_similarity(vecs[t], ref) for t in steps])
    return steps, per, sub


def spike_rotation(vecs: dict[int, np.ndarray], spike: dict) -> float:
    """Spearman(epoch, top-k subspace similarity to the onset's eigenspace) over the epochs after the
    onset up to the peak of ``spike`` (a plan's chosen instability); NaN without the onset's vectors or
    with fewer than 3 such epochs. The onset itself is left out: its similarity to itself is 1, the
    largest possible, and would make the correlation negative whatever the eigenspace does after it
    (with m epochs after a fixed maximum, Spearman is at most 1 - 6/(m + 1))."""
    if spike["onset"] not in vecs:
        return math.nan
    t, _, sub = rotation_curves(vecs, vecs[spike["onset"]], range(spike["onset"] + 1, spike["peak"] + 1))
    return spearman(t, sub)


def branch_reverts(vecs: dict[int, np.ndarray], branches: list[xr.Dataset], plan: dict) -> list[float]:
    """Per branch run (in switch order): its top-k subspace similarity to the baseline's onset
    eigenspace at its end minus at its switch; [] without branches or the onset's vectors."""
    b = plan["branch"]
    if b["instability"] is None:
        return []
    ref = vecs.get(plan["chosen"][b["instability"] - 1]["onset"])
    if ref is None:
        return []
    out = []
    for br in sorted(branches, key=lambda d: int(d["vstep"].values[0])):
        _, _, bsub = rotation_curves(_vectors(br), ref, br["vstep"].values)
        if bsub.size:
            out.append(float(bsub[-1] - bsub[0]))
    return out


def seed_values(vectors: xr.Dataset, branches: list[xr.Dataset], plan: dict) -> dict:
    """One seed's values for the claims (and the claims file): its spike count, the rising part's
    Spearman of each chosen spike with vectors and their median (``rotation``, None without any),
    each branch's revert and their mean (``revert``, None without branches)."""
    vecs = _vectors(vectors)
    rhos = [spike_rotation(vecs, s) for s in plan["chosen"]]
    rot = [r for r in rhos if math.isfinite(r)]
    reverts = branch_reverts(vecs, branches, plan)
    return {"seed": int(plan["seed"]), "lr": float(plan["lr"]), "lr_relative": plan.get("lr_relative"),
            "eta_eos": plan.get("eta_eos"), "spikes": len(plan["instabilities"]), "chosen": len(plan["chosen"]),
            "rotation_spearman": rot, "rotation": float(np.median(rot)) if rot else None,
            "branch_epochs": list(plan["branch"]["epochs"]), "branch_reverts": reverts,
            "revert": float(np.mean(reverts)) if reverts else None}


def _per_seed(values: list[dict], key: str, why: str) -> tuple[list[float], str]:
    """The seeds' values of ``key`` (seeds without one left out) and the claim's note."""
    used = [(v["seed"], v[key]) for v in values if v[key] is not None]
    left = [v["seed"] for v in values if v[key] is None]
    note = "per seed: " + (", ".join(f"seed {s}: {x:.4g}" for s, x in used) or "none")
    if left:
        note += f"; left out (no value): seed{'s' if len(left) > 1 else ''} {', '.join(map(str, left))} ({why})"
    return [x for _, x in used], note


def fig2_claims(values: list[dict], k: int) -> list[Claim]:
    """The claims from every seed's :func:`seed_values` (registry ``fig2.instabilities``,
    ``fig2.rotation``, ``fig2.revert``): one value per seed, the median over seeds."""
    spikes, n_note = _per_seed(values, "spikes", "")
    rot, r_note = _per_seed(values, "rotation", "no chosen instability with stored eigenvectors")
    rev, b_note = _per_seed(values, "revert", "no branch runs: no instability to branch in")
    return [claim("fig2.instabilities", spikes, note=n_note, evidence={"seeds": len(spikes)}),
            claim("fig2.rotation", rot, fmt={"k": k}, note=r_note, evidence={"seeds": len(rot)}),
            claim("fig2.revert", rev, note=b_note, evidence={"seeds": len(rev)})]


def _eta_label(plan: dict) -> str:
    rel = plan.get("lr_relative")
    eta = rf"$\eta$ = {plan['lr']:.4g}"
    return eta + (rf" = {rel:g} $\eta_{{eos}}$" if rel is not None else "")


def make_fig2(runs: list[dict], pdf_path, png_path, claims_path, keep_open: bool = False):
    """Draw figure 2 from the first seed and write the claims over every seed. ``runs``: one dict
    per seed (in ``fig2.seeds`` order) with ``plan`` (its :func:`eosflow.plans.plan_fig2` plan) and
    ``vectors`` (the baseline's eigenvectors at ``plan["vector_steps"]``), ``branches`` (the branch
    runs' cubes, with eigenvectors); the first also with ``baseline`` (its cube), which is drawn."""
    if not runs:
        raise ValueError("make_fig2: no seeds")
    values = [seed_values(r["vectors"], r["branches"], r["plan"]) for r in runs]
    first = runs[0]
    baseline, vectors, branches, plan = first["baseline"], first["vectors"], first["branches"], first["plan"]
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.0)
    chosen = plan["chosen"]
    ncol = max(len(chosen), 1)
    fig = new_figure(figsize=(4.0 + 3.3 * ncol, 7.0))
    grid = fig.add_gridspec(2, ncol + 1, width_ratios=[1.4] + [1] * ncol)
    lr = plan["lr"]
    vecs = _vectors(vectors)
    k = int(vectors.sizes.get("eig", baseline.sizes.get("eig", 0)))

    ax = fig.add_subplot(grid[:, 0])
    steps, loss = baseline["step"].values, baseline["train_loss"].values
    ax.plot(steps, loss, color="tab:blue", lw=0.8, label=r"$L(\theta)$")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(r"training loss $L(\theta)$", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(baseline["hstep"].values, baseline["sharpness"].values, color="tab:red", lw=0.8)
    ax2.axhline(2.0 / lr, color="k", ls="--", lw=1)
    ax2.text(steps[-1], 2.0 / lr, r" $2/\eta$", va="bottom", ha="right")
    ax2.set_ylabel(r"sharpness $S(\theta)$", color="tab:red")
    ax2.grid(False)
    for j, s in enumerate(chosen):
        ax.axvspan(s["onset"], s["end"], color="0.85", zorder=0)
        ax.text((s["onset"] + s["end"]) / 2, ax.get_ylim()[1], str(j + 1), ha="center", va="top")
    ax.set_title(f"{plan['setting']}, seed {plan['seed']} (drawn), {_eta_label(plan)}:\n"
                 f"{len(plan['instabilities'])} spikes; claims over seeds {[v['seed'] for v in values]}")

    whole = []
    colors = sns.color_palette("deep", 10)
    for j, s in enumerate(chosen):
        a = fig.add_subplot(grid[0, j + 1])
        if s["onset"] in vecs:
            t, per, sub = rotation_curves(vecs, vecs[s["onset"]], range(s["onset"], s["end"] + 1))
            a.axvspan(0, s["peak"] - s["onset"], color="0.92", zorder=0)
            for i in range(per.shape[1]):
                a.plot(t - s["onset"], per[:, i], color=colors[i], lw=0.9, alpha=0.8, label=f"$v_{i + 1}$")
            a.plot(t - s["onset"], sub, color="k", lw=1.8, label=f"top-{k} subspace")
            whole.append(spearman(t, sub))
            a.set_title(f"instability {j + 1}: epochs {s['onset']}-{s['end']} (peak {s['peak']})\n"
                        f"Spearman to the peak = {spike_rotation(vecs, s):.2f}")
        a.set_ylim(-0.02, 1.02)
        a.set_xlabel("epochs since onset")
        if j == 0:
            a.set_ylabel("similarity to onset")
            a.legend(fontsize=7, loc="lower left")

    bottom = fig.add_subplot(grid[1, 1:])
    b = plan["branch"]
    if b["instability"] is not None:
        inst = chosen[b["instability"] - 1]
        ref = vecs.get(inst["onset"])
        if ref is not None:
            t, _, sub = rotation_curves(vecs, ref, sorted(vecs))
            keep = t >= inst["onset"]
            bottom.plot(t[keep], sub[keep], color="k", lw=1.8, label=rf"baseline ($\eta$ = {lr:.4g})")
            pal = sns.color_palette("viridis", len(branches))
            for c, br in zip(pal, sorted(branches, key=lambda d: int(d["vstep"].values[0]))):
                bt, _, bsub = rotation_curves(_vectors(br), ref, br["vstep"].values)
                if bt.size:
                    bottom.plot(bt, bsub, color=c, lw=1.4, label=f"switch at epoch {bt[0]}")
                    bottom.axvline(bt[0], color=c, ls=":", lw=1)
        bottom.set_title(rf"seed {plan['seed']}'s branches: $\eta$ → {b['lr_small']:g} inside instability "
                         f"{b['instability']}")
    else:
        bottom.set_title(f"seed {plan['seed']}: no instability to branch in")
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_xlabel("epoch")
    bottom.set_ylabel(f"top-{k} subspace similarity\nto the onset eigenspace")
    if bottom.lines:
        bottom.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    return finish(fig, fig2_claims(values, k), pdf_path, png_path, claims_path, "fig2", keep_open,
                  drawn_seed=int(plan["seed"]), seeds=values, instabilities=plan["instabilities"], chosen=chosen,
                  rotation_spearman_onset_to_end=whole)
