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
        pixels.flat[hot] = 3000 if f % 3 else 5  # hot in most frames: found on the way, masked by both
        pixels[fast.mask] = 2**32 - 1
        frame = EncodedFrame(0, f, "bslz4", "uint32", pixels.shape, encode_frame(pixels), 1.0)
        assert fast.process_into(frame, recs[0, f]) == ""
        reference_fits(slow, works, finders, pixels, recs[1, f])
    for name in ("params", "errors", "fit_status", "second_params", "second_errors", "second_status"):
        assert np.array_equal(recs[0][name], recs[1][name], equal_nan=True), name
    # the frames cover every branch: failed fits, single spots, and two-spot fits
    statuses = recs[0]["second_status"]
    assert (statuses == SECOND_NOT_TRIED).any() and (statuses == SECOND_NONE).any()
    assert (statuses == SECOND_FOUND).sum() >= 3
    assert (recs[0]["fit_status"] == FIT_OK).sum() >= 20
