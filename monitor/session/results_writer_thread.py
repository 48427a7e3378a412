"""One thread per live session that writes its results files, off the receive loop.

The live loop takes a :class:`ResultsUpdate` (copies) from a run and :meth:`submit` s it;
the thread writes updates in the order given. A failed write is loud: it is logged at
ERROR when it happens and kept in :attr:`ResultsWriterThread.errors`, so the session ends
with ``stopped_by = "error"`` and a non-zero exit; the thread goes on with later updates
(another run's file, or the final write that records the error).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections import Counter
from typing import Callable

from monitor.session.results_file import ResultsWriter
from monitor.session.results_update import ResultsUpdate

log = logging.getLogger("nanomaps.process")

_STOP = object()


class ResultsWriterThread:
    """Writes :class:`ResultsUpdate` s into their :class:`ResultsWriter` s on one daemon thread
    (started by the first :meth:`submit`); :meth:`wait` until all are written, :meth:`close` at
    the end of the session."""

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._pending: Counter[int] = Counter()  # id(writer) → updates submitted, not yet written
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []  # one line per failed write (appended by the thread)

    def submit(self, writer: ResultsWriter, update: ResultsUpdate) -> None:
        """Queue ``update`` for ``writer``'s file (never blocks)."""
        self._queue_job(writer, functools.partial(writer.write, update))

    def create(self, writer: ResultsWriter) -> None:
        """Queue the making of ``writer``'s file (:meth:`ResultsWriter.create`: ≈ 50 ms of CPU for
        a file of a hundred maps made directly, ≈ 3 ms from its layout's template; the live
        loop's frames need not wait for either)."""
        self._queue_job(writer, writer.create)

    def _queue_job(self, writer: ResultsWriter, job: Callable[[], None]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="results-writer", daemon=True)
            self._thread.start()
        with self._lock:
            self._pending[id(writer)] += 1
        self._queue.put((writer, job))

    def busy(self, writer: ResultsWriter) -> bool:
        """An update for ``writer`` is still queued or being written (the live loop then waits:
        the changes stay in the collector and go with the next update, none is lost)."""
        with self._lock:
            return self._pending[id(writer)] > 0

    def wait(self) -> None:
        """Return when every update submitted so far is written (or has failed)."""
        if self._thread is not None:
            self._queue.join()

    def close(self) -> None:
        """Write what is queued, then end the thread (idempotent)."""
        if self._thread is not None:
            self._queue.put((None, _STOP))
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while True:
            writer, job = self._queue.get()
            try:
                if job is _STOP:
                    return
                try:
                    job()
                except Exception as exc:  # noqa: BLE001 -- any failure is reported, none ends the session silently
                    message = f"writing results file {writer.path} failed: {type(exc).__name__}: {exc}"
                    log.error("%s", message)
                    self.errors.append(message)
                finally:
                    with self._lock:
                        self._pending[id(writer)] -= 1
            finally:
                self._queue.task_done()
