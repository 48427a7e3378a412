"""Input and environment errors of every command, met through the real command line.

A user's mistake (busy port, malformed address, unwritable output, a data file given for
its master, a master without its data) gives exactly one line on stderr naming the thing,
and exit 2, never a traceback. Streams the processor cannot use (another protocol, another
detector, truncated frames) are counted and named, and a run that processed nothing
exits 1. The exit codes are the same across commands (monitor.exit_codes).
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import h5py
import pytest
import zmq

from cli_run import NANOMAPS, _env, assert_one_line_error, run_nanomaps
from conftest import real_capture
from shared_scans import demo_scan


@pytest.fixture(scope="module")
def small_scan(tmp_path_factory):
    """A 4 × 5 simulated scan in the DECTRIS layout (two data files) and its config."""
    config, sim = demo_scan(tmp_path_factory, (4, 5), seed=3, frames_per_file=10)  # also test_loud_failures'
    return config, Path(sim.master_path)


@pytest.fixture
def busy_port():
    """A loopback port where another program listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


# ------------------------------------------------------------------------------ busy ports
@pytest.mark.parametrize("command", ["simulate", "replay", "process --publish"])
def test_busy_port_is_one_line(command, busy_port, small_scan, tmp_path):
    config, master = small_scan
    address = f"tcp://127.0.0.1:{busy_port}"
    args = {"simulate": ["simulate", "--bind", address, "--config", str(config.path)],
            "replay": ["replay", str(master), "--bind", address],
            "process --publish": ["process", "--config", str(config.path), "--connect", "tcp://127.0.0.1:9",
                                  "--out", str(tmp_path / "r.h5"), "--publish", address, "--workers", "1"]}[command]
    assert_one_line_error(run_nanomaps(*args), address, "already in use", "Fix")
    assert not (tmp_path / "r.h5").exists()


# ------------------------------------------------------------------------------ malformed addresses
@pytest.mark.parametrize("command", ["process", "record", "replay"])
def test_address_without_tcp_scheme_is_one_line(command, small_scan, tmp_path):
    config, master = small_scan
    args = {"process": ["process", "--config", str(config.path), "--connect", "127.0.0.1:29302",
                        "--out", str(tmp_path / "r.h5")],
            "record": ["record", "--connect", "127.0.0.1:29302", "--out", str(tmp_path / "raw_master.h5")],
            "replay": ["replay", str(master), "--bind", "127.0.0.1:29302"]}[command]
    line = assert_one_line_error(run_nanomaps(*args), "127.0.0.1:29302", "tcp://HOST:PORT")
    assert "did you mean tcp://127.0.0.1:29302" in line


# ------------------------------------------------------------------------------ unwritable outputs
@pytest.mark.parametrize("command", ["reprocess", "process", "process --record", "record", "simulate", "report"])
def test_unwritable_output_is_checked_at_start(command, small_scan, tmp_path):
    config, master = small_scan
    args = {"reprocess": ["reprocess", str(master), "--config", str(config.path), "--out", "/proc/r.h5"],
            "process": ["process", "--config", str(config.path), "--connect", "tcp://127.0.0.1:9",
                        "--out", "/proc/r.h5", "--publish", "none"],
            "process --record": ["process", "--config", str(config.path), "--connect", "tcp://127.0.0.1:9",
                                 "--out", str(tmp_path / "r.h5"), "--record", "/proc/raw_master.h5",
                                 "--publish", "none"],
            "record": ["record", "--connect", "tcp://127.0.0.1:9", "--out", "/proc/raw_master.h5"],
            "simulate": ["simulate", "--out", "/proc/x_master.h5", "--shape", "4", "4"],
            "report": ["report", str(_results(small_scan, tmp_path)), "--out", "/proc/fig.png"]}[command]
    t0 = time.monotonic()
    assert_one_line_error(run_nanomaps(*args), "/proc/", "cannot write", "Fix")
    assert time.monotonic() - t0 < 60  # at start, not after a run


def _results(small_scan, tmp_path) -> Path:
    """A real results file of the small scan (for `report`)."""
    from monitor.session.reprocess import reprocess

    config, master = small_scan
    out = tmp_path / "results.h5"
    reprocess([master], config, out, workers=1, progress=False)
    return out


# ------------------------------------------------------------------------------ wrong input files
@pytest.mark.parametrize("command", ["reprocess", "replay"])
def test_data_file_instead_of_master_names_the_master(command, small_scan, tmp_path):
    config, master = small_scan
    data = master.with_name("scan_data_000001.h5")
    assert data.is_file()
    args = {"reprocess": ["reprocess", str(data), "--config", str(config.path), "--out", str(tmp_path / "r.h5")],
            "replay": ["replay", str(data), "--bind", "tcp://127.0.0.1:*"]}[command]
    assert_one_line_error(run_nanomaps(*args), str(data), "data file, not a master", "scan_master.h5")


@pytest.mark.parametrize("command", ["reprocess", "replay"])
def test_master_without_its_data_files_is_one_line(command, small_scan, tmp_path):
    config, master = small_scan
    lonely = tmp_path / "lonely_master.h5"
    lonely.write_bytes(master.read_bytes())  # the links point to files not beside this copy
    args = {"reprocess": ["reprocess", str(lonely), "--config", str(config.path), "--out", str(tmp_path / "r.h5")],
            "replay": ["replay", str(lonely), "--bind", "tcp://127.0.0.1:*"]}[command]
    assert_one_line_error(run_nanomaps(*args), str(lonely), "none of its 2 data file(s)", "Fix")
    assert not (tmp_path / "r.h5").exists()


def test_master_missing_one_data_file_still_processes_the_rest(small_scan, tmp_path):
    """One data file of two lost: a warning names it, the other frames are processed, exit 0."""
    config, master = small_scan
    partial = tmp_path / "scan_master.h5"
    partial.write_bytes(master.read_bytes())
    (tmp_path / "scan_data_000001.h5").write_bytes(master.with_name("scan_data_000001.h5").read_bytes())
    result = run_nanomaps("reprocess", str(partial), "--config", str(config.path), "--out",
                          str(tmp_path / "r.h5"), "--workers", "1", "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scan_data_000002.h5" in result.stderr and "Traceback" not in result.stderr
    assert "10 of 20 frames processed" in result.stdout and "missing 10" in result.stdout


# ------------------------------------------------------------------------------ streams it cannot use
class CaptureSender:
    """Sends a real capture's messages on a bound PUSH socket, ``repeat`` times or until stopped."""

    def __init__(self, folder: str, *, repeat: int = 1, pause_s: float = 0.0) -> None:
        self.messages = real_capture(folder)
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.PUSH)
        self.endpoint = f"tcp://127.0.0.1:{self.socket.bind_to_random_port('tcp://127.0.0.1')}"
        self.stop = threading.Event()
        self.repeat, self.pause_s = repeat, pause_s
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    def _send(self) -> None:
        for _ in range(self.repeat):
            for parts in self.messages:
                while not self.socket.poll(100, zmq.POLLOUT):
                    if self.stop.is_set():
                        return
                self.socket.send_multipart(parts)
                if self.stop.wait(self.pause_s):
                    return

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.socket.close(0)
        self.context.term()


def _process(config, endpoint: str, out: Path, *extra: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([NANOMAPS, "process", "--config", str(config.path), "--connect", endpoint, "--out",
                           str(out), "--workers", "1", "--no-status", "--publish", "none", *extra],
                          capture_output=True, text=True, timeout=timeout, env=_env())


@pytest.mark.slow
@pytest.mark.allow_error_log
def test_wrong_protocol_gets_a_hint_and_the_idle_timeout_fires(small_scan, tmp_path):
    """stream2 sent to `--protocol stream1`: every message is bad, the log says it looks like stream2, and
    `--idle-timeout` ends the session although bad messages keep coming (it counts time without a good frame)."""
    config, _ = small_scan
    sender = CaptureSender("eiger1m_stream2", repeat=1000, pause_s=0.2)
    try:
        t0 = time.monotonic()
        result = _process(config, sender.endpoint, tmp_path / "r.h5", "--protocol", "stream1",
                          "--idle-timeout", "1")
        seconds = time.monotonic() - t0
    finally:
        sender.close()
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "looks like stream2" in result.stderr and "Fix: --protocol stream2" in result.stderr
    assert "stopped by idle" in result.stdout
    assert seconds < 120  # not until the sender gives up (1000 × 12 messages × 0.2 s)
    assert "no frame could be processed" in result.stderr.splitlines()[-1]


@pytest.mark.slow
@pytest.mark.allow_error_log
def test_another_detectors_frames_are_counted_wrong_shape(small_scan, tmp_path):
    """The real EIGER2 16M frame against the 1M geometry: wrong_shape in summary and file, not "skipped"."""
    config, _ = small_scan
    sender = CaptureSender("eiger2_16m_stream2")
    try:
        result = _process(config, sender.endpoint, tmp_path / "r.h5")
    finally:
        sender.close()
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "the PONI detector is (1065, 1030)" in result.stderr and "(4362, 4148)" in result.stderr
    assert "wrong shape 1" in result.stdout and "skipped 0" in result.stdout
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f["entry/process/wrong_shape"][()] == 1 and f["entry/process/dropped"][()] == 0


@pytest.mark.slow
@pytest.mark.allow_error_log
def test_truncated_capture_processes_nothing_and_exits_1(small_scan, tmp_path):
    """The real EIGER2 9M capture with every blob cut: 3 corrupt frames, none processed, exit 1."""
    config, _ = small_scan
    sender = CaptureSender("eiger2_9m_stream1_truncated")
    try:
        result = _process(config, sender.endpoint, tmp_path / "r.h5")
    finally:
        sender.close()
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    # the cut blobs are caught when their messages are parsed: corrupt messages, not received frames
    assert ": 0 of " in result.stdout and "corrupt 3" in result.stdout
    assert "no frame could be processed" in result.stderr.splitlines()[-1]


def test_exit_codes_are_documented_in_every_command_help():
    for command in ("process", "reprocess", "replay", "record", "simulate"):
        result = run_nanomaps(command, "--help")
        assert result.returncode == 0
        text = " ".join(result.stdout.split())  # help is wrapped to the terminal
        assert "exit codes: 0 done" in text and "2 a usage, config" in text, command
    top = run_nanomaps("--help")
    assert "exit codes" in top.stdout


def test_usage_errors_are_one_line():
    assert_one_line_error(run_nanomaps("reprocess", "m.h5", "--config", "c.toml", "--out", "r.h5", "--bogus"),
                          "unrecognized arguments: --bogus", "nanomaps reprocess --help")
    assert_one_line_error(run_nanomaps("process", "--out", "r.h5"), "required: --config")
