"""Standard errors of the derived quantities, by first-order (linear) error propagation.

Each function mirrors one formula of :mod:`processors.derived` and takes the fitted values
with their standard errors (same units: q in 1/Å, widths FWHM, angles in degrees). Inputs
are independent: parameters of different peaks come from separate fits, and within one
peak's fit the covariances of (q0, dq, phi0, dphi) are neglected (docs/statistics.md says
why: they are small for a 2-D Gaussian in a window around it). The formulas are
σ_f² = Σ_i (∂f/∂x_i)² σ_i²; NaN wherever the quantity itself is NaN.
"""

from __future__ import annotations

import numpy as np

TWO_PI = 2.0 * np.pi


def _f(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def axial_lattice_parameter_error(q0, q0_error, order: int = 1) -> np.ndarray:
    """σ of a = n·2π / q0: σ_a = a · σ_q0 / q0 (Å)."""
    q0 = _f(q0)
    return order * TWO_PI * _f(q0_error) / q0 ** 2


def b_from_110_and_100_error(q110, q110_error, q100, q100_error) -> np.ndarray:
    """σ of b = 2π (q110² − q100²)^(−1/2) (Å).

    ∂b/∂q110 = −2π q110 D^(−3/2), ∂b/∂q100 = +2π q100 D^(−3/2) with D = q110² − q100²;
    NaN where D ≤ 0 (b itself is NaN there).
    """
    q110, q100 = _f(q110), _f(q100)
    diff = q110 ** 2 - q100 ** 2
    spread = np.hypot(q110 * _f(q110_error), q100 * _f(q100_error))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(diff > 0, TWO_PI * spread / np.where(diff > 0, diff, 1.0) ** 1.5, np.nan)


def strain_error(q0, q0_error, d_ref: float) -> np.ndarray:
    """σ of d / d_ref − 1 with d = 2π / q0: (d / d_ref) · σ_q0 / q0 (fraction)."""
    q0 = _f(q0)
    return TWO_PI / (q0 * d_ref) * _f(q0_error) / q0


def orientational_disorder_error(dphi_deg, dphi_error_deg, dq, dq_error, q0, q0_error) -> np.ndarray:
    """σ of Δφ_do = √(Δφ² − r²), r = Δq / q0 (radians inside; degrees in and out).

    ∂Δφ_do/∂Δφ = Δφ / Δφ_do, ∂Δφ_do/∂Δq = −r / (q0 Δφ_do), ∂Δφ_do/∂q0 = r² / (q0 Δφ_do).
    NaN where Δφ_do is NaN or 0 (the linearisation fails at the root's edge).
    """
    dphi = np.radians(_f(dphi_deg))
    s_dphi = np.radians(_f(dphi_error_deg))
    q0 = _f(q0)
    r = _f(dq) / q0
    diff = dphi ** 2 - r ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        do = np.sqrt(np.where(diff > 0, diff, np.nan))
        var = (dphi * s_dphi) ** 2 + (r * _f(dq_error) / q0) ** 2 + (r * r * _f(q0_error) / q0) ** 2
        return np.degrees(np.sqrt(var) / do)


def superlattice_parameters_error(q1, q1_error, q2, q2_error, phi1_deg, phi1_error_deg, phi2_deg,
                                  phi2_error_deg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """σ of a_i = 2π / (q_i |sin γ*|) and of ⟨a_SC⟩ = (a1 + a2) / 2 (nm), γ* = φ2 − φ1.

    ∂a_i/∂q_i = −a_i / q_i, ∂a_i/∂γ = −a_i cot γ, σ_γ² = σ_φ1² + σ_φ2²; a1 and a2 share γ,
    so ⟨a_SC⟩'s error adds their γ terms before squaring.
    """
    q1, q2 = _f(q1), _f(q2)
    gamma = np.radians(_f(phi2_deg) - _f(phi1_deg))
    s_gamma = np.radians(np.hypot(_f(phi1_error_deg), _f(phi2_error_deg)))
    s = np.abs(np.sin(gamma))
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = s > 0
        a1 = np.where(ok, TWO_PI / (q1 * s) / 10.0, np.nan)
        a2 = np.where(ok, TWO_PI / (q2 * s) / 10.0, np.nan)
        cot = np.abs(np.cos(gamma)) / s
        e1 = np.hypot(a1 * _f(q1_error) / q1, a1 * cot * s_gamma)
        e2 = np.hypot(a2 * _f(q2_error) / q2, a2 * cot * s_gamma)
        mean = 0.5 * np.sqrt((a1 * _f(q1_error) / q1) ** 2 + (a2 * _f(q2_error) / q2) ** 2
                             + ((a1 + a2) * cot * s_gamma) ** 2)
    return e1, e2, mean
