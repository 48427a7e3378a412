"""A Dask scheduler address where nothing listens is an error at once, not after Dask's connect timeout."""

from __future__ import annotations

import socket
import time

import pytest

from processors.executor import _connection_refused, open_executor

from cli_run import closed_port


def test_refused_scheduler_fails_at_once_naming_the_address():
    address = f"tcp://127.0.0.1:{closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=f"cannot reach the Dask scheduler at {address} .*connection refused"):
        open_executor(scheduler=address)
    assert time.monotonic() - t0 < 5  # Dask alone retries for its whole 10 s timeout


def test_only_a_refused_tcp_connection_is_decided_early():
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert _connection_refused(f"tcp://127.0.0.1:{port}") is None
        assert _connection_refused(f"127.0.0.1:{port}") is None  # Dask's scheme-less form is TCP
    assert isinstance(_connection_refused(f"127.0.0.1:{closed_port()}"), ConnectionRefusedError)
    for other in ("tls://127.0.0.1:1", "inproc://x", "tcp://127.0.0.1:notaport", "tcp://127.0.0.1"):
        assert _connection_refused(other) is None, other  # left to Dask and its own error
