"""A new series setup (a header's mask) is built by the workers before its first batch, and the
long-lived start-up objects of a process are frozen out of the garbage collector's walks."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from processors.config import ConfigError, load_config
from processors.demo_setup import write_demo_config
from processors.frame_processor import FrameProcessor
from processors.frame_record import frame_record_dtype
from processors.process_batch import prepare, process_arena, process_batch, processor_for
from processors.processing_setup import ProcessingSetup
from stream.encoded_frame import EncodedFrame


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo config, its simulated detector, and three of its frames (bslz4, uint32)."""
    from monitor.sim.simulated_eiger import FrameSource

    config = load_config(write_demo_config(tmp_path_factory.mktemp("prepare") / "c"))
    src = FrameSource(config, seed=3)
    md = src.metadata
    rng = np.random.default_rng(5)
    frames = [EncodedFrame(7, k, src.encoding, md.dtype, md.shape, src.encoded(4.0 + k, 6.0, rng))
              for k in range(3)]
    return config, md, frames


def header_setup(config, md, cut_rows=slice(100, 140)) -> ProcessingSetup:
    """The setup a header with the detector's mask and a few more masked rows would give."""
    mask = np.asarray(md.pixel_mask).copy()
    mask[cut_rows] = 1
    return ProcessingSetup.from_config(config, pixel_mask=mask, shape=md.shape)


def test_a_prepared_processor_gives_the_records_of_a_fresh_one(demo):
    config, md, frames = demo
    setup = header_setup(config, md)
    base = processor_for(ProcessingSetup.from_config(config))
    assert "pid" in prepare(setup, md.dtype)
    prepared = processor_for(setup)
    assert md.dtype in prepared._selective  # the decoder is ready before the first frame
    assert prepared.arena is base.arena is process_arena()  # one mapping of the arena per process
    assert prepare(setup, "float32") and "float32" not in prepared._selective  # not selective: no decoder
    got = process_batch(setup, frames).records
    fresh = FrameProcessor(setup)
    want = np.zeros(len(frames), dtype=frame_record_dtype(fresh.n_peaks))
    fresh.process_many_into(frames, want)
    fields = [n for n in want.dtype.names if n not in ("done_time", "decode_s", "process_s")]  # timings
    for name in fields:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert (got["status"] == 0).all()


def test_the_pool_prepares_a_setup_and_a_failing_one_harms_nothing(demo):
    from monitor.session.batch_runner import BatchRunner
    from monitor.session.map_collector import MapCollector
    from stream.rate_limited_log import RateLimitedLog

    config, md, frames = demo
    good = header_setup(config, md)
    # every pixel masked: no window keeps a pixel, the build fails (as the main process's check would)
    bad = header_setup(config, md, cut_rows=slice(None))
    with pytest.raises(ConfigError):
        FrameProcessor(bad)
    collector = MapCollector(config.scan, tuple(p.name for p in config.peaks))
    runner = BatchRunner(1, None, lambda batch, result: collector.add(result), collector.counters,
                         RateLimitedLog(logging.getLogger("test")))
    try:
        for future in runner.prepare(bad, md.dtype):
            with pytest.raises(ConfigError):
                future.result(timeout=300)
        assert all(f.result(timeout=300).startswith("pid ") for f in runner.prepare(good, md.dtype))
        runner.submit(good, frames)
        assert runner.drain(timeout=300)
    finally:
        runner.close()
    assert runner.in_flight == 0  # prepare tasks are not work in flight
    assert collector.counters.processed == len(frames) and collector.counters.worker_failures == 0


FREEZE = textwrap.dedent("""
    import gc, json
    import numpy as np  # something long-lived to freeze
    from stream.heap_freeze import freeze_long_lived

    class Node:
        pass

    def cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a

    cycle()  # garbage from before the freeze is collected, not frozen
    before = gc.get_freeze_count()
    freeze_long_lived()
    frozen = gc.get_freeze_count()
    for _ in range(100):
        cycle()  # garbage made afterwards is collected as usual
    collected = gc.collect()
    still = sum(isinstance(o, Node) for o in gc.get_objects())
    print(json.dumps(dict(before=before, frozen=frozen, collected=collected, nodes_left=still)))
""")


def test_freeze_long_lived_keeps_collecting_new_garbage():
    """In a fresh interpreter (a freeze is for the rest of a process's life)."""
    import json

    from conftest import REPO

    out = subprocess.run([sys.executable, "-c", FREEZE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["before"] == 0 and got["frozen"] > 1000
    assert got["collected"] >= 200 and got["nodes_left"] == 0


def test_check_setup_raises_what_the_build_raises(demo):
    """The live series start checks a header's setup with ``check_setup`` (the workers build it
    meanwhile): it must fail exactly when, and as, the build fails."""
    from dataclasses import replace

    from processors.config import PeakConfig
    from processors.frame_processor import check_setup
    from processors.geometry import GeometryError

    config, md, _ = demo
    fine = header_setup(config, md)
    check_setup(fine)
    rows, cols = md.shape
    off_detector = replace(fine, peaks=fine.peaks + (PeakConfig("far", (40.0, 41.0), (0.0, 30.0), hkl=(9, 9, 9)),))
    # a mask over one window only: that window keeps too few pixels, the others are fine
    window = processor_for(fine).lut
    first = window.pixel_index[window.bin_index < window.windows[0].n_bins]
    covered = np.zeros(rows * cols, np.uint32)
    covered[first] = 1
    one_window_masked = ProcessingSetup.from_config(
        config, pixel_mask=np.maximum(np.asarray(md.pixel_mask).reshape(-1), covered).reshape(rows, cols),
        shape=md.shape)
    cases = [header_setup(config, md, cut_rows=slice(None)), off_detector, one_window_masked,
             replace(fine, shape=(rows + 1, cols))]
    for setup in cases:
        with pytest.raises((ConfigError, GeometryError)) as built:
            FrameProcessor(setup)
        with pytest.raises(built.type) as checked:
            check_setup(setup)
        assert str(checked.value) == str(built.value)


@pytest.mark.allow_error_log
def test_each_series_gets_its_headers_setup_built_by_the_workers_once(demo):
    """A live session's series setups (``SeriesSetups``) with a real worker pool: a header's new
    mask is handed to the workers once (a second series with the same mask is not), each series
    keeps its own setup, and a header the config cannot serve falls back on the base setup."""
    from monitor.session.batch_runner import BatchRunner
    from monitor.session.map_collector import MapCollector
    from monitor.session.series_setups import SeriesSetups
    from stream.rate_limited_log import RateLimitedLog
    from stream.stream_messages import SeriesStart

    config, md, frames = demo
    setups = SeriesSetups(config)
    rows, cols = md.shape
    mask = np.asarray(md.pixel_mask).copy()
    mask[100:140] = 1

    def header(series, shape=md.shape, pixel_mask=mask):
        return SeriesStart("stream1", series, "all", shape, md.dtype, pixel_mask=pixel_mask)

    collector = MapCollector(config.scan, tuple(p.name for p in config.peaks))
    runner = BatchRunner(1, None, lambda batch, result: collector.add(result), collector.counters,
                         RateLimitedLog(logging.getLogger("test")))
    try:
        first = setups.start(header(1), runner)
        assert first != setups.base and setups.prepared == {setups.base, first}
        assert setups.start(header(2), runner) == first and len(setups.prepared) == 2  # not handed over again
        wrong = setups.start(header(3, shape=(rows + 1, cols), pixel_mask=None), runner)
        assert wrong is setups.base
        assert [setups.of_series(s) for s in (1, 2, 3, 99)] == [first, first, setups.base, setups.base]
        runner.submit(first, frames)  # the prepared processor serves the series' frames
        assert runner.drain(timeout=300)
    finally:
        runner.close()
    assert collector.counters.processed == len(frames)


@pytest.mark.allow_error_log
def test_a_repeated_header_is_not_checked_again(demo, monkeypatch):
    """A beamtime's scans repeat one header: its setup is checked once (at the first header);
    a header that fails the check is checked, and refused, every time."""
    import monitor.session.series_setups as series_setups
    from monitor.session.series_setups import SeriesSetups
    from processors.frame_processor import check_setup
    from stream.stream_messages import SeriesStart

    config, md, _ = demo
    checked = []

    def counting_check(setup):
        checked.append(setup)
        check_setup(setup)

    monkeypatch.setattr(series_setups, "check_setup", counting_check)
    setups = SeriesSetups(config)
    mask = np.asarray(md.pixel_mask).copy()
    mask[100:140] = 1
    rows, cols = md.shape
    first = setups.start(SeriesStart("stream1", 1, "all", md.shape, md.dtype, pixel_mask=mask), None)
    assert setups.start(SeriesStart("stream1", 2, "all", md.shape, md.dtype, pixel_mask=mask.copy()), None) == first
    assert checked == [first]
    other = mask.copy()
    other[200:210] = 1
    assert setups.start(SeriesStart("stream1", 3, "all", md.shape, md.dtype, pixel_mask=other), None) != first
    assert len(checked) == 2
    for series in (4, 5):  # not the PONI detector's shape: refused by the check each time
        bad = SeriesStart("stream1", series, "all", (rows + 1, cols), md.dtype, pixel_mask=None)
        assert setups.start(bad, None) is setups.base
    assert len(checked) == 4
    assert setups.of_series(1) == first and setups.of_series(4) is setups.base
