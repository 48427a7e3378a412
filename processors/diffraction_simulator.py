"""Render EIGER frames of the model supercrystal on a real pyFAI geometry.

Each configured reflection (h, k, l) appears as its four in-plane equivalents (h, k, l),
(−k, h, l), (−h, −k, l), (k, −h, l), 90° apart, each with its own true parameters at the
scan point (so (010) sits at 2π/b, not 2π/a), on a Poisson background; gap and masked
pixels hold the dtype's maximum as on a real EIGER. Only the pixels of a ring around each
reflection are evaluated (sorted by χ, so each spot touches only its own arc).
:class:`~processors.frame_realism.FrameRealism` adds what real frames have (sloped ring
background, hot pixels, zingers, SAXS spots, two domains, pixel-integrated spots).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from processors.angles import wrap_deg
from processors.frame_realism import FrameRealism, place_hot_pixels, ring_background
from processors.geometry import PixelGeometry, combine_masks, pixel_geometry
from processors.supercrystal import SPOT_AMPLITUDE, SupercrystalTruth, in_plane_equivalents

_FOUR_LN2 = 4.0 * np.log(2.0)
#: Half-width of the rendered ring (1/Å) and of each spot's arc (degrees).
RING_HALF_WIDTH = 0.2
ARC_HALF_WIDTH = 30.0

Window = tuple[tuple[float, float], tuple[float, float]]


@dataclass
class _Ring:
    pixels: np.ndarray = field(repr=False)   # flat indices, sorted by chi
    q: np.ndarray = field(repr=False)
    chi: np.ndarray = field(repr=False)      # degrees, sorted, (-180, 180]
    # d(q, chi)/d(row, col) per pixel (1/Å and degrees per pixel): for sub-pixel samples
    gradients: np.ndarray | None = field(default=None, repr=False)   # (4, n): dq/dr, dq/dc, dchi/dr, dchi/dc


@dataclass
class _Spot:
    """One drawn reflection: its ring, top counts/pixel and true parameter maps."""

    ring: _Ring = field(repr=False)
    amplitude: float
    params: dict = field(repr=False)         # q0, dq, phi0, dphi maps [rows, cols]
    bragg: bool = True                       # a Bragg spot (scaled by spot_strength, has a second domain)


def _gradients(q2d: np.ndarray, chi2d: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """Central differences ``(4, n)``: dq/drow, dq/dcol, dχ/drow, dχ/dcol at the pixels ``flat``."""
    rows, cols = q2d.shape
    r, c = np.divmod(flat, cols)
    r0, r1 = np.maximum(r - 1, 0), np.minimum(r + 1, rows - 1)
    c0, c1 = np.maximum(c - 1, 0), np.minimum(c + 1, cols - 1)
    span_r, span_c = np.maximum(r1 - r0, 1), np.maximum(c1 - c0, 1)
    return np.stack([(q2d[r1, c] - q2d[r0, c]) / span_r, (q2d[r, c1] - q2d[r, c0]) / span_c,
                     wrap_deg(chi2d[r1, c] - chi2d[r0, c]) / span_r, wrap_deg(chi2d[r, c1] - chi2d[r, c0]) / span_c])


class FrameRenderer:
    """Renders the frame a scan point of ``truth`` produces on the PONI's detector.

    ``hkls`` are the reflections to draw; ``extra_mask`` (``rows, cols``, nonzero = bad)
    adds to the detector's own gaps. Frames are ``dtype`` with masked pixels at its max.
    ``background_pool`` > 0 draws that many background frames once and reuses them.
    ``realism`` adds the options of :class:`FrameRealism`; ``windows`` (the config's
    peak windows, ``((q_lo, q_hi), (chi_lo, chi_hi))``) place hot pixels inside them, and
    ``superlattice`` lists the SAXS spots ``(h, k)`` drawn when ``realism.superlattice_spots``.
    ``geometry``: the PONI's :class:`PixelGeometry` when the caller has it already.
    """

    def __init__(self, poni_text: str, truth: SupercrystalTruth, hkls: Sequence[tuple[int, int, int]], *,
                 background: float = 1.0, dtype: str = "uint32", extra_mask: np.ndarray | None = None,
                 amplitudes: dict | None = None, background_pool: int = 0, seed: int = 0,
                 realism: FrameRealism | None = None, windows: Sequence[Window] = (),
                 superlattice: Sequence[tuple[int, int]] = (), geometry: PixelGeometry | None = None) -> None:
        geometry = geometry if geometry is not None else pixel_geometry(poni_text)
        self.shape = geometry.shape
        self.truth = truth
        self.background = background
        self.realism = realism if realism is not None else FrameRealism()
        self.dtype = np.dtype(dtype)
        self.mask = combine_masks(self.shape, geometry.mask, extra_mask)
        self._masked_index = np.flatnonzero(self.mask)
        q_flat = geometry.q_A.reshape(-1)
        chi_flat = geometry.chi_deg.reshape(-1)
        r = self.realism
        # the expected background: a scalar for the clean model (the Poisson draws stay as before)
        self._background_level: float | np.ndarray = background
        if r.ring_level > 0:
            self._background_level = background + ring_background(q_flat, chi_flat, r)
        # a live simulator reuses a few background frames: a 4M Poisson draw costs ~40 ms
        pool_rng = np.random.default_rng(seed + 104729)
        self._backgrounds = [pool_rng.poisson(self._background_level, self.shape[0] * self.shape[1]).astype(np.int64)
                             for _ in range(background_pool)]
        self.hot_pixels = place_hot_pixels(q_flat, chi_flat, self.mask.reshape(-1), windows, r, seed)
        self.last_zingers = np.empty(0, dtype=np.int64)
        amplitudes = {**SPOT_AMPLITUDE, **(amplitudes or {})}
        centre = truth.spot((1, 0, 0))  # only for the nominal ring radius
        self._spots: list[_Spot] = []
        drawn: set[tuple[int, int, int]] = set()
        for hkl in hkls:
            spot = truth.spot(tuple(hkl))
            q_nom = float(np.nanmedian(spot["q0"])) if np.isfinite(spot["q0"]).any() else float(np.nanmedian(centre["q0"]))
            ring = self._ring(geometry, q_flat, chi_flat, q_nom, RING_HALF_WIDTH)
            amplitude = amplitudes.get(tuple(hkl), 150.0)
            for equivalent in in_plane_equivalents(tuple(hkl)):
                if equivalent not in drawn:
                    drawn.add(equivalent)
                    self._spots.append(_Spot(ring, amplitude, truth.spot(equivalent)))
        if r.superlattice_spots:
            self._add_superlattice(geometry, q_flat, chi_flat, superlattice)

    def _ring(self, geometry, q_flat, chi_flat, q_nom: float, half_width: float) -> _Ring:
        sel = np.flatnonzero(np.abs(q_flat - q_nom) < half_width)
        sel = sel[np.argsort(chi_flat[sel], kind="stable")]
        gradients = _gradients(geometry.q_A, geometry.chi_deg, sel) if self.realism.pixel_integrated else None
        return _Ring(sel, q_flat[sel], chi_flat[sel], gradients)

    def _add_superlattice(self, geometry, q_flat, chi_flat, superlattice) -> None:
        """SAXS spots of the square SC lattice, FWHM ``saxs_fwhm_px`` pixels (radially)."""
        drawn: set[tuple[int, int]] = set()
        for hk in superlattice:
            q0 = self.truth.superlattice_spot(tuple(hk), 1.0)["q0"]
            q_nom = float(np.nanmedian(q0))
            ring = self._ring(geometry, q_flat, chi_flat, q_nom, 0.8 * q_nom)
            grad = ring.gradients if ring.gradients is not None else _gradients(geometry.q_A, geometry.chi_deg,
                                                                                 ring.pixels)
            near = np.abs(ring.q - q_nom) < 0.1 * q_nom
            q_per_pixel = float(np.median(np.hypot(grad[0][near], grad[1][near])))
            dq = self.realism.saxs_fwhm_px * q_per_pixel
            h, k = hk
            for eh, ek, _ in in_plane_equivalents((h, k, 0)):
                if (eh, ek) not in drawn:
                    drawn.add((eh, ek))
                    self._spots.append(_Spot(ring, self.realism.saxs_amplitude,
                                             self.truth.superlattice_spot((eh, ek), dq), bragg=False))

    @property
    def saxs_dq(self) -> float | None:
        """FWHM in q (1/Å) of the SAXS spots drawn, None without any."""
        for s in self._spots:
            if not s.bragg:
                return float(s.params["dq"].flat[0])
        return None

    def _arc(self, ring: _Ring, phi0: float) -> np.ndarray:
        """Positions in ``ring`` within ARC_HALF_WIDTH of phi0 (handles ±180°)."""
        lo, hi = phi0 - ARC_HALF_WIDTH, phi0 + ARC_HALF_WIDTH
        parts = []
        for a, b in ((lo, hi), (lo + 360, hi + 360), (lo - 360, hi - 360)):
            i, j = np.searchsorted(ring.chi, [a, b])
            if j > i:
                parts.append(np.arange(i, j))
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def _profile(self, ring: _Ring, idx: np.ndarray, q0: float, dq: float, centre: float, dphi: float) -> np.ndarray:
        """The unit-height 2-D Gaussian at the pixels ``idx`` of ``ring``: at their centres, or
        averaged over ``subpixels``² points spread over each pixel (pixel-integrated)."""
        if ring.gradients is None:
            dchi = wrap_deg(ring.chi[idx] - centre)
            return np.exp(-_FOUR_LN2 * (((ring.q[idx] - q0) / dq) ** 2 + (dchi / dphi) ** 2))
        g = ring.gradients[:, idx]
        dchi = wrap_deg(ring.chi[idx] - centre)
        # only pixels whose nearest corner is within 3 FWHM can hold anything (exp(-25) beyond)
        gap_q = np.maximum(np.abs(ring.q[idx] - q0) - 0.5 * (np.abs(g[0]) + np.abs(g[1])), 0.0) / dq
        gap_chi = np.maximum(np.abs(dchi) - 0.5 * (np.abs(g[2]) + np.abs(g[3])), 0.0) / dphi
        near = np.flatnonzero(gap_q ** 2 + gap_chi ** 2 < 9.0)
        n = self.realism.subpixels
        offsets = (np.arange(n) + 0.5) / n - 0.5
        dr, dc = (a.reshape(-1, 1) for a in np.meshgrid(offsets, offsets, indexing="ij"))
        g = g[:, near]
        q = ring.q[idx[near]] + dr * g[0] + dc * g[1]
        sub_chi = dchi[near] + dr * g[2] + dc * g[3]
        out = np.zeros(idx.size)
        out[near] = np.exp(-_FOUR_LN2 * (((q - q0) / dq) ** 2 + (sub_chi / dphi) ** 2)).mean(axis=0)
        return out

    def expected_spots(self, row: int, col: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(flat pixel indices, expected counts) of every spot at point (row, col); none for row < 0."""
        out = []
        if row < 0 or col < 0 or not self.truth.on_crystal[row, col]:
            return out
        brightness = self.truth.brightness[row, col]
        second = self.truth.second_domain
        domains = [(0.0, 1.0)]
        if second is not None and second.points[row, col]:
            domains.append((second.rotation_deg, second.strength))
        for turn, strength in domains:
            for spot in self._spots:
                if turn != 0.0 and not spot.bragg:
                    continue
                p = spot.params
                q0, dq = p["q0"][row, col], p["dq"][row, col]
                phi0, dphi = p["phi0"][row, col] + turn, p["dphi"][row, col]
                amplitude = spot.amplitude * brightness
                if spot.bragg and self.realism.spot_strength != 1.0:
                    amplitude = amplitude * self.realism.spot_strength
                if strength != 1.0:
                    amplitude = amplitude * strength
                idx = self._arc(spot.ring, float(wrap_deg(phi0)))
                lam = amplitude * self._profile(spot.ring, idx, q0, dq, phi0, dphi)
                keep = lam > 1e-3
                out.append((spot.ring.pixels[idx[keep]], lam[keep]))
        return out

    def render(self, row: int, col: int, rng: np.random.Generator) -> np.ndarray:
        """One noisy frame ``(rows, cols)`` of this renderer's dtype."""
        if self._backgrounds:
            frame = self._backgrounds[int(rng.integers(len(self._backgrounds)))].copy()
        else:
            frame = rng.poisson(self._background_level, self.shape[0] * self.shape[1]).astype(np.int64)
        for pixels, lam in self.expected_spots(row, col):
            np.add.at(frame, pixels, rng.poisson(lam))
        if self.hot_pixels.size:
            frame[self.hot_pixels] = int(self.realism.hot_pixel_counts)
        if self.realism.zingers_per_frame:
            self.last_zingers = self._zinger_pixels(rng)
            frame[self.last_zingers] = int(self.realism.zinger_counts)
        top = np.iinfo(self.dtype).max
        np.minimum(frame, top - 1, out=frame)
        frame[self._masked_index] = top
        return frame.astype(self.dtype).reshape(self.shape)

    def _zinger_pixels(self, rng: np.random.Generator) -> np.ndarray:
        """``zingers_per_frame`` distinct random unmasked pixels (flat indices)."""
        flat_mask = self.mask.reshape(-1)
        out: list[int] = []
        while len(out) < self.realism.zingers_per_frame:
            i = int(rng.integers(flat_mask.size))
            if not flat_mask[i] and i not in out:
                out.append(i)
        return np.array(out, dtype=np.int64)
