"""Which configured peaks feed which derived quantity (hkl roles), applied to maps, with errors."""

from __future__ import annotations

import numpy as np

from processors import derived as formulas
from processors import derived_errors as errors
from processors.config import DerivedConfig, PeakConfig
from processors.supercrystal_mask import bragg_intensity, supercrystal_mask
from processors.williamson_hall import williamson_hall_fit


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


#: Williamson–Hall weights 1/σ(Δq²)² (True) or equal weights (False): docs/statistics.md has
#: the measurement behind the choice.
WH_WEIGHTED = False


def _get(m: dict[str, np.ndarray], key: str, like: np.ndarray) -> np.ndarray:
    """``m[key]``, or NaN of ``like``'s shape when the map is not there (errors of old callers)."""
    value = m.get(key)
    return np.full(np.shape(like), np.nan) if value is None else value


def derived_maps(peaks: tuple[PeakConfig, ...], derived: DerivedConfig, wh_peaks: tuple[str, ...],
                 spot_maps: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Derived maps and their standard errors from per-peak fitted maps.

    ``spot_maps[name]`` holds ``q0``, ``dq``, ``phi0``, ``dphi`` maps ``[rows, cols]``, and
    ``amplitude`` and ``<param>_error`` where known (missing errors give NaN errors).
    Returns ``a``, ``b`` (Å, when the reflections allow), ``c`` (Å, with a 00l peak),
    ``size`` (nm), ``microstrain`` (fraction), ``a_sc1``, ``a_sc2``, ``a_sc`` (nm, with both
    SAXS spots), ``strain_<peak>`` for configured reference d-spacings, each with
    ``<name>_error``; ``dphi_do/<peak>`` and ``dphi_do_error/<peak>``; ``bragg_intensity``
    and the uint8 ``supercrystal_mask`` (processors.supercrystal_mask) when amplitudes are given.
    """
    out: dict[str, np.ndarray] = {}

    def q0_of(p: PeakConfig) -> tuple[np.ndarray, np.ndarray]:
        m = spot_maps[p.name]
        return m["q0"], _get(m, "q0_error", m["q0"])

    a_peak = _axial(peaks, 0)
    if a_peak is not None:
        q, s = q0_of(a_peak)
        out["a"] = formulas.axial_lattice_parameter(q, abs(a_peak.hkl[0]))
        out["a_error"] = errors.axial_lattice_parameter_error(q, s, abs(a_peak.hkl[0]))
    b_peak = _axial(peaks, 1)
    p110, p100 = _find(peaks, (1, 1, 0)), _find(peaks, (1, 0, 0))
    if b_peak is not None:
        q, s = q0_of(b_peak)
        out["b"] = formulas.axial_lattice_parameter(q, abs(b_peak.hkl[1]))
        out["b_error"] = errors.axial_lattice_parameter_error(q, s, abs(b_peak.hkl[1]))
    elif p110 is not None and p100 is not None:
        (q110, s110), (q100, s100) = q0_of(p110), q0_of(p100)
        out["b"] = formulas.b_from_110_and_100(q110, q100)
        out["b_error"] = errors.b_from_110_and_100_error(q110, s110, q100, s100)
    c_peak = _axial(peaks, 2)
    if c_peak is not None:
        q, s = q0_of(c_peak)
        out["c"] = formulas.axial_lattice_parameter(q, abs(c_peak.hkl[2]))
        out["c_error"] = errors.axial_lattice_parameter_error(q, s, abs(c_peak.hkl[2]))
    if len(wh_peaks) >= 2:
        maps = [spot_maps[n] for n in wh_peaks]
        wh = williamson_hall_fit(np.stack([m["q0"] for m in maps]), np.stack([m["dq"] for m in maps]),
                                 np.stack([_get(m, "q0_error", m["q0"]) for m in maps]),
                                 np.stack([_get(m, "dq_error", m["dq"]) for m in maps]),
                                 derived.scherrer_k, weighted=WH_WEIGHTED)
        out["size"], out["microstrain"] = wh.size, wh.microstrain
        out["size_error"], out["microstrain_error"] = wh.size_error, wh.microstrain_error
    sl = {p.superlattice: p for p in peaks if p.superlattice is not None}
    s10 = sl.get((1, 0)) or sl.get((-1, 0))
    s01 = sl.get((0, 1)) or sl.get((0, -1))
    if s10 is not None and s01 is not None:
        m1, m2 = spot_maps[s10.name], spot_maps[s01.name]
        out["a_sc1"], out["a_sc2"], out["a_sc"] = formulas.superlattice_parameters(
            m1["q0"], m2["q0"], m1["phi0"], m2["phi0"])
        out["a_sc1_error"], out["a_sc2_error"], out["a_sc_error"] = errors.superlattice_parameters_error(
            m1["q0"], _get(m1, "q0_error", m1["q0"]), m2["q0"], _get(m2, "q0_error", m2["q0"]),
            m1["phi0"], _get(m1, "phi0_error", m1["phi0"]), m2["phi0"], _get(m2, "phi0_error", m2["phi0"]))
    for name, d_ref in derived.d_ref.items():
        q, s = spot_maps[name]["q0"], _get(spot_maps[name], "q0_error", spot_maps[name]["q0"])
        out[f"strain_{name}"] = formulas.strain(formulas.d_spacing(q), d_ref)
        out[f"strain_{name}_error"] = errors.strain_error(q, s, d_ref)
    for p in peaks:
        m = spot_maps[p.name]
        out[f"dphi_do/{p.name}"] = formulas.orientational_disorder(m["dphi"], m["dq"], m["q0"])
        out[f"dphi_do_error/{p.name}"] = errors.orientational_disorder_error(
            m["dphi"], _get(m, "dphi_error", m["dphi"]), m["dq"], _get(m, "dq_error", m["dq"]),
            m["q0"], _get(m, "q0_error", m["q0"]))
    bragg = [spot_maps[p.name] for p in peaks if p.hkl is not None]
    if bragg and all("amplitude" in m for m in bragg):
        intensity, n_spots = bragg_intensity(np.stack([m["amplitude"] for m in bragg]),
                                             np.stack([m["dq"] for m in bragg]), np.stack([m["dphi"] for m in bragg]))
        min_peaks = derived.supercrystal_min_peaks
        if min_peaks is None:
            min_peaks = min(2, len(bragg))
        out["bragg_intensity"] = intensity
        out["supercrystal_mask"] = supercrystal_mask(intensity, n_spots, derived.supercrystal_threshold, min_peaks)
    return out
