"""What ends the demo, and where it may write.

SIGINT and SIGTERM end it at any moment with one line (see :class:`DemoStop`); its
output folder is its own (:func:`prepare_output_folder`): a folder holding files that no
earlier demo wrote is someone's data and is refused unless asked.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

#: written into an output folder the demo made: a later demo may write there again
MARKER = ".nanomaps-demo"


class DemoError(Exception):
    """A user's or the environment's problem: one line on stderr, exit status 2."""


class DemoInterrupted(BaseException):
    """SIGINT or SIGTERM in the main thread; a BaseException, so no ``except Exception`` swallows it."""


class DemoStop:
    """SIGINT and SIGTERM end the demo; the first one counts, later ones are ignored.

    The first signal raises :class:`DemoInterrupted` in the main thread, except inside
    :meth:`deferred` or a finalizer (``__del__``), where it is only noted and :meth:`check`
    raises it: Qt calls Python code from its event loop, and an exception there, or in a
    finalizer, would be printed as a traceback instead of ending the demo. Later signals are ignored so that the cleanup
    they would cut short runs to its end (each of its steps has a timeout).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._raising = True

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        if self._raising and not _in_finalizer(frame):
            raise DemoInterrupted(signum)

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():  # only the main thread may install them
            yield self
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def deferred(self):
        before, self._raising = self._raising, False
        try:
            yield
        finally:
            self._raising = before

    def check(self) -> None:
        if self.signum is not None:
            raise DemoInterrupted(self.signum)


def _in_finalizer(frame) -> bool:
    """Whether the signal came while a ``__del__`` ran (llvmlite freeing compiled code, say):
    an exception raised there is printed as "Exception ignored in …" with a traceback and then
    lost. The signal is noted instead, and the demo's next :meth:`DemoStop.check` ends it."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def prepare_output_folder(out: Path, *, overwrite: bool = False) -> None:
    """Make ``out`` and mark it as the demo's; raises :class:`DemoError` (one line) when it must not or cannot be.

    The demo writes ``results.h5``, ``raw/``, figures and more into ``out``. A folder
    that holds files no earlier demo wrote (no :data:`MARKER`) may be someone's data:
    it is refused unless ``overwrite``. A folder of an earlier demo is written again.
    """
    try:
        if out.exists() and not out.is_dir():
            raise DemoError(f"--out {out}: is a file, not a folder. Fix: give a folder name (it is created)")
        if out.is_dir() and not overwrite and not (out / MARKER).exists():
            present = sorted(p.name for p in out.iterdir())
            if present:
                raise DemoError(f"--out {out}: the folder already holds files ({', '.join(present[:3])}"
                                f"{', ...' if len(present) > 3 else ''}) that the demo would overwrite. "
                                "Fix: choose a new or empty folder, or pass --overwrite")
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("written by `nanomaps demo`: a later demo may write into this folder again\n")
    except OSError as exc:
        raise DemoError(f"--out {out}: cannot write there ({exc.strerror or exc}). "
                        "Fix: choose a folder you can write to") from None
