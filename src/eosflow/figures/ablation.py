"""Extension figure ``ext/instability_ablation``: does crossing the stability limit cause fig5's gain?

Each pair is a fig5 run (plain GD at η₀) and its stability-clamped twin, which steps with
``η_t = min(η₀, clamp · 2 / S(θ_t))`` (S tracked at every step) and so never crosses the limit; θ₀,
data, η₀ and the stopping rule are the plain run's. Against η₀ / η_eos(θ₀), each seed's pair
drawn: (a) validation accuracy, (b) final sharpness S_final, (c) the rotation 1 − ρ of the top
eigenspace from the first to the last measurement, (d) the measured max η_t·S(θ_t)/2; (e) the paired
accuracy differences per η₀ with 95 % bootstrap intervals over seeds; (f) the claims.

Claims, fixed before any run, over the pairs with η₀ above the limit (η₀ / η_eos > 1 + AT_LIMIT, the
plain run's own seed's limit): per seed, the mean over its pairs of plain − clamped; over seeds, the
mean with its 95 % bootstrap interval, which must clear 0:

- plain GD beats its clamped twin in validation accuracy (> 0; a diverged run counts at chance, as in fig5);
- plain GD ends flatter (S_final difference < 0);
- plain GD rotates more (1 − ρ difference > 0).

A pair with a diverged run has no final state: it is left out of the last two. A seed contributes
with at least :data:`MIN_PAIRS` pairs; a claim needs :data:`MIN_SEEDS` seeds.
"""

from __future__ import annotations

import math

import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.lines import Line2D

from ..claims import Claim, bootstrap_interval, check
from .common import finish, json_safe, log_axis, new_figure
from .fig5 import AT_LIMIT, CHANCE, accuracy

__all__ = ["MIN_PAIRS", "MIN_SEEDS", "pair_runs", "paired_claim", "ablation_claims", "make_ablation"]

#: Minimum evidence, fixed before any run: pairs above the limit per contributing seed, and seeds.
MIN_PAIRS = 2
MIN_SEEDS = 3
#: (name, statistic, summary variable, comparison, threshold, a diverged run's value)
STATISTICS = (
    ("plain GD beats its clamped twin in validation accuracy", "acc", "final_test_acc", ">", "chance"),
    ("plain GD ends flatter (lower final sharpness)", "sharpness_final", "sharpness_final", "<", None),
    ("plain GD rotates its top eigenspace more (larger 1 - rho)", "rotation", "rotation", ">", None),
)


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
    """plain − clamped of one pair; NaN where a diverged run has no final state (S_final, 1 − ρ)."""
    if stat != "acc" and "diverged" in (row["status_plain"], row["status_clamped"]):
        return math.nan
    return row[f"{stat}_plain"] - row[f"{stat}_clamped"]


def per_seed_differences(pairs: list[dict], stat: str) -> dict[int, list[float]]:
    """{seed: finite plain − clamped differences of its pairs above the limit}."""
    out: dict[int, list[float]] = {}
    for r in pairs:
        if r["ratio"] > 1 + AT_LIMIT:
            d = _difference(r, stat)
            out.setdefault(r["seed"], [])
            if math.isfinite(d):
                out[r["seed"]].append(d)
    return out


def paired_claim(name: str, pairs: list[dict], stat: str = "acc", op: str = ">") -> Claim:
    """One paired claim (module docstring) over ``pairs`` above the limit."""
    by_seed = per_seed_differences(pairs, stat)
    means = [float(np.mean(v)) for v in by_seed.values() if len(v) >= MIN_PAIRS]
    counts = ", ".join(f"seed {s}: {len(v)}" for s, v in sorted(by_seed.items()))
    return check(name, f"mean over seeds of the seed's mean (plain - clamped) {stat} over pairs with "
                       f"eta0 > eta_eos", np.mean(means) if means else None, op, 0,
                 note=f"pairs above the limit per seed: {counts or 'none'}"
                      + ("; a diverged run counts at chance" if stat == "acc" else "; pairs with a diverged run left out"),
                 interval=bootstrap_interval(means), evidence={"seeds": len(means)}, minimum={"seeds": MIN_SEEDS})


def ablation_claims(pairs: list[dict], prefix: str = "") -> list[Claim]:
    return [paired_claim(prefix + name, pairs, stat, op) for name, stat, _, op, _ in STATISTICS]


def _verdict_line(c: Claim) -> str:
    val = "n/a" if c.value is None else f"{c.value:+.4g}"
    iv = "" if c.interval is None else f" [{c.interval[0]:+.3g}, {c.interval[1]:+.3g}]"
    return f"{c.name.split(': ', 1)[-1]}\n   {val}{iv} {c.threshold}: {c.verdict.upper()}"


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
    # (e) paired accuracy differences per eta_0, each seed and the mean with its interval
    ax = axes[4]
    ratios = sorted({r["lr_relative"] for r in pairs})
    for g in ratios:
        rows = [r for r in pairs if r["lr_relative"] == g]
        d = np.array([_difference(r, "acc") for r in rows])
        x = float(np.mean([r["ratio"] for r in rows]))
        ax.scatter([x] * len(d), d, c=[colours[r["seed"]] for r in rows], s=25, zorder=3)
        iv = bootstrap_interval(d)
        if iv is not None:
            ax.errorbar(x, d.mean(), yerr=[[d.mean() - iv[0]], [iv[1] - d.mean()]], fmt="s", color="k",
                        capsize=4, zorder=4)
    ax.axhline(0.0, color="k", lw=1)
    ax.axvline(1.0, ls=":", color="k", lw=1)
    ax.set_xscale("log")
    log_axis(ax.xaxis)
    ax.set_xlabel(r"$\eta_0 / \eta_{eos}(\theta_0)$")
    ax.set_ylabel("accuracy: plain - clamped")
    ax.set_title("(e) paired differences (mean, 95% interval over seeds)")
    claims = ablation_claims(pairs, prefix=f"{setting}: ")
    ax = axes[5]
    ax.axis("off")
    binds = np.array([r["clamp_fraction"] for r in pairs if r["ratio"] > 1 + AT_LIMIT])
    text = "\n\n".join(_verdict_line(c) for c in claims)
    text += (f"\n\nclamp {clamp:g}: binds on a median {np.median(binds):.0%} of steps above the limit"
             if binds.size else "")
    ax.text(0.0, 1.0, "(f) claims, pairs with eta0 > eta_eos\n\n" + text, va="top", ha="left", fontsize=9,
            family="monospace", transform=ax.transAxes, wrap=True)
    handles = [Line2D([], [], color="0.3", marker="o", ls="-", label="plain GD"),
               Line2D([], [], color="0.3", marker="X", ls="--", label=f"clamped twin (clamp {clamp:g})"),
               Line2D([], [], color="tab:red", marker="v", ls="", label="diverged (at chance)")]
    handles += [Line2D([], [], color=colours[s], lw=3, label=f"seed {s}") for s in seeds]
    axes[0].legend(handles=handles, fontsize=7, loc="lower left")
    fig.suptitle(f"Instability ablation on {setting}: plain GD against its stability-clamped twin")
    return finish(fig, claims, pdf_path, png_path, claims_path, "ext/instability_ablation", keep_open,
                  clamp=clamp, pairs=json_safe(pairs))
