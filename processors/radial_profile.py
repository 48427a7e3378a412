"""Profiles of a map against the distance from the supercrystal's centre.

The centre is the weighted centroid of the mask's points, (Σ w·x / Σ w, Σ w·y / Σ w) with
w the (non-negative, finite) weight map — the Bragg intensity — over points inside the
mask; the distance of every point is √((x − x_c)² + (y − y_c)²) in the units of the map
axes (µm when the scan step is known). A profile bins the distances of the mask's points
with finite values into equal-width bins from 0 to the largest distance and gives each
bin's count, median and interquartile range (bins with fewer than ``min_count`` points: NaN).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class RadialProfile:
    """Binned statistics of one quantity against distance; arrays of ``n_bins``."""

    edges: np.ndarray = field(repr=False)    # (n_bins + 1,) distance bin edges
    count: np.ndarray = field(repr=False)
    median: np.ndarray = field(repr=False)
    q25: np.ndarray = field(repr=False)
    q75: np.ndarray = field(repr=False)

    @property
    def centres(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2


def weighted_centroid(x: np.ndarray, y: np.ndarray, weights: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Centroid (x_c, y_c) of the points in ``mask`` weighted by ``weights`` (maps of one shape,
    ``x``/``y`` the positions of each point). Non-finite or negative weights count as 0; with
    no positive weight, the unweighted centroid of the mask; NaN without any mask point."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    inside = np.asarray(mask, dtype=bool) & np.isfinite(x) & np.isfinite(y)
    if not inside.any():
        return (float("nan"), float("nan"))
    w = np.asarray(weights, dtype=np.float64)
    w = np.where(inside & np.isfinite(w) & (w > 0), w, 0.0)
    if not w.sum() > 0:
        w = inside.astype(np.float64)
    total = w.sum()
    return (float((w * np.where(inside, x, 0.0)).sum() / total), float((w * np.where(inside, y, 0.0)).sum() / total))


def distance_map(x: np.ndarray, y: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """Distance of every point from ``centre`` (units of x and y)."""
    return np.hypot(np.asarray(x, dtype=np.float64) - centre[0], np.asarray(y, dtype=np.float64) - centre[1])


def radial_profile(values: np.ndarray, distance: np.ndarray, mask: np.ndarray, *, n_bins: int = 10,
                   min_count: int = 3, max_distance: float | None = None) -> RadialProfile:
    """Count, median and quartiles of ``values`` in ``n_bins`` distance bins over the mask's points.

    Bins span 0 … ``max_distance`` (default: the largest distance of a mask point)."""
    if n_bins < 1:
        raise ValueError(f"n_bins = {n_bins}: use at least 1")
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    d = np.asarray(distance, dtype=np.float64).reshape(-1)
    inside = np.asarray(mask, dtype=bool).reshape(-1) & np.isfinite(d)
    top = max_distance if max_distance is not None else (float(d[inside].max()) if inside.any() else 1.0)
    edges = np.linspace(0.0, top if top > 0 else 1.0, n_bins + 1)
    ok = inside & np.isfinite(v)
    which = np.clip(np.searchsorted(edges, d[ok], side="right") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    stats = np.full((3, n_bins), np.nan)
    for k in np.flatnonzero(count >= min_count):  # one small loop per bin, not per point
        stats[:, k] = np.percentile(v[ok][which == k], [50, 25, 75])
    return RadialProfile(edges=edges, count=count, median=stats[0], q25=stats[1], q75=stats[2])
