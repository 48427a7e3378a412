"""A rectangle drawn on a map → a finer grid scan over it, checked against ``[rescan]``, submitted.

The dialog is prefilled from the rectangle (motor ranges, half the map's step) and stays
open with the reason when the request is refused; nothing is submitted then. The runner
is called in a worker thread (:class:`~monitor.gui.runner_calls.RunnerCalls`): a slow or
unreachable queue server shows "submitting…" while the window goes on.
"""

from __future__ import annotations

import logging

from PySide6 import QtCore, QtWidgets

from monitor.bluesky.plan_runner import GridScanRequest, PlanRunner, RescanRefused, check_rescan
from monitor.gui.map_view import map_step
from monitor.gui.runner_calls import RunnerCalls
from monitor.links.map_snapshot import MapSnapshot
from processors.config import RescanConfig

log = logging.getLogger(__name__)

#: Motor positions are shown and requested to 1 nm (µm with 3 decimals).
DECIMALS = 3


def n_points(start: float, stop: float, step: float) -> int:
    """Points from ``start`` to ``stop`` (both included) at about ``step`` (µm) apart."""
    if step <= 0:
        raise ValueError(f"step must be positive, got {step} µm")
    return int(round(abs(stop - start) / step)) + 1


def default_step(snapshot: MapSnapshot) -> tuple[float, float]:
    """Half the current map step (slow, fast) in µm: a rescan is for a closer look."""
    slow, fast = map_step(snapshot)
    return slow / 2, fast / 2


def rescan_request(snapshot: MapSnapshot, rect: QtCore.QRectF,
                   step: tuple[float, float] | None = None) -> GridScanRequest:
    """The grid scan over ``rect`` (motor coords, µm: x = fast motor, y = slow motor).

    ``step`` (slow, fast) in µm defaults to :func:`default_step`. Rows are the slow
    motor (``snapshot.motors[0]``), columns the fast one; snaking follows the current
    run, and ``parent_uid`` is that run.
    """
    rect = QtCore.QRectF(rect).normalized()
    slow_step, fast_step = default_step(snapshot) if step is None else step
    y0, y1 = round(rect.top(), DECIMALS), round(rect.bottom(), DECIMALS)
    x0, x1 = round(rect.left(), DECIMALS), round(rect.right(), DECIMALS)
    return GridScanRequest(
        slow_motor=snapshot.motors[0], slow_start=y0, slow_stop=y1, slow_num=n_points(y0, y1, slow_step),
        fast_motor=snapshot.motors[1], fast_start=x0, fast_stop=x1, fast_num=n_points(x0, x1, fast_step),
        snake=snapshot.snake, parent_uid=snapshot.run, md={"purpose": "rescan", "parent_run": snapshot.run})


class RescanDialog(QtWidgets.QDialog):
    """Edit, check and submit a rescan of a rectangle of ``snapshot``'s map.

    Non-modal: the window calls ``show()``; tests call :meth:`request` and
    :meth:`accept` directly. Signals: ``submitted(id, GridScanRequest)`` and
    ``refused(message)`` (also shown in the dialog, which then stays open); both come
    after :meth:`accept` returned when the request went to the runner, whose ``submit``
    runs in ``calls``' worker thread (the window's, shared with its abort; the dialog
    makes its own when none is given).
    """

    submitted = QtCore.Signal(str, object)
    refused = QtCore.Signal(str)

    def __init__(self, snapshot: MapSnapshot, rect: QtCore.QRectF, rules: RescanConfig,
                 runner: PlanRunner | None, parent: QtWidgets.QWidget | None = None, *,
                 calls: RunnerCalls | None = None) -> None:
        super().__init__(parent)
        self.snapshot = snapshot
        self.rules = rules
        self.runner = runner
        self._own_calls = calls is None
        self.calls = RunnerCalls(self) if calls is None else calls
        self.submitting = False
        self.submitted_id: str | None = None
        self.setWindowTitle(f"Rescan a region of {snapshot.run}")
        first = rescan_request(snapshot, rect)
        slow_step, fast_step = default_step(snapshot)

        def spin(value: float, minimum: float = -1e6) -> QtWidgets.QDoubleSpinBox:
            s = QtWidgets.QDoubleSpinBox()
            s.setDecimals(DECIMALS)
            s.setRange(minimum, 1e6)
            s.setSingleStep(0.1)
            s.setSuffix(" µm")
            s.setValue(value)
            s.valueChanged.connect(self._update_points)
            return s

        self.slow_start, self.slow_stop = spin(first.slow_start), spin(first.slow_stop)
        self.fast_start, self.fast_stop = spin(first.fast_start), spin(first.fast_stop)
        self.slow_step, self.fast_step = spin(slow_step, 10 ** -DECIMALS), spin(fast_step, 10 ** -DECIMALS)
        grid = QtWidgets.QGridLayout()
        for j, head in enumerate(("motor", "start", "stop", "step")):
            grid.addWidget(QtWidgets.QLabel(f"<b>{head}</b>"), 0, j)
        for i, (motor, role, widgets) in enumerate((
                (snapshot.motors[0], "rows, slow", (self.slow_start, self.slow_stop, self.slow_step)),
                (snapshot.motors[1], "columns, fast", (self.fast_start, self.fast_stop, self.fast_step)))):
            grid.addWidget(QtWidgets.QLabel(f"{motor} ({role})"), i + 1, 0)
            for j, w in enumerate(widgets):
                grid.addWidget(w, i + 1, j + 1)
        self.points_label = QtWidgets.QLabel()
        self.message_label = QtWidgets.QLabel("")
        self.message_label.setWordWrap(True)
        self.message_label.hide()
        snake = "snake" if snapshot.snake else "raster"
        info = QtWidgets.QLabel(f"grid_scan, {snake} like {snapshot.run}; current step "
                                f"{map_step(snapshot)[0]:g} × {map_step(snapshot)[1]:g} µm")
        self.buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Ok | QtWidgets.QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok).setText("Submit rescan")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(info)
        layout.addLayout(grid)
        layout.addWidget(self.points_label)
        layout.addWidget(self.message_label)
        layout.addWidget(self.buttons)
        self._update_points()

    @property
    def message(self) -> str:
        """The visible refusal/submission message ("" when none)."""
        return "" if self.message_label.isHidden() else self.message_label.text()

    def request(self) -> GridScanRequest:
        """The request as the fields now say."""
        y0, y1, x0, x1 = (s.value() for s in (self.slow_start, self.slow_stop, self.fast_start, self.fast_stop))
        rect = QtCore.QRectF(QtCore.QPointF(x0, y0), QtCore.QPointF(x1, y1))
        req = rescan_request(self.snapshot, rect, (self.slow_step.value(), self.fast_step.value()))
        # keep the direction the user typed (normalisation above sorts start < stop)
        return GridScanRequest(req.slow_motor, y0, y1, req.slow_num, req.fast_motor, x0, x1, req.fast_num,
                               snake=req.snake, parent_uid=req.parent_uid, md=req.md)

    def _update_points(self, *_args) -> None:
        r = self.request()
        slow, fast = r.step
        self.points_label.setText(f"{r.slow_num} × {r.fast_num} = {r.slow_num * r.fast_num} points "
                                  f"(step {abs(slow):.3f} × {abs(fast):.3f} µm)")

    def _show(self, text: str, *, error: bool) -> None:
        self.message_label.setStyleSheet(f"color: {'#b00020' if error else '#1b5e20'}; font-weight: bold;")
        self.message_label.setText(text)
        self.message_label.show()

    def accept(self) -> None:
        """Check the request against ``[rescan]``; submit it (in the worker) or show why not (dialog stays open).

        Returns at once; ``submitted`` or ``refused`` follows when the runner answered.
        """
        if self.submitting:
            return  # one submission at a time: a second click must not queue the scan twice
        request = self.request()
        try:
            if self.runner is None:
                raise RescanRefused("no scan runner is connected to this viewer: rescans cannot be submitted")
            check_rescan(request, self.rules)
        except RescanRefused as exc:
            self._refuse(f"rescan refused: {exc}")
            return
        self._set_submitting(True)
        self._show("submitting the rescan…", error=False)
        runner = self.runner
        self.calls.call(lambda: runner.submit(request),
                        lambda uid: self._on_submitted(str(uid), request), self._on_submit_failed)

    def _on_submitted(self, uid: str, request: GridScanRequest) -> None:
        self._set_submitting(False)
        self.submitted_id = uid
        self._show(f"rescan submitted ({uid})", error=False)
        self.submitted.emit(uid, request)
        super().accept()

    def _on_submit_failed(self, exc: BaseException) -> None:
        # a runner failure is the user's to see; the window goes on
        self._set_submitting(False)
        log.warning("rescan submission failed: %s: %s", type(exc).__name__, exc)
        if isinstance(exc, RescanRefused):
            self._refuse(f"rescan refused: {exc}")
        else:
            self._refuse(f"rescan not submitted: {type(exc).__name__}: {exc}")

    def _set_submitting(self, submitting: bool) -> None:
        self.submitting = submitting
        self.buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok).setEnabled(not submitting)

    def done(self, result: int) -> None:
        # a dialog with its own worker stops it when it closes (waits for a call in flight)
        if self._own_calls:
            self.calls.close()
        super().done(result)

    def _refuse(self, text: str) -> None:
        self._show(text, error=True)
        self.refused.emit(text)
