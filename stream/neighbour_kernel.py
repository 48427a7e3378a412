"""numba kernels of :func:`stream.bslz4_partial.with_neighbours`: pixels and their 8 neighbours.

A new series' mask rebuilds a worker's tables while that series' frames wait. numpy's nine
shifted copies with their bounds tests took 12 ms of a 4M setup's 55 ms. One byte per pixel
then took ≈ 5 ms: zeroing, faulting in and scanning a 4 MB flag array. One bit per pixel
(512 KB for a 4M, in cache) and a scan that skips empty words take ≈ 1 ms.
"""

from __future__ import annotations

import numba
import numpy as np

from stream.word_intrinsics import popcount64, trailing_zeros64


@numba.njit(cache=True, nogil=True)
def _set_bits(bits, i, width):
    """Set bits ``i .. i + width - 1`` (``width`` 1–3) of the bitmap ``bits``."""
    run = (np.uint64(1) << np.uint64(width)) - np.uint64(1)
    w = i >> 6
    shift = i & 63
    bits[w] |= run << np.uint64(shift)
    if shift + width > 64:  # the run crosses into the next word
        bits[w + 1] |= run >> np.uint64(64 - shift)


@numba.njit(cache=True, nogil=True)
def flag_with_neighbours(pixels, rows, cols, bits):
    """Set bit ``i % 64`` of ``bits[i // 64]`` for every flat pixel index ``i`` in ``pixels`` and
    its 8 neighbours inside the ``rows × cols`` frame (not wrapping across rows).

    pixels: int64 flat indices, each in ``[0, rows * cols)`` (checked by the caller), in any
    order; sorted ones (a LUT's) divide once per row instead of once per pixel.
    bits: uint64, at least ``ceil(rows * cols / 64)`` words, set only where flagged (the
    caller zeroes it).
    """
    row_start = 0
    row_end = 0  # [row_start, row_end): the flat range of row r
    r = 0
    for k in range(pixels.size):
        p = pixels[k]
        if p < row_start or p >= row_end:
            r = p // cols
            row_start = r * cols
            row_end = row_start + cols
        c = p - row_start
        c0 = c - 1 if c > 0 else c
        c1 = c + 1 if c + 1 < cols else c
        width = c1 - c0 + 1
        if r > 0:
            _set_bits(bits, row_start - cols + c0, width)
        _set_bits(bits, row_start + c0, width)
        if r + 1 < rows:
            _set_bits(bits, row_start + cols + c0, width)


@numba.njit(cache=True, nogil=True)
def count_set_bits(bits) -> int:
    """How many bits of ``bits`` (uint64) are set."""
    n = 0
    for w in range(bits.size):
        n += popcount64(bits[w])
    return n


@numba.njit(cache=True, nogil=True)
def set_bit_indices(bits, out) -> int:
    """Write the index ``64 * w + b`` of every set bit ``b`` of ``bits[w]`` into ``out`` (int64),
    ascending; returns how many (``out`` holds at least :func:`count_set_bits`)."""
    n = 0
    for w in range(bits.size):
        v = bits[w]
        while v:
            out[n] = w * 64 + np.int64(trailing_zeros64(v))
            n += 1
            v &= v - np.uint64(1)  # clear the lowest set bit
    return n
