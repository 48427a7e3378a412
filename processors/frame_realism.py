"""What real frames have that the clean model does not: the simulator's realism options.

A clean simulated frame is point-sampled Gaussians on a flat Poisson background, which is
exactly the fitter's model, so it cannot show where the fitter fails. These options add
what a beamtime brings (issue 10): a sloped amorphous/ligand ring under the spots, weaker
spots, hot pixels missing from the pixel mask, zingers, narrow SAXS superlattice spots,
two domains in the beam, and spots integrated over each pixel's area. All are off by
default: a default :class:`FrameRealism` renders the same frames as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Sequence

import numpy as np

from processors.supercrystal import check_patch

_FOUR_LN2 = 4.0 * math.log(2.0)


@dataclass(frozen=True)
class FrameRealism:
    """Realism options of the simulated frames (units in each field's comment).

    Amorphous/ligand ring background, added to the flat one (counts/pixel):
    ``B(q, χ) = ring_level · exp(−4 ln2 (q − ring_q)² / ring_fwhm²) · (1 + ring_modulation · cos(χ − ring_chi_deg))``.
    """

    spot_strength: float = 1.0          #: factor on every Bragg spot's amplitude (1/3: 3× weaker)
    ring_level: float = 0.0             #: counts/pixel at the ring's top (0: no ring)
    ring_q: float = 1.6                 #: 1/Å, centre of the ring
    ring_fwhm: float = 1.0              #: 1/Å, FWHM of the ring in q
    ring_modulation: float = 0.0        #: relative azimuthal variation m, 0 <= m < 1
    ring_chi_deg: float = 88.0          #: degrees, χ of the ring's brightest azimuth
    hot_pixels: int = 0                 #: fixed pixels, not in the pixel mask, high in every frame
    hot_pixels_per_window: int = 0      #: of those, this many inside each configured peak window
    hot_pixel_counts: float = 2000.0    #: counts of a hot pixel
    zingers_per_frame: int = 0          #: random single high pixels per frame (anywhere unmasked)
    zinger_counts: float = 2000.0       #: counts of a zinger
    superlattice_spots: bool = False    #: draw the config's SAXS superlattice spots
    saxs_fwhm_px: float = 1.0           #: FWHM of a SAXS spot in detector pixels (radially)
    saxs_amplitude: float = 300.0       #: counts/pixel at the top of a SAXS spot (× brightness)
    second_domain_patch: tuple[float, float, float, float] | None = None  #: (row0, row1, col0, col1), 0–1
    second_domain_rotation_deg: float = 10.0  #: degrees, φ0 of the second domain − φ0 of the first
    second_domain_strength: float = 0.7       #: amplitude of the second domain / the first
    pixel_integrated: bool = False      #: spots averaged over each pixel's area (else at its centre)
    subpixels: int = 4                  #: sub-samples per pixel side when pixel_integrated

    def __post_init__(self) -> None:
        checks = (
            (self.spot_strength > 0, "spot_strength", "must be > 0"),
            (self.ring_level >= 0, "ring_level", "must be >= 0"),
            (self.ring_fwhm > 0, "ring_fwhm", "must be > 0"),
            (0 <= self.ring_modulation < 1, "ring_modulation", "must be in [0, 1) (the background stays positive)"),
            (self.hot_pixels >= 0, "hot_pixels", "must be >= 0"),
            (self.hot_pixels_per_window >= 0, "hot_pixels_per_window", "must be >= 0"),
            (self.hot_pixel_counts >= 0, "hot_pixel_counts", "must be >= 0"),
            (self.zingers_per_frame >= 0, "zingers_per_frame", "must be >= 0"),
            (self.zinger_counts >= 0, "zinger_counts", "must be >= 0"),
            (self.saxs_fwhm_px > 0, "saxs_fwhm_px", "must be > 0"),
            (self.saxs_amplitude >= 0, "saxs_amplitude", "must be >= 0"),
            (self.second_domain_strength > 0, "second_domain_strength", "must be > 0"),
            (1 <= self.subpixels <= 16, "subpixels", "must be 1 to 16"),
        )
        for ok, name, why in checks:
            if not ok:
                raise ValueError(f"simulator option {name} = {getattr(self, name)!r}: {why}")
        if self.second_domain_patch is not None:
            check_patch(self.second_domain_patch)

    @property
    def is_clean(self) -> bool:
        """True when every option is at its default (frames as the clean model renders them)."""
        return self == FrameRealism()

    def with_changes(self, **changes) -> "FrameRealism":
        """A copy with the given fields changed (None values are ignored)."""
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown simulator option(s): {', '.join(sorted(unknown))}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


#: The issue's "messy beamtime": a sloped ring background (±35 % across the 100 and 200
#: windows of the demo config, in q and in χ), spots 3× weaker than the demo's, 12 hot
#: pixels missing from the mask (2 in each of the demo's 3 windows), one zinger per frame.
MESSY_BEAMTIME = FrameRealism(spot_strength=1.0 / 3.0, ring_level=15.0, ring_q=1.6, ring_fwhm=0.9,
                              ring_modulation=0.93, ring_chi_deg=88.0, hot_pixels=12, hot_pixels_per_window=2,
                              zingers_per_frame=1)


def ring_background(q: np.ndarray, chi_deg: np.ndarray, realism: FrameRealism) -> np.ndarray:
    """Expected counts/pixel of the amorphous ring at ``q`` (1/Å) and ``chi_deg`` (same shapes)."""
    radial = np.exp(-_FOUR_LN2 * ((q - realism.ring_q) / realism.ring_fwhm) ** 2)
    azimuthal = 1.0 + realism.ring_modulation * np.cos(np.radians(chi_deg - realism.ring_chi_deg))
    return realism.ring_level * radial * azimuthal


def background_change_across(realism: FrameRealism, q: tuple[float, float], chi: tuple[float, float],
                             flat: float = 1.0) -> tuple[float, float]:
    """Relative change (±fraction) of the whole background across a window, along q and along χ.

    Along q at the window's central χ, and along χ at its central q:
    (B(end) − B(start)) / (B(end) + B(start)), so ±0.35 means 0.65 → 1.35 of the mean.
    ``flat`` is the flat background (counts/pixel) under the ring.
    """
    qc, cc = (q[0] + q[1]) / 2, (chi[0] + chi[1]) / 2

    def level(qq, cchi):
        return flat + float(ring_background(np.array(qq), np.array(cchi), realism))

    along_q = (level(q[1], cc) - level(q[0], cc)) / (level(q[1], cc) + level(q[0], cc))
    along_chi = (level(qc, chi[1]) - level(qc, chi[0])) / (level(qc, chi[1]) + level(qc, chi[0]))
    return along_q, along_chi


def window_pixels(q_flat: np.ndarray, chi_flat: np.ndarray, q: tuple[float, float],
                  chi: tuple[float, float]) -> np.ndarray:
    """Flat indices of the pixels inside a polar window (χ bounds may straddle ±180°)."""
    width = chi[1] - chi[0]
    offset = np.mod(chi_flat - chi[0], 360.0)
    return np.flatnonzero((q_flat >= q[0]) & (q_flat <= q[1]) & (offset <= width))


def place_hot_pixels(q_flat: np.ndarray, chi_flat: np.ndarray, mask_flat: np.ndarray,
                     windows: Sequence[tuple[tuple[float, float], tuple[float, float]]],
                     realism: FrameRealism, seed: int) -> np.ndarray:
    """Flat indices of the hot pixels: ``hot_pixels_per_window`` in each window, the rest anywhere.

    Only unmasked pixels are chosen (a hot pixel the mask knows is no problem) and no pixel
    twice. ``windows`` are ``((q_lo, q_hi), (chi_lo, chi_hi))`` in 1/Å and degrees.
    """
    n_total = realism.hot_pixels
    if n_total == 0:
        return np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(seed + 15485863)
    chosen: list[int] = []
    for q, chi in windows:
        candidates = window_pixels(q_flat, chi_flat, q, chi)
        candidates = candidates[~mask_flat[candidates]]
        candidates = np.setdiff1d(candidates, chosen)
        k = min(realism.hot_pixels_per_window, len(candidates), n_total - len(chosen))
        if k > 0:
            chosen.extend(int(i) for i in rng.choice(candidates, size=k, replace=False))
    while len(chosen) < n_total:
        i = int(rng.integers(mask_flat.size))
        if not mask_flat[i] and i not in chosen:
            chosen.append(i)
    return np.array(sorted(chosen), dtype=np.int64)
