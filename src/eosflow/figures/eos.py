"""Extension target ``figures/ext/eos.pdf``: the edge of stability (Cohen et al. 2021).

S(θ) over training against the 2/η line for several η below and above the stability limit
η_eos = 2/S(θ₀). Expected: above the limit, η·S/2 hovers at 1 (the edge of stability); below it,
η·S/2 stays under 1. A run's value is the median of η·S/2 over the second half of its training.

Claims (the registry's ``eos.lower``, ``eos.upper`` and ``eos.below_stable``): per seed, the min
(lower end) or max (upper end, below the limit) of the run values over its runs on that side of its
own limit (a diverged run left the edge of stability for good and never drops out: it counts
against the claim, as +inf for "at most 1.2" and "stays stable", as -inf for "at least 0.8");
the median over seeds against the
bound, by the sign test over
seeds (:mod:`eosflow.claims`: it cannot decide below 6 seeds). A seed with no run on a side does not
count for that side's claims.
"""

from __future__ import annotations

import math

import numpy as np
import seaborn as sns
import xarray as xr

from ..claims import Claim, claim
from .common import finish, new_figure


def second_half_ratio(cube: xr.Dataset) -> float:
    """Median of η·S/2 over the Hessian measurements in the second half of the run's steps."""
    lr = float(cube["lr"])
    h, s = cube["hstep"].values, cube["sharpness"].values.astype(float)
    keep = (h >= cube["step"].values[-1] / 2) & np.isfinite(s)
    return float(np.median(lr * s[keep] / 2)) if keep.any() else float("nan")


def summarize(cubes: list[xr.Dataset]) -> list[dict]:
    rows = []
    for c in cubes:
        rows.append({"lr": float(c["lr"]), "seed": int(c["seed"]), "status": c.attrs["status"],
                     "eta_eos": float(c.attrs.get("eta_eos", math.nan)), "n_steps": int(c["step"].values[-1]),
                     "median_ratio_second_half": second_half_ratio(c)})
    for r in rows:
        r["above_limit"] = bool(r["lr"] > r["eta_eos"]) if math.isfinite(r["eta_eos"]) else None
    return rows


def eos_claims(rows: list[dict]) -> list[Claim]:
    """The three claims of the module docstring from the runs' rows (:func:`summarize`)."""
    seeds = sorted({r["seed"] for r in rows})

    def per_seed(side: bool, extreme, diverged: float) -> tuple[list[float], list[int]]:
        out, used = [], []
        for seed in seeds:
            # a diverged run left the edge of stability for good: it counts against the claim
            v = [diverged if r["status"] == "diverged" else r["median_ratio_second_half"] for r in rows
                 if r["seed"] == seed and r["above_limit"] is side
                 and (r["status"] == "diverged" or math.isfinite(r["median_ratio_second_half"]))]
            if v:
                out.append(extreme(v))
                used.append(seed)
        return out, used

    def one(claim_id: str, side: bool, extreme, diverged: float = math.inf) -> Claim:
        values, used = per_seed(side, extreme, diverged)
        where = "above" if side else "below"
        missing = [s for s in seeds if s not in used]
        note = (f"seeds {used}: {', '.join(f'{v:.3g}' for v in values)}" if values else f"no run {where} eta_eos")
        if missing and values:
            note += f"; seeds {missing} have no run {where} their eta_eos"
        return claim(claim_id, values, note=note)

    return [one("eos.lower", True, min, -math.inf), one("eos.upper", True, max),
            one("eos.below_stable", False, max)]


def make_eos(cubes: list[xr.Dataset], pdf_path, png_path, claims_path, keep_open: bool = False):
    """Draw the edge-of-stability check and write its claims."""
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    cubes = sorted(cubes, key=lambda c: (float(c["lr"]), int(c["seed"])))
    rows = summarize(cubes)
    lrs = sorted({r["lr"] for r in rows})
    pal = dict(zip(lrs, sns.color_palette("viridis", len(lrs))))
    fig = new_figure(figsize=(11, 4.2))
    ax, ax_r = fig.subplots(1, 2)
    for c, r in zip(cubes, rows):
        col = pal[r["lr"]]
        h, s = c["hstep"].values, c["sharpness"].values
        side = "above" if r["above_limit"] else "below"
        ax.plot(h, s, color=col, lw=1, label=rf"$\eta$ = {r['lr']:g} ({side})")
        ax.axhline(2 / r["lr"], color=col, ls="--", lw=0.8)
        ax_r.plot(h, r["lr"] * s / 2, color=col, lw=1)
        if r["status"] == "diverged":
            ax.scatter(h[-1:], s[-1:], marker="v", color="tab:red", zorder=3)
    eos = [r["eta_eos"] for r in rows if math.isfinite(r["eta_eos"])]
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(r"sharpness $S(\theta)$ (dashed: $2/\eta$)")
    ax.set_title(r"(a) $S(\theta)$ against $2/\eta$" + (rf", $\eta_{{eos}}$ = {np.median(eos):.3g}" if eos else ""))
    ax.legend(fontsize=7)
    ax_r.axhline(1.0, color="k", ls=":", lw=1.2)
    ax_r.axhspan(0.8, 1.2, color="0.9", zorder=0)
    ax_r.set_xlabel("epoch")
    ax_r.set_ylabel(r"$\eta \cdot S(\theta) / 2$")
    ax_r.set_title("(b) distance to the edge (band: 0.8-1.2)")
    fig.tight_layout()
    return finish(fig, eos_claims(rows), pdf_path, png_path, claims_path, "ext/eos", keep_open, runs=rows)
