"""Extension figure ``ext/instability_ablation``: does crossing the stability limit cause fig5's gain?

Each pair is a fig5 run (plain GD at η₀) and its stability-clamped twin, which steps with
``η_t = min(η₀, clamp · 2 / S(θ_t))`` (S tracked at every step) and so never crosses the limit; θ₀,
data, η₀ and the stopping rule are the plain run's. Against η₀ / η_eos(θ₀), each seed's pair
drawn: (a) validation accuracy, (b) final sharpness S_final, (c) the rotation 1 − ρ of the top
eigenspace from the first to the last measurement, (d) the measured max η_t·S(θ_t)/2; (e) the paired
accuracy differences per η₀: each seed's, and their mean over seeds with the interval of the exact
sign-flip test (none below 6 seeds: then the mean alone); (f) the claims.

Claims (registry ``ablation.accuracy``, ``ablation.flatter``, ``ablation.rotation``), over the pairs
with η₀ above the limit (η₀ / η_eos > 1 + ``at_limit``, the plain run's own seed's limit): per seed,
the mean over its pairs of plain − clamped (a seed counts with at least the registry's
``min_pairs`` pairs); over seeds:

- plain GD beats its clamped twin in validation accuracy (> 0; a diverged run counts at chance, as in
  fig5): the exact sign-flip test of the mean paired difference;
- plain GD ends flatter (S_final difference < 0; a diverged run's S_final is +inf, a blown-up network
  not being flat, so the pair counts against the side that diverged and never drops out): the sign
  test of the median, which an infinite value cannot break;
- plain GD rotates more (1 − ρ difference > 0; a pair with a diverged run has no final eigenvectors and
  is left out, which the note counts): the exact sign-flip test.
"""

from __future__ import annotations

import math

import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.lines import Line2D

from ..claims import REGISTRY, Claim, claim, decide
from ..claims.procedures import min_deciding_seeds
from ..files import json_safe
from .common import finish, log_axis, new_figure
from .fig5 import CHANCE, accuracy

__all__ = ["CLAIMS", "pair_runs", "per_seed_differences", "paired_claim", "ablation_claims", "make_ablation"]

#: The claims, in the order drawn: registry id -> the pair quantity of its plain − clamped difference.
CLAIMS = {"ablation.accuracy": "acc", "ablation.flatter": "sharpness_final", "ablation.rotation": "rotation"}
#: Runs within this relative distance of their seed's limit are not above it (the registry's ``at_limit``).
AT_LIMIT = float(REGISTRY.param("ablation.accuracy", "at_limit"))


def _values(ds: xr.Dataset, var: str, diverged_value) -> np.ndarray:
    if var == "final_test_acc":
        return accuracy(ds)
    v = ds[var].values.astype(float).copy()
    v[ds["status"].values == "diverged"] = np.nan if diverged_value is None else diverged_value
    return v


def pair_runs(plain: xr.Dataset, clamped: xr.Dataset) -> list[dict]:
    """Each clamped twin with its plain run (same setting, seed and η₀ multiple): one dict per pair
    with both runs' accuracy (diverged at chance), S_final, 1 − ρ, max η·S/2, status, the clamp's
    binding fraction, and η₀ / η_eos(θ₀). A twin whose η₀ differs from its plain run's is an error."""
    if clamped.sizes.get("run", 0) == 0:
        return []
    key = lambda ds, i: (str(ds["setting"].values[i]), int(ds["seed"].values[i]),  # noqa: E731
                         round(float(ds["lr_relative"].values[i]), 6))
    index = {key(plain, i): i for i in range(plain.sizes["run"])}
    cols = {name: (_values(plain, var, None), _values(clamped, var, None))
            for name, var in (("acc", "final_test_acc"), ("sharpness_final", "sharpness_final"),
                              ("rotation", "rotation"), ("max_ratio", "max_ratio"))}
    out = []
    for j in range(clamped.sizes["run"]):
        k = key(clamped, j)
        if k not in index:
            continue
        i = index[k]
        lp, lc = float(plain["lr"].values[i]), float(clamped["lr"].values[j])
        if not math.isclose(lp, lc, rel_tol=1e-9):
            raise ValueError(f"twin {k}: eta_0 {lc:g} differs from its plain run's {lp:g}; both must be placed "
                             "by the same fig5.lr_unit and seeds")
        row = {"setting": k[0], "seed": k[1], "lr_relative": k[2], "lr": lp,
               "ratio": lp / float(plain["eta_eos"].values[i]),
               "status_plain": str(plain["status"].values[i]), "status_clamped": str(clamped["status"].values[j]),
               "clamp_fraction": float(clamped["clamp_fraction"].values[j])}
        for name, (p, c) in cols.items():
            row[f"{name}_plain"], row[f"{name}_clamped"] = float(p[i]), float(c[j])
        out.append(row)
    return out


def _difference(row: dict, stat: str) -> float:
    """plain − clamped of one pair. S_final: a diverged run's is +inf (a blown-up network is not flat:
    the pair counts against the flatter side's claim, +inf when plain diverged, -inf when its twin did;
    NaN when both did). 1 − ρ: NaN where a run diverged (no final eigenvectors: the pair is left out)."""
    diverged = [row[f"status_{t}"] == "diverged" for t in ("plain", "clamped")]
    if stat == "sharpness_final" and any(diverged):
        return math.nan if all(diverged) else (math.inf if diverged[0] else -math.inf)
    if stat != "acc" and any(diverged):
        return math.nan
    return row[f"{stat}_plain"] - row[f"{stat}_clamped"]


def per_seed_differences(pairs: list[dict], stat: str, at_limit: float = AT_LIMIT) -> dict[int, list[float]]:
    """{seed: plain − clamped differences (not NaN) of its pairs above the limit} for every seed of
    ``pairs`` (an empty list for a seed without such a pair)."""
    out: dict[int, list[float]] = {r["seed"]: [] for r in pairs}
    for r in pairs:
        if r["ratio"] > 1 + at_limit:
            d = _difference(r, stat)
            if not math.isnan(d):
                out[r["seed"]].append(d)
    return out


def paired_claim(claim_id: str, pairs: list[dict], setting: str | None = None) -> Claim:
    """The registry's paired claim ``claim_id`` (one of :data:`CLAIMS`) over ``pairs``: per seed with at
    least ``min_pairs`` pairs above its limit, the mean of their plain − clamped differences."""
    stat = CLAIMS[claim_id]
    min_pairs = int(REGISTRY.param(claim_id, "min_pairs"))
    by_seed = per_seed_differences(pairs, stat, float(REGISTRY.param(claim_id, "at_limit")))
    with np.errstate(invalid="ignore"):  # +inf and -inf pairs in one seed: no mean (NaN, left out)
        means = [float(np.mean(v)) for v in by_seed.values() if len(v) >= min_pairs]
    counts = ", ".join(f"seed {s}: {len(v)}" for s, v in sorted(by_seed.items()))
    short = [str(s) for s, v in sorted(by_seed.items()) if len(v) < min_pairs]
    if setting is None:
        setting = pairs[0]["setting"] if pairs else "?"
    return claim(claim_id, means, fmt={"setting": setting},
                 note=f"pairs above the limit per seed: {counts or 'none'}"
                      + (f"; seed(s) {', '.join(short)} short of {min_pairs} pair(s): left out" if short else "")
                      + {"acc": "; a diverged run counts at chance",
                         "sharpness_final": "; a diverged run's S_final counts as +inf (not flat)",
                         "rotation": "; pairs with a diverged run left out (no final eigenvectors)"}[stat])


def ablation_claims(pairs: list[dict], setting: str | None = None) -> list[Claim]:
    return [paired_claim(cid, pairs, setting) for cid in CLAIMS]


def _verdict_line(c: Claim) -> str:
    val = "n/a" if c.value is None else f"{c.value:+.4g}"
    iv = "" if c.interval is None else f" [{c.interval[0]:+.3g}, {c.interval[1]:+.3g}]"
    if c.interval is None and c.value is not None:
        iv = f" (no interval: < {min_deciding_seeds(c.kind)} seeds)"
    need = ""
    if c.verdict == "undetermined":
        need = f"\n   {c.needed} seeds needed" if c.needed is not None else "\n   more seeds do not help"
    return f"{c.name.split(': ', 1)[-1]}\n   {val}{iv} {c.threshold}: {c.verdict.upper()}{need}"


def make_ablation(plain: xr.Dataset, clamped: xr.Dataset, clamp: float, pdf_path, png_path, claims_path,
                  keep_open: bool = False):
    """Draw the ablation from the summaries of the plain runs and of their clamped twins
    (:func:`eosflow.summary.summarize_runs`); returns the claims (and the figure with ``keep_open``)."""
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.0)
    pairs = pair_runs(plain, clamped)
    if not pairs:
        raise ValueError("no clamped twin has a plain run: check ablation.lrs_relative and fig5.seeds")
    setting = pairs[0]["setting"]
    fig = new_figure(figsize=(15, 8.6))
    axes = fig.subplots(2, 3).ravel()
    seeds = sorted({r["seed"] for r in pairs})
    colours = dict(zip(seeds, sns.color_palette("tab10", len(seeds))))
    panels = [("acc", "validation accuracy", "(a) validation accuracy", False),
              ("sharpness_final", r"final sharpness $S_{final}$", "(b) final sharpness", True),
              ("rotation", r"rotation $1-\rho$ (first to last measurement)", "(c) eigenspace rotation", False),
              ("max_ratio", r"max over training of $\eta_t S(\theta_t) / 2$", "(d) measured stability", True)]
    for ax, (stat, ylabel, title, logy) in zip(axes, panels):
        for seed in seeds:
            rows = sorted((r for r in pairs if r["seed"] == seed), key=lambda r: r["ratio"])
            x = [r["ratio"] for r in rows]
            for twin, ls, marker in (("plain", "-", "o"), ("clamped", "--", "X")):
                y = np.array([r[f"{stat}_{twin}"] for r in rows])
                div = np.array([r[f"status_{twin}"] == "diverged" for r in rows])
                ax.plot(x, y, ls=ls, marker=marker, color=colours[seed], ms=6, lw=1.1)
                if div.any() and stat == "acc":
                    ax.scatter(np.array(x)[div], np.full(div.sum(), CHANCE), marker="v", s=60, color="tab:red",
                               zorder=4)
        ax.axvline(1.0, ls=":", color="k", lw=1)
        ax.set_xscale("log")
        log_axis(ax.xaxis)
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel(r"$\eta_0 / \eta_{eos}(\theta_0)$")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    axes[3].axhline(1.0, color="tab:red", lw=1, ls="-")
    axes[3].axhline(clamp, color="0.3", lw=1, ls="--")
    axes[3].text(0.02, 0.97, f"red: the limit (1); dashed: the clamp ({clamp:g})", transform=axes[3].transAxes,
                 fontsize=8, va="top")
    # (e) paired accuracy differences per eta_0: each seed's, and their mean with the paired test's interval
    ax = axes[4]
    op = REGISTRY["ablation.accuracy"]["op"]
    no_bar = False
    for g in sorted({r["lr_relative"] for r in pairs}):
        rows = [r for r in pairs if r["lr_relative"] == g]
        d = np.array([_difference(r, "acc") for r in rows])
        x = float(np.mean([r["ratio"] for r in rows]))
        ax.scatter([x] * len(d), d, c=[colours[r["seed"]] for r in rows], s=25, zorder=3)
        iv = decide(d, op, 0.0, "paired").interval
        if iv is None:
            no_bar = True
            ax.scatter([x], [d.mean()], marker="s", color="k", s=30, zorder=4)
        else:
            ax.errorbar(x, d.mean(), yerr=[[d.mean() - iv[0]], [iv[1] - d.mean()]], fmt="s", color="k",
                        capsize=4, zorder=4)
    ax.axhline(0.0, color="k", lw=1)
    ax.axvline(1.0, ls=":", color="k", lw=1)
    ax.set_xscale("log")
    log_axis(ax.xaxis)
    ax.set_xlabel(r"$\eta_0 / \eta_{eos}(\theta_0)$")
    ax.set_ylabel("accuracy: plain - clamped")
    ax.set_title("(e) paired differences: seeds, mean (square), sign-flip 95% interval"
                 + (f" (none: < {min_deciding_seeds('paired')} seeds)" if no_bar else ""), fontsize=9)
    claims = ablation_claims(pairs, setting)
    ax = axes[5]
    ax.axis("off")
    binds = np.array([r["clamp_fraction"] for r in pairs if r["ratio"] > 1 + AT_LIMIT])
    text = "\n\n".join(_verdict_line(c) for c in claims)
    text += (f"\n\nclamp {clamp:g}: binds on a median {np.median(binds):.0%} of steps above the limit"
             if binds.size else "")
    ax.text(0.0, 1.0, "(f) claims, pairs with eta0 > eta_eos:\nper seed the mean difference; over seeds\n"
            "the exact sign-flip test\n\n" + text, va="top", ha="left", fontsize=9,
            family="monospace", transform=ax.transAxes, wrap=True)
    handles = [Line2D([], [], color="0.3", marker="o", ls="-", label="plain GD"),
               Line2D([], [], color="0.3", marker="X", ls="--", label=f"clamped twin (clamp {clamp:g})"),
               Line2D([], [], color="tab:red", marker="v", ls="", label="diverged (at chance)")]
    handles += [Line2D([], [], color=colours[s], lw=3, label=f"seed {s}") for s in seeds]
    axes[0].legend(handles=handles, fontsize=7, loc="lower left")
    fig.suptitle(f"Instability ablation on {setting}: plain GD against its stability-clamped twin")
    return finish(fig, claims, pdf_path, png_path, claims_path, "ext/instability_ablation", keep_open,
                  clamp=clamp, pairs=json_safe(pairs))
