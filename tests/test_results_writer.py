"""The results file as :class:`ResultsWriter` writes it (layout, units, counters, timing, status),
that writing only what changed gives the same file as a full rewrite, and when the live loop
rewrites and publishes it (:class:`OutputSchedule`)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from monitor.session.map_collector import MapCollector, RunCounters
from monitor.session.results_file import ResultsWriter, open_results
from monitor.session.results_update import take_update
from monitor.session.run_state import OutputSchedule
from processors.config import load_config
from processors.demo_setup import write_demo_config
from processors.frame_record import FRAME_ALL_MASKED, FRAME_CORRUPT, FRAME_OK, PARAM_NAMES, empty_records
from processors.process_batch import BatchResult
from stream.raster_scan import RasterScan

SCAN = RasterScan((3, 4), snake=True, step=(0.5, 0.25), origin=(1.0, 2.0), motors=("piezo_y", "piezo_x"))


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return load_config(write_demo_config(tmp_path_factory.mktemp("cfg"), shape=SCAN.shape))


def measured(config, scan: RasterScan, frames: list[int]) -> MapCollector:
    """A collector with good records for ``frames`` of series 1 (fitted peaks, 10 ms latency)."""
    collector = MapCollector(scan, tuple(p.name for p in config.peaks))
    recs = collector.records[: len(frames)].copy()
    recs["series"], recs["frame"], recs["status"] = 1, frames, FRAME_OK
    recs["intensity"] = 100.0 + np.arange(len(frames))
    recs["params"] = [1.0, 1.07, 0.02, 178.0, 9.0, 0.5, 1.0, 0.01]  # A q0 dq phi0 dphi B Bq Bchi
    recs["errors"] = 0.01
    recs["fit_status"] = 0
    recs["receive_time"] = 1000.0 + np.arange(len(frames))
    recs["done_time"] = recs["receive_time"] + 0.01
    collector.add(BatchResult(recs))
    return collector


def write(writer: ResultsWriter, config, collector: MapCollector, **kwargs) -> None:
    """A full rewrite of every map and the frames table."""
    writer.write(take_update(collector, config, full=True, **kwargs))


def test_layout_opens_on_the_maps_and_every_nxdata_has_its_axes(config, tmp_path):
    collector = measured(config, SCAN, [0, 1, 2, 5])
    with ResultsWriter(tmp_path / "R.h5", config, SCAN, inputs=("tcp://det:9999",), poni_text="poni!",
                       run_uid="uid-1", parent_uid="uid-0", geometry="bluesky") as writer:
        write(writer, config, collector)
    with h5py.File(tmp_path / "R.h5", "r") as f:
        assert f.attrs["default"] == "entry"
        entry = f["entry"]
        assert entry.attrs["NX_class"] == "NXentry" and entry.attrs["default"] == "results"
        results = entry["results"]
        assert results.attrs["NX_class"] == "NXdata" and results.attrs["signal"] == "intensity"
        assert list(results.attrs["axes"]) == ["y", "x"]
        assert results["intensity"].shape == SCAN.shape and results["frame_status"].shape == SCAN.shape
        # frame 5 is on the odd (backward) row of a snake scan: row 1, col 4 - 1 - 1
        assert results["intensity"][1, 2] == 103.0 and results["frame_status"][1, 2] == FRAME_OK
        assert np.isnan(results["intensity"][2, 0]) and results["frame_status"][2, 0] == -1
        frames = results["frames"][()]
        assert frames["frame"].tolist() == [0, 1, 2, 5] and (frames["row"][3], frames["col"][3]) == (1, 2)
        for peak in config.peaks:
            g = results[peak.name]
            assert g.attrs["NX_class"] == "NXdata" and g.attrs["signal"] == "amplitude"
            assert {*PARAM_NAMES, "status", "dphi_do"} <= set(g) and "q0_error" in g
            np.testing.assert_array_equal(g.attrs["hkl"], peak.hkl)
            np.testing.assert_allclose(g.attrs["q_window"], peak.q)
        derived = results["derived"]
        assert derived.attrs["NX_class"] == "NXdata" and derived.attrs["signal"] == "size"
        for nxdata in [results, derived] + [results[p.name] for p in config.peaks]:
            np.testing.assert_allclose(nxdata["y"][()], [1.0, 1.5, 2.0])
            np.testing.assert_allclose(nxdata["x"][()], [2.0, 2.25, 2.5, 2.75])
        scan = entry["scan"]
        assert scan["shape"][()].tolist() == [3, 4] and bool(scan["snake"][()])
        assert [m.decode() for m in scan["motors"][()]] == ["piezo_y", "piezo_x"]
        process = entry["process"]
        assert process.attrs["NX_class"] == "NXprocess" and process["program"][()] == b"nanomaps"
        assert process["config"][()].decode() == config.text and process["poni"][()] == b"poni!"
        assert process["inputs"][()].tolist() == [b"tcp://det:9999"]
        assert (process["run_uid"][()], process["parent_uid"][()], process["geometry"][()]) == (
            b"uid-1", b"uid-0", b"bluesky")
        assert process["start_time"][()] and process["end_time"][()] == b""


def test_units_and_long_names(config, tmp_path):
    collector = measured(config, SCAN, [0, 1])
    with ResultsWriter(tmp_path / "R.h5", config, SCAN) as writer:
        write(writer, config, collector)
    with h5py.File(tmp_path / "R.h5", "r") as f:
        results = f["entry/results"]
        assert results["intensity"].attrs["units"] == "counts"
        peak = results[config.peaks[0].name]
        expected = {"amplitude": "counts", "q0": "1/angstrom", "dq": "1/angstrom", "phi0": "degrees",
                    "dphi": "degrees", "background": "counts", "dphi_do": "degrees"}
        for key, units in expected.items():
            assert peak[key].attrs["units"] == units, key
        assert peak["q0_error"].attrs["units"] == "1/angstrom"
        assert peak["q0_error"].attrs["long_name"] == "peak position q0 (standard error)"
        assert "units" not in peak["status"].attrs
        derived = results["derived"]
        assert derived["size"].attrs["units"] == "nm" and derived["a"].attrs["units"] == "angstrom"
        for key in derived:
            if key.startswith("strain_"):
                assert derived[key].attrs["units"] == "1"
        assert f["entry/scan/x"].attrs["units"] == "um" and f["entry/scan/x"].attrs["long_name"] == "piezo_x"


def test_counters_timing_and_exit_status(config, tmp_path):
    collector = measured(config, SCAN, [0])
    counters = RunCounters(received=12, processed=10, dropped=1, corrupt=1, late=2)
    update = replace(take_update(collector, config, full=True), counters=counters.as_dict())
    timing_keys = ("latency_median_ms", "latency_p95_ms", "frame_mean_ms")
    with ResultsWriter(tmp_path / "R.h5", config, SCAN, timing_keys=timing_keys) as writer:
        writer.write(update)
        with open_results(tmp_path / "R.h5") as f:  # open while written: a SWMR reader
            assert f["entry/process/exit_status"][()] == b""
            assert np.isnan(f["entry/process/timing/latency_median_ms"][()])  # made at creation, NaN until written
        timing = {"latency_median_ms": 12.5, "latency_p95_ms": 30.0, "frame_mean_ms": 4.0}
        writer.write(replace(update, timing=timing, exit_status="abort"))
        counters.received = 13
        writer.write(replace(update, counters=counters.as_dict(), exit_status=""))  # "" keeps the status
        with pytest.raises(ValueError, match="no timing figure 'other_ms'"):
            writer.write(replace(update, timing={"other_ms": 1.0}))
    with ResultsWriter(tmp_path / "offline.h5", config, SCAN) as writer:  # no timing_keys: no timing group
        writer.write(update)
    with h5py.File(tmp_path / "offline.h5", "r") as f:
        assert "timing" not in f["entry/process"] and f["entry/process/received"][()] == 12
    with h5py.File(tmp_path / "R.h5", "r") as f:
        process = f["entry/process"]
        for key, value in counters.as_dict().items():
            assert process[key][()] == value and process[key].dtype == np.int64, key
        group = process["timing"]
        assert group.attrs["NX_class"] == "NXcollection"
        assert group["latency_median_ms"][()] == 12.5 and group["latency_median_ms"].attrs["units"] == "ms"
        assert process["exit_status"][()] == b"abort"


def test_set_scan_changes_the_map_axes_everywhere(config, tmp_path):
    strip = RasterScan((1, 3), motors=("", "point"))
    collector = measured(config, strip, [0, 1])
    with ResultsWriter(tmp_path / "R.h5", config, strip) as writer:
        write(writer, config, collector)
        collector.grow(6)
        write(writer, config, collector)  # the update carries the grown scan
    with h5py.File(tmp_path / "R.h5", "r") as f:
        assert f["entry/scan/shape"][()].tolist() == [1, 6]
        assert f["entry/scan/x"].attrs["units"] == "point" and f["entry/scan/x"].attrs["long_name"] == "point point"
        for nxdata in ("entry/results", "entry/results/derived", f"entry/results/{config.peaks[0].name}"):
            assert f[nxdata]["x"].shape == (6,) and f[nxdata]["y"].shape == (1,), nxdata
        assert f["entry/results/intensity"].shape == (1, 6)
        assert f[f"entry/results/{config.peaks[0].name}/q0"].shape == (1, 6)


def test_final_write_sets_the_end_time(config, tmp_path):
    collector = measured(config, SCAN, [0])
    with ResultsWriter(tmp_path / "R.h5", config, SCAN) as writer:
        write(writer, config, collector)
        with open_results(tmp_path / "R.h5") as f:
            assert f["entry/process/end_time"][()] == b""
        write(writer, config, collector, final=True)
    with h5py.File(tmp_path / "R.h5", "r") as f:
        end, start = f["entry/process/end_time"][()].decode(), f["entry/process/start_time"][()].decode()
        assert end >= start and end.endswith("+00:00")


def run(dirty_file=False, dirty_snapshot=False, closed=False, last_publish=0.0):
    return SimpleNamespace(dirty_file=dirty_file, dirty_snapshot=dirty_snapshot, closed=closed,
                           last_publish=last_publish)


def test_files_are_rewritten_once_per_flush_interval_when_changed():
    schedule = OutputSchedule(1.0, now=0.0)
    changed, unchanged, closed = run(dirty_file=True), run(), run(dirty_file=True, closed=True)
    runs = [changed, unchanged, closed]
    assert schedule.files_due(runs, now=0.99) == []
    assert schedule.files_due(runs, now=1.0) == [changed]
    assert schedule.files_due(runs, now=1.5) == []  # the interval counts from the last rewrite
    assert schedule.files_due(runs, now=2.0) == [changed]


def test_snapshots_go_when_changed_and_every_two_seconds_anyway():
    schedule = OutputSchedule(1.0, now=0.0)
    changed, quiet = run(dirty_snapshot=True), run(last_publish=0.0)
    assert schedule.snapshots_due([changed, quiet], now=0.2) == []
    assert schedule.snapshots_due([changed, quiet], now=0.25) == [changed] and changed.last_publish == 0.25
    assert schedule.snapshots_due([changed, quiet], now=2.1) == [changed, quiet]
    assert quiet.last_publish == 2.1


# --- writing only what changed gives the file a full rewrite gives ------------------------


def random_records(config, rng: np.random.Generator, frames: np.ndarray, series: int = 1) -> np.ndarray:
    """Records of ``frames``: mostly good fits, some rejected fits, some corrupt or masked frames."""
    recs = empty_records(frames.size, len(config.peaks))
    recs["series"], recs["frame"] = series, frames
    recs["status"] = rng.choice([FRAME_OK] * 8 + [FRAME_CORRUPT, FRAME_ALL_MASKED], frames.size)
    recs["intensity"] = np.where(recs["status"] == FRAME_OK, rng.uniform(10, 1000, frames.size), np.nan)
    recs["params"] = np.array([1.0, 1.07, 0.02, 178.0, 9.0, 0.5, 1.0, 0.01]) * rng.uniform(0.95, 1.05, recs["params"].shape)
    recs["errors"] = rng.uniform(0.001, 0.01, recs["errors"].shape)
    recs["fit_status"] = rng.choice([0, 0, 0, 1], recs["fit_status"].shape)
    recs["receive_time"] = 1000.0 + rng.uniform(0, 100, frames.size)
    recs["done_time"] = recs["receive_time"] + 0.01
    return recs


def file_contents(path) -> dict[str, object]:
    """Every dataset value and attribute of a file by path (creation and end times left out)."""
    out: dict[str, object] = {}

    def visit(name, obj):
        for key, value in obj.attrs.items():
            out[f"{name}@{key}"] = value
        if isinstance(obj, h5py.Dataset) and name not in ("entry/process/start_time", "entry/process/end_time"):
            out[name] = obj[()]

    with h5py.File(path, "r") as f:
        visit("", f)
        f.visititems(visit)
    return out


def assert_file_holds(path, config, collector: MapCollector) -> None:
    """The file's maps and frames table are the collector's (NaN where not measured)."""
    maps = collector.result_maps(config.peaks, config.derived, config.williamson_hall_peaks)
    with open_results(path) as f:
        results = f["entry/results"]
        np.testing.assert_array_equal(results["intensity"][()], maps.intensity)
        np.testing.assert_array_equal(results["frame_status"][()], maps.frame_status)
        for peak, values in maps.spots.items():
            for key, m in values.items():
                np.testing.assert_array_equal(results[peak][key][()], m, err_msg=f"{peak}/{key}")
        for key, m in maps.derived.items():
            np.testing.assert_array_equal(results["derived"][key][()], m, err_msg=key)
        assert sorted(results["frames"][()].tolist()) == sorted(collector.frames_table().tolist())
        assert f["entry/process/received"][()] == collector.counters.received


SCENARIOS = {
    # name: (initial scan, [(frames to add, strip length to grow to before them)])
    "snake, 2 frames per point, out of order with repeats": (
        RasterScan((5, 7), snake=True, frames_per_point=2, step=(1.0, 0.5), motors=("y", "x")),
        [(np.array([3, 0, 1, 2, 9]), None), (np.array([]), None), (np.array([30, 31, 4, 5, 5, 69]), None),
         (np.arange(10, 30), None), (np.arange(32, 70)[::-1], None), (np.array([0, 7]), None)]),
    "raster in order": (RasterScan((6, 3)), [(np.arange(0, 4), None), (np.arange(4, 11), None),
                                             (np.arange(11, 18), None)]),
    "strip that grows": (RasterScan((1, 4), motors=("", "point")),
                         [(np.arange(0, 3), None), (np.arange(3, 9), 9), (np.array([]), 1500),
                          (np.arange(9, 1400, 3), None), (np.arange(1400, 2100), 2100)]),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_writing_only_changes_gives_the_file_a_full_rewrite_gives(config, tmp_path, scenario):
    scan, steps = SCENARIOS[scenario]
    names = tuple(p.name for p in config.peaks)
    live, whole = MapCollector(scan, names), MapCollector(scan, names)
    rng = np.random.default_rng(7)
    with ResultsWriter(tmp_path / "changes.h5", config, scan) as writer:
        for frames, grow_to in steps:
            recs = random_records(config, rng, frames.astype(np.int64))
            for collector in (live, whole):
                if grow_to:
                    collector.grow(grow_to)
                collector.counters.received += frames.size
                collector.add(BatchResult(recs.copy()))
            writer.write(take_update(live, config))
            assert_file_holds(tmp_path / "changes.h5", config, live)  # readable, and right, at every step
        writer.write(take_update(live, config, final=True, stopped_by="series"))
    with ResultsWriter(tmp_path / "full.h5", config, scan) as writer:
        writer.write(take_update(whole, config, full=True, final=True, stopped_by="series"))
    assert_file_holds(tmp_path / "changes.h5", config, live)
    with h5py.File(tmp_path / "changes.h5", "r") as f:  # after the run the table is in slot order again
        np.testing.assert_array_equal(f["entry/results/frames"][()], live.frames_table())
    changes, full = file_contents(tmp_path / "changes.h5"), file_contents(tmp_path / "full.h5")
    assert changes.keys() == full.keys()
    for key, value in full.items():
        np.testing.assert_array_equal(changes[key], value, err_msg=key)
        assert np.asarray(changes[key]).dtype == np.asarray(value).dtype, key


def test_an_update_carries_only_the_rows_touched_and_the_new_frames(config):
    """The cost of a write grows with the new frames: a region around them, not the map."""
    scan = RasterScan((20, 10))
    collector = measured(config, scan, list(range(0, 30)))
    take_update(collector, config)
    collector.add(BatchResult(random_records(config, np.random.default_rng(1), np.arange(31, 44))))
    update = take_update(collector, config)
    assert (update.region.row0, update.region.row1) == (3, 5) and update.maps.intensity.shape == (2, 10)
    assert update.new_frames["frame"].tolist() == list(range(31, 44)) and update.frames is None
    nothing = take_update(collector, config)
    assert nothing.region is None and nothing.maps is None and nothing.new_frames.size == 0


@pytest.mark.allow_error_log
def test_a_file_made_on_the_writer_thread_is_the_file_made_at_once(config, tmp_path):
    """Live runs have their file made on the writer thread (``create=False`` then
    ``ResultsWriterThread.create``): nothing exists before, the same file after; a file that
    cannot be made is a loud error of the thread, not of the loop that made the run."""
    from monitor.session.results_writer_thread import ResultsWriterThread

    collector = measured(config, SCAN, [0, 1, 2, 5])
    with ResultsWriter(tmp_path / "now.h5", config, SCAN, run_uid="u") as writer:
        write(writer, config, collector)
    later = ResultsWriter(tmp_path / "later.h5", config, SCAN, run_uid="u", create=False)
    assert not any(tmp_path.glob("*later*"))  # not even the hidden name it is made under
    thread = ResultsWriterThread()
    thread.create(later)
    thread.submit(later, take_update(collector, config, full=True))
    thread.wait()
    assert not thread.errors
    with h5py.File(tmp_path / "now.h5", "r") as a, h5py.File(tmp_path / "later.h5", "r") as b:
        names = []
        a.visit(names.append)
        later_names = []
        b.visit(later_names.append)
        assert names == later_names
        np.testing.assert_array_equal(a["entry/results/intensity"][()], b["entry/results/intensity"][()])
    folder = tmp_path / "made-later"
    bad = ResultsWriter(folder / "R.h5", config, SCAN, create=False)  # its folder is made with the file
    folder.write_text("meanwhile, a file where the folder was to be")
    thread.create(bad)
    thread.submit(bad, take_update(collector, config, full=True))  # tries again, fails again
    thread.close()
    later.close()
    bad.close()  # never made: nothing to close, no error
    assert len(thread.errors) == 2 and all("cannot create it" in e for e in thread.errors)
