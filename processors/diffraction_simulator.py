"""Render EIGER frames of the model supercrystal on a real pyFAI geometry.

Each configured reflection appears as its four in-plane equivalents (90° apart) with
the true parameters of the scan point, on a Poisson background; gap and masked pixels
hold the dtype's maximum as on a real EIGER. Only the pixels of a ring around each
reflection are evaluated (sorted by χ, so each spot touches only its own arc).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from processors.angles import wrap_deg
from processors.geometry import combine_masks, pixel_geometry
from processors.supercrystal import SPOT_AMPLITUDE, SupercrystalTruth

_FOUR_LN2 = 4.0 * np.log(2.0)
#: Half-width of the rendered ring (1/Å) and of each spot's arc (degrees).
RING_HALF_WIDTH = 0.2
ARC_HALF_WIDTH = 30.0


@dataclass
class _Ring:
    hkl: tuple[int, int, int]
    amplitude: float
    pixels: np.ndarray = field(repr=False)   # flat indices, sorted by chi
    q: np.ndarray = field(repr=False)
    chi: np.ndarray = field(repr=False)      # degrees, sorted, (-180, 180]


class FrameRenderer:
    """Renders the frame a scan point of ``truth`` produces on the PONI's detector.

    ``hkls`` are the reflections to draw; ``extra_mask`` (``rows, cols``, nonzero = bad)
    adds to the detector's own gaps. Frames are ``dtype`` with masked pixels at its max.
    ``background_pool`` > 0 draws that many background frames once and reuses them.
    """

    def __init__(self, poni_text: str, truth: SupercrystalTruth, hkls: Sequence[tuple[int, int, int]], *,
                 background: float = 1.0, dtype: str = "uint32", extra_mask: np.ndarray | None = None,
                 amplitudes: dict | None = None, background_pool: int = 0, seed: int = 0) -> None:
        geometry = pixel_geometry(poni_text)
        self.shape = geometry.shape
        self.truth = truth
        self.background = background
        self.dtype = np.dtype(dtype)
        self.mask = combine_masks(self.shape, geometry.mask, extra_mask)
        self._masked_index = np.flatnonzero(self.mask)
        # a live simulator reuses a few background frames: a 4M Poisson draw costs ~40 ms
        pool_rng = np.random.default_rng(seed + 104729)
        self._backgrounds = [pool_rng.poisson(background, self.shape[0] * self.shape[1]).astype(np.int64)
                             for _ in range(background_pool)]
        amplitudes = {**SPOT_AMPLITUDE, **(amplitudes or {})}
        q_flat = geometry.q_A.reshape(-1)
        chi_flat = geometry.chi_deg.reshape(-1)
        centre = truth.spot((1, 0, 0))  # only for the nominal ring radius
        self._rings = []
        for hkl in hkls:
            spot = truth.spot(tuple(hkl))
            q_nom = float(np.nanmedian(spot["q0"])) if np.isfinite(spot["q0"]).any() else float(np.nanmedian(centre["q0"]))
            sel = np.flatnonzero(np.abs(q_flat - q_nom) < RING_HALF_WIDTH)
            order = np.argsort(chi_flat[sel], kind="stable")
            sel = sel[order]
            self._rings.append(_Ring(tuple(hkl), amplitudes.get(tuple(hkl), 150.0), sel, q_flat[sel], chi_flat[sel]))

    def _arc(self, ring: _Ring, phi0: float) -> np.ndarray:
        """Positions in ``ring`` within ARC_HALF_WIDTH of phi0 (handles ±180°)."""
        lo, hi = phi0 - ARC_HALF_WIDTH, phi0 + ARC_HALF_WIDTH
        parts = []
        for a, b in ((lo, hi), (lo + 360, hi + 360), (lo - 360, hi - 360)):
            i, j = np.searchsorted(ring.chi, [a, b])
            if j > i:
                parts.append(np.arange(i, j))
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def expected_spots(self, row: int, col: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(flat pixel indices, expected counts) of every spot at point (row, col); none for row < 0."""
        out = []
        if row < 0 or col < 0 or not self.truth.on_crystal[row, col]:
            return out
        brightness = self.truth.brightness[row, col]
        for ring in self._rings:
            spot = self.truth.spot(ring.hkl)
            q0, dq = spot["q0"][row, col], spot["dq"][row, col]
            phi0, dphi = spot["phi0"][row, col], spot["dphi"][row, col]
            equivalents = (0.0,) if ring.hkl[0] == ring.hkl[1] == 0 else (0.0, 90.0, 180.0, 270.0)
            for turn in equivalents:
                centre = phi0 + turn
                idx = self._arc(ring, float(wrap_deg(centre)))
                dchi = wrap_deg(ring.chi[idx] - centre)
                lam = ring.amplitude * brightness * np.exp(
                    -_FOUR_LN2 * (((ring.q[idx] - q0) / dq) ** 2 + (dchi / dphi) ** 2))
                keep = lam > 1e-3
                out.append((ring.pixels[idx[keep]], lam[keep]))
        return out

    def render(self, row: int, col: int, rng: np.random.Generator) -> np.ndarray:
        """One noisy frame ``(rows, cols)`` of this renderer's dtype."""
        if self._backgrounds:
            frame = self._backgrounds[int(rng.integers(len(self._backgrounds)))].copy()
        else:
            frame = rng.poisson(self.background, self.shape[0] * self.shape[1]).astype(np.int64)
        for pixels, lam in self.expected_spots(row, col):
            np.add.at(frame, pixels, rng.poisson(lam))
        top = np.iinfo(self.dtype).max
        np.minimum(frame, top - 1, out=frame)
        frame[self._masked_index] = top
        return frame.astype(self.dtype).reshape(self.shape)
