"""The model CsPbBr₃ supercrystal: per-point truth maps with the paper's numbers.

Hiller et al., Nano Lett. 2026 (science.md): NC size 8.5 nm at the edges → 16 nm in the
centre, microstrain ≈ 1.8 %, a − b = 0.035 Å at 8.5 nm, 0 at 13 nm, −0.015 Å at 17 nm,
±5° orientation domains around one in-plane axis, orientational disorder growing from
the centre to the edge. Outside the supercrystal the beam hits nothing (no spots).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from processors.angles import wrap_deg

#: Pseudocubic lattice parameter of CsPbBr₃ (Å) and the upright c.
A0_ANGSTROM = 5.87
C0_ANGSTROM = 5.910
SCHERRER_K = 0.85
#: Default spot amplitudes (counts/pixel at the centre of the crystal).
SPOT_AMPLITUDE = {(1, 0, 0): 300.0, (0, 1, 0): 300.0, (1, 1, 0): 160.0, (2, 0, 0): 110.0, (0, 0, 1): 200.0}
#: Gap between neighbouring NCs in the supercrystal (nm): ligand shells. a_SC = size + gap
#: gives ⟨a_SC⟩ ≈ 15 nm for 12.6 nm NCs (science.md: 14.6–15.6 nm).
LIGAND_GAP_NM = 2.5


def in_plane_equivalents(hkl: tuple[int, int, int]) -> tuple[tuple[int, int, int], ...]:
    """The reflections 0°, 90°, 180°, 270° from ``hkl`` about the beam (∥ [001]).

    (h, k, l), (−k, h, l), (−h, −k, l), (k, −h, l): for (100) these are (010), (−100),
    (0−10), each with its own q (2π/a or 2π/b). An on-axis (00l) is its own only one.
    """
    h, k, l = hkl  # noqa: E741 (the Miller index is called l)
    if h == k == 0:
        return (tuple(hkl),)
    return ((h, k, l), (-k, h, l), (-h, -k, l), (k, -h, l))


@dataclass(frozen=True)
class SecondDomain:
    """A second, rotated set of NC orientations at some points (two domains in the beam).

    ``points`` is bool ``[rows, cols]``; there the sample also diffracts with φ0 turned by
    ``rotation_deg`` (degrees) and amplitudes × ``strength`` (relative to the first domain).
    """

    points: np.ndarray = field(repr=False)
    rotation_deg: float = 10.0
    strength: float = 0.7


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
    #: supercrystal lattice parameter (nm) of a square SC lattice co-aligned with the NCs
    a_sc_nm: np.ndarray | None = field(default=None, repr=False)
    second_domain: SecondDomain | None = None

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

    def superlattice_spot(self, hk: tuple[int, int], dq_fwhm: float) -> dict[str, np.ndarray]:
        """True parameters of the SAXS superlattice spot ``hk`` of the square SC lattice.

        ``q0`` = 2π √(h² + k²) / a_SC (1/Å), ``phi0`` = orientation + atan2(k, h) (degrees),
        ``dq`` = ``dq_fwhm`` (1/Å, FWHM) everywhere and ``dphi`` = Δq / q0 in degrees (a
        round spot: SC domains are large, so the width is the instrument's).
        """
        if self.a_sc_nm is None:
            raise ValueError("this truth has no supercrystal lattice (a_sc_nm)")
        h, k = hk
        q0 = 2 * np.pi * math.hypot(h, k) / (10.0 * self.a_sc_nm)
        dq = np.full(self.shape, float(dq_fwhm))
        phi0 = wrap_deg(self.orientation_deg + math.degrees(math.atan2(k, h)))
        return {"q0": q0, "dq": dq, "phi0": phi0, "dphi": np.degrees(dq / q0)}

    def second_phi0(self, phi0: np.ndarray) -> np.ndarray:
        """φ0 (degrees) of the second domain's spot whose first-domain φ0 is ``phi0``; NaN where none."""
        if self.second_domain is None:
            return np.full(self.shape, np.nan)
        return np.where(self.second_domain.points, wrap_deg(phi0 + self.second_domain.rotation_deg), np.nan)


def check_patch(patch: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """``patch`` (row0, row1, col0, col1, fractions of the map) or a ValueError saying what is wrong."""
    r0, r1, c0, c1 = patch
    if not (0 <= r0 < r1 <= 1 and 0 <= c0 < c1 <= 1):
        raise ValueError(f"second-domain patch {tuple(patch)}: need 0 <= row0 < row1 <= 1 and 0 <= col0 < col1 <= 1")
    return r0, r1, c0, c1


def with_second_domain(truth: SupercrystalTruth, patch: tuple[float, float, float, float], *,
                       rotation_deg: float = 10.0, strength: float = 0.7) -> SupercrystalTruth:
    """``truth`` with a second domain on the crystal points inside ``patch``.

    ``patch`` = (row0, row1, col0, col1) as fractions 0–1 of the map (e.g. (0.3, 0.6, 0.3,
    0.6) for a patch in the middle), so the same patch fits any sampling of the sample.
    """
    r0, r1, c0, c1 = check_patch(patch)
    rows, cols = truth.shape
    v, u = np.meshgrid((np.arange(rows) + 0.5) / rows, (np.arange(cols) + 0.5) / cols, indexing="ij")
    points = truth.on_crystal & (v >= r0) & (v < r1) & (u >= c0) & (u < c1)
    return replace(truth, second_domain=SecondDomain(points, float(rotation_deg), float(strength)))


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
                             disorder_deg=inside(disorder), brightness=np.where(on, brightness, 0.0),
                             a_sc_nm=inside(size + LIGAND_GAP_NM))
