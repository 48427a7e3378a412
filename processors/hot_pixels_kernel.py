"""numba kernel of the on-the-fly hot-pixel search, fused with the polar-bin accumulation.

The ROI pass (``processors.polar_roi_kernel.accumulate_polar_bins``) reads every window
pixel of the frame; counting single-pixel spikes in the same pass costs almost nothing
more, a separate pass would cost as much again (one more gather over the frame). Pure
function on typed arrays with caller-allocated state (the wrapper is
:mod:`processors.hot_pixels`). Integer and float comparisons only: no fastmath needed.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

#: ``flags`` bits per LUT entry: test this entry's pixel (its first entry, not yet hot) …
TRACK = 1
#: … and its left and right neighbours are on its row and not masked, so the cheap row
#: pre-test applies (known when the tables are made: no division or mask load per pixel).
ROW_OK = 2


@nb.njit(cache=True, nogil=True)
def fill_spike_test_flags(pixels: np.ndarray, tracked: np.ndarray, bad: np.ndarray, ncols: int,
                          flags: np.ndarray) -> None:
    """``flags[k]``: ``TRACK`` where ``tracked[k]``, plus ``ROW_OK`` where entry ``k``'s pixel also
    has its left and right neighbours on its row and not ``bad`` (uint8 flat, nonzero =
    masked). ``pixels`` flat indices into frames of ``ncols`` columns. Once per setup and per
    hot pixel found, never per frame: one pass instead of numpy's eight over the LUT."""
    for k in range(pixels.size):
        if not tracked[k]:
            flags[k] = 0
            continue
        p = np.int64(pixels[k])
        c = p % ncols
        row_ok = c > 0 and c < ncols - 1 and bad[p - 1] == 0 and bad[p + 1] == 0
        flags[k] = TRACK + ROW_OK if row_ok else TRACK


@nb.njit(cache=True, nogil=True)
def _is_spike(frame, p, v, ncols, nrows, bad, sentinel, ratio, n_sigma) -> bool:
    """Whether pixel ``p`` (value ``v`` ≥ min_counts) is far above its valid 8-neighbours."""
    r = p // ncols
    c = p - r * ncols
    m1 = -1.0
    m2 = -1.0
    n = 0
    for dr in range(-1, 2):
        rr = r + dr
        if rr < 0 or rr >= nrows:
            continue
        for dc in range(-1, 2):
            cc = c + dc
            if (dr == 0 and dc == 0) or cc < 0 or cc >= ncols:
                continue
            q = rr * ncols + cc
            if bad[q]:
                continue
            u = frame[q]
            if u == sentinel:
                continue
            x = float(u)
            n += 1
            if x > m1:
                m2 = m1
                m1 = x
            elif x > m2:
                m2 = x
    return n >= 3 and float(v) > ratio * m2 + n_sigma * math.sqrt(m2 + 1.0)


@nb.njit(cache=True, nogil=True)
def accumulate_counting_spikes(frame, pixel_index, bin_index, sentinel, bin_pixels, sums, counts,
                               ncols, bad, flags, spikes, n_frames, min_counts, ratio, n_sigma,
                               min_frames, min_fraction, new_hot, lazy_counts=False):
    """``accumulate_polar_bins`` (sums and counts overwritten, same result) while counting spikes.

    frame : flat detector frame (uint), ``ncols`` pixels per row; ``pixel_index``,
        ``bin_index``, ``bin_pixels``, ``sums``, ``counts`` as in ``accumulate_polar_bins``.
    bad : uint8 flat, nonzero = masked (detector mask and hot pixels already found): such a
        pixel is nobody's neighbour.
    flags : uint8 per LUT entry, bits ``TRACK`` and ``ROW_OK`` (see
        :func:`processors.hot_pixels.spike_test_flags`).
    spikes : int32 per LUT entry, spikes counted so far (updated).
    n_frames : frames counted so far, this one included.
    lazy_counts : ``counts`` is written only when a LUT pixel is at the sentinel (``skipped``
        > 0); otherwise it is left as it was and the counts are ``bin_pixels`` themselves. A
        worker's batch then does not write and read again a counts array per frame (the fits
        read the shared ``bin_pixels``): ≈ 15 µs per 4M frame (docs/fit_model.md).

    A pixel spikes when its value ``v`` (not the sentinel) is at least ``min_counts`` and

        v > ratio · m₂ + n_sigma · √(m₂ + 1)

    with ``m₂`` the second largest of its valid 8-neighbours (needs at least 3): one pixel
    far above its surroundings. The second largest, not the largest, so that two adjacent
    hot pixels are found too. It becomes hot when, with ``n_frames ≥ min_frames``, its
    spikes reach ``min_fraction · n_frames``. Returns ``(skipped, found)``: LUT pixels at the
    sentinel, and how many LUT entries (their indices in ``new_hot``) became hot; at most
    ``new_hot.size`` per call (the rest on the next frames).

    Speed: most pixels stop at ``v < min_counts``. The others (spots) first meet a pre-test
    on their row neighbours (same cache line): m₂ ≥ min(left, right), so ``v`` must beat
    ``ratio · lo + n_sigma · √(lo + 1)`` with lo = min(left, right); ``v ≤ ratio · lo``
    settles it without the square root (the √ term is ≥ 0). Only the rare survivors pay the
    division by ``ncols`` and the 8-neighbour scan.
    """
    sums[:] = 0.0
    nrows = frame.size // ncols
    need = min_fraction * n_frames
    skipped = 0
    found = 0
    for k in range(pixel_index.size):
        p = pixel_index[k]
        v = frame[p]
        if v == sentinel:
            skipped += 1
            continue
        sums[bin_index[k]] += v
        if v < min_counts:
            continue
        f = flags[k]
        if f == 0:
            continue
        ps = np.int64(p)  # the index may come unsigned (see processors.polar_roi): neighbours need signed
        if f & ROW_OK:
            left = frame[ps - 1]
            right = frame[ps + 1]
            if left != sentinel and right != sentinel:
                lo = float(min(left, right))
                x = float(v)
                if x <= ratio * lo or x <= ratio * lo + n_sigma * math.sqrt(lo + 1.0):
                    continue
        if _is_spike(frame, ps, v, ncols, nrows, bad, sentinel, ratio, n_sigma):
            spikes[k] += 1
            if n_frames >= min_frames and spikes[k] >= need and found < new_hot.size:
                new_hot[found] = k
                found += 1
    # the counts after the loop, not in it: a write into ``counts`` inside the loop, even on
    # this rare path, cost the whole pass ≈ 10 % (measured, docs/fit_model.md); the fix-up pass
    # reads the LUT again only for a frame with window pixels at the sentinel
    if skipped or not lazy_counts:
        counts[:] = bin_pixels
    if skipped:
        for k in range(pixel_index.size):
            if frame[pixel_index[k]] == sentinel:
                counts[bin_index[k]] -= 1.0
    return skipped, found
