"""Figure 3: loss and sharpness along the gradient direction at snapshots of one instability, per seed.

Input: one slices dataset per seed (:func:`eosflow.jobs.slices.run_slices`; the workflow keeps them
as ``results/figures/fig3/seed<s>/slices.nc``, fig12's as ``results/figures/fig12/seed<s>/slices.nc``),
each with dims ``(snapshot, point)``, the snapshots of that seed's ``fig3.instability``-th chosen
spike. A seed whose run had too few spikes has no slices file (its plan's steps are empty): it is
named in the claims' notes and in ``left_out``.

The figure draws the first seed with slices. One column per snapshot (time order, coloured by time
with viridis): top row ``L(θ)``, bottom row ``S(θ)`` along the slice ``θ_{t−1} + α d``,
``d = −∇L(θ_{t−1}) / ‖∇L(θ_{t−1})‖``. Dotted vertical line: the previous parameters (``α = 0``);
solid: the current ones (``α = s``, the step length). Dashed horizontal line on the S row: the
stability limit ``2/η``. Expected: as the instability grows the S-curve changes shape until a
flatter region lets training return to stability.

Claims (registry ``slices.flatter``, ``slices.stable_again``), one value per seed, the median over
seeds (sign test): the sharpness at the current point is lower at the last snapshot than at the
first (``S_cur(last) / S_cur(first) < 1``), and the last snapshot is back to stability
(``η S_cur(last) / 2 < 1``). A seed whose value is not finite (a diverged point, or a first
``S_cur`` that is not positive) drops out of that claim with a note; ``evidence`` counts the seeds
used. Non-finite values are skipped when drawing; axis limits are always finite.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib import colormaps
from matplotlib.lines import Line2D

from ..claims import Claim, claim
from .common import finish, new_figure


def _finite_limits(*arrays, pad: float = 0.06) -> tuple[float, float]:
    """Padded (lo, hi) over the finite values of ``arrays``; ``(0, 1)`` when there are none."""
    v = np.concatenate([np.ravel(np.asarray(a, dtype=float)) for a in arrays]) if arrays else np.array([])
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    width = hi - lo
    if not math.isfinite(width):  # e.g. ±1e308: fall back to a crude, finite range
        return -1e300, 1e300
    if width == 0:
        width = abs(hi) if hi != 0 else 1.0
    return lo - pad * width, hi + pad * width


def _curve(alpha, values, marks):
    """The slice with the two marked points merged in, sorted by α (NaNs kept: they break the line)."""
    a = np.r_[np.asarray(alpha, float), [m[0] for m in marks]]
    v = np.r_[np.asarray(values, float), [m[1] for m in marks]]
    keep = np.isfinite(a)
    order = np.argsort(a[keep], kind="stable")
    return a[keep][order], v[keep][order]


def _f(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def unsliced_reason(plan: dict, instability_key: str) -> str:
    """Why a seed's plan has no snapshot steps: too few chosen spikes."""
    return (f"fewer than {plan[instability_key]} chosen loss spikes rising by {plan['min_rise']:g} "
            f"({len(plan['instabilities'])} found, {len(plan['chosen'])} chosen, eta = {plan['lr']:.4g})")


def nothing_to_slice(figure: str, run: str, plans: list[dict], instability_key: str) -> str:
    """The message when no seed's run has a spike to slice, naming the keys that would give one."""
    per = "; ".join(f"seed {p['seed']}: {unsliced_reason(p, instability_key)}" for p in plans)
    return (f"eosflow: {figure} has nothing to slice: no {run} run has {figure}.instability = "
            f"{plans[0][instability_key] if plans else '?'} loss spikes rising by {run}.min_rise ({per}). "
            f"Raise {run}.lr_relative (or {run}.lr), train longer ({run}.train.max_epochs) or lower {run}.min_rise.")


def _by_seed(slices) -> dict[int, xr.Dataset]:
    """``{seed: dataset}`` from a mapping, or from one dataset (its seed from its config record, else 0)."""
    if isinstance(slices, xr.Dataset):
        seed = json.loads(slices.attrs.get("config", "{}") or "{}").get("seed", 0)
        return {int(seed): slices}
    if not isinstance(slices, Mapping):
        raise TypeError("slices: a dataset or a mapping {seed: dataset}")
    return {int(k): v for k, v in slices.items()}


def slice_values(ds: xr.Dataset) -> dict:
    """One seed's values for the claims, from its slices (snapshots taken in step order): the first
    and last snapshot's steps and ``S_cur``, ``ratio`` = S_cur(last) / S_cur(first) and ``stable``
    = η S_cur(last) / 2 (inf where the spike blew up: the loss at the last snapshot's current point is
    not finite, so no S was measured there, or S_cur(last) is +inf; that counts against both claims,
    never left out. None where a value is NaN otherwise, with the reason in
    ``ratio_note``/``stable_note``)."""
    ds = ds.sortby("step")
    lr = float(ds.attrs["lr"])
    s_cur = ds["sharpness_cur"].values.astype(float)
    steps = ds["step"].values.astype(int)
    first, last = (s_cur[0], s_cur[-1]) if s_cur.size else (math.nan, math.nan)
    ratio, ratio_note = None, ""
    loss_last = float(ds["loss_cur"].values[-1]) if "loss_cur" in ds and s_cur.size else 0.0
    blown_up = last == math.inf or not math.isfinite(loss_last)  # counted against both claims (inf)
    if blown_up:
        last = math.inf
    if len(s_cur) < 2:
        ratio_note = "fewer than two snapshots"
    elif not math.isfinite(first) or not (math.isfinite(last) or blown_up):
        ratio_note = "S at the current point is not finite at the first or last snapshot"
    elif first <= 0:
        ratio_note = f"S at the current point of the first snapshot is {first:g} (not positive)"
    else:
        ratio = float(last / first)
    stable = float(lr * last / 2) if math.isfinite(last) or blown_up else None
    return {"lr": lr, "steps": [int(steps[0]), int(steps[-1])] if steps.size else [],
            "sharpness_cur_first": _f(first), "sharpness_cur_last": _f(last), "ratio": ratio, "ratio_note": ratio_note,
            "stable": stable,
            "stable_note": "" if stable is not None else "S at the current point of the last snapshot is not finite"}


def _claim_over_seeds(claim_id: str, per: dict[int, dict], key: str, left_out: dict[int, str]) -> Claim:
    used = [(s, v[key]) for s, v in per.items() if v[key] is not None]
    parts = [f"seed {s}: {x:.4g} (epochs {per[s]['steps'][0]}-{per[s]['steps'][1]})" for s, x in used]
    note = "per seed: " + (", ".join(parts) or "none")
    dropped = [f"seed {s} ({v[key + '_note']})" for s, v in per.items() if v[key] is None]
    dropped += [f"seed {s} (no slices: {why})" for s, why in left_out.items()]
    if dropped:
        note += "; left out: " + ", ".join(dropped)
    return claim(claim_id, [x for _, x in used], note=note, evidence={"seeds": len(used)})


def fig3_claims(slices, left_out: dict | None = None) -> list[Claim]:
    """The two claims (registry ``slices.flatter``, ``slices.stable_again``) from the slices of
    every seed (``{seed: dataset}``, or one dataset); ``left_out``: ``{seed: why}`` for the seeds
    without slices."""
    per = {s: slice_values(ds) for s, ds in _by_seed(slices).items()}
    left_out = dict(left_out or {})
    return [_claim_over_seeds("slices.flatter", per, "ratio", left_out),
            _claim_over_seeds("slices.stable_again", per, "stable", left_out)]


def make_fig3(slices, pdf_path, png_path, claims_path, keep_open: bool = False, figure: str = "fig3",
              left_out: dict | None = None):
    """Draw figure 3 from the first seed's slices and write the claims over every seed; returns the
    claims (and the figure too with ``keep_open``, for tests). ``slices``: ``{seed: dataset}`` (in
    seed order; datasets as :func:`eosflow.jobs.slices.run_slices` writes them), or one dataset;
    ``left_out``: ``{seed: why}`` for seeds without slices. ``figure``: the name in the title and
    the claims file (``fig12``: the same figure for the second setting)."""
    by_seed = _by_seed(slices)
    if not by_seed:
        raise ValueError(f"make_fig3: no slices to draw ({figure})")
    left_out = dict(left_out or {})
    claims = fig3_claims(by_seed, left_out)
    seed, ds = next(iter(by_seed.items()))
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.0)
    ds = ds.sortby("step")
    lr = float(ds.attrs["lr"])
    limit = 2.0 / lr
    n = int(ds.sizes["snapshot"])
    steps = ds["step"].values.astype(int)
    cmap = colormaps["viridis"]
    colours = [cmap(x) for x in (np.linspace(0.0, 0.9, n) if n > 1 else [0.0])]
    fig = new_figure(figsize=(2.5 * n + 0.6, 5.2))
    axes = fig.subplots(2, n, squeeze=False, sharex="col")
    alpha = ds["alpha"].values.astype(float)
    s_len = ds["step_length"].values.astype(float)
    rows = (("loss", "loss_prev", "loss_cur", r"$L(\theta)$"),
            ("sharpness", "sharpness_prev", "sharpness_cur", r"$S(\theta)$"))
    s_lim = _finite_limits(ds["sharpness"].values, ds["sharpness_prev"].values, ds["sharpness_cur"].values,
                           [limit])
    for j in range(n):
        c = colours[j]
        for r, (name, prev, cur, label) in enumerate(rows):
            ax = axes[r, j]
            vals = ds[name].values[j].astype(float)
            vp, vc = float(ds[prev].values[j]), float(ds[cur].values[j])
            a, v = _curve(alpha[j], vals, [(0.0, vp), (s_len[j], vc)])
            ax.plot(a, v, color=c, lw=1.6)
            if math.isfinite(vp):
                ax.plot([0.0], [vp], "o", mfc="w", mec=c, mew=1.4, ms=5, zorder=4)
            if math.isfinite(vc) and math.isfinite(s_len[j]):
                ax.plot([s_len[j]], [vc], "o", color=c, mec="k", mew=0.6, ms=5, zorder=4)
            ax.axvline(0.0, ls=":", color="0.25", lw=1.2)
            if math.isfinite(s_len[j]):
                ax.axvline(s_len[j], ls="-", color="0.25", lw=1.0)
            if r == 1:
                ax.axhline(limit, ls="--", color="tab:red", lw=1.0)
                ax.set_ylim(*s_lim)
                ax.set_xlabel(r"$\alpha$ along $-\nabla L/\|\nabla L\|$")
            else:
                ax.set_ylim(*_finite_limits(vals, [vp, vc]))
                ax.set_title(f"epoch {steps[j]}")
            ax.set_xlim(*_finite_limits(alpha[j], [0.0, s_len[j]], pad=0.02))
            if j == 0:
                ax.set_ylabel(label)
            ax.tick_params(labelsize=7)
    handles = [Line2D([], [], ls=":", color="0.25", label=r"previous $\theta_{t-1}$ ($\alpha = 0$)"),
               Line2D([], [], ls="-", color="0.25", label=r"current $\theta_t$ ($\alpha = s$)"),
               Line2D([], [], ls="--", color="tab:red", label=rf"$2/\eta$ = {limit:.3g}")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.04))
    setting = ds.attrs.get("setting", "")
    fig.suptitle(f"{figure}: L and S along the gradient direction, {setting} seed {seed} at $\\eta$ = {lr:.4g} "
                 f"(claims over seeds {sorted(set(by_seed) | set(left_out))})", fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    snapshots = []
    for j in range(n):
        res = np.r_[ds["residual"].values[j].astype(float), float(ds["residual_prev"].values[j]),
                    float(ds["residual_cur"].values[j])]
        res = res[np.isfinite(res)]
        sc = float(ds["sharpness_cur"].values[j])
        snapshots.append({
            "step": int(steps[j]), "step_length": _f(s_len[j]),
            "loss_prev": _f(ds["loss_prev"].values[j]), "loss_cur": _f(ds["loss_cur"].values[j]),
            "sharpness_prev": _f(ds["sharpness_prev"].values[j]), "sharpness_cur": _f(sc),
            "lr_sharpness_cur_over_2": _f(lr * sc / 2),
            "max_residual": _f(res.max()) if res.size else None,
        })
    seeds = [{"seed": s, **slice_values(d)} for s, d in by_seed.items()]
    return finish(fig, claims, pdf_path, png_path, claims_path, figure, keep_open, drawn_seed=seed, lr=lr,
                  setting=setting, stability_limit_2_over_lr=limit, snapshots=snapshots, seeds=seeds,
                  left_out={str(s): why for s, why in left_out.items()})
