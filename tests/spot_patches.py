"""Polar patches built pixel by pixel, for the fit-model tests (not the simulator).

Each bin holds ``sub × sub`` detector pixels on a regular grid; a pixel sees the 2-D
Gaussian integrated over its area (erf differences) plus a planar background at its
centre, with Poisson noise; the bin's sum and pixel count are what the polar ROI gives.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

K4LN2 = 4.0 * np.log(2.0)


def centres(lo: float, hi: float, n: int) -> np.ndarray:
    return lo + (np.arange(n) + 0.5) * (hi - lo) / n


def _pixel_means(x: np.ndarray, x0: float, fwhm: float, width: float) -> np.ndarray:
    """Mean over [x − width/2, x + width/2] of exp{−4 ln2 (x − x0)² / fwhm²}."""
    s = np.sqrt(K4LN2) / fwhm
    return (np.sqrt(np.pi) / (2 * s * width)) * (erf(s * (x + width / 2 - x0)) - erf(s * (x - width / 2 - x0)))


def pixel_patch(rng: np.random.Generator, truth, q: np.ndarray, chi: np.ndarray, sub: int = 2,
                hot: list[tuple[int, int, float]] = ()) -> tuple[np.ndarray, np.ndarray]:
    """``(sums, counts)`` [nq, nchi] for ``truth`` = (A, q0, dq, phi0, dphi, B, Bq, Bchi).

    ``hot``: (pixel row, pixel column, extra counts) added after the Poisson draw (a hot
    pixel or zinger in pixel coordinates of the ``nq·sub × nchi·sub`` pixel grid).
    """
    amp, q0, dq, phi0, dphi, b, bq, bc = truth
    dqb = q[1] - q[0]
    dcb = chi[1] - chi[0]
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    qp = (q[:, None] + offsets[None, :] * dqb).ravel()
    cp = (chi[:, None] + offsets[None, :] * dcb).ravel()
    gq = _pixel_means(qp, q0, dq, dqb / sub)
    gc = _pixel_means(cp, phi0, dphi, dcb / sub)
    lam = (amp * np.outer(gq, gc) + b + bq * (qp - q.mean())[:, None]
           + bc * (cp - chi.mean())[None, :])
    pixels = rng.poisson(np.clip(lam, 0.0, None)).astype(np.float64)
    for r, c, extra in hot:
        pixels[r, c] += extra
    sums = pixels.reshape(q.size, sub, chi.size, sub).sum(axis=(1, 3))
    counts = np.full((q.size, chi.size), float(sub * sub))
    return sums, counts
