"""The polar LUT's build through numba kernels against the numpy build it replaced, bit for bit."""

from dataclasses import replace

import numpy as np
import pytest

from processors.config import PeakConfig
from processors.geometry import combine_masks, pixel_geometry
from processors.polar_lut import (
    MIN_WINDOW_PIXELS,
    PolarWindow,
    _default_bins,
    build_polar_lut,
    pixel_steps,
    window_pixels,
)
from processors.polar_lut_kernel import kept_positive_median, valid_window_pixels, window_bins

PEAKS = (
    PeakConfig("auto", (0.95, 1.19), (10.0, 60.0), hkl=(1, 0, 0)),
    PeakConfig("straddle", (0.95, 1.19), (157.0, 207.0), hkl=(1, 0, 0)),
    PeakConfig("negative", (1.40, 1.70), (-200.0, -150.0), hkl=(1, 1, 0), bins=(30, 80)),
    PeakConfig("coarse", (1.40, 1.70), (-8.0, 8.0), hkl=(1, 1, 0), pixels_per_bin=3.5),
    PeakConfig("overlap", (1.10, 1.50), (0.0, 45.0), hkl=(1, 1, 1)),
)


@pytest.fixture(scope="module")
def geometry():
    from conftest import DEMO_DATA
    return pixel_geometry((DEMO_DATA / "eiger1m_demo.poni").read_text())


def numpy_polar_lut(geometry, mask, peaks):
    """The build before the kernels (numpy gathers, filters, ``np.median`` of filtered copies,
    ``floor`` and casts), kept verbatim as the reference: ``(windows, pixel_index, bin_index)``."""
    def median_positive(values):
        return float(np.median(values[values > 0]))

    q = geometry.q_A
    valid = ~mask
    windows, pixel_parts, bin_parts = [], [], []
    offset = 0
    for peak in peaks:
        q_lo, q_hi = peak.q
        c_lo, c_hi = peak.chi
        rows, cols, w = window_pixels(geometry, peak.q, peak.chi)
        keep = valid[rows, cols]
        rows, cols, w = rows[keep], cols[keep], w[keep]
        assert rows.size >= MIN_WINDOW_PIXELS
        dq, dchi, eq, echi = (a[keep] for a in pixel_steps(geometry, peak.q, peak.chi))
        if peak.bins is not None:
            nq, nchi = peak.bins
        else:
            nq = _default_bins(q_hi - q_lo, median_positive(dq), peak.pixels_per_bin)
            nchi = _default_bins(c_hi - c_lo, median_positive(dchi), peak.pixels_per_bin)
        pixel_q, pixel_chi = median_positive(eq), median_positive(echi)
        qq = q[rows, cols]
        delta_q = (q_hi - q_lo) / nq
        delta_c = (c_hi - c_lo) / nchi
        iq = np.floor((qq - q_lo) / delta_q).astype(np.int64)
        ic = np.floor((w - c_lo) / delta_c).astype(np.int64)
        ok = (iq >= 0) & (iq < nq) & (ic >= 0) & (ic < nchi)
        iq, ic, rows, cols = iq[ok], ic[ok], rows[ok], cols[ok]
        pixel_parts.append(rows.astype(np.int64) * q.shape[1] + cols)
        bin_parts.append((offset + iq * nchi + ic).astype(np.int32))
        windows.append(PolarWindow(
            name=peak.name, q_range=(q_lo, q_hi), chi_range=(c_lo, c_hi), nq=nq, nchi=nchi, offset=offset,
            q_centers=q_lo + (np.arange(nq) + 0.5) * delta_q, chi_centers=c_lo + (np.arange(nchi) + 0.5) * delta_c,
            n_pixels=int(rows.size), pixel_q=pixel_q, pixel_chi=pixel_chi))
        offset += nq * nchi
    pixel_index = np.concatenate(pixel_parts).astype(np.int32)
    bin_index = np.concatenate(bin_parts)
    order = np.argsort(pixel_index, kind="stable")
    return windows, pixel_index[order], bin_index[order]


def masks(g, rng):
    """Masks that move the windows' medians and bins: none beyond the detector's, scattered dead
    pixels (few and many), blocks across the straddling and negative windows, every other row."""
    yield g.mask
    for share in (1e-4, 0.01, 0.3, 0.7):
        yield combine_masks(g.shape, g.mask, rng.random(g.shape) < share)
    block = np.zeros(g.shape, bool)
    block[300:520, 150:420] = True
    yield combine_masks(g.shape, g.mask, block)
    rows = np.zeros(g.shape, bool)
    rows[::2] = True
    yield combine_masks(g.shape, g.mask, rows)
    # the pixels of each automatic window with the finest q and χ steps: the medians, and the bins, go up
    for peak in (PEAKS[0], PEAKS[3], PEAKS[4]):
        r, c, _ = window_pixels(g, peak.q, peak.chi)
        dq, dchi, _, _ = pixel_steps(g, peak.q, peak.chi)
        fine = np.zeros(g.shape, bool)
        fine[r, c] = (dq < np.quantile(dq, 0.7)) | (dchi < np.quantile(dchi, 0.7))
        yield combine_masks(g.shape, g.mask, fine)


def test_the_kernel_build_is_the_numpy_build_bit_for_bit(geometry, rng):
    """Every table and number of every window, for masks that change how many pixels, which
    ones and (through the medians) how many bins: identical, also on a geometry whose steps,
    orders and pixels are found afresh."""
    tried = set()
    for mask in masks(geometry, rng):
        for g in (geometry, replace(geometry, derived={})):
            lut = build_polar_lut(g, mask, PEAKS)
            windows, pixel_index, bin_index = numpy_polar_lut(g, mask, PEAKS)
            assert lut.pixel_index.dtype == pixel_index.dtype and lut.bin_index.dtype == bin_index.dtype
            np.testing.assert_array_equal(lut.pixel_index, pixel_index)
            np.testing.assert_array_equal(lut.bin_index, bin_index)
            for mine, ref in zip(lut.windows, windows, strict=True):
                assert (mine.name, mine.q_range, mine.chi_range, mine.nq, mine.nchi, mine.offset, mine.n_pixels) == \
                       (ref.name, ref.q_range, ref.chi_range, ref.nq, ref.nchi, ref.offset, ref.n_pixels)
                # the medians exactly, not approximately: they set the fit's lower width limits
                assert (mine.pixel_q, mine.pixel_chi) == (ref.pixel_q, ref.pixel_chi)
                np.testing.assert_array_equal(mine.q_centers, ref.q_centers)
                np.testing.assert_array_equal(mine.chi_centers, ref.chi_centers)
                tried.add((mine.name, mine.nq, mine.nchi, mine.pixel_q, mine.pixel_chi))
    # the masks did move the medians and, through them, the automatic bins (else the equality proves less)
    for name in ("auto", "coarse", "overlap"):
        assert len({t[3:] for t in tried if t[0] == name}) >= 3, name
        assert len({t[1:3] for t in tried if t[0] == name}) >= 2, name


def test_kept_positive_median_is_numpy_median_for_odd_even_ties_and_none(rng):
    for n in (1, 2, 3, 4, 5, 10, 101, 1000):
        for trial in range(20):
            values = rng.choice([-1.0, 0.0, 0.5, 1.0, 1.0, 2.0, 3.25], n) if trial % 2 else rng.normal(0.5, 1.0, n)
            if trial % 5 == 0:
                values[rng.random(n) < 0.2] = np.nan  # never positive: left out, as by `values > 0`
            keep = rng.random(n) < 0.7
            order = np.argsort(values, kind="stable").astype(np.int32)
            chosen = values[keep]
            chosen = chosen[chosen > 0]
            got = kept_positive_median(values, order, keep)
            if chosen.size == 0:
                assert np.isnan(got)
            else:
                assert got == float(np.median(chosen)), (n, trial)


def test_window_bins_keeps_the_pixels_inside_the_window_in_order():
    q = np.array([[0.0, 1.0, 1.5, 2.0], [np.nan, 1.999999, 1.0000001, -np.inf]])
    rows = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    cols = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    chi = np.array([5.0, 5.0, 19.9, 5.0, 5.0, 10.0, 0.0, 5.0])
    keep = np.array([True, True, True, True, True, True, False, True])
    pixels = np.empty(8, np.int64)
    bins = np.empty(8, np.int32)
    per_bin = np.empty(4 * 2, np.int64)
    n = window_bins(rows, cols, chi, keep, q, 1.0, 0.25, 4, 0.0, 10.0, 2, 100, pixels, bins, per_bin)
    # q 0 below, q 2.0 at the upper edge, NaN and -inf out; the masked pixel not looked at
    assert n == 3
    assert pixels[:n].tolist() == [1, 2, 5]
    assert bins[:n].tolist() == [100 + 0 * 2 + 0, 100 + 2 * 2 + 1, 100 + 3 * 2 + 1]
    assert per_bin.tolist() == [1, 0, 0, 0, 0, 1, 0, 1]


def test_valid_window_pixels_marks_the_unmasked():
    mask = np.array([[True, False], [False, True]])
    keep = np.empty(4, np.bool_)
    assert valid_window_pixels(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), mask, keep) == 2
    assert keep.tolist() == [False, True, True, False]
