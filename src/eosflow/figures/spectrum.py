"""Extension target ``figures/ext/spectrum.pdf``: the Hessian's spectral density before, at the peak of,
and after fig2's chosen instabilities. Does an instability move only the outliers, or the bulk too?

Per fig2 seed (``spectrum.seeds``, by default every one of ``fig2.seeds``) the rule
``spectrum_density`` (:mod:`eosflow.jobs.spectrum`) measures the density by stochastic Lanczos
quadrature at the onset, peak and end epoch of each chosen instability of the seed's plan. The figure
draws the first seed: one panel per chosen instability, the log density against λ at the three
points, each point's λ_max marked (and 2/η); and a summary over seeds of the two statistics below.

The statistics, exactly as the registry (``spectrum.top_falls``, ``spectrum.bulk_stays``) states them:

- ``λ_max``: the largest node of a point's SLQ measure (:func:`lambda_max`);
- ``w``: the width between the ``q_low`` and ``q_high`` quantiles (5 %, 95 %; the registry's
  ``params``) of the probe-averaged SLQ measure (:func:`quantile_width`);
- per instability ``log(λ_max(end) / λ_max(onset))`` and ``|log(w(end) / w(onset))|``, each +inf
  when the loss at the onset or the end is not finite (against the claims);
- per seed the mean over its chosen instabilities (+inf when any of them is); the claims decide on
  the median over seeds by the sign test (the registry's kind ``median``, which counts an infinite
  value on its side). A seed without a chosen instability has no value and drops out with a note.
"""

from __future__ import annotations

import math

import numpy as np
import seaborn as sns
import xarray as xr

from ..claims import REGISTRY, Claim, claim
from .common import finish, new_figure

POINT_COLORS = {"onset": "tab:blue", "peak": "tab:red", "end": "tab:green"}


def probe_measure(nodes, weights) -> tuple[np.ndarray, np.ndarray]:
    """The probe-averaged SLQ measure of one point: ``nodes``, ``weights`` (probe, node), each probe's
    weights summing to 1 (NaN nodes, weight 0: padding) → (sorted nodes, weights summing to 1)."""
    x, w = np.asarray(nodes, dtype=float), np.asarray(weights, dtype=float)
    ok = np.isfinite(x) & (w > 0)
    if not ok.any():
        return np.zeros(0), np.zeros(0)
    x, w = x[ok], w[ok] / x.shape[0]
    order = np.argsort(x, kind="stable")
    return x[order], w[order] / w.sum()


def lambda_max(nodes, weights) -> float:
    """The largest node of the point's SLQ measure (NaN without one)."""
    x, _ = probe_measure(nodes, weights)
    return float(x[-1]) if x.size else math.nan


def quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    """The ``q`` quantile of the discrete measure (sorted ``x``, weights ``w`` summing to 1): the
    smallest node whose cumulative weight reaches ``q``."""
    cdf = np.cumsum(w)
    return float(x[min(int(np.searchsorted(cdf, q - 1e-12, side="left")), x.size - 1)])


def quantile_width(nodes, weights, q_low: float = 0.05, q_high: float = 0.95) -> float:
    """The width between the ``q_low`` and ``q_high`` quantiles of the probe-averaged SLQ measure."""
    x, w = probe_measure(nodes, weights)
    return quantile(x, w, q_high) - quantile(x, w, q_low) if x.size else math.nan


def _log_ratio(after: float, before: float) -> float:
    return math.log(after / before) if after > 0 and before > 0 else math.nan


def instability_values(ds: xr.Dataset, q_low: float, q_high: float) -> list[dict]:
    """Per chosen instability of one seed's densities: its epochs and losses, λ_max and w at each
    point, ``top`` = log(λ_max(end) / λ_max(onset)) and ``bulk`` = |log(w(end) / w(onset))| (+inf
    when the loss at the onset or the end is not finite; NaN when a ratio is not positive)."""
    rows = []
    for i in ds["instability"].values:
        d = ds.sel(instability=i)
        row = {"instability": int(i)}
        for p in d["point"].values:
            nodes, weights = d["slq_nodes"].sel(point=p).values, d["slq_weights"].sel(point=p).values
            row[str(p)] = {"epoch": int(d["step"].sel(point=p)), "loss": float(d["loss"].sel(point=p)),
                           "lambda_max": lambda_max(nodes, weights),
                           "width": quantile_width(nodes, weights, q_low, q_high)}
        on, end = row["onset"], row["end"]
        if not (math.isfinite(on["loss"]) and math.isfinite(end["loss"])):
            row["top"], row["bulk"] = math.inf, math.inf
        else:
            row["top"] = _log_ratio(end["lambda_max"], on["lambda_max"])
            row["bulk"] = abs(_log_ratio(end["width"], on["width"]))
        rows.append(row)
    return rows


def seed_values(ds: xr.Dataset, plan: dict, q_low: float, q_high: float) -> dict:
    """One seed's values: its instabilities' rows and the means over them of ``top`` and ``bulk``
    (None without a chosen instability; instabilities whose value is NaN left out of the mean)."""
    rows = instability_values(ds, q_low, q_high)

    def mean(key):
        v = [r[key] for r in rows if not math.isnan(r[key])]
        return float(np.mean(v)) if v else None

    return {"seed": int(plan["seed"]), "lr": float(plan["lr"]), "instabilities": rows, "top": mean("top"),
            "bulk": mean("bulk")}


def _claim(claim_id: str, values: list[dict], key: str) -> Claim:
    used = [(v["seed"], v[key]) for v in values if v[key] is not None]
    left = [v["seed"] for v in values if v[key] is None]
    note = "per seed (mean over its chosen instabilities): " + (
        ", ".join(f"seed {s}: {x:.4g}" for s, x in used) or "none")
    if left:
        note += f"; left out (no chosen instability): seeds {left}"
    inf = [s for s, x in used if not math.isfinite(x)]
    if inf:
        note += f"; seeds {inf} are +inf (a non-finite loss at an onset or end of an instability): against the claim"
    return claim(claim_id, [x for _, x in used], note=note)


def spectrum_claims(values: list[dict]) -> list[Claim]:
    """The claims (registry ``spectrum.top_falls``, ``spectrum.bulk_stays``) from every seed's
    :func:`seed_values`: one value per seed."""
    return [_claim("spectrum.top_falls", values, "top"), _claim("spectrum.bulk_stays", values, "bulk")]


def _density_panel(ax, ds: xr.Dataset, i: int, row: dict, lr: float) -> None:
    grid = ds["grid"].values
    d = ds.sel(instability=i)
    dens = d["density"].values
    floor = np.nanmax(dens) * 1e-9 if np.isfinite(dens).any() else 1e-12
    for j, p in enumerate(d["point"].values):
        r = row[str(p)]
        y = np.maximum(dens[j], floor)
        label = rf"{p}, epoch {r['epoch']}: $\lambda_{{max}}$ = {r['lambda_max']:.3g}, w = {r['width']:.3g}"
        ax.plot(grid, y, color=POINT_COLORS[str(p)], lw=1.1, label=label)
        if math.isfinite(r["lambda_max"]):
            ax.axvline(r["lambda_max"], color=POINT_COLORS[str(p)], ls="--", lw=0.9)
    ax.axvline(2 / lr, color="k", ls=":", lw=1.0, label=r"$2/\eta$")
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor * 10)
    ax.set_xlabel(r"eigenvalue $\lambda$")
    ax.set_title(f"instability {i}: epochs {row['onset']['epoch']}-{row['end']['epoch']} "
                 f"(peak {row['peak']['epoch']})\n"
                 rf"log $\lambda_{{max}}$ ratio {row['top']:.3g}, |log w ratio| {row['bulk']:.3g}")
    ax.legend(fontsize=6.5, loc="upper right")


def _summary_panel(ax, values: list[dict], key: str, c: Claim, ylabel: str) -> None:
    for x, v in enumerate(values):
        per = [r[key] for r in v["instabilities"]]
        fin = [p for p in per if math.isfinite(p)]
        ax.scatter([x] * len(fin), fin, s=12, color="0.55", zorder=2)
        if v[key] is not None and math.isfinite(v[key]):
            ax.scatter([x], [v[key]], s=45, color="k", marker="D", zorder=3)
        if any(p == math.inf for p in per):
            ax.annotate("+inf", (x, 1), xycoords=("data", "axes fraction"), ha="center", va="top", fontsize=7)
    bound = float(REGISTRY[c.id]["bound"])
    ax.axhline(bound, color="tab:red", ls="--", lw=1, label=f"bound {c.threshold}")
    if c.value is not None and math.isfinite(c.value):
        ax.axhline(c.value, color="k", ls=":", lw=1, label=f"median over seeds {c.value:.3g}")
    if c.id == "spectrum.top_falls":
        ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(range(len(values)), [str(v["seed"]) for v in values])
    ax.set_xlabel("seed (grey: each chosen instability; black: the seed's mean)")
    ax.set_ylabel(ylabel)
    value = "–" if c.value is None else f"{c.value:.3g}"
    ax.set_title(f"{c.name}\nmedian over seeds {value}: {c.verdict}", fontsize=9)
    ax.legend(fontsize=7, loc="best")


def make_spectrum(densities: list[xr.Dataset], plans: list[dict], pdf_path, png_path, claims_path,
                  keep_open: bool = False):
    """Draw the first seed's densities and the summary over seeds; write the claims. ``densities``:
    each seed's :func:`eosflow.jobs.spectrum.spectrum_dataset`, ``plans``: its fig2 plan, both in seed order."""
    if not densities or len(densities) != len(plans):
        raise ValueError(f"make_spectrum: {len(densities)} density files for {len(plans)} plans")
    q_low, q_high = (REGISTRY.param("spectrum.bulk_stays", k) for k in ("q_low", "q_high"))
    values = [seed_values(ds, plan, q_low, q_high) for ds, plan in zip(densities, plans)]
    claims = spectrum_claims(values)
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.0)
    first, rows = densities[0], values[0]["instabilities"]
    ncol = max(len(rows), 2)
    fig = new_figure(figsize=(4.2 * ncol, 8.0))
    grid = fig.add_gridspec(2, 2 * ncol)
    for j, row in enumerate(rows):
        ax = fig.add_subplot(grid[0, 2 * j:2 * j + 2])
        _density_panel(ax, first, row["instability"], row, plans[0]["lr"])
        if j == 0:
            ax.set_ylabel("spectral density (log)")
    if not rows:
        ax = fig.add_subplot(grid[0, :])
        ax.text(0.5, 0.5, f"seed {values[0]['seed']}: no chosen instability", ha="center", va="center")
        ax.set_axis_off()
    half = ncol
    _summary_panel(fig.add_subplot(grid[1, :half]), values, "top", claims[0],
                   r"log($\lambda_{max}$(end) / $\lambda_{max}$(onset))")
    _summary_panel(fig.add_subplot(grid[1, half:]), values, "bulk", claims[1],
                   f"|log(w(end) / w(onset))|, w: {q_low:g}-{q_high:g} quantile width")
    fig.suptitle(f"Hessian spectral density through fig2's instabilities: seed {values[0]['seed']} drawn "
                 rf"($\eta$ = {plans[0]['lr']:.4g}); claims over seeds {[v['seed'] for v in values]}")
    fig.tight_layout()
    return finish(fig, claims, pdf_path, png_path, claims_path, "ext/spectrum", keep_open,
                  drawn_seed=values[0]["seed"], seeds=values,
                  slq={k: _plain(first.attrs.get(k)) for k in ("probes", "steps", "sigma", "distribution", "probe_seed")})


def _plain(x):
    """A NetCDF attribute as a plain Python value (numpy scalars are not JSON)."""
    return x.item() if isinstance(x, np.generic) else x
