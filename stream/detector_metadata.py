"""What a DECTRIS master file (or a stream header) says about the detector and series."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class DetectorMetadata:
    """Detector and series description, in the units the DECTRIS files use.

    ``pixel_mask`` is ``(rows, cols)`` uint32, nonzero = bad (gap, dead, hot), or None.
    """

    description: str
    x_pixels: int
    y_pixels: int
    dtype: str
    x_pixel_size_m: float = 75e-6
    y_pixel_size_m: float = 75e-6
    detector_distance_m: float = 0.0
    beam_center_x_px: float = 0.0
    beam_center_y_px: float = 0.0
    wavelength_A: float = 0.0
    count_time_s: float = 0.0
    frame_time_s: float = 0.0
    nimages: int = 0
    ntrigger: int = 1
    compression: str = "bslz4"
    pixel_mask: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int]:
        """Frame shape ``(rows, cols)`` = ``(y_pixels, x_pixels)``."""
        return (self.y_pixels, self.x_pixels)

    def mask_or_zeros(self) -> np.ndarray:
        """The pixel mask as little-endian uint32 ``(rows, cols)``, zeros when there is none."""
        if self.pixel_mask is None:
            return np.zeros(self.shape, dtype="<u4")
        mask = np.asarray(self.pixel_mask)
        if mask.shape != self.shape:
            raise ValueError(f"pixel_mask shape {mask.shape} is not the detector's {self.shape}")
        return mask.astype("<u4", copy=False)

    @property
    def frames_expected(self) -> int:
        """Frames the series should hold: ``nimages × ntrigger``."""
        return self.nimages * max(self.ntrigger, 1)
