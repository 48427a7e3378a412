"""Second spot in a window: the residual test finds two domains, stays silent on one spot on noise."""

import numpy as np
import pytest

from processors.config import FitConfig
from processors.fit_gaussian2d import fit_gaussian2d, make_fit_work
from processors.frame_record import N_PARAMS, PARAM_NAMES, SECOND_FOUND, SECOND_NONE
from processors.gaussian2d_model import gaussian2d_patch
from processors.polar_lut import PolarWindow
from processors.second_spot import CORE_RADIUS, SecondSpotFinder, integrated
from processors.second_spot_kernel import (
    best_residual_box,
    exclude_core_into,
    residual_significance,
    subtract_gaussian_into,
)

NQ = NCHI = 30
Q = 0.95 + (np.arange(NQ) + 0.5) * 0.24 / NQ
CHI = 153.0 + (np.arange(NCHI) + 0.5) * 50.0 / NCHI
WINDOW = PolarWindow("100", (0.95, 1.19), (153.0, 203.0), NQ, NCHI, 0, Q, CHI, NQ * NCHI * 4)
COUNTS = np.full((NQ, NCHI), 4.0)  # four pixels per bin
FOUR_LN2 = 4 * np.log(2)
A, Q0, DQ, PHI0, DPHI = (PARAM_NAMES.index(n) for n in ("amplitude", "q0", "dq", "phi0", "dphi"))


def gaussian(amplitude, q0, dq, phi0, dphi):
    """Counts per pixel of a spot (FWHM widths), each bin's mean as the fit models it."""
    return gaussian2d_patch(np.array([amplitude, q0, dq, phi0, dphi, 0.0, 0.0, 0.0]), Q, CHI)


def plane(level, slope_q, slope_chi):
    """A sloped background: ``level`` at the window's centre, ± the slopes' share at its edges."""
    u = (Q[:, None] - Q.mean()) / np.ptp(Q) * 2
    v = (CHI[None, :] - CHI.mean()) / np.ptp(CHI) * 2
    return level * (1 + slope_q * u + slope_chi * v)


def fit_both(rng, per_pixel, finder, work, fit=FitConfig()):
    """Poisson data of ``per_pixel`` (counts/pixel) → one-spot fit → second-spot search."""
    sums = rng.poisson(COUNTS * per_pixel).astype(np.float64)
    params, errors, status = fit_gaussian2d(sums, COUNTS, Q, CHI)
    second_p, second_e = np.empty(N_PARAMS), np.empty(N_PARAMS)
    if status != 0:
        return status, None, params, errors, second_p, second_e
    result = finder.find(sums, COUNTS, params, errors, second_p, second_e, work, fit)
    return status, result, params, errors, second_p, second_e


@pytest.fixture(scope="module")
def finder():
    return SecondSpotFinder(WINDOW)


@pytest.fixture(scope="module")
def work():
    return make_fit_work(NQ, NCHI)


def test_two_domains_ten_degrees_apart_are_both_found(rng, finder, work):
    strong = (60.0, 1.070, 0.045, 172.0, 4.0)
    weak = (45.0, 1.074, 0.040, 182.0, 4.5)
    for _ in range(5):
        status, result, p, e, sp, se = fit_both(rng, 2.0 + gaussian(*strong) + gaussian(*weak), finder, work)
        assert status == 0 and result.status == SECOND_FOUND, result
        assert integrated(p) > integrated(sp)
        for got, err, truth in ((p, e, strong), (sp, se, weak)):
            for j in (A, Q0, DQ, PHI0, DPHI):
                assert abs(got[j] - truth[j]) < 4 * err[j] + 1e-9, (PARAM_NAMES[j], got[j], truth[j], err[j])


def test_first_is_the_stronger_whichever_the_one_spot_fit_took(rng, finder, work):
    """The one-spot fit is given the weaker spot (the stronger one masked): the search swaps them."""
    strong = (70.0, 1.070, 0.045, 185.0, 4.0)
    weak = (40.0, 1.072, 0.045, 172.0, 4.0)
    sums = rng.poisson(COUNTS * (2.0 + gaussian(*strong) + gaussian(*weak))).astype(np.float64)
    hide = COUNTS.copy()
    hide[:, CHI > 178.5] = 0
    p, e, status = fit_gaussian2d(sums * (hide > 0), hide, Q, CHI)
    assert status == 0 and abs(p[PHI0] - 172.0) < 0.5
    sp, se = np.empty(N_PARAMS), np.empty(N_PARAMS)
    result = finder.find(sums, COUNTS, p, e, sp, se, work, FitConfig())
    assert result.status == SECOND_FOUND
    assert abs(p[PHI0] - 185.0) < 0.3 and abs(sp[PHI0] - 172.0) < 0.3
    assert abs(p[A] - 70) < 4 * e[A] and abs(sp[A] - 40) < 4 * se[A]


def test_one_spot_on_noise_rarely_gets_a_second(finder, work):
    """False positives over 300 noise realisations of one spot, flat or on a ±35 % sloped background."""
    rng = np.random.default_rng(7)
    cases = [2.0 + gaussian(60.0, 1.07, 0.045, 178.0, 4.0),
             plane(10.0, 0.35, -0.35) + gaussian(20.0, 1.07, 0.045, 178.0, 4.0)]
    for per_pixel in cases:
        found = fitted = 0
        for _ in range(150):
            status, result, p, e, sp, se = fit_both(rng, per_pixel, finder, work)
            if status == 0:
                fitted += 1
                found += result.status != SECOND_NONE
                if result.status == SECOND_NONE:
                    assert np.isnan(sp).all() and np.isnan(se).all()
        assert fitted >= 140
        assert found <= 1, f"{found} false second spots in {fitted} fits"


# --- kernels against slow obvious references ---------------------------------------------

def test_subtract_and_exclude_core_match_numpy(rng):
    sums = rng.poisson(5.0, (NQ, NCHI)).astype(np.float64)
    counts = rng.integers(0, 5, (NQ, NCHI)).astype(np.float64)
    out = np.empty_like(sums)
    spot = (30.0, 1.08, 0.05, 190.0, 6.0)
    expected = np.where(counts > 0, sums - counts * gaussian(*spot), 0.0)
    subtract_gaussian_into(sums, counts, Q, CHI, *spot, False, out, np.empty((3, NQ)), np.empty((3, NCHI)))
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    subtract_gaussian_into(sums, counts, Q, CHI, *spot, True, out, np.empty((3, NQ)), np.empty((3, NCHI)))
    np.testing.assert_allclose(out, np.maximum(expected, 0.0), rtol=1e-12, atol=1e-12)
    inside = ((Q[:, None] - 1.08) / 0.05) ** 2 + ((CHI[None, :] - 190.0) / 6.0) ** 2 < CORE_RADIUS ** 2
    n = exclude_core_into(counts, Q, CHI, 1.08, 0.05, 190.0, 6.0, CORE_RADIUS, out)
    np.testing.assert_array_equal(out, np.where(inside, 0.0, counts))
    assert n == np.count_nonzero(inside & (counts > 0))


def slow_best_box(residual, sums, counts, q0, dq, phi0, dphi, radius, bq, bc):
    best = (-np.inf, -1, -1)
    nq, nchi = residual.shape
    for i0 in range(0, nq - bq + 1, max(bq // 2, 1)):
        for j0 in range(0, nchi - bc + 1, max(bc // 2, 1)):
            qc, cc = (Q[i0] + Q[i0 + bq - 1]) / 2, (CHI[j0] + CHI[j0 + bc - 1]) / 2
            if ((qc - q0) / dq) ** 2 + ((cc - phi0) / dphi) ** 2 < radius ** 2:
                continue
            inner = (slice(i0, i0 + bq), slice(j0, j0 + bc))
            mq, mc = min(bq, i0, nq - i0 - bq), min(bc, j0, nchi - j0 - bc)  # symmetric ring
            if mq == 0 and mc == 0:
                continue
            outer = (slice(i0 - mq, i0 + bq + mq), slice(j0 - mc, j0 + bc + mc))
            c_box = counts[inner].sum()
            c_ring = counts[outer].sum() - c_box
            if c_box <= 0 or c_ring <= 0:
                continue
            f = c_box / c_ring
            n, n_ring = residual[inner].sum(), residual[outer].sum() - residual[inner].sum()
            var = sums[inner].sum() + f * f * (sums[outer].sum() - sums[inner].sum())
            z = (n - f * n_ring) / np.sqrt(max(var, 1.0))
            if z > best[0]:
                best = (z, i0 + bq // 2, j0 + bc // 2)
    return best


def test_best_residual_box_matches_a_slow_reference(rng):
    prefix = np.empty((3, NQ + 1, NCHI + 1))
    dq_bin, dchi_bin = Q[1] - Q[0], CHI[1] - CHI[0]
    for bq, bc in ((1, 1), (3, 2), (5, 7)):
        sums = rng.poisson(3.0, (NQ, NCHI)).astype(np.float64)
        counts = rng.integers(0, 5, (NQ, NCHI)).astype(np.float64)
        residual = sums - counts * rng.random((NQ, NCHI))
        args = (1.07, bq * dq_bin, 178.0, bc * dchi_bin, CORE_RADIUS)  # boxes of the spot's FWHM
        z, i, j = best_residual_box(residual, sums, counts, Q, CHI, *args, prefix[0], prefix[1], prefix[2],
                                    np.empty(NCHI))
        zs, iss, js = slow_best_box(residual, sums, counts, *args, bq, bc)
        assert (i, j) == (iss, js)
        assert z == pytest.approx(zs, rel=1e-9)


def test_one_pass_residual_significance_equals_the_two_step_one(rng):
    prefix = np.empty((3, NQ + 1, NCHI + 1))
    sums = rng.poisson(3.0 + gaussian(40.0, 1.08, 0.04, 180.0, 5.0)).astype(np.float64) * 4
    counts = rng.integers(0, 5, (NQ, NCHI)).astype(np.float64)
    spot = (35.0, 1.08, 0.04, 180.0, 5.0)
    residual = np.where(counts > 0, sums - counts * gaussian(*spot), 0.0)
    two_step = best_residual_box(residual, sums * (counts > 0), counts, Q, CHI, *spot[1:], CORE_RADIUS,
                                 prefix[0], prefix[1], prefix[2], np.empty(NCHI))
    one_pass = residual_significance(sums, counts, Q, CHI, *spot, CORE_RADIUS, prefix[0], prefix[1], prefix[2],
                                     np.empty((3, NQ)), np.empty((3, NCHI)), np.empty(NCHI))
    assert one_pass[1:] == two_step[1:]
    assert one_pass[0] == pytest.approx(two_step[0], rel=1e-9)
