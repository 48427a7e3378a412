"""Ctrl-C or SIGTERM during ``nanomaps reprocess``: the maps so far are written, no child is left.

The console script runs in a session of its own (Ctrl-C at a terminal reaches the whole
process group, as ``killpg`` does here; ``kill PID`` reaches only the command). Its
output goes to a pseudo-terminal so that the progress bar redraws often and the test can
wait until frames are being processed.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from processors.config import load_config
from processors.demo_setup import write_demo_config
from processors.simulate_scan import simulate_scan_file

from cli_run import _env
from process_tree import alive, children, cmdline

NANOMAPS = str(Path(sys.executable).with_name("nanomaps"))
# one short recording given SHAPE[0] times: a 6000-frame scan, simulated in seconds, that
# lasts several seconds even at ~1000 frames/s (1200 frames were all done before the signal
# came, once reprocess ran at ~800 frames/s)
SHAPE = (150, 40)
FRAMES_PER_FILE = 40
TOTAL = SHAPE[0] * SHAPE[1]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    folder = tmp_path_factory.mktemp("interrupt")
    config_path = write_demo_config(folder, shape=SHAPE)
    sim = simulate_scan_file(load_config(config_path), folder / "scan_master.h5", n_frames=FRAMES_PER_FILE,
                             frames_per_file=FRAMES_PER_FILE)
    return config_path, [str(sim.master_path)] * (TOTAL // FRAMES_PER_FILE)


class _Terminal:
    """The child's stdout and stderr on a pseudo-terminal, read in a thread."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        # rows, columns: a terminal of no width would get a progress bar of no width
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self._text = ""
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        os.close(self.slave)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: the child and all its processes closed the terminal
                break
            if not chunk:
                break
            with self._changed:
                self._text += chunk.decode(errors="replace")
                self._changed.notify_all()
        os.close(self.master)

    def frames_done(self) -> int:
        done = [int(n) for n in re.findall(rf"(\d+)/{TOTAL} \[", self._text)]
        return max(done, default=0)

    def wait_for_frames(self, n: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.frames_done() >= n, timeout)

    def text(self, timeout: float = 10.0) -> str:
        self._thread.join(timeout)
        with self._changed:
            return self._text


@pytest.mark.slow
@pytest.mark.parametrize("sig, to_group, code", [(signal.SIGINT, True, 130), (signal.SIGTERM, False, 143),
                                                  (signal.SIGTERM, True, 143)],
                         ids=["ctrl-c", "sigterm", "sigterm-to-the-group"])  # the last kills the workers too
def test_interrupted_reprocess_writes_the_maps_so_far_and_leaves_no_process(recording, tmp_path, sig, to_group,
                                                                            code):
    config_path, masters = recording
    out = tmp_path / "results.h5"
    terminal = _Terminal()
    proc = subprocess.Popen([NANOMAPS, "reprocess", *masters, "--config", str(config_path), "--out", str(out),
                             "--workers", "2", "--batch-size", "4"],
                            stdin=subprocess.DEVNULL, stdout=terminal.slave, stderr=terminal.slave,
                            start_new_session=True, env=_env())
    terminal.start()
    try:
        assert terminal.wait_for_frames(20, 90), terminal.text(0)[-3000:]
        workers = {p for p in children(proc.pid) if "spawn_main" in cmdline(p)}
        assert len(workers) == 2, [cmdline(p) for p in children(proc.pid)]
        kids = children(proc.pid)
        if to_group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = terminal.text()
    assert rc == code, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert "died" not in text and "restarted" not in text, text[-3000:]
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # colours and cursor moves of the terminal
    lines = [line.strip() for line in plain.replace("\r", "\n").splitlines() if line.strip()]
    last = re.fullmatch(rf"nanomaps reprocess: interrupted after (\d+) of {TOTAL} frames; "
                        rf"the maps of those are in (.+)", lines[-1])
    assert last and last[2] == str(out), [repr(line) for line in lines[-3:]]
    deadline = time.monotonic() + 10  # the resource tracker leaves once the command has gone
    while any(alive(p) for p in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [(p, cmdline(p)) for p in kids if alive(p)]
    with h5py.File(out, "r") as f:
        process = f["entry/process"]
        processed, received = int(process["processed"][()]), int(process["received"][()])
        assert 0 < processed < TOTAL
        assert processed == int(last[1])
        assert processed <= received <= TOTAL
        assert process["end_time"][()].decode()
        assert process["stopped_by"][()].decode() == "signal"
        assert int(process["worker_failures"][()]) == 0  # workers killed by the signal are not failures
        intensity = f["entry/results/intensity"][()]
        assert intensity.shape == SHAPE
        assert 0 < np.count_nonzero(np.isfinite(intensity)) < TOTAL
