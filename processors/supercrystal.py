"""The model CsPbBr₃ supercrystal: per-point truth maps with the paper's numbers.

Hiller et al., Nano Lett. 2026 (science.md): NC size 8.5 nm at the edges → 16 nm in the
centre, microstrain ≈ 1.8 %, a − b = 0.035 Å at 8.5 nm, 0 at 13 nm, −0.015 Å at 17 nm,
±5° orientation domains around one in-plane axis, orientational disorder growing from
the centre to the edge. Outside the supercrystal the beam hits nothing (no spots).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from processors.angles import wrap_deg

#: Pseudocubic lattice parameter of CsPbBr₃ (Å) and the upright c.
A0_ANGSTROM = 5.87
C0_ANGSTROM = 5.910
SCHERRER_K = 0.85
#: Default spot amplitudes (counts/pixel at the centre of the crystal).
SPOT_AMPLITUDE = {(1, 0, 0): 300.0, (0, 1, 0): 300.0, (1, 1, 0): 160.0, (2, 0, 0): 110.0, (0, 0, 1): 200.0}


def lattice_anisotropy(size_nm: np.ndarray) -> np.ndarray:
    """a − b (Å) against NC size (nm): 0.035 at 8.5, 0 at 13, −0.015 at 17, linear between."""
    return np.interp(size_nm, [8.5, 13.0, 17.0], [0.035, 0.0, -0.015], left=None, right=None) + \
        np.where(size_nm < 8.5, (8.5 - size_nm) * 0.035 / 4.5, 0.0) - np.where(size_nm > 17.0, (size_nm - 17.0) * 0.015 / 4.0, 0.0)


@dataclass(frozen=True)
class SupercrystalTruth:
    """Truth maps ``[rows, cols]``; NaN outside the supercrystal (``on_crystal`` False).

    Units: size nm, microstrain fraction, a/b/c Å, orientation (φ0 of the (100) spot)
    and disorder (Δφ_do, FWHM) degrees, brightness 0–1 (scales spot amplitudes).
    """

    on_crystal: np.ndarray = field(repr=False)
    size_nm: np.ndarray = field(repr=False)
    microstrain: np.ndarray = field(repr=False)
    a_A: np.ndarray = field(repr=False)
    b_A: np.ndarray = field(repr=False)
    c_A: np.ndarray = field(repr=False)
    orientation_deg: np.ndarray = field(repr=False)
    disorder_deg: np.ndarray = field(repr=False)
    brightness: np.ndarray = field(repr=False)
    scherrer_k: float = SCHERRER_K

    @property
    def shape(self) -> tuple[int, int]:
        return self.on_crystal.shape

    def spot(self, hkl: tuple[int, int, int]) -> dict[str, np.ndarray]:
        """True spot parameters of reflection ``hkl`` at every point.

        Returns maps ``q0`` (1/Å), ``dq`` (FWHM 1/Å, Williamson–Hall:
        Δq² = ε² q0² + (2πK/s)²), ``phi0`` (degrees, (−180, 180]) and ``dphi`` (FWHM degrees,
        Δφ² = Δφ_do² + (Δq/q0)² in radians).
        """
        h, k, l = hkl  # noqa: E741 (the Miller index is called l)
        inv_d2 = (h / self.a_A) ** 2 + (k / self.b_A) ** 2 + (l / self.c_A) ** 2
        q0 = 2 * np.pi * np.sqrt(inv_d2)
        dq0 = 2 * np.pi * self.scherrer_k / (10.0 * self.size_nm)
        dq = np.sqrt((self.microstrain * q0) ** 2 + dq0 ** 2)
        in_plane = math.degrees(math.atan2(k, h)) if (h, k) != (0, 0) else 0.0
        phi0 = wrap_deg(self.orientation_deg + in_plane)
        dphi = np.degrees(np.sqrt(np.radians(self.disorder_deg) ** 2 + (dq / q0) ** 2))
        return {"q0": q0, "dq": dq, "phi0": phi0, "dphi": dphi}


def model_supercrystal(shape: tuple[int, int], *, orientation_deg: float = 178.0, seed: int = 0) -> SupercrystalTruth:
    """A supercrystal filling most of a ``(rows, cols)`` map, with the paper's gradients.

    ``orientation_deg`` is the (100) direction of the central domain (pyFAI χ); domains
    are tilted by ±5° around it.
    """
    rng = np.random.default_rng(seed)
    rows, cols = shape
    v, u = np.meshgrid(np.linspace(-1, 1, rows), np.linspace(-1, 1, cols), indexing="ij")
    # a rounded-square crystal: distance-to-edge e = 0 at the edge, 1 in the centre
    r = (np.abs(u / 0.86) ** 4 + np.abs(v / 0.86) ** 4) ** 0.25
    on = r < 1.0
    e = np.clip(1.0 - r, 0.0, 1.0)
    smooth = e * e * (3 - 2 * e)  # smoothstep keeps the gradient gentle at the centre
    centre = np.clip(smooth / 0.45, 0.0, 1.0)

    size = 8.5 + (16.0 - 8.5) * centre + rng.normal(0.0, 0.25, shape)
    strain = 0.0150 + 0.0060 * (1.0 - centre) + rng.normal(0.0, 0.0008, shape)
    delta = lattice_anisotropy(size)
    a = A0_ANGSTROM + delta / 2 + rng.normal(0.0, 0.011, shape)
    b = A0_ANGSTROM - delta / 2 + rng.normal(0.0, 0.011, shape)
    c = C0_ANGSTROM + rng.normal(0.0, 0.004, shape)
    domains = np.sign(np.sin(4.4 * u + 0.4) * np.cos(3.4 * v - 0.3) + 0.15)
    orientation = orientation_deg + 5.0 * domains + rng.normal(0.0, 0.3, shape)
    orientation = wrap_deg(orientation)
    disorder = 1.5 + 3.5 * (1.0 - centre) + np.abs(rng.normal(0.0, 0.15, shape))
    brightness = 0.55 + 0.45 * centre

    def inside(x):
        return np.where(on, x, np.nan)

    return SupercrystalTruth(on_crystal=on, size_nm=inside(size), microstrain=inside(strain), a_A=inside(a),
                             b_A=inside(b), c_A=inside(c), orientation_deg=inside(orientation),
                             disorder_deg=inside(disorder), brightness=np.where(on, brightness, 0.0))
