"""Figure 2: the top Hessian eigenvectors rotate during instabilities; stable training undoes it.

The baseline is one full-batch GD run above its stability limit with the top-k eigenvalues
measured every epoch. :func:`eosflow.plans.plan_fig2` (the ``fig2_instabilities`` checkpoint
rule) detects its loss spikes, picks the largest, and derives from them the epochs whose
eigenvectors are stored (``vector_steps``), the branch runs' switch epochs and fig3's snapshot
steps. :func:`make_fig2` draws (k: the number of stored eigenvectors, ``fig2.hessian.k``):

- left: L(θ) and S(θ) over epochs with 2/η, the chosen instabilities shaded and numbered;
- top row, one panel per chosen instability: ``|⟨vᵢ(t), vᵢ(onset)⟩|`` for i = 1..k (coloured) and
  the top-k subspace similarity to the onset's eigenspace (black), from onset to end, the rising
  part (onset to peak: the instability proper, where η·S > 2 and the loss rises) shaded;
- bottom: the branch runs (switch to a small η at several timings inside one instability,
  coloured): subspace similarity of their top-k eigenspace to the baseline's at the onset; the
  baseline's own curve in black.
"""

from __future__ import annotations

import math

import numpy as np
import seaborn as sns
import xarray as xr

from ..similarity import eigvec_similarity, spearman, subspace_similarity
from ..claims import Claim, bootstrap_interval, check
from .common import finish, new_figure


def _vectors(ds: xr.Dataset) -> dict[int, np.ndarray]:
    return {int(t): ds["eigvec"].sel(vstep=t).values for t in ds["vstep"].values} if "eigvec" in ds else {}


def rotation_curves(vecs: dict[int, np.ndarray], ref: np.ndarray, steps) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps with vectors, per-eigenvector |cos| to ``ref`` (n, k), top-k subspace similarity (n,))."""
    steps = np.array([t for t in steps if t in vecs], dtype=int)
    per = np.array([np.asarray(eigvec_similarity(vecs[t], ref)) for t in steps]).reshape(len(steps), -1)
    sub = np.array([subspace_similarity(vecs[t], ref) for t in steps])
    return steps, per, sub


#: Minimum evidence (fixed before any run): replicates of the effect inside the run.
MIN_INSTABILITIES = 3
MIN_BRANCHES = 3


def fig2_claims(plan: dict, rot_spearman: list[float], reverts: list[float], k: int) -> list[Claim]:
    """The claims: at least ``plan["n_instabilities"]`` spikes (the number drawn,
    ``fig2.instabilities``; a property of the drawn run); the top-``k`` eigenspace rotates while the
    loss rises (median over the chosen spikes, ≥ :data:`MIN_INSTABILITIES` of them, with a
    bootstrap interval); branches revert (mean over ≥ :data:`MIN_BRANCHES` branches, interval)."""
    n_spikes, n_required = len(plan["instabilities"]), int(plan["n_instabilities"])
    return [
        check(f"the run goes through at least {n_required} instabilities",
              f"number of loss spikes (eta*S > 2, loss rising by >= {plan['min_rise']:g} relative)",
              n_spikes, ">=", n_required, note="a property of the run drawn (one seed)",
              evidence={"runs": 1}, minimum={"runs": 1}),
        check("eigenvectors rotate steadily during an instability",
              f"median over the chosen instabilities of Spearman(epoch, top-{k} subspace similarity to the onset) "
              "while the loss rises (onset to peak)",
              float(np.median(rot_spearman)) if rot_spearman else None, "<", 0,
              note="" if rot_spearman else "no instability with stored eigenvectors",
              interval=bootstrap_interval(rot_spearman, np.median), evidence={"instabilities": len(rot_spearman)},
              minimum={"instabilities": MIN_INSTABILITIES}),
        check("stable training undoes the rotation (branches revert)",
              "mean over branch runs of (similarity to the onset eigenspace at the branch's end - at its switch)",
              float(np.mean(reverts)) if reverts else None, ">", 0,
              note="" if reverts else "no branch runs (no instability to branch in)",
              interval=bootstrap_interval(reverts), evidence={"branches": len(reverts)},
              minimum={"branches": MIN_BRANCHES}),
    ]


def make_fig2(baseline: xr.Dataset, vectors: xr.Dataset, branches: list[xr.Dataset], plan: dict,
              pdf_path, png_path, claims_path, keep_open: bool = False):
    """Draw figure 2 and write its claims. ``vectors``: the baseline's eigenvectors at
    ``plan["vector_steps"]``; ``branches``: the branch runs' cubes (with eigenvectors)."""
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
    ax.set_title(rf"{plan['setting']}, $\eta$ = {lr:g}: {len(plan['instabilities'])} spikes")

    rot_spearman, whole = [], []
    colors = sns.color_palette("deep", 10)
    for j, s in enumerate(chosen):
        a = fig.add_subplot(grid[0, j + 1])
        if s["onset"] in vecs:
            t, per, sub = rotation_curves(vecs, vecs[s["onset"]], range(s["onset"], s["end"] + 1))
            a.axvspan(0, s["peak"] - s["onset"], color="0.92", zorder=0)
            for i in range(per.shape[1]):
                a.plot(t - s["onset"], per[:, i], color=colors[i], lw=0.9, alpha=0.8, label=f"$v_{i + 1}$")
            a.plot(t - s["onset"], sub, color="k", lw=1.8, label=f"top-{k} subspace")
            rising = t <= s["peak"]
            rho = spearman(t[rising], sub[rising])
            whole.append(spearman(t, sub))
            if math.isfinite(rho):
                rot_spearman.append(rho)
            a.set_title(f"instability {j + 1}: epochs {s['onset']}-{s['end']} (peak {s['peak']})\n"
                        f"Spearman to the peak = {rho:.2f}")
        a.set_ylim(-0.02, 1.02)
        a.set_xlabel("epochs since onset")
        if j == 0:
            a.set_ylabel("similarity to onset")
            a.legend(fontsize=7, loc="lower left")

    reverts = []
    bottom = fig.add_subplot(grid[1, 1:])
    b = plan["branch"]
    if b["instability"] is not None:
        inst = chosen[b["instability"] - 1]
        ref = vecs.get(inst["onset"])
        if ref is not None:
            t, _, sub = rotation_curves(vecs, ref, sorted(vecs))
            keep = t >= inst["onset"]
            bottom.plot(t[keep], sub[keep], color="k", lw=1.8, label=rf"baseline ($\eta$ = {lr:g})")
            pal = sns.color_palette("viridis", len(branches))
            for c, br in zip(pal, sorted(branches, key=lambda d: int(d["vstep"].values[0]))):
                bt, _, bsub = rotation_curves(_vectors(br), ref, br["vstep"].values)
                if bt.size:
                    bottom.plot(bt, bsub, color=c, lw=1.4, label=f"switch at epoch {bt[0]}")
                    bottom.axvline(bt[0], color=c, ls=":", lw=1)
                    reverts.append(float(bsub[-1] - bsub[0]))
        bottom.set_title(rf"branches: $\eta$ → {b['lr_small']:g} inside instability {b['instability']}")
    else:
        bottom.set_title("no instability to branch in")
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_xlabel("epoch")
    bottom.set_ylabel(f"top-{k} subspace similarity\nto the onset eigenspace")
    if bottom.lines:
        bottom.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    return finish(fig, fig2_claims(plan, rot_spearman, reverts, k), pdf_path, png_path, claims_path, "fig2",
                  keep_open, instabilities=plan["instabilities"], chosen=chosen, rotation_spearman=rot_spearman,
                  rotation_spearman_onset_to_end=whole, branch_reverts=reverts, branch_epochs=b["epochs"])
