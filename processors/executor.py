"""Where ``process_batch`` runs: a local process pool or a Dask distributed cluster.

Both are used through the ``concurrent.futures`` protocol (``submit`` → Future), so
the code that feeds batches and collects results is the same for both, and results do
not depend on where they were computed.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

#: How long Dask may try to reach a scheduler that does not refuse the connection outright.
SCHEDULER_TIMEOUT = "10s"


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class ExecutorHandle:
    """An open executor, how many workers it has, and how to describe and close it."""

    executor: Executor
    workers: int
    description: str
    _close: Callable[[], None] = field(repr=False, default=lambda: None)

    def close(self) -> None:
        self._close()

    def __enter__(self) -> "ExecutorHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the parent, which stops feeding them and drains what is in flight."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _connection_refused(scheduler: str) -> OSError | None:
    """The error of a TCP connection to ``scheduler`` that is refused at once, else None.

    Dask retries a refused connection until its timeout: a mistyped port would cost the
    user (and the tests) the whole timeout for an answer that is already certain. A slow or
    unknown host is left to Dask's own timeout and error.
    """
    parts = urlsplit(scheduler if "://" in scheduler else f"tcp://{scheduler}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # not a port number: Dask's own error says more
        return None
    if parts.scheme != "tcp" or not host or port is None:
        return None
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return None
    except ConnectionRefusedError:
        return ConnectionRefusedError("connection refused: nothing listens on that port")
    except OSError:
        return None


def open_executor(workers: int | None = None, scheduler: str | None = None) -> ExecutorHandle:
    """A process pool of ``workers`` (default: one per core), or the Dask cluster at ``scheduler``.

    The pool uses the ``spawn`` start method: forking a parent that holds HDF5 handles
    and threads (progress bar, ZMQ) is not safe.
    """
    if scheduler:
        from distributed import Client  # only imported when a cluster is asked for

        try:
            refused = _connection_refused(scheduler)
            if refused is not None:
                raise refused
            client = Client(scheduler, timeout=SCHEDULER_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"cannot reach the Dask scheduler at {scheduler} ({exc}). "
                                  "Fix: check --scheduler ADDR (e.g. tcp://host:8786) and that the scheduler runs") from exc
        n = max(1, len(client.scheduler_info().get("workers", {})))
        executor = client.get_executor(pure=False)

        def close() -> None:
            executor.shutdown(wait=True)
            client.close()

        return ExecutorHandle(executor, n, f"Dask cluster {scheduler} ({n} workers)", close)
    n = workers or default_workers()
    if n < 1:
        raise ValueError("workers must be >= 1")
    pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_ignore_interrupts)
    return ExecutorHandle(pool, n, f"local process pool ({n} workers)", lambda: pool.shutdown(wait=True))
