"""The decision procedures behind every verdict: exact tests whose false-``holds`` rate is at most
:data:`ALPHA` (one-sided) whatever the number of seeds, their intervals, and their power.

One procedure per kind of statistic (the README's "How a claim is decided" says why each):

- ``mean`` and ``paired`` -- the **exact sign-flip test** (up to 16 seeds; beyond, over a fixed sample
  of 65,536 sign patterns) of the mean of per-seed values against the
  bound: under the null the values are symmetric about the bound, so every sign pattern of the
  deviations is equally likely. ``paired`` is the same test on per-seed differences of paired runs,
  where the symmetry follows from the exchangeability of the two members of a pair. Its interval
  inverts the test (Hartigan's subset means). With ``n`` seeds the smallest p-value is ``2^-n``:
  below 6 seeds it cannot reach 2.5 % and never decides.
- ``median`` -- the **sign test** of a location (a median of per-seed values or ratios): the count
  of values on the claim's side of the bound against Binomial(n, 1/2). Exact for any distribution
  whose median is the bound; a value at the bound counts as the claim's comparison says (it meets
  ``>=``/``<=``, not ``>``/``<``: :func:`sign_test_op`). Its interval is the
  distribution-free order-statistic interval of the median; it too needs 6 seeds.
- ``rank`` -- the **stratified permutation test** of the mean of per-block Spearman correlations
  (a block: one seed's runs, or one seed at one setting of another factor) against 0: under the null
  the outcome is exchangeable across the runs of each block, so each block's correlation follows
  the exact permutation distribution of Spearman's coefficient for its number of runs, and the
  blocks are independent. Its ``interval`` is the null's central 95 % band (the statistic must leave
  it to decide), not a confidence interval. Blocks over 9 runs (or a mix of sizes whose exact null
  is too large to convolve) make it a Monte-Carlo permutation test (200,000 draws). A block's
  correlation is computed with its ties broken in a fixed random order (:func:`block_spearman`), so
  that the untied null is exact for it.
- ``exact`` -- a deterministic quantity (the toy model's closed form): its one value decides.

numpy and scipy only (no torch).
"""

from __future__ import annotations

import functools
import itertools
import math
import operator

import numpy as np
from scipy import stats
from scipy.signal import fftconvolve

__all__ = ["ALPHA", "POWER", "MAX_SEEDS", "KINDS", "OPS", "success_side", "meets", "signflip", "sign_test", "sign_test_op", "block_spearman", "spearman_null",
           "rank_test", "power", "smallest_effect", "needed_seeds", "min_deciding_seeds"]

#: One-sided level of every procedure: ``holds`` (and ``fails``) each at most 2.5 % under the null.
ALPHA = 0.025
#: The power at which ``needed`` and the power table count seeds as enough.
POWER = 0.8
#: Past this many seeds, "more seeds" is not an answer: the effect is nil at the observed spread.
MAX_SEEDS = 100
KINDS = ("mean", "paired", "median", "rank", "exact")
OPS = ("<", "<=", ">", ">=")
#: Sign-flip sets of up to 2**EXACT_BITS sign patterns are enumerated; larger ones are sampled.
EXACT_BITS = 16
_SAMPLES = 1 << 16
#: Blocks of up to this many runs have their exact null enumerated; a larger block makes the test
#: a Monte-Carlo permutation test (:func:`_rank_test_sampled`).
EXACT_BLOCK = 9


def success_side(op: str) -> int:
    """+1 when the claim says "above the bound" (``>``, ``>=``), -1 for "below"."""
    if op not in OPS:
        raise ValueError(f"unknown comparison {op!r}; allowed: {list(OPS)}")
    return 1 if op in (">", ">=") else -1


_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def meets(x, op: str, bound: float):
    """``x <op> bound`` (element-wise for arrays)."""
    success_side(op)
    return _COMPARE[op](x, bound)


# --------------------------------------------------------------------------- sign-flip (mean, paired)
@functools.lru_cache(maxsize=32)
def _subsets(n: int) -> np.ndarray:
    """(2^n - 1, n) 0/1 rows: every nonempty subset of n values (sampled past :data:`EXACT_BITS`)."""
    if n <= EXACT_BITS:
        rows = ((np.arange(1, 1 << n)[:, None] >> np.arange(n)) & 1).astype(np.float64)
    else:
        rng = np.random.default_rng(20261205)
        rows = rng.integers(0, 2, size=(_SAMPLES, n)).astype(np.float64)
        rows = rows[rows.sum(1) > 0]
    return rows


def _subset_means(x: np.ndarray) -> np.ndarray:
    """Sorted means of every nonempty subset of each row of ``x`` (T, n): Hartigan's typical values.
    Under a null symmetric about m, m falls between consecutive ones with equal probability."""
    s = _subsets(x.shape[1])
    return np.sort((x @ s.T) / s.sum(1), axis=1)


def signflip(x, bound: float, alpha: float = ALPHA) -> dict:
    """The exact sign-flip test of ``mean(x) = bound`` (rows of a 2-D ``x`` are separate samples).

    Returns arrays (one entry per sample): ``p_above`` and ``p_below``, the one-sided p-values of
    "the mean is above / below the bound"; ``lo``, ``hi``, the 1 - 2 alpha interval from inverting
    the test (NaN where the seeds cannot give one: fewer than 6 at alpha = 2.5 %)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    means = _subset_means(x)
    total = means.shape[1] + 1  # the empty subset: the observed sign pattern itself
    p_above = (1.0 + (means <= bound).sum(1)) / total
    p_below = (1.0 + (means >= bound).sum(1)) / total
    k = int(math.floor(alpha * total + 1e-12))
    lo = means[:, k - 1] if k >= 1 else np.full(x.shape[0], np.nan)
    hi = means[:, -k] if k >= 1 else np.full(x.shape[0], np.nan)
    return {"p_above": p_above, "p_below": p_below, "lo": lo, "hi": hi}


# --------------------------------------------------------------------------- sign test (median)
def _binom_tail(n: int, k) -> np.ndarray:
    """P(Binomial(n, 1/2) >= k)."""
    return stats.binom.sf(np.asarray(k) - 1, n, 0.5)


def sign_test(x, bound: float, alpha: float = ALPHA) -> dict:
    """The sign test of ``median(x) = bound`` (rows of a 2-D ``x`` are separate samples), with
    ``p_above``/``p_below`` as :func:`signflip`'s; values equal to the bound count for neither side
    here (calibration's strict nulls; :func:`decide` counts them by the claim's comparison with
    :func:`sign_test_op`).
    ``lo``, ``hi``: the order-statistic 1 - 2 alpha interval of the median (NaN below 6 values)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    n = x.shape[1]
    p_above, p_below = _binom_tail(n, (x > bound).sum(1)), _binom_tail(n, (x < bound).sum(1))
    k = int(stats.binom.ppf(alpha, n, 0.5))  # P(Bin <= k) may exceed alpha: step back
    while k >= 0 and stats.binom.cdf(k, n, 0.5) > alpha + 1e-12:
        k -= 1
    srt = np.sort(x, axis=1)
    lo = srt[:, k] if k >= 0 else np.full(x.shape[0], np.nan)
    hi = srt[:, n - 1 - k] if k >= 0 else np.full(x.shape[0], np.nan)
    return {"p_above": p_above, "p_below": p_below, "lo": lo, "hi": hi}


def sign_test_op(x, op: str, bound: float) -> tuple[float, float]:
    """(p toward holds, p toward fails) of the sign test of "median <op> bound": the values that satisfy
    the comparison against Binomial(n, 1/2), and the others likewise. A value at the bound counts for
    ``>=``/``<=`` and against ``>``/``<`` (an integer count "at least 3" is met by 3)."""
    x = np.asarray(x, dtype=np.float64)
    n, k = x.size, int(meets(x, op, bound).sum())
    return float(_binom_tail(n, k)), float(_binom_tail(n, n - k))


# --------------------------------------------------------------------------- stratified rank test
def block_spearman(x, y, seed: int = 0) -> tuple[float, int]:
    """(Spearman's rho, points) of one block of a rank claim over the pairs where neither is NaN (±inf
    rank last / first: a diverged run counted against a claim), with
    ties broken in a random order drawn from ``seed`` (a fixed number per block, never the data): the
    ranks are then a permutation, whose null distribution is exactly :func:`spearman_null`'s. NaN below
    2 points, or when either sample is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = ~np.isnan(x) & ~np.isnan(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    if n < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan, n
    rng = np.random.default_rng([20261205, int(seed)])
    rx = np.empty(n)
    ry = np.empty(n)
    rx[np.lexsort((rng.random(n), x))] = np.arange(n)
    ry[np.lexsort((rng.random(n), y))] = np.arange(n)
    return float(1.0 - 6.0 * ((rx - ry) ** 2).sum() / (n * (n * n - 1))), n


@functools.lru_cache(maxsize=16)
def spearman_null(m: int) -> tuple[np.ndarray, np.ndarray]:
    """(D values, probabilities): the exact null distribution of ``D = sum (rank difference)^2`` of
    ``m`` untied pairs, every permutation equally likely (Spearman's rho = 1 - 6 D / (m (m^2 - 1)))."""
    if not 2 <= m <= EXACT_BLOCK:
        raise ValueError(f"the exact Spearman null is enumerated for 2 to {EXACT_BLOCK} runs per block, not {m}")
    idx = np.arange(m)
    counts: dict[int, int] = {}
    for chunk in _permutation_chunks(m):
        d = ((chunk - idx) ** 2).sum(1)
        for v, c in zip(*np.unique(d, return_counts=True)):
            counts[int(v)] = counts.get(int(v), 0) + int(c)
    vals = np.array(sorted(counts))
    probs = np.array([counts[v] for v in vals], dtype=np.float64)
    return vals, probs / probs.sum()


def _permutation_chunks(m: int, size: int = 200_000):
    it = itertools.permutations(range(m))
    while chunk := list(itertools.islice(it, size)):
        yield np.array(chunk, dtype=np.int64)


@functools.lru_cache(maxsize=64)
def _sum_null(sizes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(sum of rho values, probabilities): the exact null distribution of the sum over independent
    blocks of Spearman's rho, blocks of the given sizes, on the common lattice of the rho values."""
    q = [m * (m * m - 1) // 6 for m in sizes]  # rho = 1 - D/q
    lcm = math.lcm(*q)
    pmf = np.ones(1)
    for m, qi in zip(sizes, q):
        d, p = spearman_null(m)
        steps = d * (lcm // qi)  # (1 - rho) * lcm, an integer
        block = np.zeros(int(steps.max()) + 1)
        np.add.at(block, steps, p)
        pmf = np.clip(fftconvolve(pmf, block), 0.0, None) if pmf.size * block.size > 1 << 16 else np.convolve(pmf, block)
    keep = pmf > 0
    values = len(sizes) - np.flatnonzero(keep) / lcm  # sum of rho = blocks - sum (1 - rho)
    return values[::-1], pmf[keep][::-1]


def rank_test(r, sizes, alpha: float = ALPHA) -> dict:
    """The stratified permutation test of ``mean(r) = 0`` for per-block Spearman correlations ``r``
    (rows of a 2-D ``r`` are separate samples, all with the blocks' ``sizes``): ``p_above``,
    ``p_below`` as :func:`signflip`'s, and ``lo``, ``hi``: the null's central 1 - 2 alpha band of
    the mean."""
    r = np.atleast_2d(np.asarray(r, dtype=np.float64))
    sizes = tuple(int(m) for m in sizes)
    if r.shape[1] != len(sizes):
        raise ValueError(f"{r.shape[1]} correlations but {len(sizes)} block sizes")
    sizes = tuple(sorted(sizes))  # the null of a mean over independent blocks does not depend on their order
    if max(sizes) > EXACT_BLOCK or math.lcm(*[m * (m * m - 1) // 6 for m in sizes]) * len(sizes) > 1 << 20:
        return _rank_test_sampled(r, sizes, alpha)
    values, probs = _sum_null(sizes)
    means = values / len(sizes)
    eps = 1e-9
    obs = r.mean(1)
    cdf = np.cumsum(probs)
    sf = np.cumsum(probs[::-1])[::-1]
    # P(mean >= obs) and P(mean <= obs), ties at the observed value included
    i_hi = np.searchsorted(means, obs - eps, side="left")
    i_lo = np.searchsorted(means, obs + eps, side="right") - 1
    p_above = np.where(i_hi < means.size, sf[np.minimum(i_hi, means.size - 1)], 0.0)
    p_below = np.where(i_lo >= 0, cdf[np.maximum(i_lo, 0)], 0.0)
    lo = means[np.searchsorted(cdf, alpha - eps, side="right")]  # P(mean < lo) <= alpha
    hi = means[np.searchsorted(cdf, 1 - alpha + eps, side="left")]
    n = r.shape[0]
    return {"p_above": np.minimum(p_above, 1.0), "p_below": np.minimum(p_below, 1.0),
            "lo": np.full(n, lo), "hi": np.full(n, hi)}


@functools.lru_cache(maxsize=16)
def _sampled_null(sizes: tuple[int, ...], draws: int = 200_000) -> np.ndarray:
    """Sorted means over blocks of Spearman's rho under independent random permutations (fixed seed)."""
    rng = np.random.default_rng(list(sizes))
    total = np.zeros(draws)
    for m in sizes:
        if m <= EXACT_BLOCK:
            d, p = spearman_null(m)
            total += 1 - rng.choice(d, size=draws, p=p) / (m * (m * m - 1) / 6)
        else:
            perm = np.argsort(rng.random((draws, m)), axis=1)
            total += 1 - 6 * ((perm - np.arange(m)) ** 2).sum(1) / (m * (m * m - 1))
    return np.sort(total / len(sizes))


def _rank_test_sampled(r: np.ndarray, sizes: tuple[int, ...], alpha: float) -> dict:
    """:func:`rank_test` with a block over :data:`EXACT_BLOCK` runs: p-values ``(1 + hits) / (1 + draws)``
    from 200,000 draws of the null (a valid Monte-Carlo permutation test), the band from its quantiles."""
    null = _sampled_null(sizes)
    obs, eps, b = r.mean(1), 1e-9, null.size
    below = (1.0 + np.searchsorted(null, obs + eps, side="right")) / (b + 1)
    above = (1.0 + b - np.searchsorted(null, obs - eps, side="left")) / (b + 1)
    lo, hi = np.quantile(null, [alpha, 1 - alpha])
    n = r.shape[0]
    return {"p_above": above, "p_below": below, "lo": np.full(n, lo), "hi": np.full(n, hi)}


# --------------------------------------------------------------------------- power and seeds needed
def min_deciding_seeds(kind: str, alpha: float = ALPHA) -> int:
    """The fewest seeds with which ``kind`` can decide at all: the sign-flip and sign tests' smallest
    p-value is 2^-n (6 seeds at 2.5 %); a rank claim's depends on its blocks (one block of 4 runs
    cannot: 1/4! > 2.5 %), so 1 here means "count the blocks"; an exact claim needs its one value."""
    if kind in ("mean", "paired", "median"):
        return int(math.ceil(math.log2(1.0 / alpha) - 1e-12))
    return 1


def _sign_crit(n: int, alpha: float) -> int | None:
    """The smallest count c with P(Binomial(n, 1/2) >= c) <= alpha, or None."""
    ok = np.flatnonzero(_binom_tail(n, np.arange(n + 1)) <= alpha + 1e-12)
    return int(ok[0]) if ok.size else None


def power(kind: str, n: int, effect: float, *, alpha: float = ALPHA, block_size: int = 9,
          blocks_per_seed: int = 1, spread: float | None = None) -> float:
    """Power of ``kind`` with ``n`` seeds at ``effect``, a model for planning (the README's power
    table and each claim's ``needed``):

    - ``mean``/``paired``: per-seed values normal with mean/sd = ``effect``; the sign-flip test's power,
      simulated up to 12 seeds, beyond that a t-test's at its attainable level floor(alpha 2^n) / 2^n
      (0 below 6 seeds);
    - ``median``: each seed on the claim's side with probability ``effect``; exact binomial;
    - ``rank``: per-block Spearman correlations of mean ``effect`` and sd ``spread`` (default: the null's,
      ``1/sqrt(m - 1)``), ``blocks_per_seed`` blocks of ``block_size`` runs per seed; normal approximation
      of the stratified permutation test.
    """
    if n < 1:
        return 0.0
    if kind in ("mean", "paired"):
        level = math.floor(alpha * 2 ** min(n, 60)) / 2 ** min(n, 60)
        if level <= 0 or n < 2:
            return 0.0
        if not math.isfinite(effect):
            return 1.0
        if n <= _SIMULATED_UP_TO:
            return _signflip_power(n, float(effect), alpha)
        crit = stats.t.ppf(1 - level, n - 1)
        return float(stats.nct.sf(crit, n - 1, effect * math.sqrt(n)))
    if kind == "median":
        c = _sign_crit(n, alpha)
        return 0.0 if c is None else float(stats.binom.sf(c - 1, n, effect))
    if kind == "rank":
        b = n * blocks_per_seed
        null_sd = 1.0 / math.sqrt(block_size - 1)
        alt_sd = null_sd if spread is None else max(spread, 1e-12)
        z = stats.norm.ppf(1 - alpha)
        return float(stats.norm.sf((z * null_sd / math.sqrt(b) - effect) / (alt_sd / math.sqrt(b))))
    raise ValueError(f"no power model for kind {kind!r}")


#: Up to this many seeds the sign-flip test's power is simulated (its few attainable levels make the
#: t approximation optimistic: at 6 seeds it rejects only when all six values are on one side).
_SIMULATED_UP_TO = 12


@functools.lru_cache(maxsize=16)
def _signflip_thresholds(n: int, alpha: float, trials: int = 20_000) -> np.ndarray:
    """Sorted, per simulated sample ``z`` of ``n`` standard normal values, the smallest shift ``e`` at
    which the sign-flip test rejects for ``z + e``: a subset mean of ``z + e`` is one of ``z`` plus
    ``e``, so the test rejects exactly when ``e`` exceeds minus the k-th smallest subset mean of ``z``."""
    z = np.random.default_rng(n).standard_normal((trials, n))
    k = int(math.floor(alpha * (1 << n) + 1e-12))
    out = np.concatenate([-_subset_means(z[i:i + 2000])[:, k - 1] for i in range(0, trials, 2000)])
    return np.sort(out)


def _signflip_power(n: int, effect: float, alpha: float) -> float:
    """The sign-flip test's power with ``n`` normal values of mean/sd ``effect`` (simulated once per
    ``n`` with fixed random numbers, :func:`_signflip_thresholds`)."""
    t = _signflip_thresholds(n, alpha)
    return float(np.searchsorted(t, effect, side="left") / t.size)


def smallest_effect(kind: str, n: int, *, target: float = POWER, **kw) -> float | None:
    """The smallest effect (in :func:`power`'s units) detected with power ``target`` by ``n`` seeds,
    or None where no effect is (too few seeds to decide)."""
    hi = {"mean": 50.0, "paired": 50.0, "median": 1.0, "rank": 1.0}[kind]
    lo = {"mean": 0.0, "paired": 0.0, "median": 0.5, "rank": 0.0}[kind]
    if power(kind, n, hi, **kw) < target:
        return None
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if power(kind, n, mid, **kw) < target else (lo, mid)
    return hi


def needed_seeds(kind: str, effect: float, have: int, alpha: float = ALPHA, **kw) -> int | None:
    """The fewest seeds (more than ``have``) at which :func:`power` reaches :data:`POWER` at the
    observed ``effect`` and level ``alpha``; None when even :data:`MAX_SEEDS` do not (the effect is nil)."""
    start = max(have + 1, 2)
    if kind == "median":
        ns = np.arange(start, MAX_SEEDS + 1)
        crit = np.array([c if (c := _sign_crit(int(n), alpha)) is not None else n + 1 for n in ns])
        ok = np.flatnonzero(stats.binom.sf(crit - 1, ns, effect) >= POWER)
        return int(ns[ok[0]]) if ok.size else None
    for n in range(start, min(MAX_SEEDS, _SIMULATED_UP_TO) + 1):
        if power(kind, n, effect, alpha=alpha, **kw) >= POWER:
            return n
    if kind in ("mean", "paired") and math.isfinite(effect):
        # past the simulated range, the t approximation for every seed count at once (the attainable
        # level is alpha itself there)
        ns = np.arange(max(start, _SIMULATED_UP_TO + 1), MAX_SEEDS + 1)
        crit = stats.t.ppf(1 - alpha, ns - 1)
        ok = np.flatnonzero(stats.nct.sf(crit, ns - 1, effect * np.sqrt(ns)) >= POWER)
        return int(ns[ok[0]]) if ok.size else None
    for n in range(max(start, _SIMULATED_UP_TO + 1), MAX_SEEDS + 1):
        if power(kind, n, effect, alpha=alpha, **kw) >= POWER:
            return n
    return None
