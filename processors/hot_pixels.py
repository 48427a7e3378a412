"""Hot pixels found on the fly: pixels of the windows that spike in most frames a worker sees.

A hot pixel missing from the detector mask ruins every fit of its window (issue 10). Each
worker tracks the pixels inside its windows (:class:`HotPixelTracker`, counting in the ROI
pass itself: :func:`processors.hot_pixels_kernel.accumulate_counting_spikes`, state made
once): a pixel **spikes** in a frame when it is far above its 8 neighbours, and it is
**hot** when it spiked in at least ``min_fraction`` (80 %) of at least ``min_frames`` (20)
frames counted in the current block of ``block_frames`` (200) frames. Real spots, even one
pixel wide, move from point to point, and zingers last one frame: neither spikes at the
same pixel in 80 % of 20 frames. The worker then masks the pixel for the rest of its life
(from the frame it was found in on: that frame's bins lose it too) and reports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from processors.hot_pixels_kernel import TRACK, accumulate_counting_spikes, fill_spike_test_flags
from processors.polar_roi import PolarROI, sentinel_of


@dataclass(frozen=True)
class HotPixelRule:
    """When a pixel spikes and when it is hot (see :mod:`processors.hot_pixels_kernel`).

    min_counts : a spike has at least this many counts (most pixels stop at this test).
    ratio, n_sigma : a spike exceeds ``ratio · m₂ + n_sigma · √(m₂ + 1)``, m₂ the second
        largest of its 8 neighbours.
    min_frames, min_fraction : hot once it spiked in ``≥ min_fraction`` of ``≥ min_frames`` frames.
    block_frames : spikes are counted over blocks of this many frames (then start again), so a
        pixel that turns hot late in a long run is still found.
    """

    min_counts: int = 8
    ratio: float = 5.0
    n_sigma: float = 5.0
    min_frames: int = 20
    min_fraction: float = 0.8
    block_frames: int = 200

    def __post_init__(self) -> None:
        if self.min_counts < 1 or self.ratio < 1 or self.n_sigma < 0:
            raise ValueError(f"hot-pixel rule: min_counts ≥ 1, ratio ≥ 1, n_sigma ≥ 0, got {self}")
        if not 0 < self.min_fraction <= 1 or self.min_frames < 1 or self.block_frames < self.min_frames:
            raise ValueError(f"hot-pixel rule: 0 < min_fraction ≤ 1, 1 ≤ min_frames ≤ block_frames, got {self}")


def spike_test_flags(pixels: np.ndarray, tracked: np.ndarray, bad: np.ndarray, ncols: int) -> np.ndarray:
    """uint8 flags per LUT entry for :func:`accumulate_counting_spikes`: ``TRACK`` where
    ``tracked`` (bool per entry), plus ``ROW_OK`` where the pixel's left and right neighbours
    lie on its row and are not ``bad`` (uint8 flat mask, nonzero = masked).

    ``pixels`` are flat indices into frames of ``ncols`` columns. Recompute whenever ``bad``
    changes (a hot pixel found): O(entries), never per frame.
    """
    if pixels.shape != tracked.shape or bad.dtype != np.uint8 or bad.ndim != 1:
        raise ValueError("spike_test_flags: one tracked flag per pixel entry, bad a flat uint8 mask")
    flags = np.empty(pixels.size, dtype=np.uint8)
    fill_spike_test_flags(pixels, np.ascontiguousarray(tracked, dtype=np.bool_), bad, int(ncols), flags)
    return flags


#: Hot pixels one frame can report at most (more: the next frames).
MAX_NEW_PER_FRAME = 64


class HotPixelTracker:
    """Spike counts of the pixels of ``roi``'s windows, kept while ``roi`` accumulates frames.

    ``masked`` is the bool ``(rows, cols)`` mask (True = bad) the ROI tables were built with.
    Use :meth:`accumulate` instead of ``roi.accumulate``. Not thread-safe (one per worker).
    """

    def __init__(self, roi: PolarROI, masked: np.ndarray, rule: HotPixelRule = HotPixelRule()) -> None:
        if masked.shape != roi.lut.shape:
            raise ValueError(f"mask shape {masked.shape} != frame shape {roi.lut.shape}")
        self.roi = roi
        self.shape = tuple(roi.lut.shape)
        self.rule = rule
        self.bad = np.array(masked, dtype=np.uint8).reshape(-1)  # its own copy: hot pixels are added to it
        pixels = roi.lut.pixel_index
        # a pixel in two windows has two LUT entries (adjacent: the LUT is sorted by pixel): count its first
        first = np.ones(pixels.size, dtype=bool)
        first[1:] = pixels[1:] != pixels[:-1]
        self.flags = spike_test_flags(pixels, first & (self.bad[pixels] == 0), self.bad, self.shape[1])
        self.spikes = np.zeros(pixels.size, dtype=np.int32)
        self.n_frames = 0
        self.counts_written = True          # see accumulate(lazy_counts=True)
        self.hot: list[int] = []            # flat indices, in the order found
        self._new = np.empty(MAX_NEW_PER_FRAME, dtype=np.int64)
        self._none = self._new[:0]

    @property
    def n_tracked(self) -> int:
        """Pixels still tested."""
        return int(np.count_nonzero(self.flags & TRACK))

    def accumulate(self, frame: np.ndarray, sums: np.ndarray | None = None,
                   counts: np.ndarray | None = None, lazy_counts: bool = False) -> np.ndarray:
        """``roi.accumulate(frame)`` counting spikes on the way; returns the flat indices of pixels
        that became hot now (empty when none, the usual case). ``sums``/``counts``: where the
        per-bin sums go (float64, the LUT's ``n_bins``), ``roi.sums``/``roi.counts`` by default.

        Those pixels are marked bad (no longer tested, nobody's neighbour), this frame's sums and
        counts lose them, and they are dropped from the ROI tables for the next frames.

        ``lazy_counts``: ``counts`` is written only where it differs from ``roi.bin_pixels``
        (a window pixel at the sentinel, or a hot pixel found); :attr:`counts_written` says
        whether it was, and if not the counts are ``roi.bin_pixels`` as it was before the call.
        """
        roi = self.roi
        sums = roi.sums if sums is None else sums
        counts = roi.counts if counts is None else counts
        flat = roi.checked_flat(frame)
        return self.accumulate_flat(flat, sentinel_of(frame.dtype), sums, counts, lazy_counts)

    def accumulate_flat(self, flat: np.ndarray, sentinel: int, sums: np.ndarray, counts: np.ndarray,
                        lazy_counts: bool = False) -> np.ndarray:
        """:meth:`accumulate` of a frame already checked: ``flat`` the C-contiguous flat frame of
        the detector's shape and a supported dtype, ``sentinel`` its :func:`sentinel_of`.

        The worker's path (``FrameProcessor.integrate_windows``, whose frames come checked from
        the decoder): the checks and the sentinel's lookup cost ≈ 20 µs per frame there, a tenth
        of the ROI pass, because the decode before has pushed their code out of the caches.
        """
        roi, r = self.roi, self.rule
        if self.n_frames >= r.block_frames:
            self.spikes[:] = 0
            self.n_frames = 0
        self.n_frames += 1
        skipped, n = accumulate_counting_spikes(flat, roi.pixel_index_u, roi.bin_index_u, sentinel, roi.bin_pixels, sums,
                                                counts, self.shape[1], self.bad, self.flags, self.spikes,
                                                self.n_frames, r.min_counts, r.ratio, r.n_sigma, r.min_frames,
                                                r.min_fraction, self._new, lazy_counts)
        self.counts_written = skipped > 0 or not lazy_counts
        if n == 0:
            return self._none
        lut = roi.lut
        if not self.counts_written:
            counts[:] = roi.bin_pixels
            self.counts_written = True
        found = lut.pixel_index[self._new[:n]].astype(np.int64)
        gone = np.isin(lut.pixel_index, found)
        # this frame's bins lose them too (a spike is never the sentinel)
        np.subtract.at(sums, lut.bin_index[gone], flat[lut.pixel_index[gone]].astype(np.float64))
        np.subtract.at(counts, lut.bin_index[gone], 1.0)
        roi.drop_entries(~gone)
        self.spikes = np.ascontiguousarray(self.spikes[~gone])
        self.bad[found] = 1
        # the found pixels' neighbours lose them as row neighbours too
        self.flags = spike_test_flags(roi.lut.pixel_index, (self.flags[~gone] & TRACK) != 0, self.bad, self.shape[1])
        self.hot.extend(int(p) for p in found)
        return found
