"""Where a configured ``[[peak]]`` window lies: its pixels on the detector, its χ pieces in (−180°, 180°].

The same membership rule as :func:`processors.polar_lut.build_polar_lut` (q in
``[q_lo, q_hi)``, χ taken into the window's branch ``[chi_lo, chi_lo + 360)`` and below
``chi_hi``), but over every pixel, masked or not, so that an outline drawn from it is
closed across module gaps.
"""

from __future__ import annotations

import numpy as np

from processors.angles import wrap_deg
from processors.config import PeakConfig
from processors.polar_lut import wrap_into_window


def window_pixels(q_A: np.ndarray, chi_deg: np.ndarray, peak: PeakConfig) -> np.ndarray:
    """bool ``(rows, cols)``: pixels whose centre (q in 1/Å, pyFAI χ in degrees) lies in ``peak``'s window."""
    q_lo, q_hi = peak.q
    c_lo, c_hi = peak.chi
    with np.errstate(invalid="ignore"):
        return (q_A >= q_lo) & (q_A < q_hi) & (wrap_into_window(chi_deg, c_lo) < c_hi)


def chi_segments(chi_lo: float, chi_hi: float) -> list[tuple[float, float]]:
    """The window's χ range (degrees, any branch) as one or two intervals inside [−180, 180].

    ``[170, 190]`` → ``[(170, 180), (−180, −170)]``; ``[−200, −160]`` → ``[(160, 180), (−180, −160)]``.
    A range of 360° or more is the whole circle.
    """
    width = chi_hi - chi_lo
    if width >= 360.0:
        return [(-180.0, 180.0)]
    lo = float(wrap_deg(chi_lo))
    if lo == 180.0:  # wrap_deg gives (−180, 180]: a window starting at ±180 starts at −180
        lo = -180.0
    hi = lo + width
    if hi <= 180.0:
        return [(lo, hi)]
    return [(lo, 180.0), (-180.0, hi - 360.0)]
