"""The progressive-flattening protocol's figure (fig4; fig6 in the second setting; ext/mse_flattening
with MSE loss). A large η₀ for the first ``e`` epochs, then η_small to a fixed end; the eventual
maximum sharpness after the switch, S_max, against ``e``, one line per η₀.

Runs are rows ``{lr0, epoch, seed, cube}`` (:func:`summarize`; the grid: :mod:`eosflow.flattening`);
the ``e = 0`` run is the same for every η₀ (η_small from the start) and appears on every line.
``lr0`` is η₀, or its multiple of each seed's η_eos(θ₀) for a relative grid (``relative``).
Expected: larger and longer η₀ phases give a lower S_max.
"""

from __future__ import annotations

import numpy as np
import seaborn as sns
import xarray as xr

from ..claims import Claim, bootstrap_interval, check
from ..similarity import spearman
from .common import finish, new_figure


def s_max_after(cube: xr.Dataset, epoch: int) -> float:
    """Largest sharpness measured after the switch at ``epoch``, i.e. at steps ``> epoch``: the
    switch point itself is the large-η phase's last iterate (NaN when none is finite)."""
    h, s = cube["hstep"].values, cube["sharpness"].values.astype(float)
    s = s[(h > epoch) & np.isfinite(s)]
    return float(s.max()) if s.size else float("nan")


def summarize(runs: list[dict]) -> list[dict]:
    """Rows ``{lr0, epoch, seed, s_max, status, ...}`` from ``runs`` = ``{lr0, epoch, seed, cube}``."""
    rows = []
    for r in runs:
        c = r["cube"]
        rows.append({"lr0": float(r["lr0"]), "epoch": int(r["epoch"]), "seed": int(r["seed"]),
                     "s_max": s_max_after(c, int(r["epoch"])), "status": c.attrs["status"],
                     # the run's own η₀ (η_small for e = 0; η₀ in absolute terms for a relative grid)
                     "eta0": float(c["lr"]) if "lr" in c.coords else float("nan"),
                     "n_steps": int(c["step"].values[-1]),
                     "final_test_acc": float(c["test_acc"].dropna("step").values[-1])
                     if c["test_acc"].notnull().any() else float("nan")})
    return rows


def _mean_by(rows, key_fn):
    out: dict = {}
    for r in rows:
        out.setdefault(key_fn(r), []).append(r["s_max"])
    return {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in out.items()}


#: Minimum evidence (fixed before any run): seeds contributing a per-seed statistic.
MIN_SEEDS = 3


def _spearman_per_lr(s_max: dict, lrs: list[float]) -> dict[float, float]:
    """Spearman(e, S_max) for each η₀, from ``s_max[(η₀, e)]``."""
    out = {}
    for lr in lrs:
        es = sorted(e for (l0, e) in s_max if l0 == lr)
        out[lr] = spearman(es, [s_max[(lr, e)] for e in es])
    return out


def _seed_statistics(rows: list[dict], lrs: list[float]) -> tuple[list[float], list[float]]:
    """Per seed: max over η₀ of Spearman(e, S_max) (when finite for every η₀), and
    Spearman(η₀, S_max) over (η₀, e > 0)."""
    flattening, by_lr = [], []
    for seed in sorted({r["seed"] for r in rows}):
        s_max = {(r["lr0"], r["epoch"]): r["s_max"] for r in rows if r["seed"] == seed}
        rhos = list(_spearman_per_lr(s_max, lrs).values())
        if all(np.isfinite(rhos)):
            flattening.append(max(rhos))
        late = [k for k in s_max if k[1] > 0]
        rho = spearman([k[0] for k in late], [s_max[k] for k in late])
        if np.isfinite(rho):
            by_lr.append(rho)
    return flattening, by_lr


def flattening_claims(rows: list[dict]) -> tuple[list[Claim], dict]:
    """The claims over seeds (mean of a per-seed statistic, 95 % bootstrap interval, at least
    :data:`MIN_SEEDS` seeds), and the seed-mean Spearman(e, S_max) per η₀ for the record."""
    lrs = sorted({r["lr0"] for r in rows})
    per_lr = _spearman_per_lr(_mean_by(rows, lambda r: (r["lr0"], r["epoch"])), lrs)
    flattening, by_lr = _seed_statistics(rows, lrs)
    claims = [
        check("S_max falls as the large-eta phase lengthens, for every eta0",
              "mean over seeds of (max over eta0 of Spearman(e, S_max))",
              np.mean(flattening) if flattening else None, "<", 0,
              note="seed-mean per eta0: " + ", ".join(f"{lr:g}: {v:.2f}" for lr, v in per_lr.items()),
              interval=bootstrap_interval(flattening), evidence={"seeds": len(flattening)},
              minimum={"seeds": MIN_SEEDS}),
        check("S_max falls with eta0", "mean over seeds of Spearman(eta0, S_max) over all (eta0, e > 0)",
              np.mean(by_lr) if by_lr else None, "<", 0, interval=bootstrap_interval(by_lr),
              evidence={"seeds": len(by_lr)}, minimum={"seeds": MIN_SEEDS}),
    ]
    return claims, {f"{lr:g}": v for lr, v in per_lr.items()}


def _eta_label(lr: float, relative: bool) -> str:
    return rf"$\eta_0$ = {lr:g} $\eta_{{eos}}$" if relative else rf"$\eta_0$ = {lr:g}"


def make_flattening(runs: list[dict], lr_small: float, pdf_path, png_path, claims_path, figure: str = "fig4",
                    title: str | None = None, relative: bool = False, keep_open: bool = False):
    """Draw the protocol's figure ``figure`` from the runs (see :func:`summarize`) and write its
    claims. ``title``: the figure's title (name the setting); ``relative``: ``lr0`` is a multiple of
    each seed's η_eos(θ₀)."""
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    rows = summarize(runs)
    lrs = sorted({r["lr0"] for r in rows})
    pal = sns.color_palette("viridis", len(lrs))
    fig = new_figure(figsize=(11, 4.2))
    ax, ax_t = fig.subplots(1, 2)
    mean = _mean_by(rows, lambda r: (r["lr0"], r["epoch"]))
    for c, lr in zip(pal, lrs):
        es = sorted(e for (l0, e) in mean if l0 == lr)
        ax.plot(es, [mean[(lr, e)] for e in es], "-o", color=c, label=_eta_label(lr, relative))
        pts = [r for r in rows if r["lr0"] == lr]
        ax.scatter([r["epoch"] for r in pts], [r["s_max"] for r in pts], color=c, s=12, alpha=0.5)
    ax.axhline(2.0 / lr_small, color="k", ls="--", lw=1, label=rf"$2/\eta_{{small}}$ = {2 / lr_small:g}")
    ax.set_yscale("log")
    ax.set_xlabel(r"epochs at $\eta_0$ before the switch, $e$")
    ax.set_ylabel(r"$S_{max}$ after the switch")
    ax.set_title(rf"(a) progressive flattening: $\eta_0$ → $\eta_{{small}}$ = {lr_small:g}")
    ax.legend(fontsize=8)
    # (b) S(θ) over training for the largest η₀, one curve per switch epoch
    top = lrs[-1]
    sub = sorted([r for r in runs if float(r["lr0"]) == top and int(r["seed"]) == min(x["seed"] for x in rows)],
                 key=lambda r: int(r["epoch"]))
    pal_e = sns.color_palette("rocket_r", len(sub))
    for c, r in zip(pal_e, sub):
        cube = r["cube"]
        ax_t.plot(cube["hstep"].values, cube["sharpness"].values, color=c, lw=1, label=f"e = {r['epoch']}")
        if r["epoch"]:
            ax_t.axvline(r["epoch"], color=c, ls=":", lw=0.8)
    ax_t.set_yscale("log")
    ax_t.set_xlabel("epoch")
    ax_t.set_ylabel(r"sharpness $S(\theta)$")
    ax_t.set_title(rf"(b) $S(\theta)$ over training, {_eta_label(top, relative)}, seed {sub[0]['seed']}")
    ax_t.legend(fontsize=7, ncol=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    claims, per_lr = flattening_claims(rows)
    return finish(fig, claims, pdf_path, png_path, claims_path, figure, keep_open, runs=rows,
                  spearman_e_per_eta0=per_lr, lr_small=lr_small,
                  eta0_unit="eta_eos(theta_0) of each seed" if relative else "absolute")


def make_fig4(runs: list[dict], lr_small: float, pdf_path, png_path, claims_path, keep_open: bool = False, **kw):
    """Figure 4: :func:`make_flattening` with ``figure="fig4"``."""
    return make_flattening(runs, lr_small, pdf_path, png_path, claims_path, "fig4", keep_open=keep_open, **kw)


fig4_claims = flattening_claims
