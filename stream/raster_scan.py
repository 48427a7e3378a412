"""Which frame is which map point: raster and snake scans on a 2-D grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RasterScan:
    """A 2-D grid scanned row by row.

    ``shape`` is ``(rows, cols)`` = (slow axis, fast axis). Frame ``k`` belongs to point
    ``k // frames_per_point``; in a snake scan every odd row runs backwards. Positions
    in motor units (µm) come from ``origin`` + index × ``step`` when ``step`` is known.
    """

    shape: tuple[int, int]
    snake: bool = False
    frames_per_point: int = 1
    step: tuple[float, float] | None = None
    origin: tuple[float, float] = (0.0, 0.0)
    motors: tuple[str, str] = ("y", "x")

    def __post_init__(self) -> None:
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"scan shape must be two positive integers, got {self.shape}")
        if self.frames_per_point < 1:
            raise ValueError("frames_per_point must be >= 1")

    @property
    def n_points(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def n_frames(self) -> int:
        return self.n_points * self.frames_per_point

    def points_of(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map frame numbers to ``(row, col)`` int64 arrays; -1 where outside the scan."""
        frames = np.asarray(frames, dtype=np.int64)
        point = frames // self.frames_per_point
        rows, cols = self.shape
        inside = (frames >= 0) & (point < self.n_points)
        row = np.where(inside, point // cols, -1)
        col = np.where(inside, point % cols, -1)
        if self.snake:
            odd = inside & (row % 2 == 1)
            col = np.where(odd, cols - 1 - col, col)
        return row, col

    def axis_positions(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Motor positions of rows and columns (µm), or None when the step is unknown."""
        if self.step is None:
            return None
        y = self.origin[0] + self.step[0] * np.arange(self.shape[0])
        x = self.origin[1] + self.step[1] * np.arange(self.shape[1])
        return y, x
