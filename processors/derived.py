"""Derived quantities from fitted spot parameters, vectorised over maps (science.md).

Inputs are arrays of any (matching) shape; q in 1/Å, widths FWHM, angles in degrees
at the interface (converted to radians inside formulas). NaN marks what cannot be
computed (missing input or an unphysical result).
"""

from __future__ import annotations

import numpy as np

TWO_PI = 2.0 * np.pi


def d_spacing(q0: np.ndarray) -> np.ndarray:
    """d = 2π / q0 (Å)."""
    return TWO_PI / np.asarray(q0, dtype=np.float64)


def strain(d: np.ndarray, d_ref: float) -> np.ndarray:
    """Lattice strain d / d_ref − 1 (fraction)."""
    return np.asarray(d, dtype=np.float64) / d_ref - 1.0


def axial_lattice_parameter(q0: np.ndarray, order: int = 1) -> np.ndarray:
    """Lattice parameter from an axial reflection (h00, 0k0 or 00l of order n): n · 2π / q0 (Å)."""
    return order * TWO_PI / np.asarray(q0, dtype=np.float64)


def b_from_110_and_100(q110: np.ndarray, q100: np.ndarray) -> np.ndarray:
    """b = 2π / √(q0(110)² − q0(100)²) (Å); NaN where q110 ≤ q100."""
    diff = np.asarray(q110, dtype=np.float64) ** 2 - np.asarray(q100, dtype=np.float64) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(diff > 0, TWO_PI / np.sqrt(np.where(diff > 0, diff, 1.0)), np.nan)


def williamson_hall(q0: np.ndarray, dq: np.ndarray, scherrer_k: float = 0.85) -> tuple[np.ndarray, np.ndarray]:
    """Per-point Williamson–Hall: least squares of Δq² = ε² q0² + Δq0² over spots.

    ``q0`` and ``dq`` (FWHM, 1/Å) are ``(n_spots, ...)``; spots with NaN are left out
    point by point. Returns ``(size_nm, microstrain)`` of shape ``(...)``: ε = √slope,
    s = 2πK / Δq0 (Å → nm). Fewer than two usable spots, a negative slope or a
    non-positive intercept are unphysical → NaN.
    """
    x = np.asarray(q0, dtype=np.float64) ** 2
    y = np.asarray(dq, dtype=np.float64) ** 2
    ok = np.isfinite(x) & np.isfinite(y)
    n = ok.sum(axis=0)
    x0 = np.where(ok, x, 0.0)
    y0 = np.where(ok, y, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = x0.sum(axis=0) / n
        my = y0.sum(axis=0) / n
        dx = np.where(ok, x - mx, 0.0)
        sxx = (dx * dx).sum(axis=0)
        sxy = (dx * np.where(ok, y - my, 0.0)).sum(axis=0)
        slope = sxy / sxx
        intercept = my - slope * mx
        good = (n >= 2) & (sxx > 0) & (slope >= 0) & (intercept > 0)
        microstrain = np.where(good, np.sqrt(np.where(good, slope, 0.0)), np.nan)
        size_nm = np.where(good, TWO_PI * scherrer_k / np.sqrt(np.where(good, intercept, 1.0)) / 10.0, np.nan)
    return size_nm, microstrain


def orientational_disorder(dphi_deg: np.ndarray, dq: np.ndarray, q0: np.ndarray) -> np.ndarray:
    """Δφ_do = √(Δφ² − (Δq/q0)²) in degrees (radians inside the root); NaN when negative."""
    dphi = np.radians(np.asarray(dphi_deg, dtype=np.float64))
    radial = np.asarray(dq, dtype=np.float64) / np.asarray(q0, dtype=np.float64)
    diff = dphi ** 2 - radial ** 2
    with np.errstate(invalid="ignore"):
        return np.where(diff >= 0, np.degrees(np.sqrt(np.where(diff >= 0, diff, 0.0))), np.nan)


def superlattice_parameters(q1: np.ndarray, q2: np.ndarray, phi1_deg: np.ndarray,
                            phi2_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Supercrystal lattice from the first-order SAXS spots (10), (01).

    γ* is the angle between the spots; a_i = 2π / (q_i sin γ*). Returns
    ``(a1_nm, a2_nm, mean_nm)``, ⟨a_SC⟩ = (a1 + a2) / 2.
    """
    gamma = np.radians(np.asarray(phi2_deg, dtype=np.float64) - np.asarray(phi1_deg, dtype=np.float64))
    s = np.abs(np.sin(gamma))
    with np.errstate(invalid="ignore", divide="ignore"):
        a1 = np.where(s > 0, TWO_PI / (np.asarray(q1, dtype=np.float64) * s) / 10.0, np.nan)
        a2 = np.where(s > 0, TWO_PI / (np.asarray(q2, dtype=np.float64) * s) / 10.0, np.nan)
    return a1, a2, (a1 + a2) / 2.0
