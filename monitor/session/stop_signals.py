"""Ctrl-C and SIGTERM as a request to stop cleanly (finish, flush, close), not a crash."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class SignalStop(threading.Event):
    """Set by the first SIGINT or SIGTERM; ``signum`` says which (None until then), for the exit code."""

    signum: int | None = None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[SignalStop]:
    """An event set by the first SIGINT or SIGTERM; a second Ctrl-C interrupts for real.

    Only the main thread may install handlers; elsewhere the event is only set by the
    caller.
    """
    stop = SignalStop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.is_set():
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        stop.signum = signum
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
