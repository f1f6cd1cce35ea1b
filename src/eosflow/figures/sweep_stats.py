"""Rank correlations over the fig5 sweep's runs (fig7, fig8): which runs enter, per-seed Spearman
correlations across η₀, the rank claims built from them, and ρ tabulated per grid point.

Which runs enter (fixed before any run):

- **Diverged runs never drop out where that would favour a claim.** Their final sharpness and
  eigenvectors are those of a blown-up network, so they have no measured value, and they sit at
  the largest η₀. In fig7's correlations with η₀ they **count against the claim** (``against``: a
  larger η₀ ends flatter -- S_final = +∞; turns more -- 1 − ρ = −∞). In fig8's "accuracy rises with
  η₀" they **count at chance accuracy**, as in fig5 (registry ``fig8.eta0``). fig8's accuracy against
  S_final and 1 − ρ leaves them out (at chance accuracy and +∞ S_final they would favour "flatter
  generalizes better"), and so does the ρ table. They are counted (per seed, per grid point, and in
  the claims files' ``diverged_runs``), never dropped silently. Runs that hit ``train.max_epochs``
  enter.
- Runs where a quantity is not finite (e.g. no stored eigenvectors: ``1 − ρ`` is NaN) drop out of
  that quantity's correlation only (:func:`eosflow.claims.procedures.block_spearman` drops NaN pairs).
- **A seed counts** for a correlation when it has at least the registry's ``min_runs`` runs with
  neither value NaN and neither sample constant (its Spearman is then defined).

A claim (:func:`rank_claim`) is the mean over the counted seeds of their Spearman correlations,
decided by the stratified permutation test (``rank`` kind, :mod:`eosflow.claims.procedures`): each
seed is a block whose correlation (ties broken in a fixed random order) is compared with the exact
null of Spearman's coefficient for its number of runs. It decides at 3 seeds when the effect is strong.

The η₀ of a relative sweep are multiples of each seed's own η_eos(θ₀), so η₀ differs between
seeds at the same grid point: tables are per multiple η₀ / η_eos (:func:`grid_points`).
No torch here.
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from ..claims.procedures import block_spearman
from ..claims import REGISTRY, Claim, claim
from .fig5 import accuracy

__all__ = ["NEEDED", "usable", "ratio", "column", "settings_of", "setting_runs", "seed_spearman", "rank_claim",
           "grid_points", "rho_table", "diverged_runs"]

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


def _pairs(ds: xr.Dataset, x: str, y: str, seed, chance: float | None,
           against: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) pairs of one seed's runs, neither NaN: its usable runs; with ``chance`` (``y`` the
    validation accuracy) all its runs, a diverged one at ``chance``; with ``against`` (±inf) all its
    runs, a diverged one's ``y`` at ``against``."""
    one = ds["seed"].values == seed
    if against is not None:
        keep = one
        ys = np.where(ds["status"].values == "diverged", against, column(ds, y))[keep]
    elif chance is None:
        keep = usable(ds) & one
        ys = column(ds, y)[keep]
    else:
        if y != "final_test_acc":
            raise ValueError("only the validation accuracy has a value for a diverged run (chance)")
        keep = one
        ys = accuracy(ds, chance)[keep]
    xs = column(ds, x)[keep]
    ok = np.isfinite(xs) & ~np.isnan(ys)
    return xs[ok], ys[ok]


def seed_spearman(ds: xr.Dataset, x: str, y: str = "final_test_acc", *, min_runs: int,
                  chance: float | None = None, against: float | None = None) -> list[dict]:
    """Per seed of one setting: Spearman(y, x) across η₀ with the counts. Runs: the usable ones
    (diverged excluded), or with ``chance`` every run, a diverged one at that accuracy, or with
    ``against`` (+inf or -inf: the end of ``y`` that speaks against the claim) every run, a diverged
    one's ``y`` at ``against``.

    Rows: ``seed``, ``runs`` (finite pairs used), ``diverged`` (the seed's diverged runs),
    ``diverged_counted`` ("at chance" or "excluded"), ``spearman`` (None when the seed has fewer than
    ``min_runs`` pairs or a constant sample), ``contributes``."""
    rows = []
    status = ds["status"].values
    for seed in np.unique(ds["seed"].values):
        xs, ys = _pairs(ds, x, y, seed, chance, against)
        r = block_spearman(xs, ys, int(seed))[0] if xs.size >= min_runs else math.nan
        rows.append({"seed": int(seed), "runs": int(xs.size),
                     "diverged": int(((ds["seed"].values == seed) & (status == "diverged")).sum()),
                     "diverged_counted": ("at chance" if chance is not None else "excluded" if against is None
                                          else f"{y} = {against:+g}, against the claim"),
                     "spearman": float(r) if math.isfinite(r) else None, "contributes": math.isfinite(r)})
    return rows


def _counts(rows: list[dict]) -> str:
    how = rows[0]["diverged_counted"] if rows else "excluded"
    return f"; per seed (runs used / diverged, {how}): " + ", ".join(
        f"seed {r['seed']}: {r['runs']}/{r['diverged']}" for r in rows)


def rank_claim(claim_id: str, rows: list[dict], setting: str) -> Claim:
    """The registry's rank claim ``claim_id`` from per-seed rows (:func:`seed_spearman`): the seeds'
    Spearman correlations, each a block of its number of runs."""
    used = [r for r in rows if r["contributes"]]
    min_runs = REGISTRY.param(claim_id, "min_runs")
    return claim(claim_id, [r["spearman"] for r in used], sizes=[r["runs"] for r in used],
                 fmt={"setting": setting}, evidence={"seeds": len(used)},
                 note=f"{len(used)} of {len(rows)} seeds count (>= {min_runs} runs, not constant)" + _counts(rows))


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
