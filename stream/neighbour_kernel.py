"""numba kernel of :func:`stream.bslz4_partial.with_neighbours`: flag pixels and their 8 neighbours.

A new series' mask rebuilds a worker's tables while that series' frames wait: numpy's nine
shifted copies with their bounds tests took 12 ms of a 4M setup's 55 ms; with this pass the
whole of ``with_neighbours`` (the zeroed flags and ``flatnonzero`` included) takes ≈ 3 ms.
"""

from __future__ import annotations

import numba


@numba.njit(cache=True, nogil=True)
def flag_with_neighbours(pixels, rows, cols, flags):
    """Set ``flags[i]`` for every flat pixel index ``i`` in ``pixels`` and its 8 neighbours
    inside the ``rows × cols`` frame (not wrapping across rows).

    pixels: int64 flat indices, each in ``[0, rows * cols)`` (checked by the caller).
    flags: bool, ``rows * cols``, set only where flagged (the caller zeroes it).
    """
    for k in range(pixels.size):
        p = pixels[k]
        r = p // cols
        c = p - r * cols
        r0 = r - 1 if r > 0 else r
        r1 = r + 1 if r + 1 < rows else r
        c0 = c - 1 if c > 0 else c
        c1 = c + 1 if c + 1 < cols else c
        for rr in range(r0, r1 + 1):
            base = rr * cols
            for cc in range(c0, c1 + 1):
                flags[base + cc] = True
