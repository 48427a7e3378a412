"""The paper's statistics of a results file, over the supercrystal mask (docs/statistics.md).

:func:`report_statistics` takes the :class:`~monitor.report.figure_data.ReportData` of a file
and gives a frozen :class:`ReportStatistics`: per quantity N, median, quartiles and the median
standard error; Pearson and Spearman ρ with bootstrap intervals for the pairs the paper looks
at; the profile of each quantity against the distance from the supercrystal's centre; the
power law of a and b against NC size. :meth:`ReportStatistics.as_json` is the machine-readable
file ``nanomaps report`` writes (NaN → null).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitor.report.figure_data import ReportData
from processors.correlation import Correlation, correlate
from processors.power_law import PowerLawFit, fit_power_law
from processors.radial_profile import RadialProfile, distance_map, radial_profile, weighted_centroid

__all__ = ["Quantity", "ReportStatistics", "StatisticsOptions", "report_statistics"]

#: Pairs (x, y) correlated when both exist: the lattice against size (the paper's ρ(a, s),
#: ρ(b, s)), a against b, the widths against size, and everything against the distance
#: from the centre (Δφ_do of the report's peak stands for "dphi_do").
PAIRS = (("size", "a"), ("size", "b"), ("size", "a_minus_b"), ("a", "b"), ("size", "microstrain"),
         ("size", "dphi_do"), ("distance", "dphi_do"), ("distance", "size"), ("distance", "a_minus_b"),
         ("distance", "microstrain"), ("distance", "a"), ("distance", "b"))


@dataclass(frozen=True)
class StatisticsOptions:
    """Bootstrap resamples and seed, confidence of the intervals, profile bins."""

    resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95
    profile_bins: int = 10

    def __post_init__(self) -> None:
        if self.resamples < 1:
            raise ValueError(f"resamples = {self.resamples}: use at least 1")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence = {self.confidence}: use a fraction in (0, 1)")
        if self.profile_bins < 1:
            raise ValueError(f"profile_bins = {self.profile_bins}: use at least 1")


@dataclass(frozen=True)
class Quantity:
    """One map the statistics cover: its name, label, units, values and standard errors."""

    name: str
    label: str
    units: str
    values: np.ndarray = field(repr=False)
    errors: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ReportStatistics:
    """Everything computed; maps over the mask only (``mask`` True)."""

    mask: np.ndarray = field(repr=False)
    mask_source: str
    centre: tuple[float, float]
    centre_weights: str  # the map that weighted the centroid
    distance_units: str
    distance: np.ndarray = field(repr=False)
    quantities: dict[str, Quantity] = field(repr=False)
    correlations: dict[tuple[str, str], Correlation]
    profiles: dict[str, RadialProfile] = field(repr=False)
    power_laws: dict[str, PowerLawFit | None]
    options: StatisticsOptions

    def summary(self, name: str) -> dict[str, float | int]:
        """N, median, quartiles, mean, standard deviation and median standard error over the mask."""
        q = self.quantities[name]
        inside = self.mask & np.isfinite(q.values)
        v = q.values[inside]
        out: dict[str, float | int] = {"n": int(v.size)}
        nan = float("nan")
        if v.size:
            q25, med, q75 = np.percentile(v, [25, 50, 75])
            out.update(median=float(med), q25=float(q25), q75=float(q75), mean=float(v.mean()), std=float(v.std()))
        else:
            out.update(median=nan, q25=nan, q75=nan, mean=nan, std=nan)
        if q.errors is not None:
            e = q.errors[inside & np.isfinite(q.errors)]
            out["median_error"] = float(np.median(e)) if e.size else nan
        return out

    def as_json(self) -> dict[str, Any]:
        """Plain dict for ``json.dump`` (NaN and inf written as null)."""
        o = self.options
        doc: dict[str, Any] = {
            "mask": {"source": self.mask_source, "n_points": int(self.mask.sum())},
            "centre": {"x": self.centre[0], "y": self.centre[1], "units": self.distance_units,
                       "weights": self.centre_weights},
            "bootstrap": {"resamples": o.resamples, "seed": o.seed, "confidence": o.confidence,
                          "method": "percentile, points resampled in pairs"},
            "quantities": {name: {"label": q.label, "units": q.units, **self.summary(name)}
                           for name, q in self.quantities.items()},
            "correlations": [
                {"x": x, "y": y, "n": c.n, "pearson": c.pearson, "pearson_ci": list(c.pearson_ci),
                 "spearman": c.spearman, "spearman_ci": list(c.spearman_ci)}
                for (x, y), c in self.correlations.items()],
            "profiles": {
                name: {"distance_units": self.distance_units, "bin_edges": p.edges.tolist(),
                       "count": p.count.tolist(), "median": p.median.tolist(), "q25": p.q25.tolist(),
                       "q75": p.q75.tolist()}
                for name, p in self.profiles.items()},
            "power_law": {
                name: None if fit is None else {
                    "model": f"{name} = {name}_inf + k * size^(-n), size in nm",
                    f"{name}_inf": fit.y_inf, f"{name}_inf_error": fit.y_inf_error, "k": fit.k, "k_error": fit.k_error,
                    "n": fit.n, "n_error": fit.n_error, "n_points": fit.n_points, "rms": fit.rms}
                for name, fit in self.power_laws.items()},
        }
        return _finite(doc)


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _quantities(data: ReportData) -> dict[str, Quantity]:
    err = data.errors
    out: dict[str, Quantity] = {}

    def add(name: str, label: str, units: str, values: np.ndarray | None, errors: np.ndarray | None = None) -> None:
        if values is not None and np.isfinite(values).any():
            out[name] = Quantity(name, label, units, values, errors)

    add("a", "a", "Å", data.a, err.get("a"))
    add("b", "b", "Å", data.b, err.get("b"))
    if data.a is not None and data.b is not None:
        ab_err = np.hypot(err["a"], err["b"]) if "a" in err and "b" in err else None
        add("a_minus_b", "a − b", "Å", data.a - data.b, ab_err)
    add("c", "c", "Å", data.c, err.get("c"))
    add("size", "NC size", "nm", data.size, err.get("size"))
    add("microstrain", "microstrain ε", "1", data.microstrain, err.get("microstrain"))
    add("a_sc", "⟨a_SC⟩", "nm", data.a_sc, err.get("a_sc"))
    if data.peak is not None and data.dphi_do is not None:
        add("dphi_do", f"Δφ_do ({data.peak})", "°", data.dphi_do, err.get(f"dphi_do/{data.peak}"))
    for peak, values in data.dphi_do_peaks.items():
        if peak != data.peak:
            add(f"dphi_do_{peak}", f"Δφ_do ({peak})", "°", values, err.get(f"dphi_do/{peak}"))
    return out


def _mask(data: ReportData, quantities: dict[str, Quantity]) -> tuple[np.ndarray, str]:
    if data.supercrystal_mask is not None and data.supercrystal_mask.any():
        return data.supercrystal_mask.copy(), "supercrystal_mask"
    measured = np.zeros(data.shape, dtype=bool)
    for q in quantities.values():
        measured |= np.isfinite(q.values)
    why = "no supercrystal_mask in the file" if data.supercrystal_mask is None else "supercrystal_mask is empty"
    return measured, f"every point with a derived value ({why})"


def report_statistics(data: ReportData, options: StatisticsOptions = StatisticsOptions()) -> ReportStatistics:
    """The statistics of :func:`monitor.report.figure_data.read_report_data`'s result."""
    quantities = _quantities(data)
    mask, source = _mask(data, quantities)
    xx, yy = np.meshgrid(data.x.centres, data.y.centres)
    if data.bragg_intensity is not None:
        weights, weighted_by = data.bragg_intensity, "bragg_intensity"
    elif data.intensity is not None:
        weights, weighted_by = data.intensity, "intensity"
    else:
        weights, weighted_by = np.ones(data.shape), "none"
    centre = weighted_centroid(xx, yy, weights, mask)
    distance = distance_map(xx, yy, centre)
    units = data.x.units or "points"
    all_q = dict(quantities)
    all_q["distance"] = Quantity("distance", "distance from the centre", units, distance)
    correlations: dict[tuple[str, str], Correlation] = {}
    for x, y in PAIRS:
        if x in all_q and y in all_q:
            correlations[(x, y)] = correlate(np.where(mask, all_q[x].values, np.nan), all_q[y].values,
                                             resamples=options.resamples, confidence=options.confidence,
                                             seed=options.seed)
    top = float(distance[mask].max()) if mask.any() else 1.0
    profiles = {name: radial_profile(q.values, distance, mask, n_bins=options.profile_bins, max_distance=top)
                for name, q in quantities.items()}
    power_laws: dict[str, PowerLawFit | None] = {}
    if "size" in quantities:
        size = np.where(mask, quantities["size"].values, np.nan)
        for name in ("a", "b"):
            if name in quantities:
                power_laws[name] = fit_power_law(size, quantities[name].values)
    return ReportStatistics(mask=mask, mask_source=source, centre=centre, centre_weights=weighted_by,
                            distance_units=units, distance=distance,
                            quantities=all_q, correlations=correlations, profiles=profiles, power_laws=power_laws,
                            options=options)
