"""How maps are coloured, shared by the live map (monitor.gui) and the report (monitor.report).

One cyclic colormap for orientations and one robust colour range, so that the live φ0
map and the report's figure show the same orientation in the same colour. The fold of
orientations itself is :func:`processors.angles.fold_orientation`.
"""

from __future__ import annotations

import numpy as np

#: Cyclic colormap (a matplotlib name; pyqtgraph takes it from matplotlib) for orientations:
#: both ends have the same colour, so equal orientations modulo the period look equal.
CYCLIC_COLORMAP = "twilight_shifted"


def robust_limits(values: np.ndarray, low: float = 2.0, high: float = 98.0) -> tuple[float, float] | None:
    """The ``low``–``high`` percentiles of the finite values; None when none is finite.

    A few hot or failed points must not wash out a map. Never an empty range: equal
    percentiles are widened by a thousandth of their value (by 1e-3 around 0).
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    lo, hi = (float(p) for p in np.percentile(v, [low, high]))
    if not hi > lo:
        pad = abs(lo) * 1e-3 or 1e-3
        lo, hi = lo - pad, hi + pad
    return lo, hi
