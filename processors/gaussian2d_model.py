"""The 2-D Gaussian spot model on a polar patch, evaluated for display (docs/fit_model.md)."""

from __future__ import annotations

import numpy as np

from processors.gaussian2d_moments import axis_functions


def gaussian2d_patch(params: np.ndarray, q_centers: np.ndarray, chi_centers: np.ndarray,
                     bin_integrated: bool = True) -> np.ndarray:
    """The fitted model per bin, ``(nq, nchi)``, as the fit sees it:

    I = A·gq·gφ + B + Bq·(q − qc) + Bchi·(χ − χc), (qc, χc) the mean of the bin centres,
    gq = exp{−4 ln2 (q − q0)²/Δq²} and gφ = exp{−4 ln2 w(χ − φ0)²/Δφ²} averaged over each
    bin (``bin_integrated``) or taken at its centre.

    ``params`` = (A, q0, Δq, φ0, Δφ, B, Bq, Bchi) with q in 1/Å, angles in degrees, widths
    FWHM; ``q_centers``, ``chi_centers`` regular. NaN everywhere when the fit was rejected.
    """
    a, q0, dq, phi0, dphi, b, bq, bchi = (float(v) for v in params)
    q = np.ascontiguousarray(q_centers, dtype=np.float64)
    chi = np.ascontiguousarray(chi_centers, dtype=np.float64)
    if not np.isfinite([a, q0, dq, phi0, dphi, b, bq, bchi]).all():
        return np.full((q.size, chi.size), np.nan)
    fq = np.empty((3, q.size))
    fp = np.empty((3, chi.size))
    axis_functions(q, q0, dq, bin_integrated, False, fq)
    axis_functions(chi, phi0, dphi, bin_integrated, True, fp)
    background = b + bq * (q - q.mean())[:, None] + bchi * (chi - chi.mean())[None, :]
    return a * np.outer(fq[0], fp[0]) + background
