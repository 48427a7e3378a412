"""What a series header says, typed: the one place that reads a header's config by key.

Both protocols' headers arrive as a mapping with DECTRIS names (stream v1's config part;
stream2's start fields, with the v1 names added as aliases by the codec).
:meth:`SeriesHeader.from_config` reads the values the code uses into typed fields, in SI
units where the field name says so; a value that is missing or not a number reads as
the field's default (the detector's own files do the same for missing keys).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _number(config: Mapping[str, Any], key: str, default: float) -> float:
    value = config.get(key, default)
    if isinstance(value, bool):
        return default
    try:
        number = float(value if value is not None else default)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


@dataclass(frozen=True)
class SeriesHeader:
    """A series header's values, typed.

    ``shape`` is ``(rows, cols)`` and ``dtype`` the pixel type, None when the header does
    not say; ``pixel_mask`` ``(rows, cols)`` uint32, nonzero = bad, or None. ``nimages``
    is images per trigger and ``ntrigger`` triggers (≥ 1): :attr:`frames_expected` frames.
    Lengths in metres, beam centre in pixels, wavelength in Å, times in seconds; 0 when
    not sent.
    """

    series: int
    shape: tuple[int, int] | None = None
    dtype: str | None = None
    pixel_mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    nimages: int = 0
    ntrigger: int = 1
    count_time_s: float = 0.0
    frame_time_s: float = 0.0
    wavelength_A: float = 0.0
    detector_distance_m: float = 0.0
    beam_center_x_px: float = 0.0
    beam_center_y_px: float = 0.0
    x_pixel_size_m: float = 75e-6
    y_pixel_size_m: float = 75e-6
    description: str = ""

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, series: int, shape: tuple[int, int] | None = None,
                    dtype: str | None = None, pixel_mask: np.ndarray | None = None) -> SeriesHeader:
        """The typed header from a config with DECTRIS (stream v1) names; ``number_of_images`` also counts."""
        nimages = int(_number(config, "nimages", _number(config, "number_of_images", 0.0)))
        return cls(
            series=series, shape=shape, dtype=dtype, pixel_mask=pixel_mask,
            nimages=max(nimages, 0), ntrigger=max(int(_number(config, "ntrigger", 1.0)), 1),
            count_time_s=_number(config, "count_time", 0.0), frame_time_s=_number(config, "frame_time", 0.0),
            wavelength_A=_number(config, "wavelength", 0.0),
            detector_distance_m=_number(config, "detector_distance", 0.0),
            beam_center_x_px=_number(config, "beam_center_x", 0.0),
            beam_center_y_px=_number(config, "beam_center_y", 0.0),
            x_pixel_size_m=_number(config, "x_pixel_size", 75e-6) or 75e-6,
            y_pixel_size_m=_number(config, "y_pixel_size", 75e-6) or 75e-6,
            description=str(config.get("description", "") or ""),
        )

    @property
    def frames_expected(self) -> int:
        """Frames announced for the series: ``nimages × ntrigger`` (0 when unknown)."""
        return self.nimages * self.ntrigger
