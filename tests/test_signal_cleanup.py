"""Every way a long-running command is stopped leaves no process and no shared memory behind.

Each command runs as the real console script in a session of its own, is brought to real
work (frames flowing on loopback ZeroMQ, workers started, a window shown), then gets
SIGINT or SIGTERM, to the command alone (``kill PID``) or to its process group (Ctrl-C
at a terminal). While it runs, a watcher thread records every process that descends
from it (an orphan is re-parented to init, so asking at the end would miss it; the
multiprocessing resource tracker is one of them) and every ``/dev/shm`` file those
processes map (the frame arena, the pool's semaphores). After it exited, none of those
processes may live on and none of those files may still exist. Comparing ``/dev/shm``
before and after would not do: other programs on the machine create and remove entries
at the same time.

reprocess has its own interrupt tests (tests/test_reprocess_interrupt.py); the window of
``demo`` without ``--headless`` needs a display (offscreen counts as headless), so it runs
on Xvfb when the machine has one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import h5py
import pytest
import zmq

from monitor.session.results_file import open_results
from processors.demo_setup import write_demo_config
from stream.dectris_replay import replay_file
from stream.stream_sender import StreamSender

from cli_run import NANOMAPS, _env, closed_port
from process_tree import alive, cmdline, descendants, shared_memory
from shared_scans import demo_scan

SHAPE = (8, 10)  # 80 frames: at 20 frames/s a series lasts long enough to be stopped in the middle
RATE_HZ = 20.0
EXIT_BY = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Command:
    """A ``nanomaps`` command in its own session: its output, its process tree and its shared memory.

    stdout and stderr are read in threads (a full pipe would block the command); the
    watcher samples the process tree every 0.1 s until the command has exited.
    """

    def __init__(self, *args: str, env: dict | None = None, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen([NANOMAPS, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True,
                                     env=env if env is not None else _env(), cwd=cwd)
        self.seen: dict[int, str] = {}  # pid → command line when first seen (a pid may be reused later)
        self.shm: set[str] = set()
        self._out: list[str] = []
        self._err: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(self.proc.stdout, self._out), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self._err), daemon=True),
                         threading.Thread(target=self._watch, daemon=True)]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def _watch(self) -> None:
        while self.proc.poll() is None:
            self.sample()
            time.sleep(0.1)

    def sample(self) -> None:
        pids = descendants(self.proc.pid) | {self.proc.pid}
        for pid in pids:
            if pid not in self.seen:
                self.seen[pid] = cmdline(pid)
        self.shm |= shared_memory(pids)

    @property
    def stdout(self) -> str:
        return "".join(self._out)

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def workers(self) -> set[int]:
        """The live pool workers (spawned interpreters) below the command."""
        return {p for p in descendants(self.proc.pid) if "spawn_main" in cmdline(p)}

    def wait_until(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"the command exited ({self.proc.returncode}) before {what}:\n{self.stderr[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s:\n{self.stderr[-3000:]}")
            time.sleep(0.05)
        self.sample()

    def stop(self, sig: int, to_group: bool, timeout: float = 60) -> int:
        self.sample()
        if to_group:
            os.killpg(self.proc.pid, sig)
        else:
            os.kill(self.proc.pid, sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.kill()
            for thread in self._threads:
                thread.join(10)

    def kill(self) -> None:
        """The test's own cleanup: everything this command started, whether it failed or not."""
        for pid in [self.proc.pid, *self.seen]:
            if alive(pid) and cmdline(pid) == self.seen.get(pid, cmdline(pid)):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc.wait(10)

    def leftovers(self, grace: float = 10) -> list[str]:
        """Processes of this command still alive and its shared memory still named, after ``grace`` s at most.

        The resource tracker leaves only when the last process holding its pipe has gone,
        a moment after the command itself.
        """
        deadline = time.monotonic() + grace
        while True:
            procs = [f"pid {p}: {c}" for p, c in self.seen.items()
                     if p != self.proc.pid and alive(p) and cmdline(p) == c]
            files = sorted(f for f in self.shm if Path(f).exists())
            if not procs and not files or time.monotonic() > deadline:
                return procs + files
            time.sleep(0.1)

    def assert_clean_exit(self, rc: int, expected: int | set[int]) -> None:
        expected = {expected} if isinstance(expected, int) else expected
        assert rc in expected, f"exit {rc}, expected {expected}:\n{self.stderr[-3000:]}"
        assert "Traceback" not in self.stderr, self.stderr[-3000:]
        assert "leaked" not in self.stderr, self.stderr[-3000:]  # the resource tracker cleaning up after us
        assert not self.leftovers(), self.leftovers(0)


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A small simulated scan on disk: its config and its DECTRIS master file."""
    return demo_scan(tmp_path_factory, SHAPE, seed=3)  # the same scan as other modules': rendered once


class Detector:
    """The scan replayed on loopback at ``RATE_HZ``, in this process's threads (a real ZeroMQ PUSH socket)."""

    def __init__(self, master: Path, rate: float = RATE_HZ) -> None:
        self.sender = StreamSender("tcp://127.0.0.1:*")
        self.endpoint = self.sender.endpoint
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, args=(master, rate), daemon=True)

    def start(self) -> None:
        """Send now (a loaded machine may take long to start the workers: the series must not end first)."""
        self._thread.start()

    def _send(self, master: Path, rate: float) -> None:
        replay_file(master, self.sender, protocol="stream1", rate=rate, stop=self._stop)

    @property
    def sent(self) -> int:
        return self.sender.messages_sent

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self.sender.close(linger_s=0)


class Receiver:
    """A PULL socket that takes whatever a ``nanomaps simulate``/``replay`` sends, counting messages."""

    def __init__(self, endpoint: str) -> None:
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PULL)
        self._socket.connect(endpoint)
        self.messages = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._take, daemon=True)
        self._thread.start()

    def _take(self) -> None:
        while not self._stop.is_set():
            if self._socket.poll(50):
                self._socket.recv_multipart()
                self.messages += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._socket.close(linger=0)
        self._context.term()


SIGNALS = pytest.mark.parametrize("sig, to_group", [(signal.SIGINT, True), (signal.SIGTERM, False),
                                                    (signal.SIGTERM, True)],
                                  ids=["ctrl-c", "sigterm", "sigterm-to-the-group"])
# a command of one process (no children): SIGTERM to it or to its group is the same path
SIGNALS_ONE_PROCESS = pytest.mark.parametrize("sig, to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)],
                                              ids=["ctrl-c", "sigterm"])


# --- senders: one process, a socket -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("command", ["simulate", "replay"])
@SIGNALS_ONE_PROCESS
def test_a_sender_stopped_while_sending_leaves_nothing(scan, tmp_path, command, sig, to_group):
    _, sim = scan
    port = closed_port()
    source = ["--shape", *map(str, SHAPE)] if command == "simulate" else [str(sim.master_path)]
    cmd = Command(command, *source, "--bind", f"tcp://127.0.0.1:{port}", "--rate", str(RATE_HZ))
    receiver = Receiver(f"tcp://127.0.0.1:{port}")
    try:
        cmd.wait_until(lambda: receiver.messages >= 5, 60, "frames sent")
        rc = cmd.stop(sig, to_group)
    finally:
        receiver.close()
        cmd.wait()
    # Ctrl-C: 130 and a line; SIGTERM keeps its default action (the shell reports 143)
    cmd.assert_clean_exit(rc, 130 if sig == signal.SIGINT else -signal.SIGTERM)
    if sig == signal.SIGINT:
        assert cmd.stderr.strip().splitlines()[-1] == f"nanomaps {command}: interrupted"


@pytest.mark.slow
def test_simulate_stopped_while_writing_files_leaves_nothing(tmp_path):
    master = tmp_path / "sim_master.h5"
    cmd = Command("simulate", "--out", str(master), "--shape", *map(str, SHAPE), "--frames-per-file", "5")
    try:
        cmd.wait_until(lambda: (tmp_path / "sim_data_000002.h5").exists(), 60, "data files written")
        rc = cmd.stop(signal.SIGINT, to_group=True)
    finally:
        cmd.wait()
    cmd.assert_clean_exit(rc, 130)
    assert cmd.stderr.strip().splitlines()[-1] == "nanomaps simulate: interrupted"


# --- receivers: record (a socket, files) and process (workers, shared memory) ------------------------------


@pytest.mark.slow
@SIGNALS_ONE_PROCESS
def test_record_stopped_mid_series_closes_its_files_and_leaves_nothing(scan, tmp_path, sig, to_group):
    _, sim = scan
    detector = Detector(sim.master_path)
    cmd = Command("record", "--connect", detector.endpoint, "--out", str(tmp_path / "raw_master.h5"))
    detector.start()
    try:
        cmd.wait_until(lambda: detector.sent >= 10, 60, "frames sent")
        rc = cmd.stop(sig, to_group)
    finally:
        detector.close()
        cmd.wait()
    cmd.assert_clean_exit(rc, 0)  # record treats a signal like the end of the stream
    with h5py.File(tmp_path / "raw_master.h5", "r") as raw:
        assert 0 < len(raw["entry/stream/frames"]) < SHAPE[0] * SHAPE[1]


def _process(detector: Detector, out: Path, config, *extra: str) -> Command:
    return Command("process", "--config", str(config.path), "--connect", detector.endpoint, "--out", str(out),
                   "--workers", "2", "--no-status", *extra)


def _wait_until_processing(cmd: Command, detector: Detector) -> None:
    cmd.wait_until(lambda: "ready: 2 worker(s)" in cmd.stderr, 120, "workers ready")
    detector.start()
    cmd.wait_until(lambda: detector.sent >= 10, 30, "frames flowing")
    assert len(cmd.workers()) == 2
    assert any(Path(f).name.startswith("psm_") for f in cmd.shm), cmd.shm  # the frame arena


def _processed_in(path: Path) -> int:
    """Frames processed so far by the run writing ``path`` (0 while it cannot be read yet)."""
    try:
        with open_results(path) as f:
            return int(f["entry/process/processed"][()])
    except (OSError, KeyError):
        return 0


@pytest.mark.slow
@SIGNALS
def test_process_stopped_mid_series_writes_results_and_leaves_nothing(scan, tmp_path, sig, to_group):
    config, sim = scan
    detector = Detector(sim.master_path)
    cmd = _process(detector, tmp_path / "live.h5", config, "--publish", "none")
    try:
        _wait_until_processing(cmd, detector)
        # frames processed and in the file (readable while written): a signal to the whole group
        # stops the workers too, and with nothing processed yet `process` rightly exits 1
        cmd.wait_until(lambda: _processed_in(tmp_path / "live.h5") > 0, 60, "frames processed")
        rc = cmd.stop(sig, to_group)
    finally:
        detector.close()
        cmd.wait()
    cmd.assert_clean_exit(rc, 0)  # process treats a signal like the end of the stream
    assert "stopped by signal" in cmd.stdout, cmd.stdout
    assert "died" not in cmd.stderr and "restarted" not in cmd.stderr, cmd.stderr[-3000:]
    with h5py.File(tmp_path / "live.h5", "r") as f:
        assert f["entry/process/stopped_by"][()].decode() == "signal"
        assert int(f["entry/process/worker_failures"][()]) == 0  # workers stopped by the signal did not fail


@pytest.mark.slow
@pytest.mark.parametrize("sig, to_group", [(signal.SIGINT, True), (signal.SIGTERM, True)],
                         ids=["ctrl-c", "sigterm-to-the-group"])  # SIGTERM to it alone: as headless
def test_process_with_its_window_stopped_mid_series_leaves_nothing(scan, tmp_path, sig, to_group):
    config, sim = scan
    detector = Detector(sim.master_path)
    cmd = _process(detector, tmp_path / "live.h5", config, "--gui", "--publish", f"tcp://127.0.0.1:{closed_port()}")
    try:
        _wait_until_processing(cmd, detector)
        rc = cmd.stop(sig, to_group)
    finally:
        detector.close()
        cmd.wait()
    cmd.assert_clean_exit(rc, 0)
    with h5py.File(tmp_path / "live.h5", "r") as f:
        assert f["entry/process/stopped_by"][()].decode() == "signal"


@pytest.mark.slow
def test_a_second_ctrl_c_interrupts_process_for_real_and_leaves_nothing(scan, tmp_path):
    """The first Ctrl-C finishes the frames received; a second one, while it does, stops at once."""
    config, sim = scan
    detector = Detector(sim.master_path)
    cmd = _process(detector, tmp_path / "live.h5", config, "--publish", "none")
    try:
        _wait_until_processing(cmd, detector)
        os.killpg(cmd.proc.pid, signal.SIGINT)
        time.sleep(0.05)  # the first one is handled (a fast machine may finish within a fraction of a second)
        rc = cmd.stop(signal.SIGINT, to_group=True)
    finally:
        detector.close()
        cmd.wait()
    cmd.assert_clean_exit(rc, 130)
    assert cmd.stderr.strip().splitlines()[-1] == "nanomaps process: interrupted"


@pytest.mark.slow
@pytest.mark.allow_error_log
def test_a_pool_worker_killed_mid_series_loses_no_frame_and_leaves_nothing(scan, tmp_path):
    """SIGKILL one worker while frames flow: its batches are retried in a new pool, every frame is processed."""
    config, sim = scan
    detector = Detector(sim.master_path)
    cmd = _process(detector, tmp_path / "live.h5", config, "--publish", "none")
    try:
        _wait_until_processing(cmd, detector)
        os.kill(min(cmd.workers()), signal.SIGKILL)
        rc = cmd.wait(120)
    finally:
        detector.close()
        cmd.wait()
    cmd.assert_clean_exit(rc, 0)
    n = SHAPE[0] * SHAPE[1]
    assert "worker process died" in cmd.stderr, cmd.stderr[-3000:]  # loud, not silent
    assert f": {n} of {n} frames processed" in cmd.stdout, cmd.stdout
    with h5py.File(tmp_path / "live.h5", "r") as f:
        # (the session counts the failure; a live run's file does not carry it yet: worker_failures stays 0)
        assert int(f["entry/process/processed"][()]) == n


@pytest.mark.slow
@pytest.mark.allow_error_log
def test_a_dask_worker_killed_mid_series_loses_no_frame(scan, tmp_path):
    """Kill one worker of a Dask cluster while frames flow: Dask reruns its tasks elsewhere, no frame is lost."""
    from distributed import LocalCluster

    config, sim = scan
    n = SHAPE[0] * SHAPE[1]
    ours = {p for p in descendants(os.getpid()) if "spawn_main" in cmdline(p)}  # e.g. pools of other tests
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dask_workers = {p for p in descendants(os.getpid()) if "spawn_main" in cmdline(p)} - ours
        assert len(dask_workers) == 2, [cmdline(p) for p in descendants(os.getpid())]
        detector = Detector(sim.master_path)
        cmd = Command("process", "--config", str(config.path), "--connect", detector.endpoint, "--out",
                      str(tmp_path / "live.h5"), "--scheduler", cluster.scheduler_address, "--no-status",
                      "--publish", "none")
        try:
            cmd.wait_until(lambda: "ready: 2 worker(s)" in cmd.stderr, 120, "Dask workers ready")
            detector.start()
            cmd.wait_until(lambda: detector.sent >= 20, 30, "frames flowing")
            os.kill(min(dask_workers), signal.SIGKILL)
            rc = cmd.wait(120)
        finally:
            detector.close()
            cmd.wait()
    cmd.assert_clean_exit(rc, 0)
    assert f": {n} of {n} frames processed" in cmd.stdout, cmd.stdout + cmd.stderr[-3000:]


# --- reprocess: a pool of workers over files (its output and maps: tests/test_reprocess_interrupt.py) --------


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm-to-the-group"])
def test_reprocess_stopped_mid_scan_leaves_nothing(scan, tmp_path, sig):
    _, sim = scan
    # the scan given 20 times, with a config whose scan has room for all of it: 1600 frames, far more than
    # the workers get through in the 2 s below (with the scan's own [8, 10] config reprocess took the
    # first 80 frames only, and with numba's cache warm it could finish before the signal)
    config = write_demo_config(tmp_path / "cfg", shape=(20 * SHAPE[0], SHAPE[1]))
    cmd = Command("reprocess", *[str(sim.master_path)] * 20, "--config", str(config), "--out",
                  str(tmp_path / "r.h5"), "--workers", "2", "--batch-size", "4", "--no-progress")
    try:
        cmd.wait_until(lambda: len(cmd.workers()) == 2, 90, "workers")
        time.sleep(2.0)  # the workers take batches
        rc = cmd.stop(sig, to_group=True)
    finally:
        cmd.wait()
    cmd.assert_clean_exit(rc, EXIT_BY[sig])
    assert "interrupted after" in cmd.stderr.strip().splitlines()[-1], cmd.stderr[-3000:]


# --- the viewer and the demo ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("settle_s", [1.0, 0.0], ids=["shown", "starting"])
@SIGNALS_ONE_PROCESS
def test_monitor_window_closed_by_a_signal_leaves_nothing(tmp_path, sig, to_group, settle_s):
    """Also while the window is being built (a signal there left a socket open and the exit hung)."""
    port = closed_port()  # nothing publishes: the window waits for data, which is real work enough
    cmd = Command("monitor", "--connect", f"tcp://127.0.0.1:{port}")
    try:
        cmd.wait_until(lambda: "libQt6Widgets" in _maps(cmd.proc.pid), 60, "Qt loaded")
        time.sleep(settle_s)  # the window is shown and its timers run, or not yet
        rc = cmd.stop(sig, to_group)
    finally:
        cmd.wait()
    cmd.assert_clean_exit(rc, 0)  # the viewer's signal closes its window, like the close button


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def _demo(out: Path, env: dict | None = None, *extra: str) -> Command:
    return Command("demo", "--out", str(out), "--shape", "6", "8", "--workers", "2", *extra, env=env)


@pytest.mark.slow
@SIGNALS
def test_headless_demo_stopped_mid_scan_leaves_nothing(tmp_path, sig, to_group):
    cmd = _demo(tmp_path / "demo", None, "--headless")
    try:
        cmd.wait_until(lambda: len(cmd.workers()) == 2 and any("psm_" in f for f in cmd.shm), 120,
                       "workers and the frame arena")
        time.sleep(1.0)
        rc = cmd.stop(sig, to_group)
    finally:
        cmd.wait()
    cmd.assert_clean_exit(rc, EXIT_BY[sig])
    assert cmd.stderr.strip().splitlines()[-1] == "nanomaps demo: interrupted"
    with h5py.File(tmp_path / "demo" / "results.h5", "r") as f:  # what was processed is written, and valid
        assert f["entry/results/intensity"].shape == (6, 8)


@pytest.fixture(scope="module")
def display():
    """An X display (Xvfb) for the demo's window, which refuses to open offscreen."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("no Xvfb: the demo's window needs a display")
    read, write = os.pipe()  # Xvfb picks a free display number and writes it here
    server = subprocess.Popen([xvfb, "-displayfd", str(write), "-nolisten", "tcp", "-screen", "0", "1280x1024x24"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(write,))
    os.close(write)
    with os.fdopen(read) as answer:
        number = answer.readline().strip()
    if not number:
        server.kill()
        server.wait(10)
        pytest.skip("Xvfb did not start")
    yield f":{number}"
    server.terminate()
    server.wait(10)


@pytest.mark.slow
def test_demo_window_stopped_mid_scan_leaves_nothing(tmp_path, display):
    """The window's path of the demo: SIGTERM to the group, the harshest case (the headless demo shows the
    others, through the same stop handling)."""
    sig, to_group = signal.SIGTERM, True
    cmd = _demo(tmp_path / "demo", _env(QT_QPA_PLATFORM=None, DISPLAY=display, WAYLAND_DISPLAY=None))
    try:
        cmd.wait_until(lambda: "scanning; click a point" in cmd.stdout and len(cmd.workers()) == 2, 120,
                       "the scan in the window")
        time.sleep(1.0)
        rc = cmd.stop(sig, to_group)
    finally:
        cmd.wait()
    cmd.assert_clean_exit(rc, EXIT_BY[sig])
    assert cmd.stderr.strip().splitlines()[-1] == "nanomaps demo: interrupted"


# --- a start refused after the shared memory exists ------------------------------------------------------


def test_a_bad_worker_count_is_refused_before_any_worker_or_shared_memory(scan, tmp_path):
    config, _ = scan
    cmd = Command("process", "--config", str(config.path), "--connect", f"tcp://127.0.0.1:{closed_port()}",
                  "--out", str(tmp_path / "r.h5"), "--workers", "-1", "--publish", "none")
    cmd.assert_clean_exit(cmd.wait(), 2)
    lines = cmd.stderr.strip().splitlines()
    assert len(lines) == 1 and "--workers" in lines[0], lines
    assert not cmd.workers() and not (tmp_path / "r.h5").exists()


@pytest.mark.slow
def test_an_unreachable_scheduler_is_one_line_and_leaves_nothing(scan, tmp_path):
    """The Dask scheduler is only tried once the sockets are bound: they are closed again, no traceback."""
    config, _ = scan
    cmd = Command("process", "--config", str(config.path), "--connect", f"tcp://127.0.0.1:{closed_port()}",
                  "--out", str(tmp_path / "r.h5"), "--scheduler", f"tcp://127.0.0.1:{closed_port()}",
                  "--publish", f"tcp://127.0.0.1:{closed_port()}")
    cmd.assert_clean_exit(cmd.wait(60), 2)
    lines = [line for line in cmd.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Dask scheduler" in lines[0], lines
