"""Health of the live processing at a glance: frame counters, rate, latency, progress, and a
coloured state (waiting / ok / behind / no data / done / aborted / failed).

Everything here describes ONE run: the one the map shows. Showing the newest run's
counters next to another run's map was how a finished rescan's parent came to read
"live", and an aborted scan "100 %".
"""

from __future__ import annotations

import math

from PySide6 import QtCore, QtWidgets

from monitor.links.map_snapshot import MapSnapshot

#: State → (background, text colour). Warnings are loud: the operator looks at the map, not here.
STATE_COLOURS = {
    "waiting": ("#e0e0e0", "#212121"),
    "ok": ("#c8e6c9", "#1b5e20"),
    "done": ("#e0e0e0", "#212121"),
    "aborted": ("#ffe082", "#000000"),
    "failed": ("#d32f2f", "#ffffff"),
    "behind": ("#ff9800", "#000000"),
    "stale": ("#d32f2f", "#ffffff"),
}
WARNING_STATES = ("behind", "stale", "failed")

#: bluesky stop document ``exit_status`` → (state, word for the operator).
_ENDINGS = {"success": ("done", "done"), "abort": ("aborted", "aborted"), "fail": ("failed", "failed")}
#: Colour of the progress bar's filled part per state (RUNNING_COLOUR otherwise).
_PROGRESS_COLOURS = {"aborted": "#ffb300", "failed": "#d32f2f", "stale": "#9e9e9e", "done": "#66bb6a"}
_RUNNING_COLOUR = "#42a5f5"
#: The whole bar styled, not only its chunk: a chunk rule alone drops the platform style's text centring.
_PROGRESS_STYLE = ("QProgressBar {{ border: 1px solid #9e9e9e; border-radius: 3px; text-align: center; "
                   "background: #fafafa; }} QProgressBar::chunk {{ background: {colour}; }}")

# The processor's ``rates`` keys are looked up by these names, first present wins.
_FPS_KEYS = ("frames_per_s", "processed_per_s", "fps", "received_per_s")
_LATENCY_KEYS = ("latency_ms", "latency_median_ms", "latency_p50_ms")


def _first(d: dict, keys: tuple[str, ...]) -> float:
    for k in keys:
        if k in d:
            return float(d[k])
    return math.nan


def skipped(snapshot: MapSnapshot) -> int:
    """Frames skipped by live processing (the collector counts them as ``dropped``)."""
    return int(snapshot.counters.get("dropped", snapshot.counters.get("skipped", 0)))


def percent(fraction: float) -> int:
    """``fraction`` (0…1) as a whole percentage, rounded down so an unfinished scan never reads 100 %."""
    return int(math.floor(100 * min(max(fraction, 0.0), 1.0) + 1e-9))


def run_ending(snapshot: MapSnapshot) -> tuple[str, str] | None:
    """(state, sentence) of a finished run, e.g. ``("aborted", "run abc12345 aborted at 37 %")``; None while open.

    A run is finished when bluesky sent its stop document (``exit_status``) or its
    frames all came (``done``). A run that ended short of its points says how far it got.
    """
    run = snapshot.run[:8]
    if snapshot.exit_status:
        state, word = _ENDINGS.get(snapshot.exit_status, ("failed", f"ended ({snapshot.exit_status})"))
    elif snapshot.done:
        state, word = "done", "done"
    else:
        return None
    if snapshot.progress < 1.0 and snapshot.geometry != "strip":
        return state, f"run {run} {word} at {percent(snapshot.progress)} %"
    return state, f"run {run} {word}"


class StatusPanel(QtWidgets.QWidget):
    """Counters, rate, latency and progress of one run, with a coloured state label.

    :meth:`update_status` is called by the window's timer with the snapshot of the run
    the map shows (None before the first) and the feed's age in seconds; ``state`` is
    one of :data:`STATE_COLOURS`. The progress bar is the fraction of the run's points
    measured, also for an aborted run.
    """

    def __init__(self, endpoint: str, *, stale_after_s: float = 3.0,
                 parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.endpoint = endpoint
        self.stale_after_s = stale_after_s
        self.state = "waiting"
        self.state_label = QtWidgets.QLabel()
        self.state_label.setMinimumWidth(260)
        self.state_label.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.counters_label = QtWidgets.QLabel("")
        self.rate_label = QtWidgets.QLabel("")
        self.progress = QtWidgets.QProgressBar()
        # percent steps: the bar's own %p would round 99.6 % up to "100 %"
        self.progress.setRange(0, 100)
        self.progress.setFormat("scan %p %")
        self.progress.setMinimumWidth(160)
        self.progress.setMaximumWidth(240)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        layout.addWidget(self.state_label)
        layout.addWidget(self.counters_label, 1)
        layout.addWidget(self.rate_label)
        layout.addWidget(self.progress)
        self.update_status(None, math.inf)

    @property
    def warning(self) -> bool:
        """True while the state needs the operator's attention (behind, no data, or a failed run)."""
        return self.state in WARNING_STATES

    @property
    def state_colour(self) -> str:
        """Background colour of the state label (#rrggbb)."""
        return STATE_COLOURS[self.state][0]

    @property
    def text(self) -> str:
        """Everything the panel says, as one line (for tests and logs)."""
        return " | ".join(w.text() for w in (self.state_label, self.counters_label, self.rate_label)
                          if w.text()) + f" | {self.progress.text()}"

    def update_status(self, snapshot: MapSnapshot | None, age_s: float) -> None:
        """Show the health of ``snapshot``'s run; ``age_s`` = seconds since the feed last delivered anything."""
        if snapshot is None:
            self._set_state("waiting", f"waiting for the processor at {self.endpoint}")
            self.counters_label.setText("")
            self.rate_label.setText("")
            self._set_progress(0.0, "scan %p %", "waiting")
            return
        c = snapshot.counters
        n_skipped = skipped(snapshot)
        self.counters_label.setText(
            f"run {snapshot.run[:8]}: received {c.get('received', 0)} · processed {c.get('processed', 0)} · "
            f"skipped {n_skipped} · corrupt {c.get('corrupt', 0)}")
        self.counters_label.setToolTip(f"run {snapshot.run}")
        ending = run_ending(snapshot)
        # rate and latency are the processor's now; next to a finished run they would read as its own
        fps = _first(snapshot.rates, _FPS_KEYS) if ending is None else math.nan
        latency = _first(snapshot.rates, _LATENCY_KEYS) if ending is None else math.nan
        parts = []
        if math.isfinite(fps):
            parts.append(f"{fps:.1f} frames/s")
        if math.isfinite(latency):
            parts.append(f"latency {latency:.0f} ms")
        self.rate_label.setText(" · ".join(parts))
        if ending is not None:
            # a finished run's counters no longer change: silence from the processor is expected
            state, text = ending
            if n_skipped:
                text += f" · {n_skipped} frames skipped"
            self._set_state(state, text)
            word = {"aborted": "aborted at", "failed": "failed at"}.get(state, "scan")
            self._set_progress(snapshot.progress, f"{word} %p %", state)
            return
        if age_s > self.stale_after_s:
            # the processor stopped, restarted or the connection dropped; ZeroMQ reconnects by itself
            self._set_state("stale", f"no data for {age_s:.0f} s")
        elif snapshot.behind or n_skipped > 0:
            self._set_state("behind", f"processor behind: {n_skipped} frames skipped")
        else:
            self._set_state("ok", "live")
        self._set_progress(snapshot.progress, "scan %p %", self.state)

    def _set_progress(self, fraction: float, text_format: str, state: str) -> None:
        self.progress.setValue(percent(fraction))
        if self.progress.format() != text_format:
            self.progress.setFormat(text_format)
        sheet = _PROGRESS_STYLE.format(colour=_PROGRESS_COLOURS.get(state, _RUNNING_COLOUR))
        if self.progress.styleSheet() != sheet:  # restyling re-polishes the widget: not on every tick
            self.progress.setStyleSheet(sheet)

    def _set_state(self, state: str, text: str) -> None:
        self.state = state
        bg, fg = STATE_COLOURS[state]
        self.state_label.setText(text)
        sheet = f"background: {bg}; color: {fg}; font-weight: bold; padding: 3px 8px;"
        if self.state_label.styleSheet() != sheet:
            self.state_label.setStyleSheet(sheet)
