"""User and environment errors of ``nanomaps demo`` and of the bluesky proxy address, as a user meets them.

Every case runs the console script in a subprocess: a mistake gives one line on stderr
naming what is wrong and the fix, exit status 2, never a traceback. Ctrl-C or SIGTERM
at any moment of the demo ends it with one line, no traceback from any thread or child,
no child process and no shared memory left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from monitor.sim.demo_control import MARKER, DemoError, prepare_output_folder
from processors.demo_setup import write_demo_config

from cli_run import _env, assert_one_line_error, closed_port, run_nanomaps
from process_tree import alive, cmdline, descendants, shared_memory

NANOMAPS = str(Path(sys.executable).with_name("nanomaps"))


# ----------------------------------------------------------------------------- demo: output folder


def test_demo_refuses_a_folder_that_holds_other_files(tmp_path):
    out = tmp_path / "beamtime"
    out.mkdir()
    (out / "results.h5").write_bytes(b"someone's data")
    line = assert_one_line_error(run_nanomaps("demo", "--headless", "--out", str(out)),
                                 str(out), "results.h5", "--overwrite")
    assert line.startswith("nanomaps demo: ")
    assert (out / "results.h5").read_bytes() == b"someone's data"
    assert not (out / MARKER).exists()


@pytest.mark.parametrize("where", ["/proc/nanomaps-demo", "file"])
def test_demo_output_folder_that_cannot_be_made(tmp_path, where):
    if where == "file":
        where = str(tmp_path / "a-file")
        Path(where).write_text("x")
    assert_one_line_error(run_nanomaps("demo", "--headless", "--out", where), where, "Fix:")


def test_prepare_output_folder_writes_again_only_where_a_demo_wrote(tmp_path):
    fresh = tmp_path / "new" / "deeper"
    prepare_output_folder(fresh)
    assert (fresh / MARKER).exists()
    (fresh / "results.h5").write_bytes(b"an earlier demo's")
    prepare_output_folder(fresh)  # an earlier demo's folder: written again
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DemoError, match="notes.txt"):
        prepare_output_folder(other)
    prepare_output_folder(other, overwrite=True)
    assert (other / "notes.txt").read_text() == "mine"  # --overwrite replaces what the demo writes, nothing else
    prepare_output_folder(tmp_path / "empty-but-there")


@pytest.mark.parametrize("args, needle", [(["--workers", "0"], "--workers"), (["--shape", "0", "5"], "--shape"),
                                          (["--shape", "2", "x"], "--shape")])
def test_demo_bad_numbers_are_usage_errors(tmp_path, args, needle):
    result = run_nanomaps("demo", "--headless", "--out", str(tmp_path / "out"), *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert needle in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_demo_without_a_working_display_says_so(tmp_path):
    """Qt would abort the process (core dump) on a display it cannot open or without its xcb libraries."""
    result = run_nanomaps("demo", "--out", str(tmp_path / "out"),
                          env=_env(QT_QPA_PLATFORM=None, DISPLAY=":97", WAYLAND_DISPLAY=None))
    assert_one_line_error(result, "Fix:")  # a missing xcb library or the dead display, whichever comes first
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- process --bluesky


@pytest.fixture(scope="module")
def demo_config(tmp_path_factory) -> Path:
    return write_demo_config(tmp_path_factory.mktemp("cfg"), shape=(2, 3))


def test_process_with_an_unreachable_bluesky_proxy_fails_at_start(tmp_path, demo_config):
    address = f"tcp://127.0.0.1:{closed_port()}"
    t0 = time.monotonic()
    result = run_nanomaps("process", "--config", str(demo_config), "--connect", f"tcp://127.0.0.1:{closed_port()}",
                          "--out", str(tmp_path / "results.h5"), "--bluesky", address, "--idle-timeout", "30")
    assert time.monotonic() - t0 < 60  # at start, not when a series ends
    assert_one_line_error(result, address, "nothing answers there", "Fix:")


def test_process_with_a_malformed_bluesky_address(tmp_path, demo_config):
    result = run_nanomaps("process", "--config", str(demo_config), "--connect", "tcp://127.0.0.1:9999",
                          "--out", str(tmp_path / "results.h5"), "--bluesky", "localhost:5578")
    assert_one_line_error(result, "localhost:5578", "tcp://localhost:5578")


# ----------------------------------------------------------------------------- demo: Ctrl-C and SIGTERM


class _Output:
    """Lines of a child's (merged) output, read in a thread so that waiting for one can time out."""

    def __init__(self, stream) -> None:
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: any(text in line for line in self._lines), timeout)

    def text(self, timeout: float = 10.0) -> str:
        self._thread.join(timeout)
        with self._changed:
            return "".join(self._lines)


def _start_demo(out: Path) -> tuple[subprocess.Popen, _Output]:
    # a session of its own: Ctrl-C at a terminal reaches the whole process group, as killpg does here
    proc = subprocess.Popen([NANOMAPS, "demo", "--headless", "--out", str(out), "--shape", "6", "8",
                             "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=_env())
    return proc, _Output(proc.stdout)


def _stop_and_check(proc: subprocess.Popen, output: _Output, sig: int, to_group: bool, code: int) -> str:
    """Send ``sig``; check the exit status, the last line, and that no child and no shared memory is left."""
    children = descendants(proc.pid)
    shm = shared_memory({proc.pid, *children})
    try:
        if to_group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = output.text()
    assert rc == code, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
    assert "leaked" not in text  # the resource tracker found shared memory nobody unlinked
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[-1] == "nanomaps demo: interrupted"
    deadline = time.monotonic() + 10  # the resource tracker leaves once the demo has gone
    while any(alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [(p, cmdline(p)) for p in children if alive(p)]
    assert not [path for path in shm if os.path.exists(path)]
    return text


@pytest.mark.slow
def test_demo_stops_cleanly_while_starting(tmp_path):
    proc, output = _start_demo(tmp_path / "out")
    try:
        assert output.wait_for("starting:", 120), output.text(0)
        time.sleep(1.0)  # building the simulated detector and the processing tables
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    _stop_and_check(proc, output, signal.SIGINT, True, 130)
