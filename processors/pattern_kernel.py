"""numba kernels of the scan pattern: per-pixel sum, count and maximum over frames, per-bin maximum.

Kernels only: no validation, no allocation; :mod:`processors.detector_pattern` checks the
arrays and owns the buffers. Integer arithmetic only, so sums are exact.
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True)
def accumulate_frame(frame: np.ndarray, sentinel: int, sums: np.ndarray, counts: np.ndarray,
                     maxima: np.ndarray) -> int:
    """Add one flat frame into ``sums`` (uint64), ``counts`` and ``maxima`` (uint32), all ``[n]``.

    A pixel at ``sentinel`` (the dtype's maximum: EIGER gaps, masked or saturated pixels)
    is left out of all three for this frame. Returns the number of such pixels.
    """
    skipped = 0
    for i in range(frame.size):
        v = frame[i]
        if v == sentinel:
            skipped += 1
            continue
        sums[i] += v
        counts[i] += 1
        if v > maxima[i]:
            maxima[i] = v
    return skipped


@nb.njit(cache=True, nogil=True)
def max_per_bin(values: np.ndarray, bin_index: np.ndarray, out: np.ndarray) -> None:
    """``out[b] = max(values[i] for bin_index[i] == b)``; NaN values and ``bin_index < 0`` are skipped.

    ``out`` must be filled with −inf by the caller (an empty bin stays −inf).
    """
    for i in range(values.size):
        b = bin_index[i]
        v = values[i]
        if b < 0 or v != v:
            continue
        if v > out[b]:
            out[b] = v
