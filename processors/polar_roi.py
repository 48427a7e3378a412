"""Validating wrapper around the per-frame polar ROI kernels, with reusable buffers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from processors.polar_lut import PolarLUT
from processors.polar_roi_kernel import accumulate_polar_bins, sum_valid_pixels

_SUPPORTED = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32))


class PolarROI:
    """Per-frame accumulation of a :class:`PolarLUT`; owns its sum/count buffers.

    ``masked`` is the bool ``(rows, cols)`` mask the LUT was built with; its pixels are
    also left out of :meth:`valid_sum`. Not thread-safe (one instance per worker).
    """

    def __init__(self, lut: PolarLUT, masked: np.ndarray) -> None:
        if masked.shape != lut.shape:
            raise ValueError(f"mask shape {masked.shape} != LUT shape {lut.shape}")
        self.lut = lut
        self.masked_index = np.flatnonzero(masked).astype(np.int64)
        self.bin_pixels = np.bincount(lut.bin_index, minlength=lut.n_bins).astype(np.float64)
        self.sums = np.zeros(lut.n_bins, dtype=np.float64)
        self.counts = np.zeros(lut.n_bins, dtype=np.float64)

    def drop_pixels(self, flat: np.ndarray) -> int:
        """Take the pixels ``flat`` (flat indices) out of the ROI tables for good (hot pixels
        found during a run); returns how many LUT entries went.

        The bins they fed lose them (their pixel counts too); the whole-frame
        :meth:`valid_sum` keeps them, so the intensity map does not depend on which worker
        found which hot pixel. O(LUT size) per call: called once per batch of hot pixels found.
        """
        lut = self.lut
        gone = np.isin(lut.pixel_index, np.asarray(flat, dtype=np.int64))
        n = int(np.count_nonzero(gone))
        if n:
            self.lut = replace(lut, pixel_index=np.ascontiguousarray(lut.pixel_index[~gone]),
                               bin_index=np.ascontiguousarray(lut.bin_index[~gone]))
            self.bin_pixels = np.bincount(self.lut.bin_index, minlength=lut.n_bins).astype(np.float64)
        return n

    def _check(self, frame: np.ndarray) -> np.ndarray:
        if frame.dtype not in _SUPPORTED:
            raise ValueError(f"frame dtype {frame.dtype} not supported; expected uint8, uint16 or uint32")
        if frame.shape != self.lut.shape:
            raise ValueError(f"frame shape {frame.shape} does not match the detector {self.lut.shape}")
        if not frame.flags.c_contiguous:
            raise ValueError("frame must be C-contiguous")
        return frame.reshape(-1)

    def accumulate(self, frame: np.ndarray) -> int:
        """Fill the per-bin sums and counts from ``frame``; returns LUT pixels at the sentinel."""
        flat = self._check(frame)
        sentinel = int(np.iinfo(frame.dtype).max)
        return accumulate_polar_bins(flat, self.lut.pixel_index, self.lut.bin_index, sentinel,
                                     self.bin_pixels, self.sums, self.counts)

    def valid_sum(self, frame: np.ndarray) -> tuple[int, int]:
        """Integrated counts and number of valid pixels of the whole frame."""
        flat = self._check(frame)
        return sum_valid_pixels(flat, self.masked_index, int(np.iinfo(frame.dtype).max))

    def window_sums(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Views ``(sums, counts)`` of window ``index``, each ``(nq, nchi)``."""
        w = self.lut.windows[index]
        sl = slice(w.offset, w.offset + w.n_bins)
        return self.sums[sl].reshape(w.nq, w.nchi), self.counts[sl].reshape(w.nq, w.nchi)
