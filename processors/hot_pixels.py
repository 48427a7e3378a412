"""Hot pixels found on the fly: pixels of the windows that spike in most frames a worker sees.

A hot pixel missing from the detector mask ruins every fit of its window (issue 10). Each
worker tracks the pixels inside its windows (:class:`HotPixelTracker`, a numba kernel over
those pixels only, state made once): a pixel **spikes** in a frame when it is far above its
8 neighbours (:func:`processors.hot_pixels_kernel.count_spikes`), and it is **hot** when it
spiked in at least ``min_fraction`` (80 %) of at least ``min_frames`` (20) frames counted
in the current block of ``block_frames`` (200) frames. Real spots, even one pixel wide, move
from point to point, and zingers last one frame: neither spikes at the same pixel in 80 %
of 20 frames. The worker then masks the pixel for the rest of its life (the frame
processor drops it from its ROI tables) and reports it in its records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from processors.hot_pixels_kernel import count_spikes


@dataclass(frozen=True)
class HotPixelRule:
    """When a pixel spikes and when it is hot (see :func:`~processors.hot_pixels_kernel.count_spikes`).

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


#: Hot pixels one frame can report at most (more: the next frames).
MAX_NEW_PER_FRAME = 64


class HotPixelTracker:
    """Spike counts of ``pixels`` (flat indices into a ``shape`` frame) over the frames seen.

    ``masked`` is the bool ``shape`` mask (True = bad) the ROI tables were built with. Not
    thread-safe (one per worker).
    """

    def __init__(self, shape: tuple[int, int], pixels: np.ndarray, masked: np.ndarray,
                 rule: HotPixelRule = HotPixelRule()) -> None:
        if masked.shape != tuple(shape):
            raise ValueError(f"mask shape {masked.shape} != frame shape {tuple(shape)}")
        self.shape = tuple(shape)
        self.rule = rule
        # the LUT's index type (int32 for frames under 2**31 pixels): half the index traffic
        self.pixels = np.unique(np.asarray(pixels))
        if self.pixels.size and (self.pixels[0] < 0 or self.pixels[-1] >= shape[0] * shape[1]):
            raise ValueError(f"tracked pixel indices must lie in [0, {shape[0] * shape[1]})")
        self.bad = np.ascontiguousarray(masked, dtype=np.uint8).reshape(-1).copy()
        self.active = (self.bad[self.pixels] == 0).astype(np.uint8)
        self.spikes = np.zeros(self.pixels.size, dtype=np.int32)
        self.n_frames = 0
        self.hot: list[int] = []            # flat indices, in the order found
        self._new = np.empty(MAX_NEW_PER_FRAME, dtype=np.int64)

    def update(self, frame: np.ndarray) -> np.ndarray:
        """Count ``frame``'s spikes; returns the flat indices of pixels that became hot now (new array).

        Those pixels are marked bad here (no longer tested, nobody's neighbour); the caller
        takes them out of its ROI tables.
        """
        if frame.shape != self.shape or not frame.flags.c_contiguous:
            raise ValueError(f"frame must be C-contiguous {self.shape}, got {frame.shape}")
        r = self.rule
        if self.n_frames >= r.block_frames:
            self.spikes[:] = 0
            self.n_frames = 0
        self.n_frames += 1
        flat = frame.reshape(-1)
        sentinel = int(np.iinfo(frame.dtype).max)
        n = count_spikes(flat, self.shape[1], self.bad, self.pixels, self.active, self.spikes, self.n_frames,
                         r.min_counts, r.ratio, r.n_sigma, r.min_frames, r.min_fraction, sentinel, self._new)
        if n == 0:
            return self._new[:0]
        found = self.pixels[self._new[:n]]
        self.active[self._new[:n]] = 0
        self.bad[found] = 1
        self.hot.extend(int(p) for p in found)
        return found
