"""Hot pixels found on the fly: planted ones are found, moving narrow spots and zingers never are."""

import numpy as np
import pytest

from processors.hot_pixels import HotPixelRule, HotPixelTracker, spike_test_flags
from processors.hot_pixels_kernel import accumulate_counting_spikes
from processors.polar_lut import PolarLUT, PolarWindow
from processors.polar_roi import PolarROI
from processors.polar_roi_kernel import accumulate_polar_bins

SHAPE = (120, 150)
SENTINEL = 2**32 - 1


def detector_mask():
    mask = np.zeros(SHAPE, dtype=bool)
    mask[:, 70:72] = True     # a module gap
    mask[40, 10] = True       # a known bad pixel
    return mask


def tracker_of(mask):
    """A tracker over every unmasked pixel, through a ROI of one bin per pixel."""
    rows, cols = mask.shape
    window = PolarWindow("all", (0.0, 1.0), (0.0, 1.0), rows, cols, 0, (np.arange(rows) + 0.5) / rows,
                         (np.arange(cols) + 0.5) / cols)
    pixels = np.flatnonzero(~mask).astype(np.int32)
    lut = PolarLUT(mask.shape, (window,), pixels, pixels.copy())
    return HotPixelTracker(PolarROI(lut, mask), mask)


def background(rng):
    frame = rng.poisson(1.5, SHAPE).astype(np.uint32)
    frame[detector_mask()] = SENTINEL
    return frame


def narrow_spot(frame, row, col, amplitude, fwhm_px=1.0):
    """Add a spot of ``fwhm_px`` pixels (point-sampled 2-D Gaussian) at (row, col) (floats)."""
    r, c = np.mgrid[:SHAPE[0], :SHAPE[1]]
    g = amplitude * np.exp(-4 * np.log(2) * ((r - row) ** 2 + (c - col) ** 2) / fwhm_px ** 2)
    valid = frame != SENTINEL
    frame[valid] += np.rint(g[valid]).astype(np.uint32)


def test_planted_hot_pixels_are_found_and_nothing_else(rng):
    mask = detector_mask()
    tracked = np.flatnonzero(~mask)
    hot = rng.choice(tracked, 12, replace=False)
    hot[-1] = hot[-2] + 1 if (hot[-2] + 1) % SHAPE[1] else hot[-2] - 1  # two hot pixels side by side
    tracker = tracker_of(mask)
    found_at = {}
    for k in range(30):
        frame = background(rng)
        frame.flat[hot] = rng.integers(200, 3000, hot.size)
        frame.flat[rng.choice(tracked)] = 5000                          # a zinger a frame
        narrow_spot(frame, 30 + 2.3 * k, 20 + 3.1 * k, 400.0)          # a narrow spot that moves
        for p in tracker.accumulate(frame):
            found_at[int(p)] = k
        # the ROI sums are those of the pixels not (yet) hot, this frame included
        expected = np.where((frame.reshape(-1) == SENTINEL) | tracker.bad.astype(bool), 0, frame.reshape(-1))
        np.testing.assert_array_equal(tracker.roi.sums, expected.astype(np.float64))
    assert sorted(found_at) == sorted(hot.tolist())
    assert min(found_at.values()) >= 19  # not before min_frames
    assert tracker.bad.reshape(SHAPE).sum() == mask.sum() + hot.size
    assert tracker.n_tracked == tracked.size - hot.size
    assert not np.isin(tracker.roi.lut.pixel_index, hot).any() and tracker.roi.bin_pixels[hot].sum() == 0


def test_a_narrow_spot_that_moves_little_and_zingers_are_never_hot(rng):
    """A one-pixel-wide spot wandering over a few pixels (a crystal's spot from point to point)
    and two zingers a frame, over 300 frames: no pixel is hot."""
    mask = detector_mask()
    tracked = np.flatnonzero(~mask)
    tracker = tracker_of(mask)
    for k in range(300):
        frame = background(rng)
        frame.flat[rng.choice(tracked, 2)] = rng.integers(100, 10000, 2)
        narrow_spot(frame, 60 + rng.integers(-2, 3) + rng.random(), 100 + rng.integers(-2, 3) + rng.random(),
                    rng.uniform(50, 500), fwhm_px=0.9)
        assert tracker.accumulate(frame).size == 0, k


def test_rule_is_checked():
    with pytest.raises(ValueError, match="min_fraction"):
        HotPixelRule(min_fraction=0)
    with pytest.raises(ValueError, match="min_counts"):
        HotPixelRule(ratio=0.5)


def slow_spikes(frame, bad, pixels, rule, sentinel):
    """Which tracked pixels spike in ``frame``: the rule written out with numpy."""
    rows, cols = frame.shape
    out = np.zeros(pixels.size, dtype=bool)
    for k, p in enumerate(pixels):
        r, c = divmod(int(p), cols)
        v = frame[r, c]
        if bad[r, c] or v == sentinel or v < rule.min_counts:
            continue
        block = frame[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2].astype(np.float64)
        ok = (~bad[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2]) & (block != sentinel)
        ok[r - max(r - 1, 0), c - max(c - 1, 0)] = False
        nb = np.sort(block[ok])
        if nb.size < 3:
            continue
        m2 = nb[-2]
        out[k] = v > rule.ratio * m2 + rule.n_sigma * np.sqrt(m2 + 1)
    return out


def test_fused_kernel_sums_like_the_roi_kernel_and_counts_spikes_like_a_slow_reference(rng):
    rule = HotPixelRule()
    for _ in range(3):
        frame = rng.poisson(3.0, (40, 50)).astype(np.uint16)
        bad = rng.random((40, 50)) < 0.05
        frame[rng.random((40, 50)) < 0.03] = 2**16 - 1
        spikes = rng.random((40, 50)) < 0.05
        frame[spikes] = rng.integers(5, 400, spikes.sum())
        # a LUT with pixels in two windows (entries side by side) and bins of several pixels
        pixels = np.sort(np.concatenate([rng.choice(frame.size, 900, replace=False), np.arange(0, 200, 7)]))
        pixels = pixels.astype(np.int32)
        bins = rng.integers(0, 64, pixels.size).astype(np.int32)
        first = np.ones(pixels.size, dtype=bool)
        first[1:] = pixels[1:] != pixels[:-1]
        flags = spike_test_flags(pixels, first & ~bad.reshape(-1)[pixels], bad.astype(np.uint8).reshape(-1), 50)
        bin_pixels = np.bincount(bins, minlength=64).astype(np.float64)
        sums, counts = np.empty(64), np.empty(64)
        ref_sums, ref_counts = np.empty(64), np.empty(64)
        counted = np.zeros(pixels.size, dtype=np.int32)
        new = np.empty(8, dtype=np.int64)
        flat = frame.reshape(-1)
        skipped, n = accumulate_counting_spikes(flat, pixels, bins, 2**16 - 1, bin_pixels, sums, counts, 50,
                                                bad.astype(np.uint8).reshape(-1), flags, counted, 1,
                                                rule.min_counts, rule.ratio, rule.n_sigma, rule.min_frames,
                                                rule.min_fraction, new)
        assert n == 0  # one frame is never enough
        assert skipped == accumulate_polar_bins(flat, pixels, bins, 2**16 - 1, bin_pixels, ref_sums, ref_counts)
        np.testing.assert_array_equal(sums, ref_sums)
        np.testing.assert_array_equal(counts, ref_counts)
        expected = slow_spikes(frame, bad, pixels, rule, 2**16 - 1) & first
        np.testing.assert_array_equal(counted.astype(bool), expected)
        assert counted.sum() > 10


def numpy_spike_test_flags(pixels, tracked, bad, ncols):
    """The numpy version the kernel replaced (kept as the reference)."""
    from processors.hot_pixels_kernel import ROW_OK, TRACK
    p = pixels.astype(np.int64)
    col = p % ncols
    inner = (col > 0) & (col < ncols - 1)
    left = np.where(inner, p - 1, p)
    right = np.where(inner, p + 1, p)
    row_ok = inner & (bad[left] == 0) & (bad[right] == 0)
    return (tracked * TRACK + (tracked & row_ok) * ROW_OK).astype(np.uint8)


@pytest.mark.parametrize("ncols", [1, 2, 3, 50])
def test_spike_test_flags_are_the_numpy_flags(rng, ncols):
    """Every entry of LUTs with first and last columns, repeated pixels, masked neighbours and
    untracked entries, in int32 and int64: the kernel's flags equal numpy's."""
    for dtype in (np.int32, np.int64):
        for share in (0.0, 0.1, 0.6):
            n = 40 * ncols
            bad = (rng.random(n) < share).astype(np.uint8)
            pixels = np.sort(np.concatenate([rng.integers(0, n, 3 * n), [0, n - 1, ncols - 1]])).astype(dtype)
            tracked = rng.random(pixels.size) < 0.8
            got = spike_test_flags(pixels, tracked, bad, ncols)
            assert got.dtype == np.uint8
            np.testing.assert_array_equal(got, numpy_spike_test_flags(pixels, tracked, bad, ncols))
    with pytest.raises(ValueError):
        spike_test_flags(pixels, tracked[:-1], bad, ncols)
