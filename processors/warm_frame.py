"""A synthetic frame with one spot in every peak window, to warm a worker before data arrive.

Processing it once runs every kernel of the hot path (gather into polar bins, moments,
the Levenberg–Marquardt fit), so numba compiles them — or loads them from its cache —
while the detector is still being staged, not on the first real frame.
"""

from __future__ import annotations

import numpy as np

from processors.polar_lut import PolarLUT
from stream.chunk_codec import encode_frame
from stream.encoded_frame import EncodedFrame


def warm_frame_pixels(lut: PolarLUT, *, background: float = 2.0, amplitude: float = 300.0) -> np.ndarray:
    """``(rows, cols)`` uint32 counts: ``background`` everywhere, plus in each window a 2-D Gaussian
    spot of ``amplitude`` counts at the window's centre bin (σ = 1/8 of its size in q and χ)."""
    rows, cols = lut.shape
    frame = np.full(rows * cols, background, dtype=np.float64)
    for w in lut.windows:
        inside = (lut.bin_index >= w.offset) & (lut.bin_index < w.offset + w.nq * w.nchi)
        local = lut.bin_index[inside] - w.offset
        iq, ichi = np.divmod(local, w.nchi)
        u = (iq - (w.nq - 1) / 2) / max(w.nq / 8, 0.5)
        v = (ichi - (w.nchi - 1) / 2) / max(w.nchi / 8, 0.5)
        np.maximum.at(frame, lut.pixel_index[inside], background + amplitude * np.exp(-(u * u + v * v) / 2))
    return np.rint(frame).astype(np.uint32).reshape(rows, cols)


def warm_frame(lut: PolarLUT, encoding: str = "bslz4") -> EncodedFrame:
    """:func:`warm_frame_pixels` as a compressed frame (series −1, frame 0), as it would arrive."""
    pixels = warm_frame_pixels(lut)
    return EncodedFrame(-1, 0, encoding, "uint32", pixels.shape, encode_frame(pixels, encoding))
