"""The 2-D Gaussian spot model on a polar patch, evaluated for display (science.md)."""

from __future__ import annotations

import numpy as np

from processors.angles import wrap_deg

_FOUR_LN2 = 4.0 * np.log(2.0)


def gaussian2d_patch(params: np.ndarray, q_centers: np.ndarray, chi_centers: np.ndarray) -> np.ndarray:
    """I(q, φ) = A exp{−4 ln2 [(q−q0)²/Δq² + w(φ−φ0)²/Δφ²]} + B on the bin centres.

    ``params`` = (A, q0, Δq, φ0, Δφ, B) with q in 1/Å, angles in degrees, widths FWHM;
    returns ``(nq, nchi)``; NaN everywhere when the fit was rejected (NaN params).
    """
    a, q0, dq, phi0, dphi, b = (float(v) for v in params)
    w = wrap_deg(np.asarray(chi_centers) - phi0)
    gq = np.exp(-_FOUR_LN2 * ((q_centers - q0) / dq) ** 2)
    gp = np.exp(-_FOUR_LN2 * (w / dphi) ** 2)
    return a * np.outer(gq, gp) + b
