"""Runs and series matched for certain (issue 9): a real LiveProcessor fed by real senders and documents.

A run takes a detector series only if the stream's detector takes part in it; a start document
that waits too long for a series is dropped; without bluesky every series is a run of its own.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

from monitor.session.live_processor import LiveOptions, LiveProcessor
from processors.config import DEFAULT_DETECTOR, ConfigError, load_config, parse_config
from processors.demo_setup import write_demo_config
from stream.dectris_replay import replay_file
from stream.raster_scan import RasterScan
from stream.stream_sender import StreamSender

from shared_scans import demo_scan

pytestmark = pytest.mark.slow

SHAPE = (8, 10)
N = SHAPE[0] * SHAPE[1]


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return demo_scan(tmp_path_factory, SHAPE, seed=3)  # the same scan as other modules': rendered once


def in_thread(fn, *args, **kwargs) -> threading.Thread:
    t = threading.Thread(target=fn, args=args, kwargs=kwargs, daemon=True)
    t.start()
    return t


def grid(uid: str, detectors=("eiger",)) -> dict:
    return {"uid": uid, "plan_name": "grid_scan", "shape": list(SHAPE), "extents": [[0.0, 3.5], [0.0, 4.5]],
            "snaking": [False, True], "motors": ["piezo_y", "piezo_x"], "num_points": N,
            "detectors": list(detectors)}


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def frames_of(path) -> tuple[set, int, bytes, bytes]:
    with h5py.File(path, "r") as f:
        table = f["entry/results/frames"][()]
        ok = table[table["status"] == 0]
        p = f["entry/process"]
        return set(ok["series"].tolist()), len(ok), p["run_uid"][()], p["geometry"][()]


def test_grid_then_count_of_another_detector_then_grid_each_file_has_its_own_frames(scan, tmp_path, caplog):
    """Before: the `count` start document waited in the router and the next EIGER series took it, so
    every later map was wrong. Now the count (detectors: another one) opens no map."""
    config, sim = scan
    sender = StreamSender("tcp://127.0.0.1:*")
    opts = LiveOptions(endpoint=sender.endpoint, out=tmp_path / "R.h5", workers=2, status=False, series=2,
                       expect_documents=True)
    lp = LiveProcessor(config, opts)

    def drive():
        lp.on_document("start", grid("grid-A"))
        replay_file(sim.master_path, sender, protocol="stream1", rate="max", series=1)
        wait_for(lambda: "grid-A" in lp.runs and lp.runs["grid-A"].collector.counters.decoded >= N)
        lp.on_document("stop", {"run_start": "grid-A", "exit_status": "success"})
        lp.on_document("start", {"uid": "count-X", "plan_name": "count", "num_points": 5,
                                 "detectors": ["pilatus"]})
        lp.on_document("stop", {"run_start": "count-X", "exit_status": "success"})
        lp.on_document("start", grid("grid-B"))
        replay_file(sim.master_path, sender, protocol="stream1", rate="max", series=2)
        wait_for(lambda: "grid-B" in lp.runs and lp.runs["grid-B"].collector.counters.decoded >= N)
        lp.on_document("stop", {"run_start": "grid-B", "exit_status": "success"})

    driver = in_thread(drive)
    with caplog.at_level("INFO"):
        summary = lp.run(threading.Event())
    driver.join(60)
    sender.close()
    assert summary.results == (tmp_path / "R.h5", tmp_path / "R_2.h5")
    assert frames_of(tmp_path / "R.h5") == ({1}, N, b"grid-A", b"bluesky")
    assert frames_of(tmp_path / "R_2.h5") == ({2}, N, b"grid-B", b"bluesky")
    assert not (tmp_path / "R_3.h5").exists()
    assert summary.counters.processed == 2 * N and summary.counters.outside_scan == 0
    assert any(r.getMessage() == "run count-X of other detectors (pilatus): no map" for r in caplog.records)


def test_a_stale_start_document_is_not_taken_by_a_much_later_series(scan, tmp_path, caplog):
    config, sim = scan
    sender = StreamSender("tcp://127.0.0.1:*")
    opts = LiveOptions(endpoint=sender.endpoint, out=tmp_path / "R.h5", workers=2, status=False, series=1,
                       document_wait_s=0.5)
    lp = LiveProcessor(config, opts)

    def drive():
        lp.on_document("start", grid("stale"))  # its series never comes
        time.sleep(2.0)                         # > 2 × document_wait_s (1 s), with 1 s to spare
        replay_file(sim.master_path, sender, protocol="stream1", rate="max", series=1)

    driver = in_thread(drive)
    summary = lp.run(threading.Event())
    driver.join(60)
    sender.close()
    assert summary.results == (tmp_path / "R.h5",)
    series, n, uid, geometry = frames_of(tmp_path / "R.h5")
    assert (series, n, geometry) == ({1}, N, b"config") and uid != b"stale"
    assert any("stale" in r.getMessage() and "dropped" in r.getMessage() for r in caplog.records)


def test_two_series_without_bluesky_give_two_results_files(scan, tmp_path):
    """Was: the second series fell outside the first map (its frames dropped as outside_scan)."""
    config, sim = scan
    sender = StreamSender("tcp://127.0.0.1:*")
    opts = LiveOptions(endpoint=sender.endpoint, out=tmp_path / "R.h5", workers=2, status=False, series=2)

    def drive():
        replay_file(sim.master_path, sender, protocol="stream1", rate="max", series=1)
        replay_file(sim.master_path, sender, protocol="stream2", rate="max", series=2)

    driver = in_thread(drive)
    summary = LiveProcessor(config, opts).run(threading.Event())
    driver.join(60)
    sender.close()
    assert summary.results == (tmp_path / "R.h5", tmp_path / "R_2.h5")
    assert frames_of(tmp_path / "R.h5") == ({1}, N, b"run-1", b"config")
    assert frames_of(tmp_path / "R_2.h5") == ({2}, N, b"run-2", b"config")
    c = summary.counters
    assert (c.received, c.processed, c.outside_scan) == (2 * N, 2 * N, 0)
    with h5py.File(tmp_path / "R.h5", "r") as a, h5py.File(tmp_path / "R_2.h5", "r") as b:
        np.testing.assert_array_equal(a["entry/results/intensity"][()], b["entry/results/intensity"][()])


def test_frames_outside_the_scan_are_counted_for_the_session(scan, tmp_path):
    """The summary line's `outside scan N` comes from the session's counters (was: only the run's)."""
    config, sim = scan
    small = replace(config, scan=RasterScan((4, 10)))
    sender = StreamSender("tcp://127.0.0.1:*")
    opts = LiveOptions(endpoint=sender.endpoint, out=tmp_path / "R.h5", workers=2, status=False, series=1)
    driver = in_thread(replay_file, sim.master_path, sender, protocol="stream1", rate="max", series=1)
    summary = LiveProcessor(small, opts).run(threading.Event())
    driver.join(60)
    sender.close()
    assert summary.counters.outside_scan == N - 40 and summary.counters.processed == N
    with h5py.File(tmp_path / "R.h5", "r") as f:
        assert f["entry/process/outside_scan"][()] == N - 40


# --- [bluesky] in the config ---------------------------------------------------------------------

def test_bluesky_detector_defaults_to_the_simulated_eiger_and_may_be_set(scan):
    config, _ = scan
    assert config.bluesky.detector == DEFAULT_DETECTOR == "eiger"
    mine = parse_config(config.text + '\n[bluesky]\ndetector = "eiger4m"\n', config.path)
    assert mine.bluesky.detector == "eiger4m"


@pytest.mark.parametrize("table, words", [('detector = 4', ["[bluesky] key 'detector'", "expected a str"]),
                                          ('detector = " "', ["[bluesky] key 'detector'", "empty name"]),
                                          ('detecter = "eiger"', ["[bluesky]", "unknown key(s) 'detecter'",
                                                                  "known keys: detector"])])
def test_bluesky_table_errors_name_the_key_and_the_fix(scan, table, words):
    config, _ = scan
    with pytest.raises(ConfigError) as err:
        parse_config(config.text + f"\n[bluesky]\n{table}\n", config.path)
    message = str(err.value)
    assert all(w in message for w in words) and "Fix:" in message, message


def test_process_prints_outside_scan_and_every_results_file(scan, tmp_path):
    """`nanomaps process` without bluesky, two series of 80 frames, a [scan] of 40 points: two files,
    and the summary line counts the 2 × 40 frames outside the scan (was: nothing said)."""
    _, sim = scan
    config = load_config(write_demo_config(tmp_path / "cfg", shape=(4, 10)))
    sender = StreamSender("tcp://127.0.0.1:*")

    def drive():
        for series in (1, 2):
            replay_file(sim.master_path, sender, protocol="stream1", rate="max", series=series)

    driver = in_thread(drive)
    exe = str(Path(sys.executable).with_name("nanomaps"))
    proc = subprocess.run([exe, "process", "--config", str(config.path), "--connect", sender.endpoint,
                           "--out", str(tmp_path / "R.h5"), "--workers", "1", "--series", "2", "--no-status",
                           "--publish", "none"], capture_output=True, text=True, timeout=240)
    driver.join(60)
    sender.close(linger_s=0)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{2 * N} of {2 * N} frames processed" in proc.stdout and f"outside scan {2 * (N - 40)}" in proc.stdout
    assert f"2 results files: {tmp_path / 'R.h5'}, {tmp_path / 'R_2.h5'}" in proc.stdout
    for path in (tmp_path / "R.h5", tmp_path / "R_2.h5"):
        with h5py.File(path, "r") as f:
            assert f["entry/process/outside_scan"][()] == N - 40 and f["entry/process/processed"][()] == N
