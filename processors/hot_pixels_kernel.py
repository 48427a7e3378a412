"""numba kernel of the on-the-fly hot-pixel search: single-pixel spikes counted per tracked pixel.

Pure function on typed arrays with caller-allocated state (the wrapper is
:mod:`processors.hot_pixels`). Integer and float comparisons only: no fastmath needed.
"""

from __future__ import annotations

import math

import numba as nb


@nb.njit(cache=True, nogil=True)
def count_spikes(frame, ncols, bad, pixels, active, spikes, n_frames, min_counts, ratio, n_sigma,
                 min_frames, min_fraction, sentinel, new_hot) -> int:
    """Count this frame's spikes at ``pixels`` and return how many became hot (their positions in ``new_hot``).

    frame : flat detector frame (uint), ``ncols`` pixels per row.
    bad : uint8 flat, nonzero = masked (detector mask and hot pixels already found): such a
        pixel is nobody's neighbour.
    pixels : int flat indices of the tracked pixels (the windows' pixels), ascending.
    active : uint8 per tracked pixel, 0 = no longer tested (already hot). Kept apart from
        ``bad`` so that the pass over the pixels reads only the frame (the detector-sized
        ``bad`` is read for the few pixels above ``min_counts``).
    spikes : int32 per tracked pixel, spikes counted so far (updated).
    n_frames : frames counted so far, this one included.

    A pixel spikes when its value ``v`` (not the sentinel) is at least ``min_counts`` and

        v > ratio · m₂ + n_sigma · √(m₂ + 1)

    with ``m₂`` the second largest of its valid 8-neighbours (needs at least 3): one pixel
    far above its surroundings. The second largest, not the largest, so that two adjacent
    hot pixels are found too. It becomes hot when, with ``n_frames ≥ min_frames``, its
    spikes reach ``min_fraction · n_frames``. At most ``new_hot.size`` are reported per call
    (the rest on the next frames). Most pixels stop at the first test (v < min_counts).
    """
    nrows = frame.size // ncols
    found = 0
    need = min_fraction * n_frames
    for k in range(pixels.size):
        p = pixels[k]
        v = frame[p]
        if v < min_counts or v == sentinel or not active[k]:
            continue
        r = p // ncols
        c = p - r * ncols
        # pre-test on the row neighbours (same cache line): the second largest of the 8 is at
        # least the smaller of left and right, so v must beat that bound to be a spike
        if 0 < c < ncols - 1 and not bad[p - 1] and not bad[p + 1]:
            left = frame[p - 1]
            right = frame[p + 1]
            if left != sentinel and right != sentinel:
                lo = float(min(left, right))
                if float(v) <= ratio * lo + n_sigma * math.sqrt(lo + 1.0):
                    continue
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
        if n < 3:
            continue
        if float(v) > ratio * m2 + n_sigma * math.sqrt(m2 + 1.0):
            spikes[k] += 1
            if n_frames >= min_frames and spikes[k] >= need and found < new_hot.size:
                new_hot[found] = k
                found += 1
    return found
