"""Recovered-vs-truth metrics against numbers worked out by hand."""

from __future__ import annotations

import numpy as np

from processors.config import PeakConfig
from processors.supercrystal import model_supercrystal
from processors.truth_comparison import judge, recovered_vs_truth, truth_at_points

PEAKS = [PeakConfig("100", (0.95, 1.19), (153.0, 203.0), hkl=(1, 0, 0)),
         PeakConfig("sl", (0.03, 0.06), (153.0, 203.0), superlattice=(1, 0))]


def _perfect_maps(truth):
    spot = {k: np.where(truth.on_crystal, v, np.nan) for k, v in truth.spot((1, 0, 0)).items()}
    derived = {"a": truth.a_A, "b": truth.b_A, "size": truth.size_nm, "microstrain": truth.microstrain}
    return {"100": spot}, derived


def test_perfect_maps_pass_every_target():
    truth = model_supercrystal((10, 12), seed=2)
    spots, derived = _perfect_maps(truth)
    metrics = recovered_vs_truth(spots, derived, truth, PEAKS)
    assert metrics["100/fitted_inside"] == 1.0 and metrics["100/false_outside"] == 0.0
    for key in ("100/q0", "100/dq", "100/dphi", "100/phi0", "a", "b", "size", "microstrain"):
        assert metrics[key] == 0.0, key
    assert not any(k.startswith("sl/") for k in metrics)  # superlattice peaks have no Bragg truth here
    assert all(judge(metrics).values()) and len(judge(metrics)) == 10


def test_errors_are_medians_of_what_was_changed():
    truth = model_supercrystal((10, 12), seed=2)
    spots, derived = _perfect_maps(truth)
    on = truth.on_crystal
    spots["100"]["q0"] = spots["100"]["q0"] + 2e-3                       # fails the 1e-3 target
    spots["100"]["dq"] = spots["100"]["dq"] * 1.02                       # 2 %: passes
    spots["100"]["phi0"] = spots["100"]["phi0"] + 359.95                 # −0.05° after wrapping
    lost = np.argwhere(on)[: int(0.1 * on.sum())]
    spots["100"]["q0"][lost[:, 0], lost[:, 1]] = np.nan                  # 10 % of the crystal not fitted
    off = np.argwhere(~on)[0]
    spots["100"]["q0"][off[0], off[1]] = 1.07                            # one false fit outside
    derived["size"] = derived["size"] * 0.9
    derived["a"] = derived["a"] - 0.004
    metrics = recovered_vs_truth(spots, derived, truth, PEAKS)
    assert abs(metrics["100/q0"] - 2e-3) < 1e-12
    assert abs(metrics["100/dq"] - 0.02) < 1e-12
    assert abs(metrics["100/phi0"] - 0.05) < 1e-9
    assert abs(metrics["size"] - 0.1) < 1e-12
    assert abs(metrics["a_bias"] + 0.004) < 1e-12 and abs(metrics["a"] - 0.004) < 1e-12 and metrics["b_bias"] == 0
    assert abs(metrics["100/fitted_inside"] - (1 - len(lost) / on.sum())) < 1e-12
    assert metrics["100/false_outside"] == 1 / (~on).sum()
    verdict = judge(metrics)
    assert not verdict["100/q0"] and verdict["100/dq"] and verdict["100/phi0"] and not verdict["size"]
    assert not verdict["100/fitted_inside"] and not verdict["a"] and "a_bias" not in verdict


def test_truth_at_points_takes_points_and_leaves_the_rest_off_crystal():
    truth = model_supercrystal((8, 8), seed=0)
    rows = np.array([[3, 4], [-1, 0]])
    cols = np.array([[4, 4], [-1, 0]])
    sampled = truth_at_points(truth, rows, cols)
    assert sampled.shape == (2, 2)
    assert sampled.a_A[0, 1] == truth.a_A[4, 4] and sampled.on_crystal[0, 0] == truth.on_crystal[3, 4]
    assert not sampled.on_crystal[1, 0] and np.isnan(sampled.size_nm[1, 0]) and sampled.brightness[1, 0] == 0.0
