"""The fit model of issue 10: separable sums against a per-bin NumPy reference, the planar
background against a constant one, hot pixels and zingers, narrow spots (docs/fit_model.md).

Patches are built pixel by pixel (tests/spot_patches.py), not with the simulator.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import least_squares
from scipy.special import erf
from spot_patches import centres, pixel_patch

from processors.config import ConfigError, PeakConfig, parse_config
from processors.fit_gaussian2d import FIT_NO_PEAK, FIT_OK, STATUS_NAMES, fit_gaussian2d
from processors.gaussian2d_model import gaussian2d_patch
from processors.gaussian2d_moments import EXP_CUTOFF, N_BG_SUMS, N_PHI_ROWS, background_sums, evaluate, moments

K4LN2 = 4.0 * np.log(2.0)


def wrap(x):
    return (x + 180.0) % 360.0 - 180.0


def slow_model(p, q, chi, integrated):
    """The model per bin, one bin at a time in spirit: point value or bin mean (erf)."""
    amp, q0, dq, phi0, dphi, b, bq, bc = p

    def axis(x, x0, w, step, wrapped):
        t = wrap(x - x0) if wrapped else x - x0
        if not integrated:
            return np.exp(-K4LN2 * t ** 2 / w ** 2)
        s = np.sqrt(K4LN2) / w
        return np.sqrt(np.pi) / (2 * s * step) * (erf(s * (t + step / 2)) - erf(s * (t - step / 2)))

    g = np.outer(axis(q, q0, dq, q[1] - q[0], False), axis(chi, phi0, dphi, chi[1] - chi[0], True))
    return g, amp * g + b + bq * (q - q.mean())[:, None] + bc * (chi - chi.mean())[None, :]


def slow_jacobian(p, q, chi, integrated):
    """∂model/∂p per bin by central differences, [8, nq, nchi]."""
    jac = np.empty((8, q.size, chi.size))
    for k in range(8):
        h = 1e-6 * max(abs(p[k]), 1e-3)
        up, dn = p.copy(), p.copy()
        up[k] += h
        dn[k] -= h
        jac[k] = (slow_model(up, q, chi, integrated)[1] - slow_model(dn, q, chi, integrated)[1]) / (2 * h)
    return jac


@pytest.mark.parametrize("integrated", [False, True])
@pytest.mark.parametrize("chi_range, phi0", [((-5.0, 45.0), 20.0), ((150.0, 210.0), -172.0)])
def test_separable_sums_match_a_per_bin_reference(rng, integrated, chi_range, phi0):
    """JᵀWJ, Σc·G·J·Jᵀ, the gradient and χ² of all 8 parameters, with bins far beyond the
    exp cutoff (narrow spot in a wide window) and a window across ±180°."""
    q = centres(0.95, 1.19, 40)
    chi = centres(*chi_range, 50)
    p = np.array([250.0, 1.05, 0.012, phi0, 3.0, 2.0, 4.0, 0.02])
    counts = rng.integers(0, 5, size=(q.size, chi.size)).astype(np.float64)
    g, f = slow_model(p, q, chi, integrated)
    sums = rng.poisson(np.clip(f, 0, None) * counts).astype(np.float64)
    r, s = q - q.mean(), chi - chi.mean()
    bgs = np.empty(N_BG_SUMS)
    background_sums(counts, sums, r, s, bgs, np.empty(5 * chi.size))
    fq, fp, y = np.empty((3, q.size)), np.empty((3, chi.size)), np.empty((chi.size, N_PHI_ROWS))
    h, k, gs, grad = np.empty((8, 8)), np.empty((8, 8)), np.empty(8), np.empty(8)
    sm2 = float(np.sum(np.where(counts > 0, sums ** 2 / np.where(counts > 0, counts, 1), 0)))
    chi2 = evaluate(p, counts, sums, q, chi, r, s, integrated, sm2, fq, fp, y, bgs, h, grad)
    moments(p, counts, sums, q, chi, r, s, 1, integrated, fq, fp, y, bgs, k, gs)

    jac = slow_jacobian(p, q, chi, integrated).reshape(8, -1)
    c = counts.ravel()
    mean = np.where(c > 0, sums.ravel() / np.where(c > 0, c, 1), 0)
    h_ref = (jac * c) @ jac.T
    k_ref = (jac * (c * g.ravel())) @ jac.T
    grad_ref = jac @ (c * (mean - f.ravel()))
    chi2_ref = np.sum(c * (mean - f.ravel()) ** 2)
    scale = np.sqrt(np.outer(np.diag(h_ref), np.diag(h_ref)))
    np.testing.assert_allclose(h / scale, h_ref / scale, atol=1e-6)
    kscale = np.sqrt(np.outer(np.diag(k_ref), np.diag(k_ref)))
    np.testing.assert_allclose(k / kscale, k_ref / kscale, atol=1e-6)
    np.testing.assert_allclose(grad / np.sqrt(np.diag(h_ref) * chi2_ref), grad_ref / np.sqrt(np.diag(h_ref) * chi2_ref),
                               atol=1e-6)
    assert chi2 == pytest.approx(chi2_ref, rel=1e-9)


def test_display_model_is_the_fitted_model():
    q, chi = centres(0.95, 1.19, 30), centres(150.0, 210.0, 40)
    p = np.array([100.0, 1.07, 0.02, -175.0, 6.0, 1.5, -3.0, 0.01])
    for integrated in (False, True):
        # The fit leaves out bins where the Gaussian is below exp(−EXP_CUTOFF) of its peak.
        np.testing.assert_allclose(gaussian2d_patch(p, q, chi, integrated), slow_model(p, q, chi, integrated)[1],
                                   rtol=1e-12, atol=1e-12 + p[0] * np.exp(-EXP_CUTOFF))
    assert np.isnan(gaussian2d_patch(np.full(8, np.nan), q, chi)).all()


# ---------------------------------------------------------------- planar background

def constant_background_fit(sums, counts, q, chi, start):
    """What a constant-background model makes of the data (scipy, bin-integrated Gaussian)."""
    ok = counts > 0

    def residuals(p6):
        return np.sqrt(counts[ok]) * (slow_model(np.r_[p6, 0.0, 0.0], q, chi, True)[1][ok] - sums[ok] / counts[ok])

    return least_squares(residuals, start[:6], x_scale="jac", method="lm").x


def test_planar_background_removes_the_bias_of_a_constant_one():
    """Noise-free weak spot on a background that changes by ±35 % across the window in q
    and χ: the planar model recovers q0 and φ0 exactly, a constant one is pulled uphill."""
    q, chi = centres(0.95, 1.19, 40), centres(-5.0, 45.0, 40)
    truth = np.array([15.0, 1.07, 0.035, 20.0, 6.0, 2.0, 0.7 / 0.24, 0.7 / 50.0])
    lam = slow_model(truth, q, chi, True)[1]
    counts = np.full(lam.shape, 4.0)
    sums = lam * counts
    params, errors, status = fit_gaussian2d(sums, counts, q, chi)
    assert status == FIT_OK
    np.testing.assert_allclose(params, truth, rtol=1e-6, atol=1e-9)
    const = constant_background_fit(sums, counts, q, chi, truth)
    # The constant model's centre moves up the slope by a sizeable part of a Poisson error bar.
    assert const[1] - truth[1] > 0.2 * errors[1] and const[3] - truth[3] > 0.2 * errors[3]
    assert abs(params[1] - truth[1]) < 1e-3 * (const[1] - truth[1])


def test_sloped_background_with_noise_recovered_within_errors(rng):
    q, chi = centres(0.95, 1.19, 40), centres(-5.0, 45.0, 40)
    pulls = []
    for _ in range(20):
        truth = np.array([rng.uniform(15, 100), rng.uniform(1.05, 1.09), 0.03, rng.uniform(15, 25), 5.0, 2.0,
                          rng.choice([-1, 1]) * 2.9, rng.choice([-1, 1]) * 0.014])
        sums, counts = pixel_patch(rng, truth, q, chi, sub=2)
        params, errors, status = fit_gaussian2d(sums, counts, q, chi)
        assert status == FIT_OK, STATUS_NAMES[status]
        pulls.append((params - truth) / errors)
    assert np.all(np.abs(pulls) < 4.5)


# ---------------------------------------------------------------- hot pixels, zingers

@pytest.mark.parametrize("where", ["background", "flank", "peak", "edge"])
def test_a_2000_count_pixel_anywhere_leaves_the_fit_as_without_it(where):
    q, chi = centres(0.95, 1.19, 40), centres(-5.0, 45.0, 40)   # 2-px bins: 80 × 80 pixels
    pixel = {"background": (10, 70), "flank": (46, 40), "peak": (40, 40), "edge": (0, 79)}[where]
    for seed, amp in enumerate((40.0, 300.0)):
        truth = [amp, 1.07, 0.03, 20.0, 5.0, 2.0, 0.0, 0.0]
        clean = fit_gaussian2d(*pixel_patch(np.random.default_rng(seed), truth, q, chi), q, chi)
        hot = fit_gaussian2d(*pixel_patch(np.random.default_rng(seed), truth, q, chi, hot=[(*pixel, 2000.0)]),
                             q, chi)
        assert clean[2] == FIT_OK and hot[2] == FIT_OK, (where, amp, STATUS_NAMES[hot[2]])
        np.testing.assert_array_less(np.abs(hot[0] - clean[0]), 0.5 * clean[1])


def test_hot_pixels_and_a_zinger_with_one_pixel_bins(rng):
    """Twelve hot pixels and a zinger in a window of 1-px bins: the spot is still fitted."""
    q, chi = centres(0.95, 1.19, 60), centres(-5.0, 45.0, 60)
    truth = [60.0, 1.07, 0.03, 20.0, 4.0, 1.0, 2.0, 0.01]
    hot = [(int(rng.integers(0, 60)), int(rng.integers(0, 60)), 500.0) for _ in range(12)]
    hot.append((31, 29, 2000.0))
    clean = fit_gaussian2d(*pixel_patch(np.random.default_rng(1), truth, q, chi, sub=1), q, chi,
                           pixel_size=(0.004, 50 / 60))
    dirty = fit_gaussian2d(*pixel_patch(np.random.default_rng(1), truth, q, chi, sub=1, hot=hot), q, chi,
                           pixel_size=(0.004, 50 / 60))
    assert clean[2] == FIT_OK and dirty[2] == FIT_OK, STATUS_NAMES[dirty[2]]
    np.testing.assert_array_less(np.abs(dirty[0] - clean[0]), 1.0 * clean[1])


def test_without_the_outlier_rule_a_hot_pixel_captures_the_fit():
    """The rule is what makes the difference (outlier_sigma = 0 turns it off)."""
    q, chi = centres(0.95, 1.19, 40), centres(-5.0, 45.0, 40)
    truth = [40.0, 1.07, 0.03, 20.0, 5.0, 2.0, 0.0, 0.0]
    data = pixel_patch(np.random.default_rng(0), truth, q, chi, hot=[(10, 70, 2000.0)])
    clean = fit_gaussian2d(*pixel_patch(np.random.default_rng(0), truth, q, chi), q, chi)
    off = fit_gaussian2d(*data, q, chi, outlier_sigma=0.0)
    assert off[2] != FIT_OK or np.any(np.abs(off[0] - clean[0]) > 3 * clean[1])


def test_hot_pixel_alone_is_still_no_peak(rng):
    q, chi = centres(0.95, 1.19, 40), centres(-5.0, 45.0, 40)
    for k in range(10):
        pixel = (int(rng.integers(0, 80)), int(rng.integers(0, 80)))
        data = pixel_patch(rng, [0.0, 1.07, 0.03, 20.0, 5.0, 2.0, 1.0, 0.01], q, chi, hot=[(*pixel, 2000.0)])
        assert fit_gaussian2d(*data, q, chi)[2] == FIT_NO_PEAK


# ---------------------------------------------------------------- narrow spots

@pytest.mark.parametrize("sub", [1, 2])
def test_narrow_spots_have_unbiased_widths_and_amplitudes(sub):
    """FWHM 1–2 bins: the bin-integrated model recovers widths and amplitude (median within
    3 % and 4 %); the point-sampled one overestimates widths by 5–20 %."""
    step_q, step_c = 0.004, 1.0
    q, chi = centres(1.0, 1.0 + 40 * step_q, 40), centres(0.0, 40.0, 40)
    for fwhm in (1.0, 1.5, 2.0):
        rng = np.random.default_rng(int(10 * fwhm) + sub)
        fits, point = [], []
        for _ in range(12):
            truth = np.array([1000.0, 1.08 + rng.uniform(-0.5, 0.5) * step_q, fwhm * step_q,
                              20.0 + rng.uniform(-0.5, 0.5), fwhm * step_c, 1.0, 0.0, 0.0])
            sums, counts = pixel_patch(rng, truth, q, chi, sub=sub)
            size = (step_q / sub, step_c / sub)
            p, _, status = fit_gaussian2d(sums, counts, q, chi, pixel_size=size)
            assert status == FIT_OK, (fwhm, STATUS_NAMES[status])
            fits.append(p[:5] / truth[:5])
            p, _, status = fit_gaussian2d(sums, counts, q, chi, pixel_size=size, bin_integrated=False)
            point.append(p[:5] / truth[:5])
        med = np.median(fits, axis=0)
        assert abs(med[2] - 1) < 0.03 and abs(med[4] - 1) < 0.03 and abs(med[0] - 1) < 0.04, (fwhm, med)
        assert np.nanmedian(point, axis=0)[2] > 1.04


def test_spots_narrower_than_a_bin_but_wider_than_half_a_pixel_are_kept():
    """1-px bins, FWHM 0.7 px, random centres: no longer all rejected as 'below one bin'.
    A spot this narrow is measurable only where its share in each bin depends on its width
    (not centred on a bin's centre or edge), so only part of them are fitted; those have
    the width within 10 % (median)."""
    q, chi = centres(1.0, 1.16, 40), centres(0.0, 40.0, 40)
    rng = np.random.default_rng(5)
    widths = []
    for _ in range(20):
        truth = np.array([1000.0, 1.08 + rng.uniform(-0.5, 0.5) * 0.004, 0.7 * 0.004,
                          20.0 + rng.uniform(-0.5, 0.5), 0.7, 1.0, 0.0, 0.0])
        p, _, status = fit_gaussian2d(*pixel_patch(rng, truth, q, chi, sub=1), q, chi, pixel_size=(0.004, 1.0))
        if status == FIT_OK:
            widths.append(p[[2, 4]] / truth[[2, 4]])
    assert len(widths) >= 5
    np.testing.assert_allclose(np.median(widths, axis=0), 1.0, atol=0.1)


# ---------------------------------------------------------------- config and windows

def test_config_keys_of_the_fit_model(tmp_path):
    poni = tmp_path / "g.poni"
    poni.write_text("x")
    base = '[geometry]\nponi = "g.poni"\n[scan]\nshape = [2, 2]\n[[peak]]\nname = "100"\nhkl = [1, 0, 0]\n' \
           'q = [1.0, 1.1]\nchi = [0.0, 10.0]\n'
    cfg = parse_config(base + "pixels_per_bin = 1\n[fit]\noutlier_sigma = 8\n", tmp_path / "c.toml")
    assert cfg.peaks[0].pixels_per_bin == 1.0 and cfg.fit.outlier_sigma == 8.0
    default = parse_config(base, tmp_path / "c.toml")
    assert default.peaks[0].pixels_per_bin == 2.0 and default.fit.outlier_sigma == 7.0
    assert parse_config(base + "[fit]\noutlier_sigma = 0\n", tmp_path / "c.toml").fit.outlier_sigma == 0.0
    for bad, key in (("pixels_per_bin = 0.5\n", "pixels_per_bin"), ("[fit]\noutlier_sigma = 2\n", "outlier_sigma"),
                     ("[fit]\nmin_bins = 8\n", "min_bins")):
        with pytest.raises(ConfigError, match=key):
            parse_config(base + bad, tmp_path / "c.toml")


def test_windows_carry_their_pixel_size_and_one_pixel_bins():
    from processors.geometry import pixel_geometry
    from processors.polar_lut import build_polar_lut

    from conftest import DEMO_DATA
    g = pixel_geometry((DEMO_DATA / "eiger1m_demo.poni").read_text())
    two = PeakConfig("two", (0.95, 1.19), (10.0, 60.0), hkl=(1, 0, 0))
    one = PeakConfig("one", (0.95, 1.19), (10.0, 60.0), hkl=(1, 0, 0), pixels_per_bin=1.0)
    w2, w1 = build_polar_lut(g, g.mask, [two, one]).windows
    # EIGER 1M at 0.1 m near q = 1.07: a pixel spans ~0.005 1/Å and ~0.3°
    assert 0.003 < w2.pixel_q < 0.008 and 0.15 < w2.pixel_chi < 0.5
    assert (w1.pixel_q, w1.pixel_chi) == (w2.pixel_q, w2.pixel_chi)
    assert abs(w1.nq - 2 * w2.nq) <= 1 and (w1.nchi >= 1.9 * w2.nchi or w1.nchi == 96)
