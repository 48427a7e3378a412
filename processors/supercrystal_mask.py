"""Which map points belong to the supercrystal: a threshold on the fitted Bragg intensity.

The Bragg intensity of a point is the summed volume of its accepted Bragg spots above their
backgrounds in the (q, χ) plane, for a 2-D Gaussian with FWHM widths:

    I_B = Σ_spots A · Δq · Δφ · π / (4 ln 2)      (counts/pixel · 1/Å · degrees)

(superlattice spots do not count). A point is in the mask when at least ``min_peaks`` Bragg
spots were fitted there and I_B ≥ ``threshold``. Both are per point, so a region of a map
gives the same cut of the whole map's mask (live writes compute regions).
"""

from __future__ import annotations

import math

import numpy as np

GAUSSIAN_VOLUME = math.pi / (4.0 * math.log(2.0))  # ∫∫ exp(−4 ln2 (u² + v²)) du dv per unit FWHM²


def bragg_intensity(amplitude, dq, dphi) -> tuple[np.ndarray, np.ndarray]:
    """Summed spot volume over ``(n_spots, ...)`` fitted maps (NaN = not fitted) and the number
    of spots that entered it. Returns ``(I_B, n_spots)`` of shape ``(...)``; I_B is NaN where
    no spot was fitted."""
    volume = GAUSSIAN_VOLUME * np.asarray(amplitude, dtype=np.float64) * np.asarray(dq, dtype=np.float64) \
        * np.asarray(dphi, dtype=np.float64)
    ok = np.isfinite(volume)
    n = ok.sum(axis=0)
    total = np.where(ok, volume, 0.0).sum(axis=0)
    return np.where(n > 0, total, np.nan), n


def supercrystal_mask(intensity: np.ndarray, n_spots: np.ndarray, threshold: float, min_peaks: int) -> np.ndarray:
    """uint8 map: 1 where ``n_spots ≥ min_peaks`` and ``intensity ≥ threshold``, else 0."""
    with np.errstate(invalid="ignore"):
        inside = (np.asarray(n_spots) >= min_peaks) & (np.asarray(intensity, dtype=np.float64) >= threshold)
    return inside.astype(np.uint8)
