"""Williamson–Hall per map point with standard errors: (weighted) least squares and its covariance.

Model (science.md): Δq² = ε² q0² + Δq0², a straight line y = m x + c in x = q0², y = Δq²
over the spots marked for it; ε = √m, NC size s = 2πK / √c (Å → nm).

The estimate is linear in the y_i: m = Σ α_i y_i, c = Σ β_i y_i, with (weights w_i, sums
S0 = Σw, Sx = Σwx, Sxx = Σwx², Δ = S0·Sxx − Sx²)

    α_i = w_i (S0 x_i − Sx) / Δ,    β_i = w_i (Sxx − Sx x_i) / Δ,

so var m = Σ α_i² σ_i², var c = Σ β_i² σ_i² for independent y_i with σ_i² = σ_y,i² + m² σ_x,i²
(σ_y = 2Δq σ_Δq, σ_x = 2 q0 σ_q0: the error of x moved onto y along the line). With
w_i = 1/σ_y,i² this is the weighted-least-squares covariance (XᵀWX)⁻¹ (up to the small x
term); with w_i = 1 it is the propagated error of the plain fit. Then σ_ε = σ_m / (2ε) and
σ_s = s σ_c / (2c). Which weighting the maps use, and why: docs/statistics.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TWO_PI = 2.0 * np.pi


@dataclass(frozen=True)
class WilliamsonHallMaps:
    """Size (nm), microstrain (fraction) and their standard errors, each of the map's shape;
    NaN where fewer than two spots were usable or the line is unphysical."""

    size: np.ndarray = field(repr=False)
    microstrain: np.ndarray = field(repr=False)
    size_error: np.ndarray = field(repr=False)
    microstrain_error: np.ndarray = field(repr=False)


def williamson_hall_fit(q0, dq, q0_error, dq_error, scherrer_k: float = 0.85, *,
                        weighted: bool = True) -> WilliamsonHallMaps:
    """Per-point Williamson–Hall over ``(n_spots, ...)`` arrays (q0, Δq FWHM in 1/Å, and their σ).

    ``weighted``: weights 1/σ_y² (a spot without a finite positive σ is left out); else every
    spot with finite q0, Δq counts equally (the values are then those of
    :func:`processors.derived.williamson_hall`) and the errors are propagated all the same.
    """
    q0, dq = np.asarray(q0, dtype=np.float64), np.asarray(dq, dtype=np.float64)
    sx = 2.0 * q0 * np.asarray(q0_error, dtype=np.float64)
    sy = 2.0 * dq * np.asarray(dq_error, dtype=np.float64)
    x, y = q0 ** 2, dq ** 2
    ok = np.isfinite(x) & np.isfinite(y)
    with np.errstate(invalid="ignore", divide="ignore"):
        if weighted:
            ok &= np.isfinite(sy) & (sy > 0)
            w = np.where(ok, 1.0 / np.where(ok, sy, 1.0) ** 2, 0.0)
        else:
            w = ok.astype(np.float64)
        x0, y0 = np.where(ok, x, 0.0), np.where(ok, y, 0.0)
        n = ok.sum(axis=0)
        s0 = w.sum(axis=0)
        # centred sums: the same numbers as the plain fit in derived.williamson_hall when w = 1
        mx = (w * x0).sum(axis=0) / s0
        my = (w * y0).sum(axis=0) / s0
        dx = np.where(ok, x - mx, 0.0)
        sxx_c = (w * dx * dx).sum(axis=0)
        slope = (w * dx * np.where(ok, y - my, 0.0)).sum(axis=0) / sxx_c
        intercept = my - slope * mx
        good = (n >= 2) & (sxx_c > 0) & (slope >= 0) & (intercept > 0)
        # α_i = w_i (x_i − x̄)/Sxx_c, β_i = w_i/S0 − x̄ α_i (the same as the uncentred forms)
        alpha = w * dx / sxx_c
        beta = w / s0 - mx * alpha
        var_i = np.where(ok, sy ** 2 + (np.where(good, slope, 0.0) * sx) ** 2, 0.0)
        var_m = (alpha ** 2 * var_i).sum(axis=0)
        var_c = (beta ** 2 * var_i).sum(axis=0)
        eps = np.where(good, np.sqrt(np.where(good, slope, 0.0)), np.nan)
        c = np.where(good, intercept, np.nan)
        size = TWO_PI * scherrer_k / np.sqrt(c) / 10.0
        eps_err = np.where(eps > 0, np.sqrt(var_m) / (2.0 * eps), np.nan)
        size_err = size * np.sqrt(var_c) / (2.0 * c)
    return WilliamsonHallMaps(size=size, microstrain=eps, size_error=size_err, microstrain_error=eps_err)
