"""Pearson and Spearman correlation of two maps with percentile-bootstrap confidence intervals.

Points where either value is NaN are left out. Spearman's ρ is Pearson's ρ of the average
ranks (ties share the mean of their ranks). The confidence interval resamples the points
(pairs) with replacement ``resamples`` times from a seeded generator and takes the
(1 − confidence)/2 and (1 + confidence)/2 quantiles of the resampled ρ (percentile
bootstrap); resamples whose ρ is undefined (no spread) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

#: Resampled values held at once (resamples × points): bounds memory on large maps.
_CHUNK_VALUES = 4_000_000
MIN_POINTS = 3


@dataclass(frozen=True)
class Correlation:
    """ρ of y against x over ``n`` points, with its bootstrap interval (NaN when undefined)."""

    n: int
    pearson: float
    pearson_ci: tuple[float, float]
    spearman: float
    spearman_ci: tuple[float, float]


def _pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"x has {x.size} values and y {y.size}: correlate maps of one shape")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ρ of each row of x against the same row of y (2-D arrays); NaN where a row has no spread."""
    dx = x - x.mean(axis=-1, keepdims=True)
    dy = y - y.mean(axis=-1, keepdims=True)
    sxx = (dx * dx).sum(axis=-1)
    syy = (dy * dy).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (dx * dy).sum(axis=-1) / np.sqrt(sxx * syy)
    return np.where((sxx > 0) & (syy > 0), np.clip(r, -1.0, 1.0), np.nan)


def _resampled_ranks(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties share their mean rank) of each resample ``x[idx[r]]``.

    Counts per distinct value and a cumulative sum give every rank at once: a value with c
    copies in the resample and b smaller values there has rank b + (c + 1) / 2.
    """
    distinct, inverse = np.unique(x, return_inverse=True)
    m = distinct.size
    k = idx.shape[0]
    which = inverse[idx]                                     # (k, n) distinct-value index
    counts = np.bincount((which + m * np.arange(k)[:, None]).ravel(), minlength=k * m).reshape(k, m)
    below = np.cumsum(counts, axis=1) - counts
    rank = below + (counts + 1) / 2.0
    return np.take_along_axis(rank, which, axis=1)


def pearson(x, y) -> float:
    """Pearson ρ over points where both are finite; NaN with fewer than 3 points or no spread."""
    x, y = _pairs(x, y)
    if x.size < MIN_POINTS:
        return float("nan")
    return float(_rowwise_pearson(x[None], y[None])[0])


def spearman(x, y) -> float:
    """Spearman ρ (Pearson ρ of average ranks) over points where both are finite."""
    x, y = _pairs(x, y)
    if x.size < MIN_POINTS:
        return float("nan")
    return float(_rowwise_pearson(rankdata(x)[None], rankdata(y)[None])[0])


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return (float(lo), float(hi))


def correlate(x, y, *, resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> Correlation:
    """Pearson and Spearman ρ of ``y`` against ``x`` with percentile-bootstrap intervals."""
    if resamples < 1:
        raise ValueError(f"resamples = {resamples}: use at least 1")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence = {confidence}: use a fraction in (0, 1), e.g. 0.95")
    x, y = _pairs(x, y)
    n = x.size
    nan2 = (float("nan"), float("nan"))
    if n < MIN_POINTS:
        return Correlation(n, float("nan"), nan2, float("nan"), nan2)
    rng = np.random.default_rng(seed)
    boot_p = np.empty(resamples)
    boot_s = np.empty(resamples)
    step = max(1, _CHUNK_VALUES // n)
    for start in range(0, resamples, step):
        k = min(step, resamples - start)
        idx = rng.integers(0, n, size=(k, n))
        xs, ys = x[idx], y[idx]
        boot_p[start:start + k] = _rowwise_pearson(xs, ys)
        boot_s[start:start + k] = _rowwise_pearson(_resampled_ranks(x, idx), _resampled_ranks(y, idx))
    return Correlation(n=n, pearson=pearson(x, y), pearson_ci=_interval(boot_p, confidence),
                       spearman=spearman(x, y), spearman_ci=_interval(boot_s, confidence))
