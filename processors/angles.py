"""Angles in degrees: the one wrap to (−180°, 180°] and the one fold of orientations.

Every angle wrap in the project goes through :func:`wrap_deg` (numpy), :func:`wrap_deg_exact`
(its bit-for-bit twin for ``@njit`` code: the φ0 written into records) or
:func:`wrap_deg_scalar` (the same wrap for ``@njit`` code, equal to within rounding, ≈ 1e-13°;
used inside the fit, whose results it must not change); every orientation map
shown (the live map and the report) is folded by :func:`fold_orientation`, so the two
show the same numbers for the same φ0.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

#: φ0 of four co-aligned spots 90° apart: an orientation is only defined modulo this period.
ORIENTATION_PERIOD_DEG = 90.0


def wrap_deg(x: np.ndarray | float) -> np.ndarray | float:
    """Angle(s) in degrees taken into (−180, 180]: ``180 − ((180 − x) mod 360)``.

    Also the signed difference of two angles: ``wrap_deg(a − b)``. NaN stays NaN;
    a scalar gives a NumPy float64 scalar, an array a float64 array.
    """
    return 180.0 - np.mod(180.0 - np.asarray(x, dtype=np.float64), 360.0)


@nb.njit(cache=True, nogil=True)
def wrap_deg_exact(x: float) -> float:
    """:func:`wrap_deg` of one float in ``@njit`` code, bit for bit: the same
    ``180 − ((180 − x) mod 360)`` with numpy's float ``mod`` (C ``fmod``, moved into the
    divisor's sign; a zero remainder takes the divisor's sign). Records are written with it
    in the fit kernel (``processors.window_fits_kernel``) and with :func:`wrap_deg` elsewhere,
    so both must agree exactly (tests/test_angles.py). Strict IEEE: no fastmath here."""
    a = 180.0 - x
    m = np.fmod(a, 360.0)
    if m != 0.0:
        if m < 0.0:
            m += 360.0
    else:
        m = 0.0
    return 180.0 - m


@nb.njit(cache=True, nogil=True)
def wrap_deg_scalar(x: float) -> float:
    """:func:`wrap_deg` of one float, callable from ``@njit`` code: (−180, 180], equal to it to
    within rounding (not bit for bit: :func:`wrap_deg_exact` is). The fit's per-bin wrap; the
    fits were made with it, so it stays."""
    return x - 360.0 * math.ceil((x - 180.0) / 360.0)


def fold_orientation(values: np.ndarray, period: float = ORIENTATION_PERIOD_DEG) -> tuple[np.ndarray, float]:
    """Fold orientations (degrees) into ``[centre − period/2, centre + period/2)`` around their median.

    Orientation is defined modulo ``period``: 44° and −46° are the same crystal
    orientation, and a (100) spot near χ = 180° jumps between +179° and −179°. The
    centre is first the circular mean modulo ``period`` (immune to those jumps), moved by
    whole periods next to the spots' actual direction (their full-circle mean, so a spot
    near 180° reads 180 ± 5°, not 0 ± 5°, and 57° stays 57°, not −33°), then refined to the
    median of the folded values, so ±5° domains show as ±5° around it.

    Returns ``(folded float64 array of the same shape, centre in degrees)``: folded values
    are ``centre + ((v − centre + p/2) mod p) − p/2``; NaN stays NaN; centre 0 when no
    value is finite.
    """
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return v.copy(), 0.0
    k = 2.0 * math.pi / period
    centre = math.atan2(float(np.sin(k * finite).mean()), float(np.cos(k * finite).mean())) / k
    rad = np.radians(finite)
    direction = math.degrees(math.atan2(float(np.sin(rad).mean()), float(np.cos(rad).mean())))
    centre += period * round((direction - centre) / period)

    def fold(c: float, a: np.ndarray) -> np.ndarray:
        return c + np.mod(a - c + period / 2, period) - period / 2

    centre = float(np.median(fold(centre, finite)))
    with np.errstate(invalid="ignore"):
        return fold(centre, v), centre
