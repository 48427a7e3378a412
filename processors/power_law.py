"""The power law of a lattice parameter against NC size: y = y∞ + k · s^(−n).

Least squares over the points where both are finite (s > 0). The start comes from a grid
of exponents n, each with its linear fit of (y∞, k); scipy's trust-region least squares then
refines all three (0.05 ≤ n ≤ 8). Parameter errors are the square roots of the diagonal of
s_r² (JᵀJ)⁻¹, s_r² the residual variance with N − 3 degrees of freedom (the points' scatter
sets the scale: per-point errors of a map are not all known and the spread between points is
larger than them).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

N_BOUNDS = (0.05, 8.0)
_N_GRID = np.linspace(0.1, 6.0, 60)


@dataclass(frozen=True)
class PowerLawFit:
    """y = y_inf + k · s^(−n) over ``n_points``; ``*_error`` standard errors, ``rms`` the residual."""

    y_inf: float
    k: float
    n: float
    y_inf_error: float
    k_error: float
    n_error: float
    n_points: int
    rms: float

    def __call__(self, size) -> np.ndarray:
        return self.y_inf + self.k * np.asarray(size, dtype=np.float64) ** (-self.n)


def _model(s, y_inf, k, n):
    return y_inf + k * s ** (-n)


def fit_power_law(size, values) -> PowerLawFit | None:
    """Fit ``values`` against ``size`` (any matching shapes; NaN left out); None with fewer than
    five points or fewer than three distinct sizes."""
    s = np.asarray(size, dtype=np.float64).reshape(-1)
    y = np.asarray(values, dtype=np.float64).reshape(-1)
    ok = np.isfinite(s) & np.isfinite(y) & (s > 0)
    s, y = s[ok], y[ok]
    if s.size < 5 or np.unique(s).size < 3:
        return None
    best = None
    for n in _N_GRID:
        design = np.stack([np.ones_like(s), s ** (-n)], axis=1)
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        ssr = float(np.sum((design @ coef - y) ** 2))
        if best is None or ssr < best[0]:
            best = (ssr, coef[0], coef[1], n)
    _, y0, k0, n0 = best
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        try:
            popt, pcov = curve_fit(_model, s, y, p0=(y0, k0, n0), method="trf",
                                   bounds=([-np.inf, -np.inf, N_BOUNDS[0]], [np.inf, np.inf, N_BOUNDS[1]]),
                                   max_nfev=2000)
        except (RuntimeError, ValueError):
            popt, pcov = np.array([y0, k0, n0]), np.full((3, 3), np.nan)
    err = np.sqrt(np.where(np.isfinite(np.diag(pcov)) & (np.diag(pcov) >= 0), np.diag(pcov), np.nan))
    rms = float(np.sqrt(np.mean((_model(s, *popt) - y) ** 2)))
    return PowerLawFit(y_inf=float(popt[0]), k=float(popt[1]), n=float(popt[2]), y_inf_error=float(err[0]),
                       k_error=float(err[1]), n_error=float(err[2]), n_points=int(s.size), rms=rms)
