"""Running the real ``nanomaps`` console script as a user would, and what its errors must look like."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

NANOMAPS = str(Path(sys.executable).with_name("nanomaps"))


def run_nanomaps(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([NANOMAPS, *args], capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else _env())


def _env(**changes) -> dict:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 2 and exactly one non-empty line on stderr, containing every needle."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def closed_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
