"""The ROI pass as the workers run it (unsigned index views, spike pre-test flags) gives exactly
what the simple kernels and the numpy spike rule give, frame after frame, hot pixels included."""

import numpy as np
import pytest
from test_hot_pixels import slow_spikes

from processors.config import PeakConfig
from processors.geometry import combine_masks, pixel_geometry
from processors.hot_pixels import HotPixelRule, HotPixelTracker
from processors.polar_lut import build_polar_lut
from processors.polar_roi import PolarROI
from processors.polar_roi_kernel import accumulate_polar_bins

PEAKS = (
    PeakConfig("plain", (0.95, 1.19), (10.0, 60.0), hkl=(1, 0, 0), bins=(12, 25)),
    PeakConfig("straddle", (0.95, 1.19), (157.0, 207.0), hkl=(1, 0, 0), bins=(12, 25)),
    PeakConfig("overlap", (1.10, 1.30), (40.0, 80.0), hkl=(1, 1, 0), bins=(10, 20)),  # shares pixels with "plain"
)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_fast_roi_pass_matches_simple_kernels_frame_after_frame(demo_poni_text, rng, dtype):
    g = pixel_geometry(demo_poni_text)
    user = np.zeros(g.shape, bool)
    user[380:420, 250:320] = True
    mask = combine_masks(g.shape, g.mask, user)
    lut = build_polar_lut(g, mask, PEAKS)
    assert np.any(lut.pixel_index[1:] == lut.pixel_index[:-1])  # some pixels are in two windows
    rule = HotPixelRule(min_frames=3, block_frames=50)
    tracker = HotPixelTracker(PolarROI(lut, mask), mask, rule)
    sentinel = int(np.iinfo(dtype).max)
    distinct = np.unique(lut.pixel_index)
    hot = rng.choice(distinct, 6, replace=False)
    hot[-1] = hot[-2] + 1                                     # two hot pixels side by side
    counted = {}                                              # pixel -> spikes by the numpy rule
    found_all = []
    for k in range(5):
        frame = rng.poisson(3.0, g.shape).astype(dtype)
        frame[g.mask] = sentinel
        frame.reshape(-1)[rng.choice(frame.size, 3000, replace=False)] = sentinel  # flagged this frame only
        frame.reshape(-1)[rng.choice(distinct, 400, replace=False)] = rng.integers(8, 600, 400)  # spikes, bright bits
        frame.reshape(-1)[hot] = rng.integers(2000, 4000, hot.size)
        flat = frame.reshape(-1)
        # the simple references, on the tables as they are before this frame
        pixels = tracker.roi.lut.pixel_index.copy()
        bins = tracker.roi.lut.bin_index.copy()
        sums, counts = np.empty(lut.n_bins), np.empty(lut.n_bins)
        skipped = accumulate_polar_bins(flat, pixels, bins, sentinel, tracker.roi.bin_pixels.copy(), sums, counts)
        assert skipped > 0
        first = np.ones(pixels.size, bool)
        first[1:] = pixels[1:] != pixels[:-1]
        spiking = slow_spikes(frame, tracker.bad.reshape(g.shape).astype(bool), pixels, rule, sentinel) & first
        for p in pixels[spiking]:
            counted[int(p)] = counted.get(int(p), 0) + 1
        found = tracker.accumulate(frame)
        found_all.extend(int(p) for p in found)
        # hot now: counted in ≥ min_fraction of ≥ min_frames frames
        earlier = set(found_all[:len(found_all) - len(found)])
        expected = sorted(p for p, n in counted.items() if p not in earlier
                          and k + 1 >= rule.min_frames and n >= rule.min_fraction * (k + 1))
        assert sorted(int(p) for p in found) == expected
        gone = np.isin(pixels, found)
        np.subtract.at(sums, bins[gone], flat[pixels[gone]].astype(np.float64))
        np.subtract.at(counts, bins[gone], 1.0)
        np.testing.assert_array_equal(tracker.roi.sums, sums)
        np.testing.assert_array_equal(tracker.roi.counts, counts)
        # and the spike counts kept per entry are the numpy rule's
        kept = tracker.roi.lut.pixel_index
        got = {int(p): int(n) for p, n in zip(kept, tracker.spikes) if n}
        assert got == {p: n for p, n in counted.items() if p not in found_all}
        # plain accumulate (no spike counting) gives the same sums
        tracker.roi.accumulate(frame)
        ref_s, ref_c = np.empty(lut.n_bins), np.empty(lut.n_bins)
        accumulate_polar_bins(flat, kept.copy(), tracker.roi.lut.bin_index.copy(), sentinel,
                              tracker.roi.bin_pixels.copy(), ref_s, ref_c)
        np.testing.assert_array_equal(tracker.roi.sums, ref_s)
        np.testing.assert_array_equal(tracker.roi.counts, ref_c)
    assert set(int(p) for p in hot) <= set(found_all)  # (a pixel with few valid neighbours may join them)
