"""``nanomaps monitor``'s window: the viewer attached to a running ``nanomaps process``."""

from __future__ import annotations


def run_monitor(snapshots: str, frames_endpoint: str, runner, rules, *, screenshot: str | None = None,
                seconds: float = 5.0) -> int:
    """Show the monitor window until it is closed (or, with ``screenshot``, save one after ``seconds`` s).

    ``snapshots``/``frames_endpoint``: the processor's snapshot and frame addresses;
    ``runner``: a PlanRunner for rescans or None; ``rules``: the config's ``[rescan]``.
    Returns Qt's exit code; Ctrl-C/SIGTERM close the window. Closes ``runner``.
    """
    from PySide6 import QtCore, QtWidgets

    from monitor.gui.monitor_window import MonitorWindow
    from monitor.gui.process_window import quit_qt_on_signals
    from monitor.links.frame_link import FrameClient
    from monitor.links.snapshot_link import SnapshotSubscriber

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    feed = SnapshotSubscriber(snapshots)
    frames = FrameClient(frames_endpoint)
    window = MonitorWindow(feed, frames, runner, rules)
    window.show()
    if screenshot:
        def shoot():
            window.save_screenshot(screenshot)
            app.quit()
        QtCore.QTimer.singleShot(int(seconds * 1000), shoot)
    try:
        with quit_qt_on_signals(app):   # Ctrl-C/SIGTERM close the window instead of a traceback from a slot
            return int(app.exec() or 0)
    finally:
        feed.close()
        frames.close()
        if runner is not None:
            runner.close()
