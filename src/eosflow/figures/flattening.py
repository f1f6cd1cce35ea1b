"""The progressive-flattening protocol's figure (fig4; fig6 in the second setting; ext/mse_flattening
with MSE loss). A large η₀ for the first ``e`` epochs, then η_small to a fixed end; the eventual
maximum sharpness after the switch, S_max, against ``e``, one line per η₀.

Runs are rows ``{lr0, epoch, seed, cube}`` (:func:`summarize`; the grid: :mod:`eosflow.config.flattening`);
the ``e = 0`` run is the same for every η₀ (η_small from the start) and appears on every line.
``lr0`` is η₀, or its multiple of each seed's η_eos(θ₀) for a relative grid (``relative``).
Expected: larger and longer η₀ phases give a lower S_max.

Claims (the registry's ``flattening.phase_length`` and ``flattening.eta0``, decided by the
stratified permutation test of per-block Spearman correlations, :mod:`eosflow.claims`):

1. *S_max falls as the large-η phase lengthens, for every η₀*: per η₀ and seed (a block),
   Spearman(e, S_max) over the seed's switch epochs (``e = 0`` included); each η₀ an option of a
   family whose rule is "every" (holds when every η₀ holds; fails when one η₀ fails after Holm's
   correction over the η₀).
2. *S_max falls with η₀*: per seed (a block), Spearman(η₀, S̄_max) over its η₀, where S̄_max is the
   mean of S_max over the seed's switch epochs ``e > 0`` that every η₀ of the seed has. One block a
   seed, not one per (seed, e): the runs at (η₀, e) and (η₀, e') of a seed are the same trajectory for
   their first min(e, e') epochs, so whatever is peculiar to that η₀'s run shows in every e of the
   seed, and (seed, e) blocks are not independent (treated as independent, the test held 13.8 %
   under a null with such a shared per-(seed, η₀) term, against 2.5 %). Averaging over the same
   epochs for every η₀ keeps the effect of ``e`` out of the correlation.

**Diverged runs count against the claims**: a run that diverged has S_max = +∞ (it ends at the
largest η₀ and the longest phases, so dropping it would favour both claims). A block's size is its
number of non-NaN (x, S_max) points; a block with fewer than 2, or with tied values where 2, gives
no correlation and is left out.
"""

from __future__ import annotations

import math

import numpy as np
import seaborn as sns
import xarray as xr

from ..claims import Claim, claim, family_claim
from ..claims.procedures import block_spearman
from ..similarity import spearman
from .common import finish, new_figure


def s_max_after(cube: xr.Dataset, epoch: int, window: float = math.inf) -> float:
    """Largest sharpness measured after the switch at ``epoch`` and at most ``window`` epochs past it,
    i.e. at steps in ``(epoch, epoch + window]``: the switch point itself is the large-η phase's last
    iterate (NaN when none is finite)."""
    h, s = cube["hstep"].values, cube["sharpness"].values.astype(float)
    s = s[(h > epoch) & (h <= epoch + window) & np.isfinite(s)]
    return float(s.max()) if s.size else float("nan")


def common_window(runs: list[dict]) -> float:
    """The epochs after the switch that every run has (the shortest of last step - e over the runs that
    did not diverge; all runs if every one did): S_max is taken over as many epochs after every
    switch, so that a later switch, with fewer epochs left before the fixed end, does not get a lower
    S_max just because sharpness had less time to rise."""
    spans = [(int(r["cube"]["step"].values[-1]) - int(r["epoch"]), r["cube"].attrs.get("status")) for r in runs]
    kept = [w for w, status in spans if status != "diverged"] or [w for w, _ in spans]
    return float(min(kept)) if kept else math.inf


def summarize(runs: list[dict]) -> list[dict]:
    """Rows ``{lr0, epoch, seed, s_max, status, ...}`` from ``runs`` = ``{lr0, epoch, seed, cube}``;
    ``s_max`` over the :func:`common_window` after each run's switch."""
    window = common_window(runs)
    rows = []
    for r in runs:
        c = r["cube"]
        diverged = c.attrs["status"] == "diverged"  # counts against both claims: S_max = +inf
        rows.append({"lr0": float(r["lr0"]), "epoch": int(r["epoch"]), "seed": int(r["seed"]),
                     "s_max": math.inf if diverged else s_max_after(c, int(r["epoch"]), window), "window": window,
                     "status": c.attrs["status"],
                     # the run's own η₀ (η_small for e = 0; η₀ in absolute terms for a relative grid)
                     "eta0": float(c["lr"]) if "lr" in c.coords else float("nan"),
                     "n_steps": int(c["step"].values[-1]),
                     "final_test_acc": float(c["test_acc"].dropna("step").values[-1])
                     if c["test_acc"].notnull().any() else float("nan")})
    return rows


def _mean_by(rows, key_fn):
    """The mean S_max over the finite values of each key (the drawn seed-mean curves)."""
    out: dict = {}
    for r in rows:
        out.setdefault(key_fn(r), []).append(r["s_max"])
    return {k: float(np.mean([x for x in v if math.isfinite(x)])) if np.isfinite(v).any() else float("nan")
            for k, v in out.items()}


def block_rho(x, y, seed: int = 0) -> tuple[float, int]:
    """(Spearman(x, y), points) of one block of a rank claim over the pairs where neither is NaN, ties
    broken in a random order fixed by ``seed`` (:func:`eosflow.claims.procedures.block_spearman`): two
    points give +1 or -1, the exact null of a block of 2; fewer than 2, or a constant sample, NaN."""
    return block_spearman(x, y, seed)


def _spearman_per_lr(s_max: dict, lrs: list[float]) -> dict[float, float]:
    """Spearman(e, S_max) for each η₀, from ``s_max[(η₀, e)]`` (the record's seed-mean curves)."""
    out = {}
    for lr in lrs:
        es = sorted(e for (l0, e) in s_max if l0 == lr)
        out[lr] = spearman(es, [s_max[(lr, e)] for e in es])
    return out


def blocks(rows: list[dict]) -> dict[str, list[dict]]:
    """The blocks of both claims: ``phase_length``: ``{eta0, seed, rho, runs}`` per (η₀, seed),
    Spearman(e, S_max) over the seed's switch epochs at that η₀ (e = 0 included); ``eta0``:
    ``{seed, epochs, s_mean, rho, runs}`` per seed, Spearman(η₀, S̄_max) over its η₀, S̄_max the mean
    S_max over ``epochs`` (the seed's e > 0 where every η₀ has a non-NaN S_max; +inf when a run there
    diverged). ``runs``: the non-NaN points of the block (``rho`` is NaN below 2)."""
    lrs = sorted({r["lr0"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    phase, eta = [], []
    for lr in lrs:
        for seed in seeds:
            pts = sorted((r["epoch"], r["s_max"]) for r in rows if r["lr0"] == lr and r["seed"] == seed)
            if pts:
                rho, n = block_rho([p[0] for p in pts], [p[1] for p in pts], len(phase))
                phase.append({"eta0": lr, "seed": seed, "rho": rho, "runs": n})
    for seed in seeds:
        mine = [r for r in rows if r["seed"] == seed and r["epoch"] > 0]
        cell = {(r["lr0"], r["epoch"]): r["s_max"] for r in mine}
        lr_seed = sorted({r["lr0"] for r in mine})
        epochs = [e for e in sorted({r["epoch"] for r in mine})
                  if all(not math.isnan(cell.get((lr, e), math.nan)) for lr in lr_seed)]
        s_mean = [float(np.mean([cell[(lr, e)] for e in epochs])) if epochs else math.nan for lr in lr_seed]
        rho, n = block_rho(lr_seed, s_mean, 1000 + seed)
        eta.append({"seed": seed, "epochs": epochs, "s_mean": dict(zip(map(float, lr_seed), s_mean)),
                    "rho": rho, "runs": n})
    return {"phase_length": phase, "eta0": eta}


def flattening_claims(rows: list[dict]) -> tuple[list[Claim], dict]:
    """The two claims of the module docstring (registry ``flattening.phase_length``, a family over η₀,
    and ``flattening.eta0``), and the seed-mean Spearman(e, S_max) per η₀ for the record (Spearman
    over e of the seed-mean S_max curve; not what is decided)."""
    lrs = sorted({r["lr0"] for r in rows})
    per_lr = _spearman_per_lr(_mean_by(rows, lambda r: (r["lr0"], r["epoch"])), lrs)
    b = blocks(rows)
    options, sizes = {}, {}
    for lr in lrs:
        mine = [x for x in b["phase_length"] if x["eta0"] == lr]
        options[f"{lr:g}"] = [x["rho"] for x in mine]
        sizes[f"{lr:g}"] = [x["runs"] for x in mine]
    seed_mean = "seed-mean per eta0: " + ", ".join(f"{lr:g}: {v:.2f}" for lr, v in per_lr.items())
    eta_blocks = [x for x in b["eta0"] if np.isfinite(x["rho"])]
    eta_seeds = len({x["seed"] for x in eta_blocks})
    dropped = len(b["eta0"]) - len(eta_blocks)
    n_div = sum(r["status"] == "diverged" for r in rows)
    claims = [
        family_claim("flattening.phase_length", options, sizes=sizes,
                     note=f"{seed_mean}; one block per (eta0, seed): the seed's switch epochs at that eta0, "
                          f"e = 0 (the shared eta_small run) included"),
        claim("flattening.eta0", [x["rho"] for x in eta_blocks], sizes=[x["runs"] for x in eta_blocks],
              evidence={"seeds": eta_seeds},
              note=f"one block per seed ({eta_seeds} seeds), each over up to {len(lrs)} eta0 of S_max averaged "
                   f"over the seed's e > 0" + (f"; {dropped} seeds without a correlation (under 2 S_max, or tied) "
                                              f"left out" if dropped else "") + f"; diverged runs: {n_div} (S_max +inf)"),
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
                  spearman_e_per_eta0=per_lr, blocks=blocks(rows), lr_small=lr_small,
                  eta0_unit="eta_eos(theta_0) of each seed" if relative else "absolute")


def make_fig4(runs: list[dict], lr_small: float, pdf_path, png_path, claims_path, keep_open: bool = False, **kw):
    """Figure 4: :func:`make_flattening` with ``figure="fig4"``."""
    return make_flattening(runs, lr_small, pdf_path, png_path, claims_path, "fig4", keep_open=keep_open, **kw)


fig4_claims = flattening_claims
