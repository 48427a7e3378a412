"""``nanomaps monitor``'s window: the viewer attached to a running ``nanomaps process``."""

from __future__ import annotations


def run_monitor(snapshots: str, frames_endpoint: str, runner, rules, *, screenshot: str | None = None,
                seconds: float = 5.0, stop=None) -> int:
    """Show the monitor window until it is closed (or, with ``screenshot``, save one after ``seconds`` s).

    ``snapshots``/``frames_endpoint``: the processor's snapshot and frame addresses;
    ``runner``: a PlanRunner for rescans or None; ``rules``: the config's ``[rescan]``.
    Returns Qt's exit code; Ctrl-C/SIGTERM close the window. Closes ``runner``. ``stop``: an event
    already set by a signal that came while starting (the window then closes at once).
    """
    from PySide6 import QtCore, QtWidgets

    from monitor.gui.monitor_window import MonitorWindow
    from monitor.gui.process_window import quit_qt_on_signals
    from monitor.links.frame_link import FrameClient
    from monitor.links.snapshot_link import SnapshotSubscriber

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    feed = frames = None
    # handlers first: a signal while the sockets and the window are built must still close the sockets
    # (a socket left open in a thread makes zmq's exit wait for ever) instead of raising in the middle
    with quit_qt_on_signals(app, stop) as stop:  # Ctrl-C/SIGTERM close the window instead of a traceback from a slot
        try:
            feed = SnapshotSubscriber(snapshots)
            frames = FrameClient(frames_endpoint)
            window = MonitorWindow(feed, frames, runner, rules)
            window.show()
            if screenshot:
                def shoot():
                    window.save_screenshot(screenshot)
                    app.quit()
                QtCore.QTimer.singleShot(int(seconds * 1000), shoot)
            if stop.is_set():  # signalled while starting: quit() before exec() would be lost
                QtCore.QTimer.singleShot(0, app.quit)
            return int(app.exec() or 0)
        finally:
            if feed is not None:
                feed.close()
            if frames is not None:
                frames.close()
            if runner is not None:
                runner.close()
