"""One kernel call per frame for every window's fit and residual test (processors.window_fits)
gives exactly what the window-by-window path gives (the slow obvious reference, below)."""

import numpy as np
import pytest

from processors.angles import wrap_deg
from processors.config import load_config
from processors.fit_gaussian2d import FIT_OK, fit_gaussian2d_into, make_fit_work
from processors.frame_processor import FrameProcessor, cached_pixel_geometry
from processors.frame_record import PARAM_NAMES, SECOND_FOUND, SECOND_NONE, SECOND_NOT_TRIED, frame_record_dtype
from processors.processing_setup import ProcessingSetup
from processors.second_spot import SecondSpotFinder
from stream.chunk_codec import encode_frame
from stream.encoded_frame import EncodedFrame

from conftest import DEMO_DATA

PHI0 = PARAM_NAMES.index("phi0")


def reference_fits(processor: FrameProcessor, works, finders, image: np.ndarray, rec) -> None:
    """The window-by-window path: fit, residual test, two-spot fit, φ0 wrapped; fields as the processor writes them."""
    fit = processor.setup.fit
    processor.hot_pixels.accumulate(image)
    p, e = np.empty(len(PARAM_NAMES)), np.empty(len(PARAM_NAMES))
    sp, se = np.empty(len(PARAM_NAMES)), np.empty(len(PARAM_NAMES))
    for k, w in enumerate(processor.lut.windows):
        sums, counts = processor.roi.window_sums(k)
        status = fit_gaussian2d_into(sums, counts, w.q_centers, w.chi_centers, p, e, works[k], fit.min_bins,
                                     fit.min_snr, fit.max_iterations, w.pixel_q, w.pixel_chi, fit.outlier_sigma, True)
        if status == FIT_OK:
            rec["second_status"][k] = finders[k].find(sums, counts, p, e, sp, se, works[k], fit).status
        else:
            rec["second_status"][k] = SECOND_NOT_TRIED
            sp[:] = np.nan
            se[:] = np.nan
        rec["fit_status"][k] = status
        rec["params"][k], rec["errors"][k] = p, e
        rec["second_params"][k], rec["second_errors"][k] = sp, se
        rec["params"][k, PHI0] = wrap_deg(p[PHI0])
        rec["second_params"][k, PHI0] = wrap_deg(sp[PHI0])


@pytest.mark.parametrize("seed", [3, 11])
def test_one_call_per_frame_equals_window_by_window(seed):
    """… and a batch processed in two passes (process_many_into) equals frame by frame."""
    config = load_config(DEMO_DATA / "demo.toml")
    setup = ProcessingSetup.from_config(config)
    fast, slow = FrameProcessor(setup), FrameProcessor(setup)
    works = [make_fit_work(w.nq, w.nchi) for w in slow.lut.windows]
    finders = [SecondSpotFinder(w) for w in slow.lut.windows]
    geometry = cached_pixel_geometry(setup.poni_text, setup.poni_source)
    q, chi = geometry.q_A, geometry.chi_deg
    rng = np.random.default_rng(seed)
    windows = fast.lut.windows
    centres = [(0.5 * (w.q_centers[0] + w.q_centers[-1]), 0.5 * (w.chi_centers[0] + w.chi_centers[-1]))
               for w in windows]
    n_frames = 30
    recs = np.zeros((2, n_frames), dtype=frame_record_dtype(len(windows)))
    hot = rng.choice(np.flatnonzero(~fast.mask), 4, replace=False)
    hot_in_windows = rng.choice(fast.lut.pixel_index, 3, replace=False)  # found by the trackers, mid-run
    stream = []
    for f in range(n_frames):
        image = 1.0 + 0.5 * (q - q.mean()) / q.std()  # a sloped background
        for k, (qc, cc) in enumerate(centres):
            kind = rng.integers(4)  # nothing, weak, strong, strong with a second spot beside it
            if kind == 0:
                continue
            a = (8.0, 60.0, 60.0)[kind - 1]
            dq, dphi = rng.uniform(0.02, 0.05), rng.uniform(1.5, 4.0)
            q0, phi0 = qc + rng.uniform(-0.3, 0.3) * dq, cc + rng.uniform(-3, 3)
            image = image + a * np.exp(-4 * np.log(2) * (((q - q0) / dq) ** 2 + (wrap_deg(chi - phi0) / dphi) ** 2))
            if kind == 3:
                phi1 = phi0 + rng.choice([-1, 1]) * rng.uniform(3, 6) * dphi
                image = image + 0.7 * a * np.exp(-4 * np.log(2) * (((q - q0) / dq) ** 2
                                                                   + (wrap_deg(chi - phi1) / dphi) ** 2))
        pixels = rng.poisson(np.clip(image, 0, None)).astype(np.uint32)
        pixels.flat[hot] = 3000 if f % 3 else 5  # hot in most frames: left out of the fits as outliers
        pixels.flat[hot_in_windows] = 4000
        if f % 4 == 1:  # window pixels at the sentinel (a bad pixel the mask missed): counts change
            pixels.flat[rng.choice(fast.lut.pixel_index, 3, replace=False)] = 2**32 - 1
        pixels[fast.mask] = 2**32 - 1
        frame = EncodedFrame(0, f, "bslz4", "uint32", pixels.shape, encode_frame(pixels), 1.0)
        stream.append(frame)
        if f % 9 == 4:  # bad frames between them: each batch pass must keep them apart
            blob = frame.blob
            stream.append(EncodedFrame(0, 1000 + f, "bslz4", "uint32", pixels.shape, blob[:len(blob) // 2], 1.0))
            stream.append(EncodedFrame(0, 2000 + f, "bslz4", "uint32", (3, 4), blob, 1.0))
        assert fast.process_into(frame, recs[0, f]) == ""
        reference_fits(slow, works, finders, pixels, recs[1, f])
    for name in ("params", "errors", "fit_status", "second_params", "second_errors", "second_status"):
        assert np.array_equal(recs[0][name], recs[1][name], equal_nan=True), name
    # the worker's way (process_batch): decode and ROI sums of a whole batch, then its fits;
    # batches of 7 so that the hot pixels are found in the middle of one
    one_by_one, batched = FrameProcessor(setup), FrameProcessor(setup)
    by_frame = np.zeros(len(stream), dtype=recs.dtype)
    by_batch = np.zeros(len(stream), dtype=recs.dtype)
    messages = [one_by_one.process_into(frame, by_frame[i]) for i, frame in enumerate(stream)]
    for b in range(0, len(stream), 7):
        assert batched.process_many_into(stream[b:b + 7], by_batch[b:b + 7]) == messages[b:b + 7]
    assert sum(bool(m) for m in messages) == 6 and len(one_by_one.hot_pixels.hot) == 3
    for name in recs.dtype.names:
        if name not in ("decode_s", "process_s", "done_time"):
            assert np.array_equal(by_frame[name], by_batch[name], equal_nan=True), name
    assert (by_batch["process_s"] > 0).all() and np.isfinite(by_batch["done_time"]).all()
    assert sorted(batched.hot_pixels.hot) == sorted(int(p) for p in hot_in_windows)
    # the frames cover every branch: failed fits, single spots, and two-spot fits
    statuses = recs[0]["second_status"]
    assert (statuses == SECOND_NOT_TRIED).any() and (statuses == SECOND_NONE).any()
    assert (statuses == SECOND_FOUND).sum() >= 3
    assert (recs[0]["fit_status"] == FIT_OK).sum() >= 20
