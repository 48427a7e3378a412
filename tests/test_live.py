"""Live processing end to end over loopback ZeroMQ: replay/simulate → process (+ record) → maps.

The maps of a live run must equal those of ``reprocess`` on its own recording.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest
import zmq

from monitor.session.live_processor import LiveOptions, LiveProcessor, LiveSummary
from monitor.session.reprocess import reprocess
from monitor.sim.live_scan import stream_scan
from processors.config import load_config
from processors.demo_setup import write_demo_config
from processors.simulate_scan import ScanSimulator
from stream.dectris_replay import replay_file
from stream.stream1_codec import encode_stream1_start
from stream.stream_recorder import read_stored_parts
from stream.stream_sender import StreamSender

from conftest import real_capture
from shared_scans import demo_scan

pytestmark = pytest.mark.slow

SHAPE = (8, 10)
MAP_KEYS = ("intensity", "frame_status", "100/q0", "100/phi0", "110/dphi", "200/dq", "200/amplitude_error",
            "derived/size", "derived/microstrain", "derived/a", "derived/b", "100/status")


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return demo_scan(tmp_path_factory, SHAPE, seed=3)  # the same scan as other modules': rendered once


def in_thread(fn, *args, **kwargs) -> threading.Thread:
    t = threading.Thread(target=fn, args=args, kwargs=kwargs, daemon=True)
    t.start()
    return t


def run_live(config, endpoint, out, **options) -> LiveSummary:
    opts = LiveOptions(endpoint=endpoint, out=out, workers=2, status=False, **options)
    return LiveProcessor(config, opts).run(threading.Event())


def assert_same_maps(a_path, b_path):
    with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
        for key in MAP_KEYS:
            np.testing.assert_array_equal(a[f"entry/results/{key}"][()], b[f"entry/results/{key}"][()],
                                          err_msg=key)


@pytest.mark.parametrize("protocol", ["stream1", "stream2"])
def test_live_maps_equal_reprocess_of_the_recording(scan, tmp_path, protocol):
    config, sim = scan
    sender = StreamSender("tcp://127.0.0.1:*")
    endpoint = sender.endpoint
    replayer = in_thread(replay_file, sim.master_path, sender, protocol=protocol, rate="max", header_detail="all")
    summary = run_live(config, endpoint, tmp_path / "live.h5", record=tmp_path / "raw" / "rec_master.h5")
    replayer.join(30)
    sender.close()
    n = SHAPE[0] * SHAPE[1]
    c = summary.counters
    assert (c.received, c.processed, c.dropped, c.corrupt) == (n, n, 0, 0)
    assert summary.stopped_by == "series"
    (recording,) = summary.record_paths
    # the recording opens in plain h5py + hdf5plugin with every frame, byte for byte what was sent
    with h5py.File(recording, "r") as raw, h5py.File(sim.master_path, "r") as src:
        assert raw["entry/data/data_000001"].shape[0] == n
        np.testing.assert_array_equal(raw["entry/data/data_000001"][n - 1], src["entry/data/data_000001"][n - 1])
        np.testing.assert_array_equal(raw["entry/instrument/detector/detectorSpecific/pixel_mask"][()],
                                      src["entry/instrument/detector/detectorSpecific/pixel_mask"][()])
        table = raw["entry/stream/frames"][()]
        assert table["frame"].tolist() == list(range(n)) and (np.diff(table["receive_time"]) >= 0).all()
        assert raw["entry/stream"].attrs["protocol"] == protocol
        if protocol == "stream1":
            from stream.dectris_file import DectrisFile
            with DectrisFile(sim.master_path) as f:
                sent = encode_stream1_start(1, f.metadata, "all")
            assert read_stored_parts(raw["entry/stream/header_parts"]) == sent
    with h5py.File(tmp_path / "live.h5", "r") as f:
        p = f["entry/process"]
        assert p["received"][()] == n and p["processed"][()] == n and p["late"][()] == 0
        assert p["timing/latency_median_ms"][()] > 0
    again = tmp_path / "reprocessed.h5"
    reprocess([recording], config, again, workers=2, progress=False)
    assert_same_maps(tmp_path / "live.h5", again)


def test_live_simulator_recovers_the_truth(scan, tmp_path):
    """`nanomaps simulate --bind` streams the model supercrystal; the live maps match its truth."""
    config, _ = scan
    sim = ScanSimulator(config, seed=5, background_pool=8)
    sender = StreamSender("tcp://127.0.0.1:*")
    endpoint = sender.endpoint
    streamer = in_thread(stream_scan, sim, sender, protocol="stream2", rate=200.0, series=3, header_detail="all")
    run_live(config, endpoint, tmp_path / "live.h5")
    streamer.join(30)
    sender.close()
    with h5py.File(tmp_path / "live.h5", "r") as r:
        for peak, hkl in (("100", (1, 0, 0)), ("200", (2, 0, 0))):
            true = sim.truth.spot(hkl)
            q0 = r[f"entry/results/{peak}/q0"][()]
            assert np.isfinite(q0[sim.truth.on_crystal]).mean() > 0.9
            assert np.nanmedian(np.abs(q0 - true["q0"])) < 1e-3
            assert np.nanmedian(np.abs(r[f"entry/results/{peak}/dq"][()] / true["dq"] - 1)) < 0.03
        size = r["entry/results/derived/size"][()]
        assert np.nanmedian(np.abs(size / sim.truth.size_nm - 1)) < 0.05


@pytest.mark.allow_error_log
def test_backlog_is_bounded_and_the_recording_keeps_everything(scan, tmp_path):
    """Processing cannot keep up (tiny backlog): frames are skipped and counted, never lost from the recording."""
    from dataclasses import replace

    config, sim = scan
    config = replace(config, stream=replace(config.stream, max_backlog_mb=0.5))
    sender = StreamSender("tcp://127.0.0.1:*")
    endpoint = sender.endpoint
    replayer = in_thread(replay_file, sim.master_path, sender, protocol="stream1", rate="max")
    summary = run_live(config, endpoint, tmp_path / "live.h5", record=tmp_path / "rec_master.h5")
    replayer.join(30)
    sender.close()
    c = summary.counters
    n = SHAPE[0] * SHAPE[1]
    assert c.dropped > 0 and c.received == n and c.processed + c.dropped == n
    with h5py.File(summary.record_paths[0], "r") as raw:
        assert len(raw["entry/stream/frames"]) == n
    with h5py.File(tmp_path / "live.h5", "r") as f:
        assert f["entry/process/dropped"][()] == c.dropped
        measured = np.isfinite(f["entry/results/intensity"][()]).sum()
        assert measured == c.processed


def test_sigterm_leaves_valid_results_and_recording(scan, tmp_path):
    """`nanomaps process` stopped by SIGTERM mid-series: both files open and hold what was received."""
    config, sim = scan
    sender = StreamSender("tcp://127.0.0.1:*")
    endpoint = sender.endpoint
    stop_replay = threading.Event()
    replayer = in_thread(replay_file, sim.master_path, sender, protocol="stream1", rate=10.0, stop=stop_replay)
    exe = str(Path(sys.executable).with_name("nanomaps"))
    proc = subprocess.Popen([exe, "process", "--config", str(config.path), "--connect", endpoint, "--out",
                             str(tmp_path / "live.h5"), "--record", str(tmp_path / "rec_master.h5"),
                             "--workers", "2", "--no-status"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sender.messages_sent < 30:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    stop_replay.set()
    replayer.join(30)
    sender.close(linger_s=0)
    assert proc.returncode == 0, err[-2000:]
    assert "stopped by signal" in out
    with h5py.File(tmp_path / "live.h5", "r") as f:
        processed = f["entry/process/processed"][()]
        assert 10 <= processed < SHAPE[0] * SHAPE[1]
        assert np.isfinite(f["entry/results/intensity"][()]).sum() == processed
        assert f["entry/process/end_time"][()]
    with h5py.File(tmp_path / "rec_master.h5", "r") as raw:
        recorded = len(raw["entry/stream/frames"])
        assert recorded >= processed
        assert raw["entry/stream"].attrs["ended"] == "no end message"
        raw["entry/data/data_000001"][recorded - 1]  # the last recorded frame decodes


def test_real_capture_without_end_message_stops_when_idle(tmp_path):
    """The real EIGER 1M capture never sends dseries_end: the idle timeout closes the series."""
    config = load_config(write_demo_config(tmp_path / "cfg", shape=(3, 3)))
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    endpoint = f"tcp://127.0.0.1:{push.bind_to_random_port('tcp://127.0.0.1')}"

    def send():
        for parts in real_capture("eiger1m_stream1_all"):
            push.send_multipart(parts)

    sender = in_thread(send)
    summary = run_live(config, endpoint, tmp_path / "live.h5", idle_timeout_s=1.5)
    sender.join(10)
    push.close(0)
    assert summary.stopped_by == "idle"
    assert summary.counters.received == 9 and summary.counters.processed == 9
    with h5py.File(tmp_path / "live.h5", "r") as f:
        frames = f["entry/results/frames"][()]
        assert sorted(frames["frame"].tolist()) == list(range(9)) and set(frames["series"]) == {14}


def test_bad_messages_in_a_live_run_are_counted_and_good_frames_kept(scan, tmp_path):
    """Garbage, a truncated blob, a repeated frame, a late frame: counted; every good frame is in the maps."""
    from stream.dectris_file import DectrisFile
    from stream.stream1_codec import encode_stream1_end, encode_stream1_image

    config, sim = scan
    with DectrisFile(sim.master_path) as f:
        md = f.metadata
        frames = list(f.iter_frames(series=9))
    sender = StreamSender("tcp://127.0.0.1:*")
    truncated = encode_stream1_image(frames[5])
    truncated[2] = truncated[2][: len(truncated[2]) // 2]
    import json as _json
    d = _json.loads(truncated[1])
    d["size"] = len(truncated[2])
    truncated[1] = _json.dumps(d).encode()

    def send():
        sender.send([b"\x00not a message"])
        sender.send(encode_stream1_start(9, md, "all"))
        for fr in frames:
            sender.send(truncated if fr.frame == 5 else encode_stream1_image(fr))
            if fr.frame == 7:
                sender.send(encode_stream1_image(fr))        # repeated
                sender.send([b'{"htype": "dimage-1.0", '])   # JSON that does not parse
        sender.send(encode_stream1_end(9))
        sender.send(encode_stream1_image(frames[0]))         # after the end: late

    t = in_thread(send)
    summary = run_live(config, sender.endpoint, tmp_path / "live.h5", idle_timeout_s=2.0, series=0)
    t.join(10)
    sender.close(linger_s=0)
    c = summary.counters
    n = len(frames)
    assert c.corrupt == 4 and c.late == 1            # garbage, truncated (found by the decoder), repeat, bad JSON
    assert c.processed == n - 1
    with h5py.File(tmp_path / "live.h5", "r") as f:
        assert f["entry/process/corrupt"][()] == 4 and f["entry/process/late"][()] == 1
        status = f["entry/results/frames"][()]
        assert sorted(status["frame"][status["status"] == 0].tolist()) == [k for k in range(n) if k != 5]


def test_bluesky_runs_get_their_own_maps_and_frames_are_served(scan, tmp_path):
    """Start documents give each series its map; frames come back on demand, recent or recorded."""
    from monitor.links.frame_link import FrameClient, FrameUnavailable
    from monitor.links.snapshot_link import SnapshotSubscriber
    from stream.chunk_codec import ChunkDecoder
    from stream.dectris_file import DectrisFile

    config, sim = scan
    sender = StreamSender("tcp://127.0.0.1:*")
    opts = LiveOptions(endpoint=sender.endpoint, out=tmp_path / "live.h5", workers=2, status=False, series=2,
                       publish="tcp://127.0.0.1:*", frames="tcp://127.0.0.1:*", record=tmp_path / "rec_master.h5")
    lp = LiveProcessor(config, opts)
    feed = SnapshotSubscriber(lp.publisher.endpoint)
    client = FrameClient(lp.frame_server.endpoint)
    grid = {"uid": "run-grid", "plan_name": "grid_scan", "shape": [8, 10], "extents": [[2.0, 5.5], [1.0, 5.5]],
            "snaking": [False, True], "motors": ["piezo_y", "piezo_x"], "num_points": 80}
    count = {"uid": "run-count", "plan_name": "count", "num_points": 7, "parent_uid": "run-grid"}
    fetched = {}

    def drive():
        lp.on_document("start", grid)
        replay_file(sim.master_path, sender, protocol="stream1", rate="max", series=1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and ("run-grid" not in lp.runs
                                               or lp.runs["run-grid"].collector.counters.decoded < 80):
            time.sleep(0.05)
        # the newest frames are in memory, the first ones only in the recording
        for key, (r, c) in {"recent": (7, 0), "recorded": (0, 0)}.items():
            try:
                fetched[key] = client.fetch("run-grid", r, c)
            except FrameUnavailable as exc:
                fetched[key] = exc
        lp.on_document("start", count)
        replay_file(sim.master_path, sender, protocol="stream2", rate="max", series=2)

    driver = in_thread(drive)
    summary = lp.run(threading.Event())
    driver.join(60)
    sender.close()
    snaps = feed.latest()
    feed.close()
    client.close()
    assert summary.results == (tmp_path / "live.h5", tmp_path / "live_2.h5")
    with h5py.File(tmp_path / "live.h5", "r") as f:
        assert f["entry/process/run_uid"][()] == b"run-grid" and f["entry/process/geometry"][()] == b"bluesky"
        np.testing.assert_allclose(f["entry/scan/y"][()], np.linspace(2.0, 5.5, 8))
        np.testing.assert_allclose(f["entry/scan/x"][()], np.linspace(1.0, 5.5, 10))
        assert f["entry/process/processed"][()] == 80
    with h5py.File(tmp_path / "live_2.h5", "r") as f:
        # no grid in the start document: a 1-D strip as long as the series
        assert f["entry/process/geometry"][()] == b"strip" and f["entry/process/parent_uid"][()] == b"run-grid"
        assert f["entry/results/intensity"].shape == (1, 80)
        assert np.isfinite(f["entry/results/intensity"][()]).all()
    assert set(snaps) == {"run-grid", "run-count"} and snaps["run-count"].geometry == "strip"
    assert snaps["run-grid"].maps["intensity"].shape == (8, 10) and snaps["run-grid"].done
    decoder = ChunkDecoder()
    with DectrisFile(sim.master_path) as f:
        source = {fr.frame: fr for fr in f.iter_frames()}
    for key, (r, c) in {"recent": (7, 0), "recorded": (0, 0)}.items():
        view = fetched[key]
        assert not isinstance(view, Exception), view
        k = r * 10 + (9 - c if r % 2 else c)  # snake: odd rows run backwards
        assert (view.row, view.col, view.frame) == (r, c, k)
        expected = decoder.decode_into(source[k], np.empty(source[k].nbytes_decoded, np.uint8))
        np.testing.assert_array_equal(view.image, expected.astype(np.float32))
        assert [p.name for p in view.peaks] == ["100", "110", "200"]
    assert fetched["recent"].source.startswith("ring") and fetched["recorded"].source == "recording"


def test_process_with_gui_keeps_its_window_after_the_series(scan, tmp_path):
    """`nanomaps process --gui`: processing in a thread, the window in the main thread; the window stays
    open after the series ended (the user closes it), and SIGTERM ends it all with the summary."""
    config, sim = scan
    sender = StreamSender("tcp://127.0.0.1:*")
    stop_replay = threading.Event()
    replayer = in_thread(replay_file, sim.master_path, sender, protocol="stream1", rate=40.0, stop=stop_replay)
    exe = str(Path(sys.executable).with_name("nanomaps"))
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([exe, "process", "--config", str(config.path), "--connect", sender.endpoint,
                                 "--out", str(tmp_path / "live.h5"), "--workers", "2", "--no-status", "--gui",
                                 "--publish", "tcp://127.0.0.1:*"], stdout=subprocess.PIPE, stderr=err, text=True,
                                env=env)
        try:
            deadline = time.monotonic() + 240
            while "series 1 ended" not in err_path.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, err_path.read_text()[-3000:]
                time.sleep(0.5)
            assert "series 1 ended" in err_path.read_text(), err_path.read_text()[-3000:]
            time.sleep(3.0)
            assert proc.poll() is None, "the window closed by itself when the series ended"
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    stop_replay.set()
    replayer.join(30)
    sender.close(linger_s=0)
    assert proc.returncode == 0, err_path.read_text()[-3000:]
    assert f"{SHAPE[0] * SHAPE[1]} of {SHAPE[0] * SHAPE[1]} frames processed" in out
    assert "Traceback" not in err_path.read_text()


def test_start_document_may_come_after_the_series_header(scan, tmp_path, caplog):
    """bluesky stages the detector before it opens the run: the header can beat the document."""
    config, sim = scan
    sender = StreamSender("tcp://127.0.0.1:*")
    opts = LiveOptions(endpoint=sender.endpoint, out=tmp_path / "live.h5", workers=2, status=False, series=2,
                       expect_documents=True, document_wait_s=2.0)
    lp = LiveProcessor(config, opts)
    grid = {"uid": "late-doc", "plan_name": "grid_scan", "shape": [8, 10], "extents": [[0.0, 3.5], [0.0, 4.5]],
            "snaking": [False, True], "motors": ["piezo_y", "piezo_x"]}

    def drive():
        replay_file(sim.master_path, sender, protocol="stream1", rate="max", series=1)
        lp.on_document("start", grid)                  # after all its frames, even
        replay_file(sim.master_path, sender, protocol="stream1", rate="max", series=2)  # never gets one

    driver = in_thread(drive)
    summary = lp.run(threading.Event())
    driver.join(60)
    sender.close()
    assert summary.results == (tmp_path / "live.h5", tmp_path / "live_2.h5")
    with h5py.File(tmp_path / "live.h5", "r") as f:
        assert f["entry/process/run_uid"][()] == b"late-doc" and f["entry/process/geometry"][()] == b"bluesky"
        assert f["entry/process/received"][()] == 80 and f["entry/process/processed"][()] == 80
        np.testing.assert_allclose(f["entry/scan/x"][()], np.linspace(0.0, 4.5, 10))
    with h5py.File(tmp_path / "live_2.h5", "r") as f:
        assert f["entry/process/geometry"][()] == b"config" and f["entry/process/processed"][()] == 80
    assert any("no bluesky start document within 2 s" in r.getMessage() for r in caplog.records)


def test_each_run_file_has_its_own_timing_and_exit_status(scan, tmp_path):
    """Two bluesky runs: each file's timing/ comes from its own frames, its exit_status from its stop
    document (an aborted map must say so), and the file opens on its maps (root @default)."""
    config, sim = scan
    sender = StreamSender("tcp://127.0.0.1:*")
    opts = LiveOptions(endpoint=sender.endpoint, out=tmp_path / "live.h5", workers=2, status=False, series=2,
                       expect_documents=True)
    lp = LiveProcessor(config, opts)

    def grid(uid):
        return {"uid": uid, "plan_name": "grid_scan", "shape": [8, 10], "extents": [[0.0, 3.5], [0.0, 4.5]],
                "snaking": [False, True], "motors": ["piezo_y", "piezo_x"]}

    def drive():
        lp.on_document("start", grid("run-A"))
        replay_file(sim.master_path, sender, protocol="stream1", rate="max", series=1)
        lp.on_document("stop", {"run_start": "run-A", "exit_status": "success"})
        lp.on_document("start", grid("run-B"))
        replay_file(sim.master_path, sender, protocol="stream1", rate=60.0, series=2)
        lp.on_document("stop", {"run_start": "run-B", "exit_status": "abort", "reason": "user pressed Abort"})

    driver = in_thread(drive)
    summary = lp.run(threading.Event())
    driver.join(60)
    sender.close()
    assert summary.results == (tmp_path / "live.h5", tmp_path / "live_2.h5")
    # the two runs' grid is the config's [scan]: one layout, its template made once (before data
    # flow) and both files made from it
    assert lp._templates.built == 1
    for path, uid, status in ((tmp_path / "live.h5", b"run-A", b"success"),
                              (tmp_path / "live_2.h5", b"run-B", b"abort")):
        with h5py.File(path, "r") as f:
            assert f.attrs["default"] == "entry" and f["entry"].attrs["default"] == "results"
            process = f["entry/process"]
            assert process["run_uid"][()] == uid and process["exit_status"][()] == status
            frames = f["entry/results/frames"][()]
            ok = frames[frames["status"] == 0]
            assert len(ok) == 80
            own = float(np.median((ok["done_time"] - ok["receive_time"]) * 1e3))
            assert process["timing/latency_median_ms"][()] == pytest.approx(own, rel=1e-9)

