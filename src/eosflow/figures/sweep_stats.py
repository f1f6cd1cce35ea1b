"""Rank correlations over the fig5 sweep's runs (fig7, fig8): which runs enter, per-seed Spearman
correlations across η₀, a pooled correlation with a bootstrap over seeds, and ρ tabulated per grid point.

Which runs enter (fixed before any run):

- **Diverged runs are excluded** from every correlation and from the ρ table: their final
  sharpness and eigenvectors are those of a blown-up network and their accuracy is chance, not an
  outcome of training at that η₀. They are counted (per seed, per grid point, and in the claims
  files' ``diverged_runs``), never dropped silently. Runs that hit ``train.max_epochs`` enter.
- Runs where a quantity is not finite (e.g. no stored eigenvectors: ``1 − ρ`` is NaN) drop out of
  that quantity's correlation only (:func:`eosflow.similarity.spearman` drops NaN pairs).
- **A seed contributes** to a correlation when it has at least :data:`MIN_RUNS` usable runs with
  both values finite and neither constant (its Spearman is then defined); a claim needs
  :data:`MIN_SEEDS` contributing seeds (its bootstrap interval over seeds is then computed from as
  many values, :func:`eosflow.claims.bootstrap_interval`).

The η₀ of a relative sweep are multiples of each seed's own η_eos(θ₀), so η₀ differs between
seeds at the same grid point: tables are per multiple η₀ / η_eos (:func:`grid_points`).
No torch here.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from ..claims import Claim, bootstrap_interval, check
from ..similarity import spearman

__all__ = ["MIN_RUNS", "MIN_SEEDS", "NEEDED", "usable", "ratio", "column", "settings_of", "setting_runs",
           "seed_spearman", "seed_mean_claim", "pooled_spearman", "seed_bootstrap_interval", "pooled_claim",
           "grid_points", "rho_table", "diverged_runs"]

#: The fewest usable runs (finite pairs, diverged excluded) with which a seed's correlation counts.
MIN_RUNS = 4
#: The fewest contributing seeds a claim needs (and the values its bootstrap interval is computed from).
MIN_SEEDS = 3
#: The summary variables fig7 and fig8 read (a summary without them is an error naming the file).
NEEDED = ("final_test_acc", "sharpness_final", "rotation", "status", "eta_eos", "lr_relative")


def settings_of(ds: xr.Dataset) -> list[str]:
    """The summary's settings in the order they first appear."""
    return list(dict.fromkeys(ds["setting"].values.tolist()))


def setting_runs(ds: xr.Dataset, name: str) -> xr.Dataset:
    return ds.isel(run=np.flatnonzero(ds["setting"].values == name))


def usable(ds: xr.Dataset) -> np.ndarray:
    """Runs that enter the correlations: not diverged, with a finite validation accuracy."""
    acc = ds["final_test_acc"].values.astype(float)
    return (ds["status"].values != "diverged") & np.isfinite(acc)


def ratio(ds: xr.Dataset) -> np.ndarray:
    """η₀ / η_eos(θ₀) of each run against its own seed's limit (NaN where the limit is unknown), to 10
    significant digits: the same multiple on two seeds ties in a rank correlation, not broken by rounding
    in the last bit of the division."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = ds["lr"].values.astype(float) / ds["eta_eos"].values.astype(float)
        scale = 10.0 ** (9 - np.floor(np.log10(np.abs(np.where(np.isfinite(r) & (r != 0), r, 1.0)))))
    return np.round(r * scale) / scale


def column(ds: xr.Dataset, name: str) -> np.ndarray:
    """A per-run quantity by name: a summary variable, ``ratio`` (η₀/η_eos) or ``rho`` (1 − rotation)."""
    if name == "ratio":
        return ratio(ds)
    if name == "rho":
        return 1.0 - ds["rotation"].values.astype(float)
    return ds[name].values.astype(float)


def _pairs(ds: xr.Dataset, x: str, y: str, seed) -> tuple[np.ndarray, np.ndarray]:
    """The finite (x, y) pairs of one seed's usable runs."""
    keep = usable(ds) & (ds["seed"].values == seed)
    xs, ys = column(ds, x)[keep], column(ds, y)[keep]
    ok = np.isfinite(xs) & np.isfinite(ys)
    return xs[ok], ys[ok]


def seed_spearman(ds: xr.Dataset, x: str, y: str = "final_test_acc") -> list[dict]:
    """Per seed of one setting: Spearman(y, x) across η₀ over its usable runs, with the counts.

    Rows: ``seed``, ``runs`` (finite pairs used), ``diverged``, ``spearman`` (None when the seed has
    fewer than :data:`MIN_RUNS` pairs or a constant sample), ``contributes``."""
    rows = []
    status = ds["status"].values
    for seed in np.unique(ds["seed"].values):
        xs, ys = _pairs(ds, x, y, seed)
        r = spearman(xs, ys) if xs.size >= MIN_RUNS else math.nan
        rows.append({"seed": int(seed), "runs": int(xs.size),
                     "diverged": int(((ds["seed"].values == seed) & (status == "diverged")).sum()),
                     "spearman": float(r) if math.isfinite(r) else None, "contributes": math.isfinite(r)})
    return rows


def _counts(rows: list[dict]) -> str:
    return "; per seed (runs used / diverged excluded): " + ", ".join(
        f"seed {r['seed']}: {r['runs']}/{r['diverged']}" for r in rows)


def seed_mean_claim(name: str, statistic: str, rows: list[dict], op: str, bound: float = 0.0) -> Claim:
    """A claim on the mean over contributing seeds of their Spearman correlations (rows from
    :func:`seed_spearman`), with its 95 % bootstrap interval over the seeds."""
    values = [r["spearman"] for r in rows if r["contributes"]]
    return check(name, statistic, float(np.mean(values)) if values else None, op, bound,
                 note=f"{len(values)} of {len(rows)} seeds contribute (>= {MIN_RUNS} usable runs)" + _counts(rows),
                 interval=bootstrap_interval(values), evidence={"seeds": len(values)},
                 minimum={"seeds": MIN_SEEDS})


def pooled_spearman(groups: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Spearman correlation of the (x, y) pairs of several groups pooled together."""
    if not groups:
        return math.nan
    return spearman(np.concatenate([g[0] for g in groups]), np.concatenate([g[1] for g in groups]))


def seed_bootstrap_interval(groups: list[tuple[np.ndarray, np.ndarray]]):
    """95 % bootstrap interval of the pooled Spearman correlation, resampling whole seeds (groups)
    with replacement (:func:`eosflow.claims.bootstrap_interval` over the group indices); None with
    fewer than :data:`eosflow.claims.MIN_INTERVAL_VALUES` groups. The pooled value depends only on
    which groups a resample holds, so each multiset is computed once."""
    cache: dict[tuple, float] = {}

    def stat(idx, axis=1):
        out = np.empty(idx.shape[0])
        for i, row in enumerate(idx):
            key = tuple(sorted(int(j) for j in row))
            if key not in cache:
                cache[key] = pooled_spearman([groups[j] for j in key])
            out[i] = cache[key]
        return out

    return bootstrap_interval(np.arange(len(groups)), stat=stat)


def pooled_claim(name: str, statistic: str, ds: xr.Dataset, x: str, y: str, op: str, bound: float = 0.0) -> Claim:
    """A claim on the Spearman correlation of ``y`` with ``x`` over all usable runs of one setting,
    pooled over the contributing seeds, with a 95 % bootstrap interval over seeds."""
    rows = seed_spearman(ds, x, y)
    groups = [_pairs(ds, x, y, r["seed"]) for r in rows if r["contributes"]]
    value = pooled_spearman(groups)
    n_runs = int(sum(g[0].size for g in groups))
    return check(name, statistic, value, op, bound,
                 note=f"{len(groups)} of {len(rows)} seeds contribute, {n_runs} runs pooled" + _counts(rows),
                 interval=seed_bootstrap_interval(groups), evidence={"seeds": len(groups)},
                 minimum={"seeds": MIN_SEEDS})


def grid_points(ds: xr.Dataset) -> tuple[np.ndarray, bool]:
    """(grid key per run, relative?): the multiple η₀/η_eos a relative grid placed each run at
    (``lr_relative``), or η₀ itself for an absolute grid (same η₀ for every seed)."""
    rel = ds["lr_relative"].values.astype(float) if "lr_relative" in ds else np.full(ds.sizes["run"], np.nan)
    if rel.size and np.isfinite(rel).all():
        return rel, True
    return ds["lr"].values.astype(float), False


def _sd(v: np.ndarray) -> float:
    return float(np.std(v, ddof=1)) if v.size > 1 else math.nan


def rho_table(ds: xr.Dataset) -> list[dict]:
    """ρ (1 − rotation) per grid point of one setting: mean and sd (ddof 1) over its seeds' usable
    runs with a finite ρ, the range of η₀ and of η₀/η_eos there, and the runs used / diverged."""
    key, relative = grid_points(ds)
    lr, rat, rho, ok = ds["lr"].values.astype(float), ratio(ds), column(ds, "rho"), usable(ds)
    diverged = ds["status"].values == "diverged"
    rows = []
    for g in np.unique(key):
        at = key == g
        used = at & ok & np.isfinite(rho)
        v = rho[used]
        rows.append({"grid": float(g), "relative": relative,
                     "lr_min": float(lr[at].min()), "lr_max": float(lr[at].max()),
                     "ratio_min": float(np.nanmin(rat[at])) if np.isfinite(rat[at]).any() else None,
                     "ratio_max": float(np.nanmax(rat[at])) if np.isfinite(rat[at]).any() else None,
                     "rho_mean": float(v.mean()) if v.size else None,
                     "rho_sd": _sd(v) if v.size > 1 else None,
                     "runs": int(used.sum()), "diverged": int((at & diverged).sum())})
    return rows


def diverged_runs(ds: xr.Dataset) -> list[dict]:
    """Every diverged run of the summary (excluded from the correlations): setting, η₀, seed."""
    return [{"setting": str(st), "lr": float(lr), "seed": int(sd)} for st, lr, sd, s in
            zip(ds["setting"].values, ds["lr"].values, ds["seed"].values, ds["status"].values) if s == "diverged"]
