"""Figure 3: loss and sharpness along the gradient direction at snapshots of one instability.

One column per snapshot (time order, coloured by time with viridis): top row ``L(θ)``, bottom row
``S(θ)`` along the slice ``θ_{t−1} + α d``, ``d = −∇L(θ_{t−1}) / ‖∇L(θ_{t−1})‖`` (from
:func:`eosflow.landscape.run_slices`). Dotted vertical line: the previous parameters (``α = 0``);
solid: the current ones (``α = s``, the step length). Dashed horizontal line on the S row: the
stability limit ``2/η``. Expected: as the instability grows the S-curve changes shape until a
flatter region lets training return to stability.

Claims: the sharpness at the current point is lower at the last snapshot than at the first
(``S_cur(last) / S_cur(first) < 1``), and the last snapshot is back to stability
(``η S_cur(last) / 2 < 1``). Non-finite values (a diverged point) are skipped when drawing and
make a claim not hold; axis limits are always finite.
"""

from __future__ import annotations

import math

import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib import colormaps
from matplotlib.lines import Line2D

from ..claims import Claim, check
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


#: Minimum evidence (fixed before any run): an effect of instabilities needs several of them; the
#: slices cover one (``fig3.instability``), so at any scale these claims are undetermined, with
#: their values reported.
MIN_INSTABILITIES = 3


def fig3_claims(ds: xr.Dataset) -> list[Claim]:
    """The two claims of fig3 from a slices dataset (snapshots taken in step order, all of one
    instability)."""
    ds = ds.sortby("step")
    lr = float(ds.attrs["lr"])
    s_cur = ds["sharpness_cur"].values.astype(float)
    steps = ds["step"].values
    first, last = s_cur[0], s_cur[-1]
    ratio, note = None, ""
    if len(s_cur) < 2:
        note = "fewer than two snapshots"
    elif not (math.isfinite(first) and math.isfinite(last)):
        note = "S at the current point is not finite at the first or last snapshot"
    elif first <= 0:
        note = f"S at the current point of the first snapshot is {first:g} (not positive)"
    else:
        ratio = last / first
    evidence = {"evidence": {"instabilities": 1}, "minimum": {"instabilities": MIN_INSTABILITIES}}
    claims = [
        check("the S-curve at the last snapshot is flatter at the current point than at the first",
              f"S(current point, epoch {int(steps[-1])}) / S(current point, epoch {int(steps[0])})",
              ratio, "<", 1, note=note, **evidence),
        check("the last snapshot is back to stability",
              f"lr * S(current point, epoch {int(steps[-1])}) / 2", lr * last / 2, "<", 1,
              note="" if math.isfinite(last) else "S at the current point of the last snapshot is not finite",
              **evidence),
    ]
    return claims


def make_fig3(ds: xr.Dataset, pdf_path, png_path, claims_path, keep_open: bool = False, figure: str = "fig3"):
    """Draw figure 3 from the slices NetCDF of :func:`eosflow.landscape.run_slices`; returns the
    claims (and the figure too with ``keep_open``, for tests). ``figure``: the name in the title and
    the claims file (``fig12``: the same figure for the second setting)."""
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
    fig.suptitle(f"{figure}: L and S along the gradient direction, {setting} at $\\eta$ = {lr:g}", fontsize=10)
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
    return finish(fig, fig3_claims(ds), pdf_path, png_path, claims_path, figure, keep_open, lr=lr, setting=setting,
                  stability_limit_2_over_lr=limit, snapshots=snapshots)
