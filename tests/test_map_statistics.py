"""The paper's statistics: supercrystal mask, correlations with bootstrap intervals, radial
profiles and the power-law fit (processors.supercrystal_mask, correlation, radial_profile, power_law)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from processors.config import ConfigError, DerivedConfig, PeakConfig, parse_config
from processors.correlation import correlate, pearson, spearman
from processors.derived_maps import derived_maps
from processors.power_law import fit_power_law
from processors.radial_profile import distance_map, radial_profile, weighted_centroid
from processors.supercrystal_mask import GAUSSIAN_VOLUME, bragg_intensity, supercrystal_mask

# ------------------------------------------------------------------ supercrystal mask


def test_gaussian_volume_is_the_integral_of_the_unit_fwhm_gaussian() -> None:
    u = np.linspace(-3, 3, 1201)
    g = np.exp(-4 * math.log(2) * (u[:, None] ** 2 + u[None, :] ** 2))
    assert g.sum() * (u[1] - u[0]) ** 2 == pytest.approx(GAUSSIAN_VOLUME, rel=1e-6)


def test_mask_threshold_and_min_peaks() -> None:
    amplitude = np.array([[100.0, 100.0, np.nan, 1.0], [50.0, np.nan, np.nan, 1.0]])
    dq = np.full_like(amplitude, 0.05)
    dphi = np.full_like(amplitude, 4.0)
    intensity, n = bragg_intensity(amplitude, dq, dphi)
    np.testing.assert_allclose(intensity[:2], GAUSSIAN_VOLUME * 0.2 * np.array([150.0, 100.0]))
    assert np.isnan(intensity[2]) and list(n) == [2, 1, 0, 2]
    assert list(supercrystal_mask(intensity, n, 0.0, 1)) == [1, 1, 0, 1]
    assert list(supercrystal_mask(intensity, n, 0.0, 2)) == [1, 0, 0, 1]
    # the threshold removes the weak point (I_B = 2 × 0.2 × GAUSSIAN_VOLUME)
    assert list(supercrystal_mask(intensity, n, 1.0, 1)) == [1, 1, 0, 0]
    assert supercrystal_mask(intensity, n, 0.0, 1).dtype == np.uint8


def _peaks():
    return (PeakConfig("100", (1, 1.2), (0, 50), hkl=(1, 0, 0)), PeakConfig("110", (1.4, 1.6), (0, 50), hkl=(1, 1, 0)),
            PeakConfig("s10", (0.03, 0.05), (0, 30), superlattice=(1, 0)))


def test_derived_maps_mask_counts_only_bragg_spots() -> None:
    shape = (1, 3)
    spot = {n: {"q0": np.full(shape, q), "dq": np.full(shape, 0.05), "phi0": np.zeros(shape), "dphi": np.full(shape, 5.0),
                "amplitude": np.array([[200.0, 200.0, np.nan]])} for n, q in (("100", 1.07), ("110", 1.51))}
    spot["110"]["amplitude"] = np.array([[200.0, np.nan, np.nan]])
    spot["s10"] = {k: np.full(shape, 1.0) for k in ("q0", "dq", "phi0", "dphi", "amplitude")}  # SAXS: ignored
    out = derived_maps(_peaks(), DerivedConfig(), ("100", "110"), spot)
    assert out["supercrystal_mask"].tolist() == [[1, 0, 0]]  # default: both Bragg spots needed
    out = derived_maps(_peaks(), DerivedConfig(supercrystal_min_peaks=1), ("100", "110"), spot)
    assert out["supercrystal_mask"].tolist() == [[1, 1, 0]]
    volume = GAUSSIAN_VOLUME * 200 * 0.05 * 5.0
    out = derived_maps(_peaks(), DerivedConfig(supercrystal_min_peaks=1, supercrystal_threshold=1.5 * volume),
                       ("100", "110"), spot)
    assert out["supercrystal_mask"].tolist() == [[1, 0, 0]]
    np.testing.assert_allclose(out["bragg_intensity"][0, :2], [2 * volume, volume])


CONFIG = """
[geometry]
poni = "g.poni"
[scan]
shape = [2, 2]
[[peak]]
name = "100"
hkl = [1, 0, 0]
q = [1.0, 1.2]
chi = [0, 40]
[derived]
{derived}
"""


@pytest.mark.parametrize("line, needle", [
    ("supercrystal_threshold = -1.0", "supercrystal_threshold"),
    ("supercrystal_threshold = \"high\"", "supercrystal_threshold"),
    ("supercrystal_min_peaks = 2", "supercrystal_min_peaks"),
    ("supercrystal_min_peaks = 0", "supercrystal_min_peaks"),
])
def test_config_mask_keys_are_checked(tmp_path, line: str, needle: str) -> None:
    (tmp_path / "g.poni").write_text("")
    with pytest.raises(ConfigError, match=f"\\[derived\\] key '{needle}'.*Fix"):
        parse_config(CONFIG.format(derived=line), tmp_path / "c.toml")
    ok = parse_config(CONFIG.format(derived="supercrystal_threshold = 25.0\nsupercrystal_min_peaks = 1"),
                      tmp_path / "c.toml")
    assert ok.derived.supercrystal_threshold == 25.0 and ok.derived.supercrystal_min_peaks == 1


# ------------------------------------------------------------------ correlations


def test_pearson_and_spearman_against_numpy_and_scipy(rng) -> None:
    x = rng.normal(size=300)
    y = 0.5 * x + rng.normal(size=300)
    y[::17] = np.nan
    x[::23] = np.nan
    ok = np.isfinite(x) & np.isfinite(y)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x[ok], y[ok])[0, 1], rel=1e-12)
    assert spearman(x, y) == pytest.approx(spearmanr(x[ok], y[ok]).statistic, rel=1e-12)
    ties = np.round(x * 2) / 2  # many ties: average ranks
    assert spearman(ties, y) == pytest.approx(spearmanr(ties[ok], y[ok]).statistic, rel=1e-12)
    assert math.isnan(pearson([1.0, 2.0], [3.0, 4.0])) and math.isnan(spearman(np.ones(5), np.arange(5.0)))


def test_bootstrap_interval_covers_the_true_rho() -> None:
    """Over 40 seeded synthetic maps with ρ = −0.6, the 95 % intervals hold the true ρ in
    (about) 95 % of them, and each interval is about as wide as the sampling spread."""
    rho, n = -0.6, 200
    cov = [[1.0, rho], [rho, 1.0]]
    hits_p = hits_s = 0
    # Spearman's ρ of a bivariate normal: 6/π · asin(ρ/2)
    rho_s = 6 / math.pi * math.asin(rho / 2)
    trials = 40
    for seed in range(trials):
        xy = np.random.default_rng(seed).multivariate_normal([0, 0], cov, size=n)
        c = correlate(xy[:, 0], xy[:, 1], resamples=400, seed=seed)
        hits_p += c.pearson_ci[0] <= rho <= c.pearson_ci[1]
        hits_s += c.spearman_ci[0] <= rho_s <= c.spearman_ci[1]
        assert c.n == n and c.pearson_ci[0] < c.pearson < c.pearson_ci[1]
    assert hits_p >= 0.85 * trials and hits_s >= 0.85 * trials
    width = c.pearson_ci[1] - c.pearson_ci[0]
    assert width == pytest.approx(2 * 1.96 * (1 - rho ** 2) / math.sqrt(n), rel=0.3)


def test_bootstrap_is_reproducible() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=100), rng.normal(size=100)
    assert correlate(x, y, resamples=200, seed=5) == correlate(x, y, resamples=200, seed=5)
    assert correlate(x, y, resamples=200, seed=5) != correlate(x, y, resamples=200, seed=6)


# ------------------------------------------------------------------ radial profile


def test_radial_profile_of_a_known_radial_law() -> None:
    step = 0.5  # µm
    yy, xx = np.mgrid[0:41, 0:61] * step
    centre = (14.0, 9.0)
    r = np.hypot(xx - centre[0], yy - centre[1])
    mask = r < 8.0
    weights = np.where(mask, 1.0 + 0.0 * r, 0.0)  # uniform over a disc: the centroid is its centre
    cx, cy = weighted_centroid(xx, yy, weights, mask)
    assert (cx, cy) == pytest.approx(centre, abs=1e-9)
    law = 2.0 + 0.3 * r ** 1.5
    d = distance_map(xx, yy, (cx, cy))
    prof = radial_profile(law, d, mask, n_bins=8)
    assert prof.count.sum() == mask.sum()
    ok = prof.count >= 3
    inner, outer = 2.0 + 0.3 * prof.edges[:-1] ** 1.5, 2.0 + 0.3 * prof.edges[1:] ** 1.5
    assert np.all((prof.median[ok] >= inner[ok]) & (prof.median[ok] <= outer[ok]))
    assert np.all((prof.q25[ok] <= prof.median[ok]) & (prof.median[ok] <= prof.q75[ok]))
    # intensity weights pull the centre towards the bright side
    cx2, _ = weighted_centroid(xx, yy, np.where(mask, 1.0 + (xx > centre[0]), 0.0), mask)
    assert cx2 > cx


# ------------------------------------------------------------------ power law


def test_power_law_fit_recovers_known_parameters() -> None:
    rng = np.random.default_rng(11)
    size = rng.uniform(8.0, 17.0, 800)
    truth = (5.85, 1.6, 1.3)
    values = truth[0] + truth[1] * size ** (-truth[2]) + rng.normal(0, 0.002, size.size)
    fit = fit_power_law(size, values)
    assert fit is not None and fit.n_points == 800
    for got, err, want in ((fit.y_inf, fit.y_inf_error, truth[0]), (fit.k, fit.k_error, truth[1]),
                           (fit.n, fit.n_error, truth[2])):
        assert abs(got - want) < 4 * err, (got, err, want)
        assert err < 0.3 * abs(want)
    assert fit.rms == pytest.approx(0.002, rel=0.1)
    assert fit_power_law([1.0, 2.0], [3.0, 4.0]) is None


def test_resampled_ranks_are_scipy_average_ranks(rng) -> None:
    from scipy.stats import rankdata

    from processors.correlation import _resampled_ranks
    x = np.round(rng.normal(size=50), 1)  # ties, and more in the resamples
    idx = rng.integers(0, 50, size=(7, 50))
    np.testing.assert_array_equal(_resampled_ranks(x, idx), rankdata(x[idx], axis=1))
