"""Polar lookup table and per-frame kernels against pyFAI and an obvious NumPy reference."""

import numpy as np
import pytest

from processors.config import PeakConfig
from processors.geometry import combine_masks, load_integrator, pixel_geometry
from processors.polar_lut import build_polar_lut, wrap_into_window
from processors.polar_roi import PolarROI, sentinel_of

PEAKS = (
    PeakConfig("plain", (0.95, 1.19), (10.0, 60.0), hkl=(1, 0, 0), bins=(25, 96)),
    PeakConfig("straddle", (0.95, 1.19), (157.0, 207.0), hkl=(1, 0, 0), bins=(25, 96)),
    PeakConfig("negative", (1.40, 1.70), (-200.0, -150.0), hkl=(1, 1, 0), bins=(30, 80)),
)


@pytest.fixture(scope="module")
def geometry():
    from conftest import DEMO_DATA
    text = (DEMO_DATA / "eiger1m_demo.poni").read_text()
    return text, pixel_geometry(text)


def naive_polar_sums(frame, q, chi, mask, peak, nq, nchi):
    """Obvious reference: loop over windows with np.histogram2d on unmasked, non-sentinel pixels."""
    sentinel = np.iinfo(frame.dtype).max
    w = wrap_into_window(chi, peak.chi[0])
    ok = (~mask) & (frame != sentinel) & (q >= peak.q[0]) & (q < peak.q[1]) & (w < peak.chi[1])
    edges_q = peak.q[0] + (peak.q[1] - peak.q[0]) / nq * np.arange(nq + 1)
    edges_c = peak.chi[0] + (peak.chi[1] - peak.chi[0]) / nchi * np.arange(nchi + 1)
    iq = np.floor((q[ok] - peak.q[0]) / ((peak.q[1] - peak.q[0]) / nq)).astype(int)
    ic = np.floor((w[ok] - peak.chi[0]) / ((peak.chi[1] - peak.chi[0]) / nchi)).astype(int)
    sums = np.zeros((nq, nchi))
    counts = np.zeros((nq, nchi))
    np.add.at(sums, (iq, ic), frame[ok].astype(np.float64))
    np.add.at(counts, (iq, ic), 1)
    return sums, counts, edges_q, edges_c


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_kernel_matches_naive_reference_with_sentinel_and_user_mask(geometry, rng, dtype):
    _, g = geometry
    user = np.zeros(g.shape, bool)
    user[380:420, 250:320] = True  # a user mask across the straddling window
    mask = combine_masks(g.shape, g.mask, user)
    lut = build_polar_lut(g, mask, PEAKS)
    roi = PolarROI(lut, mask)
    frame = rng.poisson(4.0, g.shape).astype(dtype)
    frame[g.mask] = np.iinfo(dtype).max
    hot = rng.choice(frame.size, 2000, replace=False)
    frame.reshape(-1)[hot] = np.iinfo(dtype).max  # pixels the detector flagged in this frame only
    roi.accumulate(frame)
    for k, peak in enumerate(PEAKS):
        sums, counts = roi.window_sums(k)
        ref_s, ref_c, _, _ = naive_polar_sums(frame, g.q_A, g.chi_deg, mask, peak, *peak.bins)
        np.testing.assert_array_equal(counts, ref_c)
        np.testing.assert_array_equal(sums, ref_s)
    total, n = roi.valid_sum(frame)
    good = (~mask) & (frame != np.iinfo(dtype).max)
    assert (total, n) == (int(frame[good].sum(dtype=np.int64)), int(good.sum()))


def test_kernel_agrees_with_pyfai_integrate2d(geometry, rng):
    """Same bins, no pixel splitting: identical sums and counts up to pyFAI's own rounding.

    pyFAI casts bin numbers with C truncation, so it puts pixels lying just below the
    window into its first bin; those pixels are masked for pyFAI here so both see the
    same pixels. Windows beyond ±180° are given to pyFAI on its [0, 360) branch. pyFAI
    stretches the upper range bound by a float32 epsilon (``calc_upper_bound``), so a
    pixel within ~1e-5 of a bin edge (in bin widths) may land in the neighbouring bin:
    only such pixels may differ.
    """
    text, g = geometry
    ai = load_integrator(text)
    lut = build_polar_lut(g, g.mask, PEAKS)
    roi = PolarROI(lut, g.mask)
    frame = rng.poisson(5.0, g.shape).astype(np.uint32)
    frame[g.mask] = 2**32 - 1
    roi.accumulate(frame)
    for k, window in enumerate(lut.windows):
        lo, hi = window.chi_range
        wrapped = wrap_into_window(g.chi_deg, lo)
        outside = (g.q_A < window.q_range[0]) | (g.q_A >= window.q_range[1]) | (wrapped >= hi)
        if -180 <= lo and hi <= 180:
            ai.setChiDiscAtPi()
            azimuth_range = (lo, hi)
        else:
            ai.setChiDiscAtZero()
            azimuth_range = (lo % 360, lo % 360 + (hi - lo))
        res = ai.integrate2d_ng(frame.astype(np.float64), window.nq, window.nchi, unit="q_A^-1",
                                radial_range=window.q_range, azimuth_range=azimuth_range,
                                method=("no", "histogram", "cython"), correctSolidAngle=False,
                                polarization_factor=None, mask=g.mask | outside)
        sums, counts = roi.window_sums(k)
        py_counts = np.asarray(res.count).reshape(window.nchi, window.nq).T
        py_sums = np.asarray(res.sum_signal).reshape(window.nchi, window.nq).T
        pixels = lut.pixel_index[(lut.bin_index >= window.offset) & (lut.bin_index < window.offset + window.n_bins)]
        pos_q = (g.q_A.reshape(-1)[pixels] - window.q_range[0]) / ((window.q_range[1] - window.q_range[0]) / window.nq)
        pos_c = (wrapped.reshape(-1)[pixels] - lo) / ((hi - lo) / window.nchi)
        near_edge = ((np.abs(pos_q - np.round(pos_q)) < 2e-5) | (np.abs(pos_c - np.round(pos_c)) < 2e-5)).sum()
        assert near_edge < 10
        assert np.abs(counts - py_counts).sum() <= 2 * near_edge
        assert counts.sum() == py_counts.sum() and sums.sum() == py_sums.sum()
        if near_edge == 0:
            np.testing.assert_array_equal(counts, py_counts)
            np.testing.assert_array_equal(sums, py_sums)
        np.testing.assert_allclose(window.q_centers, res.radial, rtol=1e-6)
        assert counts.sum() == window.n_pixels > 5000
        # mean intensity where pyFAI has data; an empty bin is not a zero count
        filled = (counts > 0) & (counts == py_counts)
        np.testing.assert_allclose(sums[filled] / counts[filled],
                                   np.asarray(res.intensity).T[filled], rtol=1e-6)


def test_straddling_window_is_contiguous_in_its_branch(geometry):
    _, g = geometry
    lut = build_polar_lut(g, g.mask, PEAKS[1:2])
    w = lut.windows[0]
    assert w.chi_centers[0] > 157 and w.chi_centers[-1] < 207
    chi = g.chi_deg.reshape(-1)[lut.pixel_index]
    assert (chi > 150).any() and (chi < -150).any()  # both sides of ±180 are in the window


def test_default_bins_follow_pixel_resolution(geometry):
    _, g = geometry
    peak = PeakConfig("auto", (0.95, 1.19), (10.0, 60.0), hkl=(1, 0, 0))
    w = build_polar_lut(g, g.mask, [peak]).windows[0]
    # EIGER 1M at 0.1 m: ~0.0048 1/Å and ~0.26° per pixel near q = 1.07, two pixels per bin
    assert 20 <= w.nq <= 30 and 80 <= w.nchi <= 96


def test_frame_of_wrong_shape_or_dtype_rejected(geometry):
    _, g = geometry
    roi = PolarROI(build_polar_lut(g, g.mask, PEAKS[:1]), g.mask)
    with pytest.raises(ValueError, match="does not match the detector"):
        roi.accumulate(np.zeros((10, 10), np.uint32))
    with pytest.raises(ValueError, match="dtype float32 not supported"):
        roi.accumulate(np.zeros(g.shape, np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64])
def test_sentinel_is_the_dtype_maximum(dtype):
    # the kernels' sentinel comes from sentinel_of, not np.iinfo: the same number
    assert sentinel_of(np.dtype(dtype)) == int(np.iinfo(dtype).max)


def reference_window(g, mask, peak):
    """The obvious way (the code before window_pixels): valid pixels in the q range, χ taken into
    the window's branch, steps and extents from each pixel's row and column neighbours."""
    from processors.angles import wrap_deg
    from processors.polar_lut import _default_bins

    q, chi = g.q_A, g.chi_deg
    rows, cols = np.nonzero(~mask & (q >= peak.q[0]) & (q < peak.q[1]))
    w = wrap_into_window(chi[rows, cols], peak.chi[0])
    rows, cols = rows[w < peak.chi[1]], cols[w < peak.chi[1]]
    r1, c1 = np.minimum(rows + 1, q.shape[0] - 1), np.minimum(cols + 1, q.shape[1] - 1)
    dq_r, dq_c = q[r1, cols] - q[rows, cols], q[rows, c1] - q[rows, cols]
    dc_r, dc_c = wrap_deg(chi[r1, cols] - chi[rows, cols]), wrap_deg(chi[rows, c1] - chi[rows, cols])

    def median_positive(v):
        return float(np.median(v[v > 0]))

    if peak.bins is not None:
        nq, nchi = peak.bins
    else:
        ppb = peak.pixels_per_bin
        nq = _default_bins(peak.q[1] - peak.q[0], median_positive(np.hypot(dq_r, dq_c)), ppb)
        nchi = _default_bins(peak.chi[1] - peak.chi[0], median_positive(np.hypot(dc_r, dc_c)), ppb)
    extents = (median_positive(np.abs(dq_r) + np.abs(dq_c)), median_positive(np.abs(dc_r) + np.abs(dc_c)))
    return rows * q.shape[1] + cols, nq, nchi, extents


def test_a_lut_from_remembered_window_pixels_is_the_lut_from_scratch(geometry, rng):
    """Each header may bring a new mask: the second LUT on a geometry reuses the windows'
    pixels found for the first (``window_pixels``) and must equal one built on a fresh copy
    of the geometry, for masks that cut into the windows, with fixed and automatic bins."""
    from dataclasses import replace

    text, g = geometry
    peaks = PEAKS + (PeakConfig("auto", (0.95, 1.19), (-40.0, 40.0), hkl=(1, 0, 0)),)
    build_polar_lut(g, g.mask, peaks)  # fills g.derived
    assert any(key[0] == "window_pixels" for key in g.derived)
    for trial in range(3):
        user = rng.random(g.shape) < 0.2 * trial  # none, then a fifth, then two fifths of the pixels
        user[380:420, 250:320] = trial > 0
        mask = combine_masks(g.shape, g.mask, user)
        warm = build_polar_lut(g, mask, peaks)
        cold = build_polar_lut(replace(g, derived={}), mask, peaks)
        assert np.array_equal(warm.pixel_index, cold.pixel_index)
        assert np.array_equal(warm.bin_index, cold.bin_index)
        for a, b in zip(warm.windows, cold.windows):
            assert (a.nq, a.nchi, a.offset, a.n_pixels, a.pixel_q, a.pixel_chi) == \
                   (b.nq, b.nchi, b.offset, b.n_pixels, b.pixel_q, b.pixel_chi)
        assert not mask.reshape(-1)[warm.pixel_index].any()
        for window, peak in zip(warm.windows, peaks):
            pixels, nq, nchi, extents = reference_window(g, mask, peak)
            mine = np.sort(warm.pixel_index[(warm.bin_index >= window.offset)
                                            & (warm.bin_index < window.offset + window.n_bins)])
            assert (window.nq, window.nchi, (window.pixel_q, window.pixel_chi)) == (nq, nchi, extents)
            # the LUT keeps the pixels whose bin is inside the window (all but float edge cases)
            assert np.isin(mine, pixels).all() and mine.size >= pixels.size - 2
    rows, cols, chi = next(v for k, v in g.derived.items() if k[0] == "window_pixels")
    with pytest.raises(ValueError):
        rows[0] = 0  # shared by every later setup: read-only


def test_the_bin_coverage_warning_counts_the_bins_that_see_valid_pixels(geometry, caplog):
    """The LUT warns when under half a window's bins see a valid pixel; the share it states is
    the number of distinct bins among the window's pixels (np.unique, the obvious count)."""
    import logging

    _, g = geometry
    peak = PEAKS[0]
    lut = build_polar_lut(g, g.mask, [peak])
    window = lut.windows[0]
    rows, cols = np.divmod(lut.pixel_index.astype(np.int64), g.shape[1])
    seen = []
    for keep_share in (0.9, 0.45, 0.2, 0.05):
        # mask every pixel of the bins above a cut, so only a share of the bins keep pixels
        cut = int(keep_share * window.n_bins)
        mask = g.mask.copy()
        mask[rows[lut.bin_index >= cut], cols[lut.bin_index >= cut]] = True
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="processors.polar_lut"):
            masked = build_polar_lut(g, mask, [peak])
        covered = np.unique(masked.bin_index).size / window.n_bins
        seen.append(covered < 0.5)
        warned = [r.getMessage() for r in caplog.records if "bins see valid pixels" in r.getMessage()]
        if covered < 0.5:
            assert warned == [f"config: [[peak]] '{peak.name}': only {100 * covered:.0f} % of the window's bins "
                              "see valid pixels (gaps or detector edge)"]
        else:
            assert warned == []
    assert seen == [False, True, True, True]  # both branches were taken
