"""Recovered maps against the simulated truth: the accuracy numbers of issue 10's "Done when".

Used by the demo (its "recovered vs truth" lines), by ``benchmarks/fit_accuracy.py`` and
by tests. Every number is a median over the map (NaN points left out):

- ``<peak>/fitted_inside``: fraction of on-crystal points whose fit gave a q0;
- ``<peak>/false_outside``: fraction of off-crystal points that got a q0 anyway;
- ``<peak>/q0`` |Δq0| (1/Å), ``<peak>/dq`` and ``<peak>/dphi`` |fit/true − 1|,
  ``<peak>/phi0`` |w(Δφ0)| (degrees);
- ``a``, ``b`` |Δ| (Å), ``size`` |fit/true − 1|, ``microstrain`` |Δε| (fraction);
- ``a_bias``, ``b_bias``: the signed median of fit − true (Å; no target: a bias of a few
  mÅ is a fake a − b gradient even where the scatter meets its target).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Mapping, Sequence

import numpy as np

from processors.angles import wrap_deg
from processors.config import PeakConfig
from processors.supercrystal import SupercrystalTruth


@dataclass(frozen=True)
class AccuracyTarget:
    """A bound on one metric: ``value <= limit`` (``at_least`` False) or ``value >= limit``."""

    limit: float
    at_least: bool = False

    def passes(self, value: float) -> bool:
        if not np.isfinite(value):
            return False
        return value >= self.limit if self.at_least else value <= self.limit


#: Issue 10's targets, by metric name (the part after ``<peak>/`` for per-peak metrics).
ACCURACY_TARGETS: dict[str, AccuracyTarget] = {
    "fitted_inside": AccuracyTarget(0.95, at_least=True),
    "false_outside": AccuracyTarget(0.10),
    "q0": AccuracyTarget(1e-3),
    "dq": AccuracyTarget(0.03),
    "dphi": AccuracyTarget(0.03),
    "phi0": AccuracyTarget(0.1),
    "a": AccuracyTarget(0.003),
    "b": AccuracyTarget(0.003),
    "size": AccuracyTarget(0.05),
    "microstrain": AccuracyTarget(2e-3),
}


def truth_at_points(truth: SupercrystalTruth, rows: np.ndarray, cols: np.ndarray) -> SupercrystalTruth:
    """``truth`` sampled at the sample points ``(rows, cols)`` (same-shape index maps; −1 = off the sample)."""
    ok = (rows >= 0) & (cols >= 0)
    r, c = np.where(ok, rows, 0), np.where(ok, cols, 0)
    changes = {}
    for f in fields(truth):
        value = getattr(truth, f.name)
        if isinstance(value, np.ndarray) and value.shape == truth.shape:
            taken = value[r, c]
            fill = False if value.dtype == bool else (0.0 if f.name == "brightness" else np.nan)
            changes[f.name] = np.where(ok, taken, fill)
    second = truth.second_domain
    if second is not None:
        changes["second_domain"] = replace(second, points=np.where(ok, second.points[r, c], False))
    return replace(truth, **changes)


def _median(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmedian(x)) if np.isfinite(x).any() else float("nan")


def spot_errors(fit: Mapping[str, np.ndarray], true: Mapping[str, np.ndarray], on: np.ndarray) -> dict[str, float]:
    """Per-peak metrics of one spot's fitted maps ``fit`` against its ``true`` maps (see the module doc)."""
    fitted = np.isfinite(fit["q0"])
    out = {"fitted_inside": float(fitted[on].mean()) if on.any() else float("nan"),
           "false_outside": float(fitted[~on].mean()) if (~on).any() else float("nan")}
    for key in ("q0", "dq", "dphi", "phi0"):
        if key not in fit:
            continue
        err = fit[key] - true[key]
        if key == "phi0":
            err = wrap_deg(err)
        if key in ("dq", "dphi"):
            err = err / true[key]
        out[key] = _median(np.abs(err))
    return out


def recovered_vs_truth(spots: Mapping[str, Mapping[str, np.ndarray]], derived: Mapping[str, np.ndarray],
                       truth: SupercrystalTruth, peaks: Sequence[PeakConfig]) -> dict[str, float]:
    """Every metric of the module doc, for the Bragg ``peaks`` found in ``spots`` and the ``derived`` maps.

    ``spots[name][key]`` and ``derived[name]`` are the result maps (as in results.h5);
    ``truth`` is on the same grid (see :func:`truth_at_points`).
    """
    on = np.asarray(truth.on_crystal, dtype=bool)
    out: dict[str, float] = {}
    for peak in peaks:
        if peak.hkl is None or peak.name not in spots:
            continue
        for key, value in spot_errors(spots[peak.name], truth.spot(peak.hkl), on).items():
            out[f"{peak.name}/{key}"] = value
    true_derived = {"a": truth.a_A, "b": truth.b_A, "size": truth.size_nm, "microstrain": truth.microstrain}
    for name, true in true_derived.items():
        if name not in derived:
            continue
        err = derived[name] - true
        out[name] = _median(np.abs(err / true if name == "size" else err))
        if name in ("a", "b"):
            out[f"{name}_bias"] = _median(err)
    return out


def target_of(metric: str) -> AccuracyTarget | None:
    """The issue's target for a metric name (``"100/q0"`` → the q0 target), None when it has none."""
    return ACCURACY_TARGETS.get(metric.rsplit("/", 1)[-1])


def judge(metrics: Mapping[str, float]) -> dict[str, bool]:
    """PASS (True) / FAIL (False) of every metric that has a target."""
    return {name: target.passes(value) for name, value in metrics.items()
            if (target := target_of(name)) is not None}
