"""Extension target ``figures/ext/sgd_flattening.pdf``: flattening under minibatch SGD (the follow-up
paper, arXiv 2511.12558: "the flattening that instabilities drive persists under minibatch SGD,
and its effect outweighs minibatch noise").

A batch-size sweep, each batch size ``B`` at a small and a large η (``η(B) = η·min(1, B/512)``
below 512, :func:`eosflow.config.optimizers.sgd_flattening_runs`). (a) S(θ) over epochs (seed mean);
(b) the final S against ``B``. ``S_final`` is the run's last Hessian measurement (its last epoch);
a diverged run's is +inf: a blown-up network is not flat, so it counts against "ends flatter" and
never drops out (a seed whose two compared runs both diverged has no ratio and is named in the note).

Claims (registry entries ``sgd.every_batch`` and ``sgd.eta_vs_noise``, fixed before any run; each
decided by the sign test of the median of per-seed log ratios):

- (a) ``sgd.every_batch``, at every batch size the larger η ends flatter: per ``B`` and seed
  ``log(S_final(η_large) / S_final(η_small))``, each ``B`` tested for a median below 0; a family over
  the batch sizes fixed beforehand: holds when every ``B`` holds, fails when the ``B`` with the
  smallest p-value toward "fails" fails at 2.5 % / (number of ``B``) (Holm), else undetermined
  (:data:`eosflow.claims.decision.FAMILY_RULES`). The claim reports the deciding ``B``, and every
  ``B``'s decision in its ``family`` (and ``per_batch_size``);
- (b) ``sgd.eta_vs_noise``, the reduction of ``S_final`` from the small to the large η (at full
  batch) is at least the reduction from full batch to the smallest batch (at the small η):
  ``S_fl <= S_ss``, per seed ``log(S_ss / S_fl) >= 0`` (``f``: full batch, the largest ``B``;
  ``s`` the smallest ``B``, or the small η; ``l`` the large η). The two runs are different designs
  (a small batch at the small η against full batch at the large η), not exchangeable under "equal
  flattening", so the sign test decides, not the sign-flip test.

The sign test needs at least 6 seeds to decide (its smallest p-value is 2^-seeds), and (a) over
three batch sizes at least 7 to fail (2^-7 <= 2.5 % / 3); with fewer the claims are undetermined and
say how many seeds would decide them (``needed``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import seaborn as sns
import xarray as xr

from ..claims import Claim, claim, family_claim
from ..files import json_safe
from .common import finish, new_figure


def final_sharpness(cube: xr.Dataset) -> float:
    """S at the run's last measurement: +inf for a diverged run (a blown-up network is not flat: it
    counts against "ends flatter", never drops out), NaN when none was measured."""
    if cube.attrs.get("status") == "diverged":
        return math.inf
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
    """seed -> S_final of the runs at batch size ``b`` and η kind ``eta`` that have a positive one (a
    log ratio needs it)."""
    return {r["seed"]: r["s_final"] for r in rows if r["batch_size"] == b and r["eta"] == eta
            and not math.isnan(r["s_final"]) and r["s_final"] > 0}


def _paired(a: dict, b: dict, fn) -> tuple[list[int], list[float]]:
    seeds = sorted(set(a) & set(b))
    return seeds, [fn(a[s], b[s]) for s in seeds]


def _log_ratio(a: float, b: float) -> float:
    """log(a / b), +-inf where one run diverged (S = inf), NaN where both did."""
    if math.isinf(a) or math.isinf(b):
        return math.nan if a == b else math.copysign(math.inf, a - b)
    return math.log(a / b)


def _not_counted(rows: list[dict], seeds: list[int]) -> str:
    lost = sorted({r["seed"] for r in rows} - set(seeds))
    return f"seeds {lost} not counted (a run has no positive S_final, or both diverged)" if lost else ""


def flattening_claims(rows: list[dict]) -> tuple[list[Claim], dict]:
    """The two claims (module docstring) and the per-batch-size statistics behind (a): each ``B``'s
    seeds, per-seed ratios and log ratios, and its decision within the family."""
    sizes = sorted({r["batch_size"] for r in rows}, reverse=True)
    seeds_of, logs = {}, {}
    for b in sizes:  # seeds whose two runs both diverged have no ratio (NaN): left out, named in the note
        seeds_of[b], logs[str(b)] = _paired(_s(rows, b, "large"), _s(rows, b, "small"), _log_ratio)
    lost = [f"B={b}: " + _not_counted(rows, seeds_of[b]) for b in sizes if _not_counted(rows, seeds_of[b])]
    claim_a = family_claim("sgd.every_batch", logs,
                           note="; ".join(lost) if lost else "every seed has both runs at every batch size")
    options = claim_a.family["options"]
    per_b = {str(b): {"seeds": seeds_of[b], "ratios": [math.exp(v) for v in logs[str(b)]],
                      "log_ratios": logs[str(b)], **options[str(b)]} for b in sizes}
    full, small = sizes[0], sizes[-1]
    fs, fl, ss = _s(rows, full, "small"), _s(rows, full, "large"), _s(rows, small, "small")
    seeds = sorted(set(fl) & set(ss))  # S_fs is not in the statistic: only the note's reductions need it
    vals = [_log_ratio(ss[s], fl[s]) for s in seeds]
    with_fs = [s for s in seeds if s in fs]
    note = f"f: batch {full}, s: batch {small} (or the small eta), l: the large eta"
    if with_fs:
        note += (f"; reduction by eta (S_fs - S_fl)/S_fs: median "
                 f"{np.median([(fs[s] - fl[s]) / fs[s] for s in with_fs]):.3g}; by batch size (S_fs - S_ss)/S_fs: "
                 f"median {np.median([(fs[s] - ss[s]) / fs[s] for s in with_fs]):.3g}")
    if not seeds:
        note += "; no seed with both runs S_ss and S_fl"
    elif _not_counted(rows, seeds):
        note += "; " + _not_counted(rows, seeds)
    claim_b = claim("sgd.eta_vs_noise", vals, note=note)
    return [claim_a, claim_b], per_b


def make_sgd_flattening(rows: list[dict], cubes: list[xr.Dataset], pdf_path, png_path, claims_path,
                        keep_open: bool = False):
    """Draw the figure from the runs (``rows``: :func:`~eosflow.config.optimizers.sgd_flattening_runs`,
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
