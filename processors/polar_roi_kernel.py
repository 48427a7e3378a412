"""numba kernels run on every frame: polar-bin accumulation and valid-pixel sum.

Pure functions on typed arrays with caller-allocated outputs. A pixel holding the
dtype's maximum (``sentinel``: EIGER gap and masked pixels) never counts.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_FASTMATH = {"contract", "arcp", "nsz", "afn"}  # no nnan/ninf: NaN checks must keep working


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def accumulate_polar_bins(frame: np.ndarray, pixel_index: np.ndarray, bin_index: np.ndarray,
                          sentinel: int, bin_pixels: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> int:
    """Add the LUT pixels of ``frame`` (flat) into ``sums`` and ``counts`` (both overwritten).

    ``bin_pixels`` holds how many LUT pixels each bin has; a pixel at ``sentinel`` is
    taken off its bin's count instead of counting every valid pixel, which saves a
    scatter per pixel. Returns the number of LUT pixels at the sentinel. Sums and
    counts stay apart (pyFAI's habit): an empty bin is "no data", not a zero count.
    """
    sums[:] = 0.0
    counts[:] = bin_pixels
    skipped = 0
    for k in range(pixel_index.size):
        v = frame[pixel_index[k]]
        if v == sentinel:
            counts[bin_index[k]] -= 1.0
            skipped += 1
        else:
            sums[bin_index[k]] += v
    return skipped


@nb.njit(cache=True, nogil=True)
def sum_valid_pixels(frame: np.ndarray, masked_index: np.ndarray, sentinel: int) -> tuple[int, int]:
    """Sum and number of valid pixels of ``frame`` (flat): not ``sentinel``, not in ``masked_index``.

    One streaming pass over the frame, then the (few) masked pixels that do not hold the
    sentinel are taken out again; integer arithmetic, so the result is exact.
    """
    total = 0
    n = 0
    for i in range(frame.size):
        v = frame[i]
        if v != sentinel:
            total += v
            n += 1
    for k in range(masked_index.size):
        v = frame[masked_index[k]]
        if v != sentinel:
            total -= v
            n -= 1
    return total, n
