"""The 2-D Gaussian spot fitter against a slow, obvious scipy reference and against the truth.

Synthetic patches: the model (with the w() wrap) evaluated at the bin centres, times a random
number of pixels per bin (1–6, some bins empty), Poisson noise on the sums — the layout the
polar binning produces. These patches are point-sampled, so the fits here use the
point-sampled model (``bin_integrated=False``); the bin-integrated model, the planar
background's bias and the outlier rule have their own files (test_fit_gaussian2d_*.py).
"""

from __future__ import annotations

import functools

import numba as nb
import numpy as np
import pytest
from scipy.optimize import least_squares

import processors.fit_gaussian2d as public
from processors import frame_record
from processors import gaussian2d_kernel as kernel
from processors.fit_gaussian2d import (
    FIT_NO_PEAK,
    FIT_NOT_CONVERGED,
    FIT_OK,
    FIT_OUTSIDE_WINDOW,
    FIT_SINGULAR,
    FIT_TOO_FEW_BINS,
    PARAM_NAMES,
    STATUS_NAMES,
    fit_work_size,
    make_fit_work,
)
from processors.fit_gaussian2d import fit_gaussian2d as fit_gaussian2d_default
from processors.fit_gaussian2d import fit_gaussian2d_into as fit_kernel

#: The patches here are point-sampled: fit them with the point-sampled model.
fit_gaussian2d = functools.partial(fit_gaussian2d_default, bin_integrated=False)

K4LN2 = 4.0 * np.log(2.0)


# ---------------------------------------------------------------- synthetic data + reference

def wrap(x):
    return (x + 180.0) % 360.0 - 180.0


def model(p, q, chi):
    """I(q, φ) at the bin centres, [nq, nchi]; ``p`` of 8 (or 6: no slopes)."""
    amp, q0, dq, phi0, dphi, bg = p[:6]
    bq, bc = (p[6], p[7]) if len(p) == 8 else (0.0, 0.0)
    return (amp * np.exp(-K4LN2 * ((q[:, None] - q0) ** 2 / dq ** 2
                                   + wrap(chi[None, :] - phi0) ** 2 / dphi ** 2)) + bg
            + bq * (q - q.mean())[:, None] + bc * (chi - chi.mean())[None, :])


def p8(*values):
    """Parameters (A, q0, dq, phi0, dphi, B) padded with zero background slopes."""
    return np.array([*values, 0.0, 0.0][:8], dtype=np.float64)


def fit_gaussian2d_into(sums, counts, q, chi, params, errors, work, min_bins, min_snr, max_iterations):
    """The kernel with this file's point-sampled model and default pixel size / outlier rule."""
    return fit_kernel(sums, counts, q, chi, params, errors, work, min_bins, min_snr, max_iterations,
                      0.5 * (q[1] - q[0]), 0.5 * (chi[1] - chi[0]), 7.0, False)


def centres(lo, hi, n):
    step = (hi - lo) / n
    return lo + (np.arange(n) + 0.5) * step


def make_grid(nq=48, nchi=100, q_range=(1.00, 1.12), chi_range=(-30.0, 30.0)):
    return centres(*q_range, nq), centres(*chi_range, nchi)


def make_patch(rng, p, q, chi, max_pixels=6, empty_fraction=0.05):
    counts = rng.integers(1, max_pixels + 1, size=(q.size, chi.size)).astype(np.float64)
    counts[rng.random(counts.shape) < empty_fraction] = 0.0
    sums = rng.poisson(model(p, q, chi) * counts).astype(np.float64)
    return sums, counts


def noise_patch(rng, q, chi, bg):
    counts = rng.integers(1, 7, size=(q.size, chi.size)).astype(np.float64)
    counts[rng.random(counts.shape) < 0.05] = 0.0
    return rng.poisson(bg * counts).astype(np.float64), counts


def random_truth(rng, q, chi, amp_range=(10.0, 1000.0)):
    """A typical spot: FWHM 8–20 bins in q, 5–30 bins in χ, centre away from the edges."""
    dqb = q[1] - q[0]
    dcb = chi[1] - chi[0]
    span_q = q[-1] - q[0]
    span_c = chi[-1] - chi[0]
    return p8(
        np.exp(rng.uniform(*np.log(amp_range))),
        rng.uniform(q[0] + 0.15 * span_q, q[-1] - 0.15 * span_q),
        rng.uniform(8, 20) * dqb,
        rng.uniform(chi[0] + 0.15 * span_c, chi[-1] - 0.15 * span_c),
        rng.uniform(5, 30) * dcb,
        rng.uniform(0.1, 5.0),
    )


def reference_fit(sums, counts, q, chi, p_start):
    """Slow, obvious reference: scipy least squares of the bin means, weight = counts.

    Residuals √c·(f − m) over the non-empty bins, numerical Jacobian, started from
    ``p_start``. Errors: the same Poisson covariance the kernel documents,
    H⁻¹ (Σ c·f·J·Jᵀ) H⁻¹ with H = Σ c·J·Jᵀ, f = A·G + max(b, 0), b the background at the
    spot centre, J from scipy.
    """
    ok = counts > 0
    c = counts[ok]
    m = sums[ok] / c
    w = np.sqrt(c)

    def residuals(p):
        return w * (model(p, q, chi)[ok] - m)

    res = least_squares(residuals, p_start, jac="3-point", method="lm", x_scale="jac",
                        xtol=1e-14, ftol=1e-14, gtol=1e-14)
    p = res.x
    jac = res.jac / w[:, None]
    h = (jac * c[:, None]).T @ jac
    p_var = p.copy()
    p_var[5] = max(p[5] + p[6] * (p[1] - q.mean()) + p[7] * (p[3] - chi.mean()), 0.0)
    p_var[6:] = 0.0
    f = model(p_var, q, chi)[ok]
    mid = (jac * (c * f)[:, None]).T @ jac
    h_inv = np.linalg.inv(h)
    return p, np.sqrt(np.diag(h_inv @ mid @ h_inv))


def assert_failed(params, errors, status, expected):
    assert status in expected, STATUS_NAMES[status]
    assert params.shape == (8,) and errors.shape == (8,)
    assert np.all(np.isnan(params)) and np.all(np.isnan(errors))


# ---------------------------------------------------------------- API facts

def test_status_codes_mirror_the_kernel():
    for name in ("FIT_OK", "FIT_TOO_FEW_BINS", "FIT_NO_PEAK", "FIT_OUTSIDE_WINDOW",
                 "FIT_NOT_CONVERGED", "FIT_SINGULAR"):
        assert getattr(public, name) == getattr(kernel, name) == getattr(frame_record, name), name
    assert (FIT_OK, FIT_TOO_FEW_BINS, FIT_NO_PEAK, FIT_OUTSIDE_WINDOW, FIT_NOT_CONVERGED,
            FIT_SINGULAR) == (0, 1, 2, 3, 4, 5)
    # Exactly 0–5: callers store these next to their own codes (e.g. 6 = frame failed).
    assert set(STATUS_NAMES) == {0, 1, 2, 3, 4, 5}
    assert PARAM_NAMES == ("amplitude", "q0", "dq", "phi0", "dphi", "background", "background_dq",
                           "background_dchi")
    # one definition: the fitter re-exports what the frame record defines
    assert STATUS_NAMES is frame_record.FIT_STATUS_NAMES and PARAM_NAMES is frame_record.PARAM_NAMES


def test_make_fit_work_size():
    work = make_fit_work(48, 100)
    assert work.dtype == np.float64 and work.ndim == 1
    assert work.size == fit_work_size(48, 100) == kernel.work_size(48, 100)
    assert fit_work_size(96, 96) > work.size


# ---------------------------------------------------------------- against the reference

def test_random_spots_match_scipy_reference(rng):
    q, chi = make_grid()
    work = make_fit_work(q.size, chi.size)
    for _ in range(12):
        truth = random_truth(rng, q, chi)
        sums, counts = make_patch(rng, truth, q, chi)
        params, errors, status = fit_gaussian2d(sums, counts, q, chi, work=work)
        assert status == FIT_OK, STATUS_NAMES[status]
        ref_p, ref_e = reference_fit(sums, counts, q, chi, truth)
        # Same minimum to a small fraction of a standard error, same error bars.
        np.testing.assert_array_less(np.abs(params - ref_p), 0.01 * ref_e)
        np.testing.assert_allclose(errors, ref_e, rtol=0.01)


@pytest.mark.parametrize("chi_range, phi0_true, phi0_generated", [
    ((150.0, 210.0), 175.0, 175.0),
    ((150.0, 210.0), 180.0, 180.0),
    ((150.0, 210.0), 190.0, -170.0),     # generated in pyFAI's range, fitted in the window's
    ((-200.0, -150.0), -185.0, 175.0),
    ((-200.0, -150.0), -160.0, -160.0),
    ((-200.0, -150.0), -181.0, -181.0),
])
def test_windows_straddling_180(rng, chi_range, phi0_true, phi0_generated):
    q, chi = make_grid(nq=40, nchi=60, chi_range=chi_range)
    sums, counts = make_patch(rng, p8(150.0, 1.06, 0.02, phi0_generated, 8.0, 1.5),
                              q, chi)
    truth = p8(150.0, 1.06, 0.02, phi0_true, 8.0, 1.5)
    params, errors, status = fit_gaussian2d(sums, counts, q, chi)
    assert status == FIT_OK, STATUS_NAMES[status]
    ref_p, ref_e = reference_fit(sums, counts, q, chi, truth)
    np.testing.assert_array_less(np.abs(params - ref_p), 0.01 * ref_e)
    np.testing.assert_allclose(errors, ref_e, rtol=0.01)
    # phi0 comes back in the window's branch, near the truth.
    assert chi_range[0] <= params[3] <= chi_range[1]
    np.testing.assert_array_less(np.abs(params - truth), 4.5 * errors)


def test_full_circle_window_peak_on_the_seam(rng):
    q, chi = make_grid(nq=24, nchi=360, chi_range=(-180.0, 180.0))
    truth = p8(100.0, 1.06, 0.02, 179.0, 10.0, 1.0)
    sums, counts = make_patch(rng, truth, q, chi)
    params, errors, status = fit_gaussian2d(sums, counts, q, chi)
    assert status == FIT_OK, STATUS_NAMES[status]
    ref_p, ref_e = reference_fit(sums, counts, q, chi, truth)
    np.testing.assert_array_less(np.abs(params - ref_p), 0.01 * ref_e)
    np.testing.assert_allclose(errors, ref_e, rtol=0.01)


# ---------------------------------------------------------------- against the truth

def test_truth_recovered_and_error_bars_honest(rng):
    q, chi = make_grid()
    work = make_fit_work(q.size, chi.size)
    params = np.empty(8)
    errors = np.empty(8)
    pulls = []
    for _ in range(200):
        truth = random_truth(rng, q, chi)
        sums, counts = make_patch(rng, truth, q, chi)
        status = fit_gaussian2d_into(sums, counts, q, chi, params, errors, work, 30, 5.0, 60)
        assert status == FIT_OK, (STATUS_NAMES[status], truth)
        pulls.append((params - truth) / errors)
    pulls = np.array(pulls)
    within = np.mean(np.abs(pulls) < 3.0, axis=0)
    assert np.all(within > 0.95), dict(zip(PARAM_NAMES, within))
    # Neither understated nor grossly overstated.
    spread = pulls.std(axis=0)
    assert np.all((spread > 0.8) & (spread < 1.2)), dict(zip(PARAM_NAMES, spread))


def test_weak_spot_near_threshold_still_fitted(rng):
    q, chi = make_grid()
    truth = p8(3.0, 1.06, 0.03, 0.0, 10.0, 2.0)
    sums, counts = make_patch(rng, truth, q, chi)
    params, errors, status = fit_gaussian2d(sums, counts, q, chi)
    assert status == FIT_OK, STATUS_NAMES[status]
    assert params[0] / errors[0] >= 5.0
    np.testing.assert_array_less(np.abs(params - truth), 4.5 * errors)


def test_gaps_and_garbage_in_empty_bins_are_ignored(rng):
    q, chi = make_grid()
    truth = random_truth(rng, q, chi)
    sums, counts = make_patch(rng, truth, q, chi)
    counts[:, 40:46] = 0.0      # a module gap across the window
    counts[20:23, :] = 0.0
    sums[counts == 0] = 0.0
    clean = fit_gaussian2d(sums, counts, q, chi)
    assert clean[2] == FIT_OK
    dirty_sums = sums.copy()
    dirty_sums[:, 40:46] = np.nan      # what a NaN-filled empty bin looks like
    dirty_sums[20:23, :] = 4.0e9       # or the dtype's maximum
    dirty = fit_gaussian2d(dirty_sums, counts, q, chi)
    assert dirty[2] == FIT_OK
    np.testing.assert_array_equal(dirty[0], clean[0])
    np.testing.assert_array_equal(dirty[1], clean[1])
    np.testing.assert_array_less(np.abs(clean[0] - truth), 4.5 * clean[1])
    # A non-finite value in a bin that claims pixels: the bin is left out, not propagated.
    nan_sums = sums.copy()
    nan_counts = counts.copy()
    nan_sums[10, 10] = np.nan
    nan_counts[30, 70] = np.inf
    emptied = counts.copy()
    emptied[10, 10] = emptied[30, 70] = 0.0
    expected = fit_gaussian2d(np.where(emptied > 0, sums, 0.0), emptied, q, chi)
    got = fit_gaussian2d(nan_sums, nan_counts, q, chi)
    assert got[2] == expected[2] == FIT_OK
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def test_stronger_of_two_spots_is_fitted(rng):
    q, chi = make_grid()
    strong = p8(300.0, 1.03, 0.03, -15.0, 6.0, 1.0)
    weak = p8(100.0, 1.09, 0.02, 15.0, 5.0, 0.0)
    counts = rng.integers(1, 7, size=(q.size, chi.size)).astype(np.float64)
    sums = rng.poisson((model(strong, q, chi) + model(weak, q, chi)) * counts).astype(float)
    params, _, status = fit_gaussian2d(sums, counts, q, chi)
    assert status == FIT_OK
    assert abs(params[1] - strong[1]) < 0.5 * (q[1] - q[0])
    assert abs(params[3] - strong[3]) < 0.5 * (chi[1] - chi[0])
    assert abs(params[2] / strong[2] - 1) < 0.1 and abs(params[4] / strong[4] - 1) < 0.1


# ---------------------------------------------------------------- rejections

def test_pure_poisson_background_is_no_peak(rng):
    q, chi = make_grid()
    work = make_fit_work(q.size, chi.size)
    params = np.empty(8)
    errors = np.empty(8)
    statuses = []
    for bg in rng.uniform(0.1, 5.0, size=200):
        sums, counts = noise_patch(rng, q, chi, bg)
        statuses.append(fit_gaussian2d_into(sums, counts, q, chi, params, errors, work,
                                            30, 5.0, 60))
    statuses = np.array(statuses)
    assert np.mean(statuses == FIT_NO_PEAK) >= 0.99
    assert np.sum(statuses == FIT_OK) == 0


def test_hot_pixel_on_background_is_no_peak(rng):
    q, chi = make_grid()
    for _ in range(20):
        sums, counts = noise_patch(rng, q, chi, rng.uniform(0.1, 5.0))
        i, j = rng.integers(0, q.size), rng.integers(0, chi.size)
        counts[i, j] = 1.0
        sums[i, j] += rng.uniform(20.0, 2000.0)
        assert_failed(*fit_gaussian2d(sums, counts, q, chi), {FIT_NO_PEAK})


@pytest.mark.parametrize("axis", ["q", "chi"])
@pytest.mark.parametrize("fwhm_outside", [0.3, 0.6, 1.0, 2.0])
def test_peak_centred_outside_the_window_is_rejected(rng, axis, fwhm_outside):
    q, chi = make_grid()
    truth = p8(300.0, 1.06, 0.03, 0.0, 8.0, 1.0)
    if axis == "q":
        truth[1] = 1.12 + fwhm_outside * truth[2]
    else:
        truth[3] = -30.0 - fwhm_outside * truth[4]
    sums, counts = make_patch(rng, truth, q, chi)
    assert_failed(*fit_gaussian2d(sums, counts, q, chi), {FIT_OUTSIDE_WINDOW, FIT_NO_PEAK})


def test_peak_just_inside_the_edge_is_fitted(rng):
    q, chi = make_grid()
    truth = p8(300.0, 1.12 - 0.3 * (q[1] - q[0]), 0.03, 0.0, 8.0, 1.0)
    sums, counts = make_patch(rng, truth, q, chi)
    params, errors, status = fit_gaussian2d(sums, counts, q, chi)
    assert status == FIT_OK
    np.testing.assert_array_less(np.abs(params - truth), 4.5 * errors)


def test_too_few_bins(rng):
    q, chi = make_grid()
    truth = random_truth(rng, q, chi)
    sums, counts = make_patch(rng, truth, q, chi)
    counts[:, :] = 0.0
    counts[24, 40:69] = 1.0     # 29 non-empty bins
    assert_failed(*fit_gaussian2d(sums, counts, q, chi), {FIT_TOO_FEW_BINS})
    assert_failed(*fit_gaussian2d(sums, counts, q, chi, min_bins=100), {FIT_TOO_FEW_BINS})
    # Never fewer bins than parameters + 1, whatever min_bins says.
    counts[:, :] = 0.0
    counts[24, 40:46] = 1.0
    assert_failed(*fit_gaussian2d(sums, counts, q, chi, min_bins=0), {FIT_TOO_FEW_BINS})


def test_iteration_limit_gives_not_converged_and_nan(rng):
    q, chi = make_grid()
    truth = random_truth(rng, q, chi, amp_range=(300.0, 1000.0))
    sums, counts = make_patch(rng, truth, q, chi)
    assert_failed(*fit_gaussian2d(sums, counts, q, chi, max_iterations=1), {FIT_NOT_CONVERGED})
    assert fit_gaussian2d(sums, counts, q, chi)[2] == FIT_OK


def test_min_snr_controls_the_significance(rng):
    q, chi = make_grid()
    truth = p8(20.0, 1.06, 0.03, 0.0, 10.0, 1.0)
    sums, counts = make_patch(rng, truth, q, chi)
    params, errors, status = fit_gaussian2d(sums, counts, q, chi)
    assert status == FIT_OK
    snr = params[0] / errors[0]
    assert fit_gaussian2d(sums, counts, q, chi, min_snr=0.9 * snr)[2] == FIT_OK
    assert_failed(*fit_gaussian2d(sums, counts, q, chi, min_snr=1.1 * snr), {FIT_NO_PEAK})


# ---------------------------------------------------------------- hot path

@nb.njit
def _fit_many(sums, counts, q, chi, params, errors, work, min_bins, min_snr, max_iterations, integrated):
    """A per-frame loop in numba: one work buffer, outputs written per frame.

    ``integrated`` is an argument, not a literal: a literal ``False`` would make numba compile
    the whole kernel again for ``Literal[bool](False)`` (seconds), instead of linking the
    kernel already compiled for Python's calls.
    """
    status = np.empty(sums.shape[0], dtype=np.int64)
    for k in range(sums.shape[0]):
        status[k] = fit_kernel(sums[k], counts[k], q, chi, params[k], errors[k], work, min_bins,
                               min_snr, max_iterations, 0.5 * (q[1] - q[0]),
                               0.5 * (chi[1] - chi[0]), 7.0, integrated)
    return status


def test_hot_path_from_numba_reuses_work(rng):
    q, chi = make_grid()
    frames = [make_patch(rng, random_truth(rng, q, chi), q, chi) for _ in range(3)]
    frames.append(noise_patch(rng, q, chi, 1.0))
    sums = np.stack([f[0] for f in frames])
    counts = np.stack([f[1] for f in frames])
    params = np.empty((4, 8))
    errors = np.empty((4, 8))
    work = make_fit_work(q.size, chi.size)
    work[:] = np.nan  # contents on entry must not matter
    status = _fit_many(sums, counts, q, chi, params, errors, work, 30, 5.0, 60, False)
    for k in range(4):
        p, e, s = fit_gaussian2d(sums[k], counts[k], q, chi)
        assert status[k] == s
        np.testing.assert_array_equal(params[k], p)
        np.testing.assert_array_equal(errors[k], e)
    assert list(status) == [FIT_OK, FIT_OK, FIT_OK, FIT_NO_PEAK]


def test_hot_path_reports_bad_sizes_as_singular_instead_of_crashing(rng):
    q, chi = make_grid()
    sums, counts = make_patch(rng, random_truth(rng, q, chi), q, chi)
    params = np.zeros(8)
    errors = np.zeros(8)
    small = np.empty(100)
    assert fit_gaussian2d_into(sums, counts, q, chi, params, errors, small,
                               30, 5.0, 60) == FIT_SINGULAR
    assert np.all(np.isnan(params)) and np.all(np.isnan(errors))
    work = make_fit_work(q.size, chi.size)
    assert fit_gaussian2d_into(sums, counts, q[:-1], chi, params, errors, work,
                               30, 5.0, 60) == FIT_SINGULAR


# ---------------------------------------------------------------- validation

def _valid_inputs():
    q, chi = make_grid(nq=12, nchi=20)
    sums = np.ones((12, 20))
    counts = np.ones((12, 20))
    return dict(sums=sums, counts=counts, q_centers=q, chi_centers=chi)


def _call(args, **kw):
    return fit_gaussian2d(args["sums"], args["counts"], args["q_centers"],
                          args["chi_centers"], **kw)


@pytest.mark.parametrize("name, bad", [
    ("sums", lambda a: a["sums"].astype(np.float32)),
    ("sums", lambda a: a["sums"].tolist()),
    ("sums", lambda a: a["sums"].ravel()),
    ("sums", lambda a: np.ones((12, 40))[:, ::2]),
    ("counts", lambda a: a["counts"].astype(np.int64)),
    ("counts", lambda a: np.ones((12, 21))),
    ("q_centers", lambda a: a["q_centers"][:-1]),
    ("q_centers", lambda a: a["q_centers"][::-1].copy()),
    ("q_centers", lambda a: a["q_centers"].reshape(3, 4)),
    ("chi_centers", lambda a: np.where(np.arange(20) == 3, np.nan, a["chi_centers"])),
    ("chi_centers", lambda a: a["chi_centers"] ** 2 / 100 + 200),
    ("chi_centers", lambda a: np.zeros(20)),
    ("chi_centers", lambda a: np.linspace(-10.0, 10.0, 40)[::2]),
])
def test_invalid_arrays_name_the_argument(name, bad):
    args = _valid_inputs()
    args[name] = bad(args)
    with pytest.raises(ValueError, match=f"^{name}"):
        _call(args)


@pytest.mark.parametrize("name, value", [
    ("min_bins", -1), ("min_bins", 2.5), ("min_snr", float("nan")), ("min_snr", -1.0),
    ("max_iterations", 0), ("max_iterations", True),
    ("work", np.empty(10)), ("work", np.empty(100000, dtype=np.float32)),
])
def test_invalid_options_name_the_argument(name, value):
    with pytest.raises(ValueError, match=f"^{name}"):
        _call(_valid_inputs(), **{name: value})


def test_too_few_bin_centres():
    with pytest.raises(ValueError, match="q_centers|nq"):
        fit_gaussian2d(np.ones((1, 20)), np.ones((1, 20)), np.array([1.0]),
                       centres(-10, 10, 20))
    with pytest.raises(ValueError, match="nq and nchi"):
        make_fit_work(1, 20)
