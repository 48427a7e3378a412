"""Error propagation to the derived maps: every formula against a Monte-Carlo spread."""

from __future__ import annotations

import math

import numpy as np
import pytest

from processors import derived, derived_errors
from processors.config import DerivedConfig, PeakConfig
from processors.derived_maps import derived_maps
from processors.williamson_hall import williamson_hall_fit

N_MC = 200_000
TWO_PI = 2 * math.pi


def _mc(rng, f, values, sigmas):
    """Standard deviation of f over Gaussian perturbations of its inputs."""
    draws = [v + s * rng.standard_normal(N_MC) for v, s in zip(values, sigmas)]
    return float(np.nanstd(f(*draws)))


def test_axial_and_strain_errors_match_monte_carlo(rng) -> None:
    q0, s = 1.0704, 2e-4
    spread = _mc(rng, lambda q: derived.axial_lattice_parameter(q, 2), [q0], [s])
    assert derived_errors.axial_lattice_parameter_error(q0, s, 2) == pytest.approx(spread, rel=0.01)
    spread = _mc(rng, lambda q: derived.strain(derived.d_spacing(q), 5.87), [q0], [s])
    assert derived_errors.strain_error(q0, s, 5.87) == pytest.approx(spread, rel=0.01)


def test_b_from_110_and_100_error_matches_monte_carlo(rng) -> None:
    values, sigmas = [1.5138, 1.0704], [3e-4, 2e-4]
    spread = _mc(rng, derived.b_from_110_and_100, values, sigmas)
    assert derived_errors.b_from_110_and_100_error(values[0], sigmas[0], values[1], sigmas[1]) == pytest.approx(
        spread, rel=0.01)
    assert np.isnan(derived_errors.b_from_110_and_100_error(1.0, 1e-3, 1.1, 1e-3))


def test_orientational_disorder_error_matches_monte_carlo(rng) -> None:
    values, sigmas = [4.0, 0.06, 1.07], [0.08, 0.002, 3e-4]  # Δφ (°), Δq, q0
    spread = _mc(rng, derived.orientational_disorder, values, sigmas)
    got = derived_errors.orientational_disorder_error(values[0], sigmas[0], values[1], sigmas[1], values[2], sigmas[2])
    assert got == pytest.approx(spread, rel=0.02)
    # the width term matters: with a larger Δq the radial part takes a larger share
    values, sigmas = [4.0, 0.06, 1.07], [0.01, 0.003, 1e-3]
    spread = _mc(rng, derived.orientational_disorder, values, sigmas)
    got = derived_errors.orientational_disorder_error(values[0], sigmas[0], values[1], sigmas[1], values[2], sigmas[2])
    assert got == pytest.approx(spread, rel=0.03)
    assert np.isnan(derived_errors.orientational_disorder_error(2.0, 0.1, 0.05, 0.001, 1.0, 1e-3))  # Δφ_do NaN


def test_superlattice_errors_match_monte_carlo(rng) -> None:
    values = [0.040, 0.042, 10.0, 75.0]  # q1, q2 (1/Å), φ1, φ2 (°): γ* = 65°, cot γ* ≠ 0
    sigmas = [2e-5, 3e-5, 0.3, 0.4]
    got = derived_errors.superlattice_parameters_error(values[0], sigmas[0], values[1], sigmas[1],
                                                       values[2], sigmas[2], values[3], sigmas[3])
    for k in range(3):
        spread = _mc(rng, lambda *v, k=k: derived.superlattice_parameters(*v)[k], values, sigmas)
        assert got[k] == pytest.approx(spread, rel=0.02), k


def _wh_points(rng, n_points: int):
    """Spot q0/Δq of 100, 110, 200 for a known size and microstrain, with per-spot σ."""
    size_nm, eps = 12.6, 0.018
    q0 = np.array([1.0704, 1.5138, 2.1408])[:, None] * np.ones(n_points)
    dq0 = TWO_PI * 0.85 / (10 * size_nm)
    dq = np.sqrt((eps * q0) ** 2 + dq0 ** 2)
    s_q0 = np.array([2e-4, 4e-4, 6e-4])[:, None] * np.ones(n_points)
    s_dq = np.array([4e-4, 1e-3, 2.5e-3])[:, None] * np.ones(n_points)  # the weak 200 is the noisiest
    return size_nm, eps, q0, dq, s_q0, s_dq


@pytest.mark.parametrize("weighted", [False, True])
def test_williamson_hall_errors_match_monte_carlo(rng, weighted: bool) -> None:
    n = 40_000
    size_nm, eps, q0, dq, s_q0, s_dq = _wh_points(rng, n)
    noisy_q0 = q0 + s_q0 * rng.standard_normal(q0.shape)
    noisy_dq = dq + s_dq * rng.standard_normal(dq.shape)
    fit = williamson_hall_fit(noisy_q0, noisy_dq, s_q0, s_dq, 0.85, weighted=weighted)
    exact = williamson_hall_fit(q0, dq, s_q0, s_dq, 0.85, weighted=weighted)
    assert exact.size[0] == pytest.approx(size_nm, rel=1e-12)
    assert exact.microstrain[0] == pytest.approx(eps, rel=1e-12)
    assert np.nanstd(fit.size) == pytest.approx(exact.size_error[0], rel=0.05)
    assert np.nanstd(fit.microstrain) == pytest.approx(exact.microstrain_error[0], rel=0.05)


def test_weighted_williamson_hall_is_more_precise_with_unequal_errors(rng) -> None:
    _, _, q0, dq, s_q0, s_dq = _wh_points(rng, 1)
    plain = williamson_hall_fit(q0, dq, s_q0, s_dq, weighted=False)
    weighted = williamson_hall_fit(q0, dq, s_q0, s_dq, weighted=True)
    assert weighted.size_error[0] < plain.size_error[0]
    assert weighted.microstrain_error[0] < plain.microstrain_error[0]


def test_unweighted_williamson_hall_equals_the_plain_formula(rng) -> None:
    q0 = rng.uniform(1.0, 2.2, (3, 50))
    dq = rng.uniform(0.04, 0.08, (3, 50))
    q0[1, :5] = np.nan
    size, eps = derived.williamson_hall(q0, dq)
    fit = williamson_hall_fit(q0, dq, np.full_like(q0, 1e-4), np.full_like(dq, 1e-4), weighted=False)
    np.testing.assert_array_equal(fit.size, size)
    np.testing.assert_array_equal(fit.microstrain, eps)
    # equal σ of Δq² (σ_Δq ∝ 1/Δq): the weighted fit is the plain one
    same = williamson_hall_fit(q0, dq, np.full_like(q0, 1e-4), 1e-6 / dq, weighted=True)
    np.testing.assert_allclose(same.size, size, rtol=1e-10)


def test_derived_maps_write_an_error_next_to_every_quantity() -> None:
    a, b, c = 5.88, 5.85, 5.91
    peaks = (PeakConfig("100", (1, 1.2), (0, 50), hkl=(1, 0, 0)),
             PeakConfig("110", (1.4, 1.6), (0, 50), hkl=(1, 1, 0)),
             PeakConfig("200", (2, 2.3), (0, 50), hkl=(2, 0, 0)),
             PeakConfig("001", (1, 1.2), (80, 100), hkl=(0, 0, 1)),
             PeakConfig("s10", (0.03, 0.05), (0, 30), superlattice=(1, 0)),
             PeakConfig("s01", (0.03, 0.05), (80, 120), superlattice=(0, 1)))
    q = {"100": TWO_PI / a, "110": TWO_PI * math.sqrt(1 / a**2 + 1 / b**2), "200": 2 * TWO_PI / a,
         "001": TWO_PI / c, "s10": 0.04, "s01": 0.04}
    phi = {"s10": 10.0, "s01": 80.0}
    shape = (2, 3)
    spot = {}
    for n, v in q.items():
        dq = math.sqrt((0.018 * v) ** 2 + (TWO_PI * 0.85 / 126) ** 2)
        spot[n] = {"q0": np.full(shape, v), "dq": np.full(shape, dq), "phi0": np.full(shape, phi.get(n, 0.0)),
                   "dphi": np.full(shape, 5.0), "amplitude": np.full(shape, 100.0)}
        spot[n].update({f"{k}_error": np.full(shape, 1e-3 * abs(spot[n][k][0, 0]) + 1e-4) for k in list(spot[n])})
    out = derived_maps(peaks, DerivedConfig(d_ref={"100": a}), ("100", "110", "200"), spot)
    for key in ("a", "b", "c", "size", "microstrain", "a_sc1", "a_sc2", "a_sc", "strain_100"):
        assert f"{key}_error" in out, key
        assert np.all(np.isfinite(out[f"{key}_error"])) and np.all(out[f"{key}_error"] > 0), key
    for p in peaks:  # wherever Δφ_do is defined (not for the SAXS spots: Δq/q0 > Δφ there)
        assert np.array_equal(np.isfinite(out[f"dphi_do_error/{p.name}"]), np.isfinite(out[f"dphi_do/{p.name}"]))
        assert np.isfinite(out[f"dphi_do/{p.name}"]).all() == (p.hkl is not None)
    # a's error is a·σ_q0/q0
    np.testing.assert_allclose(out["a_error"], a * spot["100"]["q0_error"] / q["100"])
    # without error maps (old callers) the values stay and the errors are NaN
    bare = {n: {k: v for k, v in m.items() if not k.endswith("_error")} for n, m in spot.items()}
    out2 = derived_maps(peaks, DerivedConfig(), ("100", "110", "200"), bare)
    np.testing.assert_allclose(out2["a"], a)
    assert np.all(np.isnan(out2["a_error"]))
