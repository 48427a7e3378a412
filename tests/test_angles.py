"""The one angle wrap and the one orientation fold (processors.angles)."""

from __future__ import annotations

import numpy as np
import pytest

from processors.angles import ORIENTATION_PERIOD_DEG, fold_orientation, wrap_deg, wrap_deg_exact, wrap_deg_scalar


def test_wrap_deg():
    np.testing.assert_allclose(wrap_deg(np.array([190.0, -190.0, 180.0, -180.0, 540.0])),
                               [-170.0, 170.0, 180.0, 180.0, 180.0])
    assert wrap_deg(-170.0) == -170.0 and wrap_deg(0.0) == 0.0 and wrap_deg(359.0) == pytest.approx(-1.0)
    assert np.isnan(wrap_deg(np.nan))


def test_wrap_deg_scalar_is_the_same_wrap(rng):
    x = np.concatenate([rng.uniform(-1000, 1000, 500), np.arange(-720.0, 721.0, 90.0), [179.999, -179.999]])
    np.testing.assert_allclose([wrap_deg_scalar(float(v)) for v in x], wrap_deg(x), atol=1e-9)
    assert wrap_deg_scalar(-180.0) == 180.0 and wrap_deg_scalar(180.0) == 180.0


def test_wrap_deg_exact_is_wrap_deg_bit_for_bit(rng):
    """The fit kernel writes φ0 with wrap_deg_exact, the reference path with wrap_deg: same bits."""
    x = np.concatenate([rng.uniform(-1000, 1000, 2000), rng.uniform(-200, 200, 2000), rng.normal(0, 1e-12, 50),
                        np.arange(-1080.0, 1081.0, 45.0), np.nextafter(np.arange(-540.0, 541.0, 180.0), np.inf),
                        np.nextafter(np.arange(-540.0, 541.0, 180.0), -np.inf),
                        [179.999, -179.999, 0.0, -0.0, 1e-300, -1e-300, 5e15, -5e15, np.inf, -np.inf]])
    with np.errstate(invalid="ignore"):
        want = wrap_deg(x)
    got = np.array([wrap_deg_exact(float(v)) for v in x])
    assert np.array_equal(got.view(np.int64), want.view(np.int64))  # bit for bit, signed zeros included
    assert np.isnan(wrap_deg_exact(np.nan))


def test_wrap_deg_scalar_leaves_a_difference_inside_the_branch_bit_for_bit(rng):
    """axis_functions skips the per-bin wrap when x − x0 lies in (−180, 180] at both ends of the
    window: the wrap must then return every x − x0 unchanged, to the bit (as the differences
    arise: x − x0 is −0.0 only for x = −0.0 and x0 = +0.0, which no bin centre is)."""
    x = np.concatenate([rng.uniform(-500, 500, 3000), [180.0, -180.0, 0.0, 359.5, -359.5]])
    x0 = np.concatenate([x[:1500] - rng.uniform(-180, 180, 1500), x[1500:3000] - rng.uniform(-1e-9, 1e-9, 1500),
                         [0.0, np.nextafter(0.0, 1.0), 180.0, 179.5, -180.5]])
    t = x - x0
    inside = (t > -180.0) & (t <= 180.0)
    assert inside.sum() > 2900
    got = np.array([wrap_deg_scalar(float(v)) for v in t[inside]])
    assert np.array_equal(got.view(np.int64), t[inside].view(np.int64))


def test_fold_keeps_domains_straddling_180_together():
    """Spots near χ = 180° (±5° domains written as +175 / −175) read 180 ± 5°, not ±175."""
    phi = np.array([175.0, 175.1, -175.0, -174.9, 174.9, np.nan])
    folded, centre = fold_orientation(phi)
    assert 174.5 <= np.mod(centre, 360.0) <= 185.5
    assert np.nanmax(folded) - np.nanmin(folded) < 11
    assert np.isnan(folded[-1])
    # the same orientation modulo the period
    diff = np.mod(folded[:-1] - phi[:-1], ORIENTATION_PERIOD_DEG)
    assert np.all((diff < 1e-9) | (diff > ORIENTATION_PERIOD_DEG - 1e-9))


def test_fold_stays_on_the_branch_of_the_values_and_centres_on_the_median():
    folded, centre = fold_orientation(np.array([55.0, 57.0, 59.0, 57.0 - 90.0]))
    assert centre == pytest.approx(57.0)
    np.testing.assert_allclose(folded, [55.0, 57.0, 59.0, 57.0])


def test_fold_of_nothing_measured():
    folded, centre = fold_orientation(np.full((2, 3), np.nan, dtype=np.float32))
    assert centre == 0.0 and folded.shape == (2, 3) and np.isnan(folded).all()
