"""``nanomaps process --gui``: live processing in a thread, the monitor window in the main thread.

The window belongs to the user: it stays open after the scan and the processing have
ended (the status says so) and only closing it ends the command. Closing it early
stops the processing, which then finishes the frames it has and writes its results.
Ctrl-C or SIGTERM in the terminal do the same as closing the window; Qt's event loop
never sees a KeyboardInterrupt.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator

#: How often (ms) the Qt loop hands control to Python so that signal handlers run: Python
#: only runs its handlers between bytecodes, and the C++ event loop runs none while idle.
SIGNAL_POLL_MS = 200


@contextlib.contextmanager
def quit_qt_on_signals(app, stop: threading.Event | None = None) -> Iterator[threading.Event]:
    """While inside: SIGINT/SIGTERM set ``stop`` (a new event if None) and make ``app`` quit its loop.

    Yields the event. Outside the main thread (where Python cannot install handlers)
    only the event is given, set by nobody but the caller. The previous handlers are
    restored on exit, so a Ctrl-C after the window closed (e.g. while results are
    written) interrupts as usual.
    """
    from PySide6 import QtCore

    stop = threading.Event() if stop is None else stop
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    signalled = threading.Event()

    def handler(signum, _frame) -> None:
        # Qt calls are not safe from a signal handler's context: only flags here, the timer does the rest
        signalled.set()
        stop.set()

    def poll() -> None:
        if signalled.is_set():
            app.quit()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    timer = QtCore.QTimer()
    timer.timeout.connect(poll)
    timer.start(SIGNAL_POLL_MS)
    try:
        yield stop
    finally:
        timer.stop()
        for sig, old in previous.items():
            signal.signal(sig, old)


def ended_message(summary) -> str:
    """What the window says once processing ended, from a :class:`~monitor.session.live_processor.LiveSummary`."""
    c = summary.counters
    results = ", ".join(str(p) for p in summary.results) or "no results file"
    return (f"processing ended (stopped by {summary.stopped_by}): {c.processed} of {c.received} frames processed; "
            f"results in {results}. Frames on demand are no longer served. Close the window to finish.")


def run_with_gui(processor, config, publish: str | None, frames: str | None, *,
                 on_window: Callable[[object], None] | None = None):
    """Run ``processor`` (a :class:`~monitor.session.live_processor.LiveProcessor`) with the monitor window open.

    ``config`` gives the ``[rescan]`` rules; ``publish``/``frames`` are the configured
    snapshot and frame addresses, used when the processor has not bound its own (it
    binds ``tcp://127.0.0.1:*`` to a free port, and the window must connect to that).
    Returns the processor's LiveSummary once the window was closed and processing has
    finished; an exception of the processing is re-raised then. ``on_window`` is called
    with the shown window (tests use it to watch and close it).
    """
    from PySide6 import QtWidgets

    from monitor.gui.monitor_window import MonitorWindow
    from monitor.links.frame_link import FrameClient
    from monitor.links.snapshot_link import SnapshotSubscriber

    if not publish and processor.publisher is None:
        raise ValueError("--gui needs map snapshots: do not disable --publish")
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    stop = threading.Event()
    outcome: dict = {}
    finished = threading.Event()

    def work() -> None:
        try:
            outcome["summary"] = processor.run(stop)
        except BaseException as exc:  # handed to the main thread, which re-raises it after the window closed
            outcome["error"] = exc
        finally:
            finished.set()

    # read the bound addresses before the worker starts: the processor closes its links when it ends
    feed = SnapshotSubscriber(processor.publisher.endpoint if processor.publisher else publish)
    frame_endpoint = processor.frame_server.endpoint if processor.frame_server else frames
    client = FrameClient(frame_endpoint) if frame_endpoint else None
    worker = threading.Thread(target=work, name="nanomaps-process", daemon=True)
    window = MonitorWindow(feed, client, None, config.rescan)
    window.closed.connect(stop.set)          # closing early stops processing, which then writes its results
    window.closed.connect(app.quit)
    reported = []

    def report_end() -> None:
        if not finished.is_set() or reported:
            return
        reported.append(True)
        if "error" in outcome:
            exc = outcome["error"]
            window.show_message(f"processing failed: {type(exc).__name__}: {exc}. Close the window to finish.",
                                error=True)
        else:
            window.show_message(ended_message(outcome["summary"]))
        window.setWindowTitle(window.windowTitle() + " — processing ended")

    window.timer.timeout.connect(report_end)
    try:
        with quit_qt_on_signals(app, stop):
            worker.start()
            window.show()
            if on_window is not None:
                on_window(window)
            app.exec()
    finally:
        window.close()
        stop.set()
        worker.join()
        feed.close()
        if client is not None:
            client.close()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["summary"]
