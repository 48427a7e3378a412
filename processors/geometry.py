"""Detector geometry from a pyFAI PONI file: q (1/Å) and χ (degrees) of every pixel.

q and χ are exactly pyFAI's (``array_from_unit(..., "center", "q_A^-1" | "chi_deg")``):
a 0.1 % error in the distance is a 0.006 Å error in a, so the geometry is never
re-derived here, only read from the PONI file.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class GeometryError(ValueError):
    """A PONI file or mask that cannot be used."""


@dataclass(frozen=True)
class PixelGeometry:
    """Per-pixel coordinates of one detector.

    ``q_A`` and ``chi_deg`` are float64 ``(rows, cols)`` at pixel centres; ``mask`` is
    bool ``(rows, cols)``, True = never use the pixel (detector gaps and bad pixels from
    pyFAI's detector definition).
    """

    q_A: np.ndarray = field(repr=False)
    chi_deg: np.ndarray = field(repr=False)
    mask: np.ndarray = field(repr=False)
    wavelength_A: float = 0.0
    #: what is derived from the coordinates alone, kept for the next setup on this geometry
    #: (``polar_lut.window_pixels``: a window's pixels, whatever the mask)
    derived: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.q_A.shape


def load_integrator(poni_text: str, source: str = "<poni>"):
    """A pyFAI ``AzimuthalIntegrator`` from PONI file contents.

    pyFAI parses the text itself (via a temporary file), so every PONI version and
    detector definition it knows is accepted exactly as pyFAI reads it.
    """
    import pyFAI  # imported here: pyFAI is slow to import and only needed to build tables

    fd, tmp = tempfile.mkstemp(suffix=".poni")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(poni_text)
        try:
            ai = pyFAI.load(tmp)
        except Exception as exc:  # pyFAI raises many types for a bad file; report them as one
            raise GeometryError(f"{source}: pyFAI cannot read this PONI file ({type(exc).__name__}: {exc})") from exc
    finally:
        os.unlink(tmp)
    if ai.wavelength is None or not ai.wavelength > 0:
        raise GeometryError(f"{source}: no Wavelength in the PONI file. Fix: add 'Wavelength: <metres>'")
    if ai.detector.shape is None:
        raise GeometryError(f"{source}: the detector has no shape. Fix: name a detector (e.g. 'Detector: Eiger4M') "
                            "or give max_shape in Detector_config")
    return ai


def read_poni(path: str | Path) -> str:
    """Text of a PONI file, with an error that names the file."""
    path = Path(path)
    try:
        return path.read_text()
    except FileNotFoundError:
        raise GeometryError(f"{path}: PONI file not found. Fix: check [geometry] poni in the config") from None


def pixel_geometry(poni_text: str, source: str = "<poni>") -> PixelGeometry:
    """q, χ and detector mask of every pixel for the PONI file contents."""
    ai = load_integrator(poni_text, source)
    shape = tuple(ai.detector.shape)
    q = np.ascontiguousarray(ai.array_from_unit(shape, "center", "q_A^-1", scale=True), dtype=np.float64)
    chi = np.ascontiguousarray(ai.array_from_unit(shape, "center", "chi_deg", scale=True), dtype=np.float64)
    det_mask = ai.detector.mask
    mask = np.zeros(shape, dtype=bool) if det_mask is None else np.asarray(det_mask, dtype=bool).copy()
    return PixelGeometry(q_A=q, chi_deg=chi, mask=mask, wavelength_A=ai.wavelength * 1e10)


def combine_masks(shape: tuple[int, int], *masks: np.ndarray | None) -> np.ndarray:
    """Union of masks (nonzero = bad) of ``shape``; None entries are skipped."""
    out = np.zeros(shape, dtype=bool)
    for m in masks:
        if m is None:
            continue
        m = np.asarray(m)
        if m.shape != tuple(shape):
            raise GeometryError(f"mask of shape {m.shape} does not match the detector {tuple(shape)}")
        # a bool mask as it is: ``m != 0`` would make a 4.5 MB copy of an EIGER 4M's mask first
        out |= m if m.dtype == np.bool_ else (m != 0)
    return out


def load_user_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """A user mask from ``.npy`` (nonzero = bad), checked against the detector shape."""
    path = Path(path)
    try:
        mask = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise GeometryError(f"{path}: cannot read mask ({exc}). Fix: save it with numpy.save as a 2-D array") from exc
    if mask.shape != tuple(shape):
        raise GeometryError(f"{path}: mask shape {mask.shape} does not match the detector {tuple(shape)}. "
                            "Fix: make a mask for this detector")
    return mask != 0
