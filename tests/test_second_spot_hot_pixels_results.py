"""Frames → FrameProcessor → records → MapCollector → results.h5: second spots and hot pixels end to end."""

import h5py
import numpy as np
import pytest

from monitor.session.map_collector import MapCollector, hot_pixels_message
from monitor.session.results_file import ResultsWriter
from monitor.session.results_update import take_update
from processors.angles import wrap_deg
from processors.config import load_config
from processors.frame_processor import FrameProcessor, cached_pixel_geometry
from processors.frame_record import PARAM_NAMES, SECOND_FOUND, SECOND_NONE, frame_record_dtype
from processors.process_batch import BatchResult
from processors.processing_setup import ProcessingSetup
from stream.chunk_codec import encode_frame
from stream.encoded_frame import EncodedFrame
from stream.raster_scan import RasterScan

from conftest import DEMO_DATA

N_FRAMES = 22
STRONG = (60.0, 1.070, 0.045, 172.0, 4.0)   # A (counts/pixel), q0 (1/Å), dq, φ0 (°), dφ (FWHM)
WEAK = (45.0, 1.072, 0.045, -178.0, 4.0)    # 10° away, across ±180°


@pytest.fixture(scope="module")
def config():
    return load_config(DEMO_DATA / "demo.toml")


@pytest.fixture(scope="module")
def processed(config):
    """22 frames of the demo EIGER 1M: two spots in window 100 on even frames, one on odd ones,
    and three hot pixels in window 110 in every frame."""
    rng = np.random.default_rng(5)
    setup = ProcessingSetup.from_config(config)
    processor = FrameProcessor(setup)
    geometry = cached_pixel_geometry(setup.poni_text, setup.poni_source)
    q, chi = geometry.q_A, geometry.chi_deg
    w110 = processor.lut.windows[1]
    in_110 = processor.lut.pixel_index[(processor.lut.bin_index >= w110.offset)
                                       & (processor.lut.bin_index < w110.offset + w110.n_bins)]
    hot = rng.choice(np.unique(in_110), 3, replace=False)
    bins_before = processor.roi.bin_pixels.sum()

    def spot(a, q0, dq, phi0, dphi):
        return a * np.exp(-4 * np.log(2) * (((q - q0) / dq) ** 2 + (wrap_deg(chi - phi0) / dphi) ** 2))

    one, two = spot(*STRONG), spot(*STRONG) + spot(*WEAK)
    records = np.zeros(N_FRAMES, dtype=frame_record_dtype(processor.n_peaks))
    for k in range(N_FRAMES):
        image = rng.poisson(2.0 + (two if k % 2 == 0 else one)).astype(np.uint32)
        image.flat[hot] = 2500
        image[processor.mask] = 2**32 - 1
        frame = EncodedFrame(0, k, "bslz4", "uint32", image.shape, encode_frame(image), 1.0)
        assert processor.process_into(frame, records[k]) == ""
    return processor, records, hot, bins_before


def test_second_spot_found_only_where_there_are_two(processed):
    _, records, _, _ = processed
    a, phi0 = PARAM_NAMES.index("amplitude"), PARAM_NAMES.index("phi0")
    assert (records["fit_status"][:, 0] == 0).all()
    status = records["second_status"][:, 0]
    np.testing.assert_array_equal(status, np.where(np.arange(N_FRAMES) % 2 == 0, SECOND_FOUND, SECOND_NONE))
    two = records[::2]
    for first, second, first_err, second_err in zip(two["params"][:, 0], two["second_params"][:, 0],
                                                    two["errors"][:, 0], two["second_errors"][:, 0]):
        assert abs(wrap_deg(first[phi0] - STRONG[3])) < 4 * first_err[phi0]
        assert abs(wrap_deg(second[phi0] - WEAK[3])) < 4 * second_err[phi0]
        assert -180 < second[phi0] <= 180
        assert first[a] > second[a]
    assert np.isnan(records["second_params"][1::2]).all()


def test_hot_pixels_are_reported_once_and_leave_the_roi_tables(processed):
    processor, records, hot, bins_before = processed
    reported = records["hot_pixels"].reshape(-1, 2)
    reported = reported[reported[:, 0] >= 0]
    rows, cols = np.divmod(hot, processor.shape[1])
    assert sorted(map(tuple, reported.tolist())) == sorted(zip(rows.tolist(), cols.tolist()))
    assert processor.roi.bin_pixels.sum() == bins_before - 3
    assert not np.isin(processor.roi.lut.pixel_index, hot).any()


def test_results_file_holds_second_maps_and_hot_pixels(processed, config, tmp_path, caplog):
    processor, records, hot, _ = processed
    scan = RasterScan((2, N_FRAMES // 2))
    collector = MapCollector(scan, tuple(p.name for p in config.peaks))
    collector.add(BatchResult(records[:20]))  # the hot pixels are found on the 20th frame
    new = collector.take_new_hot_pixels()
    collector.add(BatchResult(records[20:]))
    assert len(new) == 3 and collector.take_new_hot_pixels() == []
    assert hot_pixels_message(new).startswith("hot pixels masked: 3 at (")
    path = tmp_path / "R.h5"
    with ResultsWriter(path, config, scan) as writer:
        with h5py.File(path, "r", swmr=True) as f:  # every dataset exists from the start
            assert f["entry/results/100/second/found"].dtype == np.uint8
            assert f["entry/process/hot_pixels"].shape == (0, 2)
        writer.write(take_update(collector, config, final=True))
    with h5py.File(path, "r") as f:
        second = f["entry/results/100/second"]
        assert second.attrs["signal"] == "amplitude"
        found = second["found"][()]
        np.testing.assert_array_equal(found.reshape(-1), np.arange(N_FRAMES) % 2 == 0)
        phi0 = second["phi0"][()].reshape(-1)
        assert np.all(np.abs(wrap_deg(phi0[::2] - WEAK[3])) < 0.5) and np.isnan(phi0[1::2]).all()
        for key in ("amplitude", "q0", "dq", "dphi", "amplitude_error", "phi0_error"):
            assert np.isfinite(second[key][()].reshape(-1)[::2]).all()
        assert not f["entry/results/110/second/found"][()].any()
        pixels = f["entry/process/hot_pixels"][()]
        assert sorted(map(tuple, pixels.tolist())) == sorted(zip(*np.divmod(hot, processor.shape[1])))
        assert f["entry/process/hot_pixels_masked"][()] == 3


def test_a_new_series_reports_the_pixels_masked_before_again(processed):
    """Workers outlive series: the next run's file must list the pixels still masked in it."""
    processor, _, hot, _ = processed
    image = np.full(processor.shape, 2, dtype=np.uint32)
    image[processor.mask] = 2**32 - 1
    rec = np.zeros(1, dtype=frame_record_dtype(processor.n_peaks))
    frames = [EncodedFrame(series, 0, "bslz4", "uint32", image.shape, encode_frame(image), 1.0) for series in (1, 1)]
    processor.process_into(frames[0], rec[0])
    reported = rec[0]["hot_pixels"][rec[0]["hot_pixels"][:, 0] >= 0]
    rows, cols = np.divmod(hot, processor.shape[1])
    assert sorted(map(tuple, reported.tolist())) == sorted(zip(rows.tolist(), cols.tolist()))
    processor.process_into(frames[1], rec[0])  # same series: not again
    assert (rec[0]["hot_pixels"] == -1).all()
