"""Issue 9: a beamtime that cannot go wrong silently.

A failure of the receiver thread, of the raw recording or of a results-file write ends with ``stopped_by = "error"``
in the summary and in every results file (``/entry/process/stopped_by``, ``error``), and
``nanomaps process`` exits non-zero. A full disk while recording stops the recording only:
live processing goes on and every frame is processed.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

import h5py
import numpy as np
import pytest

from monitor.cli.process import exit_status
from monitor.session.live_processor import LiveOptions, LiveProcessor, LiveSummary
from monitor.session.map_collector import RunCounters
from monitor.session.results_file import ResultsWriter
from stream.dectris_replay import replay_file
from stream.dectris_writer import DectrisWriter
from stream.stream_receiver import StreamReceiver
from stream.stream_sender import StreamSender

from shared_scans import demo_scan

SHAPE = (4, 5)
N = SHAPE[0] * SHAPE[1]


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    config, sim = demo_scan(tmp_path_factory, SHAPE, seed=3, frames_per_file=10)  # also test_cli_errors'
    return config, sim.master_path


def _run(config, master, out, **options) -> LiveSummary:
    """One live session fed by a real sender replaying ``master``."""
    sender = StreamSender("tcp://127.0.0.1:*")
    stop_replay = threading.Event()
    replayer = threading.Thread(target=replay_file, args=(master, sender),
                                kwargs={"rate": "max", "stop": stop_replay}, daemon=True)
    replayer.start()
    try:
        opts = LiveOptions(endpoint=sender.endpoint, out=out, workers=1, status=False, drain_timeout_s=60,
                           idle_timeout_s=20, **options)
        return LiveProcessor(config, opts).run(threading.Event())
    finally:
        stop_replay.set()
        replayer.join(30)
        sender.close(linger_s=0)


def _end_of(path) -> tuple[str, str]:
    with h5py.File(path, "r") as f:
        process = f["entry/process"]
        return process["stopped_by"][()].decode(), process["error"][()].decode()


@pytest.mark.slow
@pytest.mark.allow_error_log
def test_full_disk_stops_the_recording_not_the_processing(scan, tmp_path, monkeypatch, caplog):
    config, master = scan
    real_write = DectrisWriter.write_chunk
    written = []

    def write_chunk(self, *args, **kwargs):
        if len(written) >= 5:
            raise OSError(28, "No space left on device")
        written.append(args)
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(DectrisWriter, "write_chunk", write_chunk)
    summary = _run(config, master, tmp_path / "R.h5", record=tmp_path / "RAW_master.h5")
    c = summary.counters
    assert (c.received, c.processed, c.dropped) == (N, N, 0)  # live processing went on
    assert summary.stopped_by == "error"
    assert "No space left on device" in summary.error and "recording stopped" in summary.error
    assert _end_of(tmp_path / "R.h5") == ("error", summary.error)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("recording stopped" in m and "No space left on device" in m for m in errors), errors
    assert len(written) == 5
    assert exit_status(summary) != 0


@pytest.mark.slow
@pytest.mark.allow_error_log
def test_receiver_crash_is_an_error_not_the_end_of_the_series(scan, tmp_path, monkeypatch, caplog):
    config, master = scan
    real_receive = StreamReceiver.receive
    seen = [0]

    def receive(self, *args, **kwargs):
        messages = list(real_receive(self, *args, **kwargs))
        seen[0] += len(messages)
        if seen[0] > 8:
            raise RuntimeError("socket gone")
        return messages

    monkeypatch.setattr(StreamReceiver, "receive", receive)
    summary = _run(config, master, tmp_path / "R.h5")
    assert summary.stopped_by == "error"
    assert "RuntimeError: socket gone" in summary.error
    assert summary.counters.received < N
    assert _end_of(tmp_path / "R.h5") == ("error", summary.error)
    assert any(r.levelno >= logging.ERROR and "receiver stopped" in r.getMessage() for r in caplog.records)
    assert exit_status(summary) == 1


@pytest.mark.slow
@pytest.mark.allow_error_log
def test_a_failed_results_write_is_an_error_and_loses_nothing(scan, tmp_path, monkeypatch, caplog):
    """The writer thread's failure ends the session with "error" and exit 1; the next write
    is a whole one, so the file still gets every frame and says what failed."""
    config, master = scan
    config = replace(config, monitor=replace(config.monitor, flush_interval_s=0.2))
    real_write = ResultsWriter._write
    calls = []

    def write(self, update):
        calls.append(update)
        if len(calls) == 2:  # a periodic write in the middle of the run: its changes must not be lost
            raise OSError(28, "No space left on device")
        return real_write(self, update)

    monkeypatch.setattr(ResultsWriter, "_write", write)
    sender = StreamSender("tcp://127.0.0.1:*")
    processor = LiveProcessor(config, LiveOptions(endpoint=sender.endpoint, out=tmp_path / "R.h5", workers=1,
                                                  status=False))
    summaries = []
    live = threading.Thread(target=lambda: summaries.append(processor.run(threading.Event())), daemon=True)
    live.start()
    assert processor.ready.wait(120)  # frames come once the worker is ready, 10 a second: many writes
    replayer = threading.Thread(target=replay_file, args=(master, sender), kwargs={"rate": 10.0}, daemon=True)
    replayer.start()
    try:
        live.join(120)
    finally:
        replayer.join(30)
        sender.close(linger_s=0)
    (summary,) = summaries
    assert len(calls) > 3 and not calls[1].final and calls[2].full  # after the failure: a whole rewrite
    assert summary.stopped_by == "error" and summary.counters.processed == N
    assert "writing results file" in summary.error and "No space left on device" in summary.error
    assert any(r.levelno >= logging.ERROR and "No space left on device" in r.getMessage() for r in caplog.records)
    assert exit_status(summary) == 1
    assert _end_of(tmp_path / "R.h5") == ("error", summary.error)
    with h5py.File(tmp_path / "R.h5", "r") as f:
        assert len(f["entry/results/frames"]) == N
        assert np.isfinite(f["entry/results/intensity"][()]).sum() == N


@pytest.mark.slow
def test_a_clean_session_says_how_it_ended(scan, tmp_path):
    config, master = scan
    summary = _run(config, master, tmp_path / "R.h5", record=tmp_path / "RAW_master.h5")
    assert (summary.stopped_by, summary.error, summary.counters.processed) == ("series", "", N)
    assert _end_of(tmp_path / "R.h5") == ("series", "")
    assert exit_status(summary) == 0


def test_exit_status_of_process(capsys):
    ok = LiveSummary(RunCounters(received=4, processed=4), 1.0, "series", (0.0, 0.0))
    assert exit_status(ok) == 0
    assert capsys.readouterr().err == ""
    failed = LiveSummary(RunCounters(received=4, processed=4), 1.0, "error", (0.0, 0.0),
                         error="recording stopped: No space left on device")
    assert exit_status(failed) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nanomaps process: recording stopped: No space left on device"]
    nothing = LiveSummary(RunCounters(received=4, corrupt=4), 1.0, "series", (0.0, 0.0))
    assert exit_status(nothing) == 1


@pytest.mark.allow_error_log
def test_the_socket_is_not_closed_while_the_receiver_thread_may_use_it(scan, tmp_path, caplog):
    """close() while the receiver thread still runs (it did not stop in time) leaves its socket
    alone, loudly; once the thread ended, close() closes it."""
    config = scan[0]
    sender = StreamSender("tcp://127.0.0.1:*")
    lp = LiveProcessor(config, LiveOptions(endpoint=sender.endpoint, out=tmp_path / "R.h5", workers=1,
                                           status=False))
    try:
        lp._intake.start()                      # receiving, as inside run()
        lp.close()
        assert lp.receiver is not None and not lp.receiver._socket.closed
        assert any("receiver thread did not stop" in r.getMessage() for r in caplog.records)
        lp._stop_receiving.set()
        lp._intake.join(10)
        assert not lp._intake.alive
    finally:
        lp.close()
        sender.close(linger_s=0)
    assert lp.receiver is None
