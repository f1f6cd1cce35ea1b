"""Extension target ``figures/ext/layers.pdf``: which layers carry the instability?

For fig5's runs of one setting (``layers.setting``, default fig5's first), the top eigenvalue of each
layer's diagonal Hessian block (one block per module owning parameters; the output layer is the last
``Linear``) at the runs' snapshots (rule ``layer_spectra``, :mod:`eosflow.jobs.layers`). (a), (b):
for the first seed, the per-layer λ_max over training of its run nearest below the limit and its
run nearest above it that did not diverge, with the run's own S(θ) (the whole Hessian's top
eigenvalue, from its cube: every block's λ_max is at most S by interlacing) and 2/η; (c) every seed's
final per-layer λ_max against η₀/η_eos (each run against its own seed's limit; a diverged run as a
red triangle).

Claims (the registry's ``layers.flatter_above``, a family "every" over the layers, and
``layers.output_carries``), on the runs' final measured snapshot; runs within ``at_limit``
(relative) of their seed's limit are on neither side:

- ``layers.flatter_above``, per layer and seed: the median over its runs above the limit of
  log λ_layer(final) minus the median over its runs below. A diverged run (or one without a finite
  final value) counts against the claim: +inf above the limit, -inf below it. The median over seeds
  by the sign test; the family holds when every layer holds.
- ``layers.output_carries``, per seed: the fraction of its runs above the limit whose largest final
  block λ_max is the output layer's (a diverged run counts as not); the median over seeds > 0.5.

A seed without runs on a side has no value for that claim (named in the note).
"""

from __future__ import annotations

import json
import math

import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from ..claims import REGISTRY, Claim, claim, family_claim
from .common import finish, log_axis, new_figure

#: The relative distance from a seed's limit within which a run is on neither side (the registry's).
AT_LIMIT = float(REGISTRY.param("layers.flatter_above", "at_limit"))
SEED_MARKERS = "osD^P*hX"


def _median(values: list[float]) -> float:
    """The median, infinite values included (NaN only where the two middle values are -inf and +inf)."""
    v = sorted(values)
    n = len(v)
    if n % 2:
        return float(v[n // 2])
    a, b = v[n // 2 - 1], v[n // 2]
    if a == b:
        return float(a)
    return float((a + b) / 2)


def layer_labels(ds: xr.Dataset) -> dict[str, str]:
    """{layer name: label}: its position, class and module name; the output layer marked."""
    out = ds.attrs.get("output_layer", "")
    names, types = ds["layer"].values.astype(str), ds["layer_type"].values.astype(str)
    return {n: f"layer {i + 1} ({t} {n}{', output' if n == out else ''})" for i, (n, t) in enumerate(zip(names, types))}


def run_table(layers: list[xr.Dataset], at_limit: float = AT_LIMIT) -> list[dict]:
    """One row per run: ``lr``, ``seed``, ``status``, ``eta_eos``, ``ratio`` (η₀/η_eos), ``side``
    (``above``, ``below``, or None within ``at_limit`` of the limit or without one), ``final``
    ({layer: top eigenvalue at the last measured snapshot}), ``final_step``, ``output_layer``,
    ``blown`` (diverged, or no finite final value of some layer)."""
    rows = []
    for ds in layers:
        lr, eos = float(ds["lr"]), float(ds.attrs.get("eta_eos", math.nan))
        ratio = lr / eos if math.isfinite(eos) and eos > 0 else math.nan
        side = ("above" if ratio > 1 + at_limit else "below" if ratio < 1 - at_limit else None) \
            if math.isfinite(ratio) else None
        names = ds["layer"].values.astype(str).tolist()
        if ds.sizes.get("step", 0):
            last = ds["layer_eigval"].values[-1, :, 0].astype(float)
            final, final_step = dict(zip(names, last.tolist())), int(ds["step"].values[-1])
        else:
            final, final_step = {n: math.nan for n in names}, None
        status = str(ds.attrs.get("status", "unknown"))
        blown = status == "diverged" or not all(math.isfinite(v) for v in final.values())
        rows.append({"lr": lr, "seed": int(ds["seed"]), "status": status, "eta_eos": eos, "ratio": ratio,
                     "side": side, "final": final, "final_step": final_step, "blown": blown,
                     "output_layer": ds.attrs.get("output_layer", ""),
                     "skipped_steps": json.loads(ds.attrs.get("skipped_steps", "[]"))})
    return rows


def final_log(row: dict, layer: str) -> float:
    """log λ_layer(final) of a run for ``layers.flatter_above``: a blown-up run against the claim
    (+inf above the limit, -inf below it); λ <= 0 is -inf (flat)."""
    if row["blown"]:
        return math.inf if row["side"] == "above" else -math.inf
    lam = row["final"][layer]
    return math.log(lam) if lam > 0 else -math.inf


def carried_by_output(row: dict) -> bool:
    """Whether the run's largest final block λ_max is its output layer's (a blown-up run: not)."""
    if row["blown"] or not row["output_layer"]:
        return False
    return max(row["final"], key=row["final"].get) == row["output_layer"]


def seed_table(rows: list[dict], layers: list[str]) -> list[dict]:
    """Per seed: its runs below/above the limit, ``flatter`` ({layer: the difference of medians of
    log λ_layer(final), above minus below; None without runs on both sides}) and ``output_fraction``
    (the fraction of its runs above whose largest final block is the output layer's; None without
    runs above)."""
    out = []
    for seed in sorted({r["seed"] for r in rows}):
        up = [r for r in rows if r["seed"] == seed and r["side"] == "above"]
        down = [r for r in rows if r["seed"] == seed and r["side"] == "below"]
        both = bool(up and down)
        flatter = {L: (_median([final_log(r, L) for r in up]) - _median([final_log(r, L) for r in down]))
                   if both else None for L in layers}
        out.append({"seed": seed, "runs_below": len(down), "runs_above": len(up),
                    "diverged_above": sum(r["status"] == "diverged" for r in up),
                    "diverged_below": sum(r["status"] == "diverged" for r in down),
                    "flatter": flatter,
                    "output_fraction": sum(carried_by_output(r) for r in up) / len(up) if up else None})
    return out


def layers_claims(rows: list[dict], labels: dict[str, str]) -> tuple[list[Claim], list[dict]]:
    """The two claims of the module docstring and the per-seed table behind them."""
    names = list(labels)
    table = seed_table(rows, names)
    counts = "runs below/above per seed: " + ", ".join(
        f"seed {t['seed']}: {t['runs_below']}/{t['runs_above']}"
        + (f" ({t['diverged_above']} diverged above)" if t["diverged_above"] else "") for t in table)
    missing = [t["seed"] for t in table if t["flatter"][names[0]] is None] if names else []
    options = {labels[L]: [t["flatter"][L] for t in table if t["flatter"][L] is not None] for L in names}
    note = (counts + f"; runs within {AT_LIMIT:g} (relative) of their seed's limit on neither side; "
            "a diverged run +inf above the limit, -inf below")
    if missing:
        note += f"; seeds {missing} lack runs on one side"
    flatter = family_claim("layers.flatter_above", options, fmt={"layer": "every layer"}, note=note)
    fractions = [t["output_fraction"] for t in table if t["output_fraction"] is not None]
    out = next((labels[L] for L in names if "output" in labels[L]), "none")
    note2 = (f"output layer: {out}; fraction per seed: "
             + ", ".join(f"seed {t['seed']}: {t['output_fraction']:.3g}" for t in table
                         if t["output_fraction"] is not None) + "; a diverged run counts as not")
    no_above = [t["seed"] for t in table if t["output_fraction"] is None]
    if no_above:
        note2 += f"; seeds {no_above} have no run above their limit"
    carries = claim("layers.output_carries", fractions, note=note2)
    return [flatter, carries], table


def _cube_of(cubes: list[xr.Dataset], lr: float, seed: int) -> xr.Dataset | None:
    for c in cubes:
        if int(c["seed"]) == seed and math.isclose(float(c["lr"]), lr, rel_tol=1e-9):
            return c
    return None


def _pick(rows: list[dict], seed: int) -> tuple[int | None, int | None]:
    """Indices of the first seed's run nearest below its limit and its nearest above that did not diverge."""
    below = [i for i, r in enumerate(rows) if r["seed"] == seed and r["side"] == "below"]
    above = [i for i, r in enumerate(rows) if r["seed"] == seed and r["side"] == "above" and not r["blown"]]
    return (max(below, key=lambda i: rows[i]["ratio"]) if below else None,
            min(above, key=lambda i: rows[i]["ratio"]) if above else None)


def make_layers(layers: list[xr.Dataset], cubes: list[xr.Dataset], pdf_path, png_path, claims_path,
                keep_open: bool = False):
    """Draw the per-layer figure from the runs' layer spectra (rule ``layer_spectra``) and their cubes
    (for S(θ)); write its claims. The first run's seed is the one drawn in (a) and (b)."""
    if not layers:
        raise ValueError("ext/layers: no layer spectra")
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    labels = layer_labels(layers[0])
    names = list(labels)
    rows = run_table(layers)
    claims, table = layers_claims(rows, labels)
    colour = dict(zip(names, sns.color_palette("tab10", len(names))))
    fig = new_figure(figsize=(16, 4.6))
    axes = fig.subplots(1, 3)
    seed0 = rows[0]["seed"]
    for ax, idx, tag, side in zip(axes[:2], _pick(rows, seed0), "ab", ("below", "above")):
        if idx is None:
            ax.text(0.5, 0.5, f"seed {seed0}: no run {side} the limit", ha="center", transform=ax.transAxes)
            ax.set_title(f"({tag}) seed {seed0}, {side} the limit")
            continue
        ds, r = layers[idx], rows[idx]
        for j, L in enumerate(names):
            ax.plot(ds["step"].values, ds["layer_eigval"].values[:, j, 0], color=colour[L], lw=1.3, marker=".",
                    ms=4, label=labels[L])
        cube = _cube_of(cubes, r["lr"], r["seed"])
        if cube is not None:
            ax.plot(cube["hstep"].values, cube["sharpness"].values, color="k", ls="--", lw=1.1,
                    label=r"$S(\theta)$, whole Hessian")
        ax.axhline(2 / r["lr"], color="0.4", ls=":", lw=1.1, label=r"$2/\eta$")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(r"block top eigenvalue $\lambda_{max}$")
        ax.set_title(rf"({tag}) seed {seed0}, $\eta_0$ = {r['ratio']:.2g} $\eta_{{eos}}$ ({side}; {r['status']})")
        ax.legend(fontsize=7, loc="best")
    ax = axes[2]
    seeds = sorted({r["seed"] for r in rows})
    finite = [v for r in rows if not r["blown"] for v in r["final"].values() if v > 0]
    top = max(finite) * 2 if finite else 1.0
    for r in rows:
        marker = SEED_MARKERS[seeds.index(r["seed"]) % len(SEED_MARKERS)]
        if r["blown"]:
            ax.scatter(r["ratio"], top, marker="v", s=60, color="tab:red", zorder=3)
            continue
        for L in names:
            ax.scatter(r["ratio"], r["final"][L], marker=marker, s=30, color=colour[L], edgecolor="k",
                       linewidth=0.4, zorder=3)
        cube = _cube_of(cubes, r["lr"], r["seed"])
        if cube is not None:
            s = cube["sharpness"].values.astype(float)
            s = s[np.isfinite(s)]
            if s.size:
                ax.scatter(r["ratio"], s[-1], marker="_", s=80, color="k", zorder=2)
    ax.axvline(1.0, ls=":", color="k", lw=1.2)
    ax.axvspan(1 - AT_LIMIT, 1 + AT_LIMIT, color="0.85", zorder=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    grid = sorted({round(r["ratio"], 2) for r in rows if math.isfinite(r["ratio"])})
    if 1 < len(grid) <= 12:  # a relative grid: its multiples as ticks
        ax.set_xticks(grid, [f"{g:g}" for g in grid])
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        log_axis(ax.xaxis)
    ax.set_xlabel(r"$\eta_0 / \eta_{eos}$ (each run against its own seed's limit)")
    ax.set_ylabel(r"final block $\lambda_{max}$")
    ax.set_title("(c) final per-layer top eigenvalue, every seed")
    handles = [Line2D([], [], marker="o", ls="", color=colour[L], label=labels[L]) for L in names]
    handles += [Line2D([], [], marker=SEED_MARKERS[i % len(SEED_MARKERS)], ls="", color="0.5", label=f"seed {s}")
                for i, s in enumerate(seeds)]
    handles += [Line2D([], [], marker="_", ls="", color="k", ms=10, label=r"final $S(\theta)$"),
                Line2D([], [], marker="v", ls="", color="tab:red", label="diverged")]
    ax.legend(handles=handles, fontsize=7, loc="best")
    fig.tight_layout()
    runs = [{k: v for k, v in r.items()} for r in rows]
    return finish(fig, claims, pdf_path, png_path, claims_path, "ext/layers", keep_open, runs=runs,
                  seeds=table, layers=labels)
