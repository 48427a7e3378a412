"""Where ``process_batch`` runs: a local process pool or a Dask distributed cluster.

Both are used through the ``concurrent.futures`` protocol (``submit`` → Future), so
the code that feeds batches and collects results is the same for both, and results do
not depend on where they were computed.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Callable


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


def open_executor(workers: int | None = None, scheduler: str | None = None) -> ExecutorHandle:
    """A process pool of ``workers`` (default: one per core), or the Dask cluster at ``scheduler``.

    The pool uses the ``spawn`` start method: forking a parent that holds HDF5 handles
    and threads (progress bar, ZMQ) is not safe.
    """
    if scheduler:
        from distributed import Client  # only imported when a cluster is asked for

        try:
            client = Client(scheduler, timeout="10s", set_as_default=False)
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
