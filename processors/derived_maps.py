"""Which configured peaks feed which derived quantity (hkl roles), applied to maps."""

from __future__ import annotations

import numpy as np

from processors import derived as formulas
from processors.config import DerivedConfig, PeakConfig


def _axial(peaks, axis: int) -> PeakConfig | None:
    """The lowest-order reflection along one axis (h00 for a, 0k0 for b, 00l for c)."""
    best = None
    for p in peaks:
        if p.hkl is None:
            continue
        others = [abs(v) for i, v in enumerate(p.hkl) if i != axis]
        if p.hkl[axis] != 0 and others == [0, 0]:
            if best is None or abs(p.hkl[axis]) < abs(best.hkl[axis]):
                best = p
    return best


def _find(peaks, hkl) -> PeakConfig | None:
    for p in peaks:
        if p.hkl is not None and tuple(abs(v) for v in p.hkl) == hkl:
            return p
    return None


def derived_maps(peaks: tuple[PeakConfig, ...], derived: DerivedConfig, wh_peaks: tuple[str, ...],
                 spot_maps: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Derived maps from per-peak fitted maps.

    ``spot_maps[name]`` holds ``q0``, ``dq``, ``phi0``, ``dphi`` maps ``[rows, cols]``.
    Returns ``a``, ``b`` (Å, when the reflections allow), ``c`` (Å, with a 00l peak),
    ``size`` (nm), ``microstrain`` (fraction), ``a_sc1``, ``a_sc2``, ``a_sc`` (nm, with both
    SAXS spots), ``strain_<peak>`` for configured reference d-spacings, and ``dphi_do/<peak>``.
    """
    out: dict[str, np.ndarray] = {}
    a_peak = _axial(peaks, 0)
    if a_peak is not None:
        out["a"] = formulas.axial_lattice_parameter(spot_maps[a_peak.name]["q0"], abs(a_peak.hkl[0]))
    b_peak = _axial(peaks, 1)
    p110, p100 = _find(peaks, (1, 1, 0)), _find(peaks, (1, 0, 0))
    if b_peak is not None:
        out["b"] = formulas.axial_lattice_parameter(spot_maps[b_peak.name]["q0"], abs(b_peak.hkl[1]))
    elif p110 is not None and p100 is not None:
        out["b"] = formulas.b_from_110_and_100(spot_maps[p110.name]["q0"], spot_maps[p100.name]["q0"])
    c_peak = _axial(peaks, 2)
    if c_peak is not None:
        out["c"] = formulas.axial_lattice_parameter(spot_maps[c_peak.name]["q0"], abs(c_peak.hkl[2]))
    if len(wh_peaks) >= 2:
        q0 = np.stack([spot_maps[n]["q0"] for n in wh_peaks])
        dq = np.stack([spot_maps[n]["dq"] for n in wh_peaks])
        out["size"], out["microstrain"] = formulas.williamson_hall(q0, dq, derived.scherrer_k)
    sl = {p.superlattice: p for p in peaks if p.superlattice is not None}
    s10 = sl.get((1, 0)) or sl.get((-1, 0))
    s01 = sl.get((0, 1)) or sl.get((0, -1))
    if s10 is not None and s01 is not None:
        m1, m2 = spot_maps[s10.name], spot_maps[s01.name]
        out["a_sc1"], out["a_sc2"], out["a_sc"] = formulas.superlattice_parameters(
            m1["q0"], m2["q0"], m1["phi0"], m2["phi0"])
    for name, d_ref in derived.d_ref.items():
        out[f"strain_{name}"] = formulas.strain(formulas.d_spacing(spot_maps[name]["q0"]), d_ref)
    for p in peaks:
        m = spot_maps[p.name]
        out[f"dphi_do/{p.name}"] = formulas.orientational_disorder(m["dphi"], m["dq"], m["q0"])
    return out
