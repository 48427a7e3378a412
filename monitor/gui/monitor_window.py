"""The live monitor window: map, frame inspector, status, region → rescan, abort.

Data arrive in the :class:`~monitor.links.snapshot_link.SnapshotSubscriber`'s own thread; this
window only reads its newest snapshots from a QTimer (``refresh_hz``), so a fast
publisher never floods the GUI and a silent one never blocks it. The scan runner is
called in a worker thread (:class:`~monitor.gui.runner_calls.RunnerCalls`), so a slow or
unreachable queue server never blocks it either.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from monitor.bluesky.plan_runner import PlanRunner
from monitor.gui.frame_inspector import FrameInspector
from monitor.gui.map_view import MapView
from monitor.gui.rescan_dialog import RescanDialog
from monitor.gui.runner_calls import RunnerCalls
from monitor.gui.status_panel import StatusPanel
from monitor.links.frame_link import FrameClient
from monitor.links.snapshot_link import SnapshotSubscriber
from processors.config import RescanConfig

log = logging.getLogger(__name__)


class MonitorWindow(QtWidgets.QMainWindow):
    """Live maps of the runs ``feed`` receives, frames from ``frames``, rescans via ``runner``.

    ``frames`` None: no frame inspector data (clicks show why); ``runner`` None:
    rescans and abort are disabled. The window does not own ``feed``, ``frames`` or
    ``runner``: whoever created them closes them (after :meth:`close`). The status
    line and progress bar describe the run the map shows. ``closed`` is emitted when
    the window closes. Runner calls (the dialog's submit, abort) run in ``runner_calls``'
    worker thread; their outcome reaches the status bar message.
    """

    closed = QtCore.Signal()

    def __init__(self, feed: SnapshotSubscriber, frames: FrameClient | None, runner: PlanRunner | None,
                 rescan_rules: RescanConfig, *, refresh_hz: float = 10.0, stale_after_s: float = 3.0,
                 parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.feed = feed
        self.frames = frames
        self.runner = runner
        self.rescan_rules = rescan_rules
        self.rescan_dialog: RescanDialog | None = None
        self.runner_calls = RunnerCalls(self)
        self.ticks = 0
        self.setWindowTitle(f"nanomaps monitor — {feed.endpoint}")

        self.map_view = MapView()
        self.inspector = FrameInspector(frames)
        self.status = StatusPanel(feed.endpoint, stale_after_s=stale_after_s)
        self.abort_button = QtWidgets.QPushButton("Abort scan")
        self.abort_button.setStyleSheet("QPushButton:enabled { background: #c62828; color: white; "
                                        "font-weight: bold; padding: 3px 12px; }")
        self.abort_button.setToolTip("Stop the running scan now (the runner's abort)")
        self.abort_button.setEnabled(runner is not None)
        self.abort_button.clicked.connect(self.abort)
        self.map_view.select_button.setEnabled(runner is not None)
        if runner is None:
            self.map_view.select_button.setToolTip("no scan runner connected: rescans are disabled")
        # next to the scan's progress, where the operator looks when a scan misbehaves
        self.status.layout().addWidget(self.abort_button)

        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        split.addWidget(self.map_view)
        split.addWidget(self.inspector)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 5)
        split.setSizes([600, 1000])
        central = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(central)
        layout.setContentsMargins(6, 6, 6, 0)
        layout.addWidget(split, 1)
        layout.addWidget(self.status)
        self.setCentralWidget(central)
        self.message_label = QtWidgets.QLabel("")
        self.statusBar().addWidget(self.message_label, 1)

        self.map_view.point_clicked.connect(self.inspector.request)
        self.map_view.region_selected.connect(self.open_rescan)
        # the status describes the shown run: switching runs must not wait for the next tick
        self.map_view.run_changed.connect(lambda _run: self.refresh_status())
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(max(1, int(round(1000 / refresh_hz))))
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.resize(1600, 900)

    # ---- periodic ----------------------------------------------------------------------
    def refresh(self) -> None:
        """One timer tick: newest snapshots → map (redrawn only if changed) and status."""
        self.ticks += 1
        snapshots = self.feed.latest()
        if snapshots:
            try:
                self.map_view.set_runs(snapshots)
            except Exception as exc:  # one malformed snapshot must not stop the timer's other work
                # the view marks a snapshot shown before drawing it, so this is reported once per snapshot
                log.warning("cannot draw the map of run %s", self.map_view.current_run, exc_info=True)
                self.show_message(f"cannot draw this map: {type(exc).__name__}: {exc}", error=True)
        self.refresh_status()

    @property
    def shown_snapshot(self):
        """The newest snapshot of the run the map shows (None before the first)."""
        run = self.map_view.current_run
        return self.map_view.runs_received.get(run) if run is not None else None

    def refresh_status(self) -> None:
        """Status line and progress of the run the map shows."""
        self.status.update_status(self.shown_snapshot, self.feed.age())

    # ---- actions -----------------------------------------------------------------------
    @property
    def message(self) -> str:
        """The status bar message ("" when none)."""
        return self.message_label.text()

    def show_message(self, text: str, *, error: bool = False) -> None:
        colour = "#b00020" if error else "#1b5e20"
        self.message_label.setStyleSheet(f"color: {colour}; font-weight: bold;")
        self.message_label.setText(text)

    def open_rescan(self, rect: QtCore.QRectF) -> RescanDialog | None:
        """Open the rescan dialog for ``rect`` (motor coords, µm) on the shown run (non-modal)."""
        snap = self.map_view.snapshot
        if snap is None:
            self.show_message("no map yet: nothing to rescan", error=True)
            return None
        if snap.geometry == "strip":
            self.show_message("this run's scan geometry is unknown (1-D strip): draw the region on a "
                              "run with a known grid", error=True)
            return None
        if self.rescan_dialog is not None:
            self.rescan_dialog.close()
        dialog = RescanDialog(snap, rect, self.rescan_rules, self.runner, self, calls=self.runner_calls)
        dialog.refused.connect(lambda text: self.show_message(text, error=True))
        dialog.submitted.connect(lambda sid, _req: self.show_message(f"rescan submitted ({sid})"))
        self.rescan_dialog = dialog
        dialog.show()
        return dialog

    def abort(self) -> None:
        """Abort the running scan: ``runner.abort()`` in the worker thread; the outcome is shown, never raised.

        Returns at once ("aborting…"); the button is disabled until the runner answered.
        """
        if self.runner is None:
            self.show_message("no scan runner connected: nothing to abort", error=True)
            return
        self.abort_button.setEnabled(False)
        self.show_message("aborting…")
        self.runner_calls.call(self.runner.abort, self._on_aborted, self._on_abort_failed)

    def _on_aborted(self, said: str | None) -> None:
        self.abort_button.setEnabled(True)
        self.show_message(f"abort requested: {said}" if said else "abort requested")

    def _on_abort_failed(self, exc: BaseException) -> None:
        # the operator must see that the abort did not go through
        self.abort_button.setEnabled(True)
        log.warning("abort failed: %s: %s", type(exc).__name__, exc)
        self.show_message(f"abort failed: {type(exc).__name__}: {exc}", error=True)

    def save_screenshot(self, path: str | Path) -> Path:
        """Render the window (works offscreen) into an image file; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.grab().save(str(path)):
            raise OSError(f"could not write the screenshot {path}")
        return path

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self.timer.stop()
        if self.rescan_dialog is not None:
            self.rescan_dialog.close()
        self.inspector.close_worker()
        self.runner_calls.close()  # waits for a call in flight, bounded by the runner's timeouts
        super().closeEvent(event)
        self.closed.emit()
