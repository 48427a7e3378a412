"""The pattern of a whole scan: per-pixel sum, count and maximum of valid values over frames.

What a user looks at to place ``[[peak]]`` windows on new data. Sums and counts are kept
apart (pyFAI's habit): the mean is divided only at the end, so a pixel that was at the
sentinel (gap, masked, saturated) in some frames is averaged over the frames where it was
valid, and a pixel never valid is NaN rather than zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from processors.pattern_kernel import accumulate_frame

#: What a pattern image can show per pixel.
PATTERN_STATS = ("sum", "mean", "max")
_SUPPORTED = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32))


@dataclass(frozen=True)
class DetectorPattern:
    """Per-pixel statistics of ``frames`` frames, each ``(rows, cols)``.

    ``sums`` uint64 (counts), ``counts`` uint32 (frames in which the pixel was valid),
    ``maxima`` uint32 (counts); ``mask`` bool, True = excluded by the detector, the file's
    ``pixel_mask`` or the user mask (its sums, counts and maxima are 0).
    """

    sums: np.ndarray = field(repr=False)
    counts: np.ndarray = field(repr=False)
    maxima: np.ndarray = field(repr=False)
    mask: np.ndarray = field(repr=False)
    frames: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.sums.shape)

    def image(self, stat: str) -> np.ndarray:
        """float64 ``(rows, cols)`` of ``stat`` (one of :data:`PATTERN_STATS`), NaN where never valid."""
        if stat not in PATTERN_STATS:
            raise ValueError(f"unknown statistic {stat!r}; use one of {', '.join(PATTERN_STATS)}")
        valid = self.counts > 0
        out = np.full(self.shape, np.nan)
        if stat == "sum":
            out[valid] = self.sums[valid]
        elif stat == "mean":
            out[valid] = self.sums[valid] / self.counts[valid]
        else:
            out[valid] = self.maxima[valid]
        return out


class PatternAccumulator:
    """Adds decoded frames into reusable per-pixel buffers; :meth:`result` applies the mask.

    ``mask`` bool ``(rows, cols)``, True = never use the pixel.
    """

    def __init__(self, mask: np.ndarray) -> None:
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 2:
            raise ValueError(f"mask must be 2-D (rows, cols), got shape {mask.shape}")
        self.mask = mask
        n = mask.size
        self._sums = np.zeros(n, dtype=np.uint64)
        self._counts = np.zeros(n, dtype=np.uint32)
        self._maxima = np.zeros(n, dtype=np.uint32)
        self.frames = 0

    def add(self, frame: np.ndarray) -> int:
        """Add one ``(rows, cols)`` uint8/16/32 frame; returns its pixels at the dtype's maximum."""
        if frame.dtype not in _SUPPORTED:
            raise ValueError(f"frame dtype {frame.dtype} not supported; expected uint8, uint16 or uint32")
        if frame.shape != self.mask.shape:
            raise ValueError(f"frame shape {frame.shape} does not match the detector {self.mask.shape}")
        if not frame.flags.c_contiguous:
            raise ValueError("frame must be C-contiguous")
        skipped = accumulate_frame(frame.reshape(-1), int(np.iinfo(frame.dtype).max),
                                   self._sums, self._counts, self._maxima)
        self.frames += 1
        return int(skipped)

    def result(self) -> DetectorPattern:
        """The statistics so far, masked pixels zeroed (copies: the accumulator may go on)."""
        shape = self.mask.shape
        sums, counts, maxima = (a.reshape(shape).copy() for a in (self._sums, self._counts, self._maxima))
        for a in (sums, counts, maxima):
            a[self.mask] = 0
        return DetectorPattern(sums=sums, counts=counts, maxima=maxima, mask=self.mask.copy(), frames=self.frames)
