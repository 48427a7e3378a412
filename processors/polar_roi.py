"""Validating wrapper around the per-frame polar ROI kernels, with reusable buffers."""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np

from processors.polar_lut import PolarLUT
from processors.polar_roi_kernel import accumulate_polar_bins, sum_valid_pixels

_SUPPORTED = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32))


def sentinel_of(dtype: np.dtype) -> int:
    """The value of a gap or masked pixel in frames of the unsigned ``dtype``: its maximum.

    ``np.iinfo(dtype).max`` is the same number, but builds an object in Python on every call:
    ≈ 15 µs per frame in a worker, where the decode before it has pushed that code out of the
    caches (measured, docs/fit_model.md)."""
    return (1 << (8 * dtype.itemsize)) - 1


class PolarROI:
    """Per-frame accumulation of a :class:`PolarLUT`; owns its sum/count buffers.

    ``masked`` is the bool ``(rows, cols)`` mask the LUT was built with; its pixels are
    also left out of :meth:`valid_sum`. Not thread-safe (one instance per worker).
    """

    def __init__(self, lut: PolarLUT, masked: np.ndarray) -> None:
        if masked.shape != lut.shape:
            raise ValueError(f"mask shape {masked.shape} != LUT shape {lut.shape}")
        self.lut = lut
        self._masked = masked
        self.bin_pixels = np.bincount(lut.bin_index, minlength=lut.n_bins).astype(np.float64)
        self._set_unsigned_views()
        self.sums = np.zeros(lut.n_bins, dtype=np.float64)
        self.counts = np.zeros(lut.n_bins, dtype=np.float64)

    @functools.cached_property
    def masked_index(self) -> np.ndarray:
        """Flat indices (int64) of the masked pixels, for :meth:`valid_sum` of a decoded frame:
        found at its first use, not at each series setup (a pass over the whole mask, ≈ 1 ms
        for a 4M, that frames decoded selectively never need)."""
        return np.flatnonzero(self._masked).astype(np.int64)

    def drop_entries(self, keep: np.ndarray) -> None:
        """Keep only the LUT entries where ``keep`` (bool, one per entry) is True, for good: pixels
        found hot during a run (``processors.hot_pixels``). The bins they fed lose them (their
        pixel counts too); the whole-frame :meth:`valid_sum` keeps them, so the intensity map
        does not depend on which worker found which hot pixel. O(LUT size): called once per
        batch of hot pixels found, not per frame.
        """
        lut = self.lut
        self.lut = replace(lut, pixel_index=np.ascontiguousarray(lut.pixel_index[keep]),
                           bin_index=np.ascontiguousarray(lut.bin_index[keep]))
        self.bin_pixels = np.bincount(self.lut.bin_index, minlength=lut.n_bins).astype(np.float64)
        self._set_unsigned_views()

    def _set_unsigned_views(self) -> None:
        """The LUT's indices seen as unsigned integers of the same width (no copy), as the kernels
        get them: numba adds a negative-index wrap-around test to every signed index, which
        costs about a third of the ROI pass (measured, docs/polar_roi.md). The indices are
        never negative, so the values are the same.
        """
        pixels, bins = self.lut.pixel_index, self.lut.bin_index
        self.pixel_index_u = pixels.view(np.dtype(f"u{pixels.dtype.itemsize}"))
        self.bin_index_u = bins.view(np.dtype(f"u{bins.dtype.itemsize}"))

    def checked_flat(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` as a flat view, after checking its dtype, shape and contiguity (ValueError)."""
        if frame.dtype not in _SUPPORTED:
            raise ValueError(f"frame dtype {frame.dtype} not supported; expected uint8, uint16 or uint32")
        if frame.shape != self.lut.shape:
            raise ValueError(f"frame shape {frame.shape} does not match the detector {self.lut.shape}")
        if not frame.flags.c_contiguous:
            raise ValueError("frame must be C-contiguous")
        return frame.reshape(-1)

    def accumulate(self, frame: np.ndarray) -> int:
        """Fill the per-bin sums and counts from ``frame``; returns LUT pixels at the sentinel."""
        flat = self.checked_flat(frame)
        sentinel = sentinel_of(frame.dtype)
        return accumulate_polar_bins(flat, self.pixel_index_u, self.bin_index_u, sentinel,
                                     self.bin_pixels, self.sums, self.counts)

    def valid_sum(self, frame: np.ndarray) -> tuple[int, int]:
        """Integrated counts and number of valid pixels of the whole frame."""
        flat = self.checked_flat(frame)
        return sum_valid_pixels(flat, self.masked_index, sentinel_of(frame.dtype))

    def window_sums(self, index: int, sums: np.ndarray | None = None,
                    counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Views ``(sums, counts)`` of window ``index``, each ``(nq, nchi)``, of :attr:`sums` and
        :attr:`counts` or of the flat per-bin ``sums``/``counts`` given."""
        w = self.lut.windows[index]
        sl = slice(w.offset, w.offset + w.n_bins)
        sums = self.sums if sums is None else sums
        counts = self.counts if counts is None else counts
        return sums[sl].reshape(w.nq, w.nchi), counts[sl].reshape(w.nq, w.nchi)
