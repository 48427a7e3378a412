"""What every worker needs to process frames: small, frozen, picklable, hashable.

A worker (local process or Dask worker on another machine) receives this with each
batch and builds its :class:`~processors.frame_processor.FrameProcessor` from it once;
nothing here refers to files the worker might not see.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field

import numpy as np

from processors.config import FitConfig, NanomapsConfig, PeakConfig
from processors.geometry import GeometryError, load_user_mask, read_poni


def pack_mask(mask: np.ndarray) -> bytes:
    """A bool mask as zlib-compressed bits (gap masks shrink from MB to KB)."""
    return zlib.compress(np.packbits(np.asarray(mask, dtype=bool).reshape(-1)).tobytes(), 6)


def unpack_mask(blob: bytes, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`pack_mask`."""
    n = shape[0] * shape[1]
    bits = np.frombuffer(zlib.decompress(blob), dtype=np.uint8)
    # unpackbits gives 0/1 bytes, which are numpy bools as they are: a view, not a 4.5 MB copy
    return np.unpackbits(bits, count=n).view(np.bool_).reshape(shape)


@dataclass(frozen=True)
class ProcessingSetup:
    """Peaks, fit settings, PONI text and extra mask (file pixel_mask ∪ user mask).

    ``shape`` is the detector's ``(rows, cols)`` when known from a data source (None:
    take it from the PONI detector). ``extra_mask`` is :func:`pack_mask` output or b"".
    """

    peaks: tuple[PeakConfig, ...]
    fit: FitConfig
    poni_text: str = field(repr=False)
    poni_source: str = "<poni>"
    shape: tuple[int, int] | None = None
    extra_mask: bytes = field(default=b"", repr=False)

    @property
    def fingerprint(self) -> str:
        """Short hash identifying this setup (logged and stored for provenance)."""
        h = hashlib.sha256(repr((self.peaks, self.fit, self.poni_text, self.shape)).encode())
        h.update(self.extra_mask)
        return h.hexdigest()[:12]

    def extra_mask_array(self) -> np.ndarray | None:
        if not self.extra_mask or self.shape is None:
            return None
        return unpack_mask(self.extra_mask, self.shape)

    @classmethod
    def from_config(cls, config: NanomapsConfig, *, pixel_mask: np.ndarray | None = None,
                    shape: tuple[int, int] | None = None) -> "ProcessingSetup":
        """Setup for ``config``; ``pixel_mask`` is the detector's (``rows, cols``, nonzero = bad),
        ``shape`` the frames' ``(rows, cols)`` when known from the data.

        Reads the PONI file and the user mask now, so a wrong path fails before any work.
        """
        poni_text = read_poni(config.geometry.poni)
        if pixel_mask is not None:
            if shape is not None and tuple(pixel_mask.shape) != tuple(shape):
                raise GeometryError(f"pixel_mask shape {pixel_mask.shape} differs from the frames' {tuple(shape)}")
            shape = tuple(pixel_mask.shape)
        mask = None if pixel_mask is None else np.asarray(pixel_mask) != 0
        if config.geometry.mask is not None:
            if shape is None:
                shape = tuple(np.load(config.geometry.mask, mmap_mode="r", allow_pickle=False).shape)
            user = load_user_mask(config.geometry.mask, shape)
            mask = user if mask is None else (mask | user)
        if shape is not None and len(shape) != 2:
            raise GeometryError(f"pixel mask has shape {shape}, expected (rows, cols)")
        return cls(peaks=config.peaks, fit=config.fit, poni_text=poni_text,
                   poni_source=str(config.geometry.poni), shape=shape,
                   extra_mask=pack_mask(mask) if mask is not None else b"")
