"""Scan-runner calls off the Qt thread: a slow or unreachable queue server never freezes the window.

A :class:`~monitor.bluesky.plan_runner.PlanRunner` method (submit, abort, busy, …) may wait
for a server for seconds (its request timeout, an abort's wait). :class:`RunnerCalls` runs
each call in one worker thread, in the order asked, and hands its result or exception
back to a callback in the Qt thread, through a queued signal.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from PySide6 import QtCore

log = logging.getLogger(__name__)


class RunnerCalls(QtCore.QObject):
    """Runs blocking calls in a worker thread; ``on_done(result)`` or ``on_error(exc)`` run in the Qt thread.

    One worker: calls to the same runner never overlap (a submit and an abort are
    answered in the order they were made). :attr:`pending` counts calls not yet
    answered. :meth:`close` drops calls not started and waits for the one in flight
    (bounded by the runner's own timeouts); answers after that are not delivered.
    """

    _answered = QtCore.Signal(object, object)   # the callback, its argument

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nanomaps-runner-call")
        self._lock = threading.Lock()
        self._pending = 0
        self._closed = False
        # queued: emitted from the worker, the slot runs in the thread this object lives in (Qt's)
        self._answered.connect(self._deliver, QtCore.Qt.ConnectionType.QueuedConnection)

    @property
    def pending(self) -> int:
        """Calls asked for and not yet answered."""
        with self._lock:
            return self._pending

    def call(self, function: Callable[[], Any], on_done: Callable[[Any], None],
             on_error: Callable[[BaseException], None]) -> None:
        """Run ``function()`` in the worker; then ``on_done(result)`` or ``on_error(exception)`` in the Qt thread."""
        with self._lock:
            if self._closed:
                raise RuntimeError("runner calls are closed: the window is closing")
            self._pending += 1
        self._pool.submit(self._run, function, on_done, on_error)

    def _run(self, function, on_done, on_error) -> None:
        try:
            result = function()
        except Exception as exc:  # the window shows it; the worker goes on with the next call
            answer = (on_error, exc)
        else:
            answer = (on_done, result)
        with self._lock:
            if self._closed:
                self._pending -= 1
                return
        self._answered.emit(*answer)

    @QtCore.Slot(object, object)
    def _deliver(self, callback, value) -> None:
        with self._lock:
            self._pending -= 1
            if self._closed:
                return
        try:
            callback(value)
        except Exception:  # a failing callback must not stop later answers
            log.warning("handling a runner's answer failed", exc_info=True)

    def close(self) -> None:
        """Drop calls not started; wait for the one in flight (its answer is not delivered)."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
