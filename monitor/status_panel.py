"""Health of the live processing at a glance: frame counters, rate, latency, progress, and a
coloured state (waiting / ok / behind / no data).
"""

from __future__ import annotations

import math

from PySide6 import QtCore, QtWidgets

from monitor.map_snapshot import MapSnapshot

#: State → (background, text colour). Warnings are loud: the operator looks at the map, not here.
STATE_COLOURS = {
    "waiting": ("#e0e0e0", "#212121"),
    "ok": ("#c8e6c9", "#1b5e20"),
    "done": ("#e0e0e0", "#212121"),
    "behind": ("#ff9800", "#000000"),
    "stale": ("#d32f2f", "#ffffff"),
}
WARNING_STATES = ("behind", "stale")

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


class StatusPanel(QtWidgets.QWidget):
    """Counters, rate, latency and progress of a run, with a coloured state label.

    :meth:`update_status` is called by the window's timer with the newest snapshot (None
    before the first) and the feed's age in seconds; ``state`` is one of
    :data:`STATE_COLOURS`.
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
        self.progress.setRange(0, 1000)
        self.progress.setFormat("scan %p %")
        self.progress.setMaximumWidth(220)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        layout.addWidget(self.state_label)
        layout.addWidget(self.counters_label, 1)
        layout.addWidget(self.rate_label)
        layout.addWidget(self.progress)
        self.update_status(None, math.inf)

    @property
    def warning(self) -> bool:
        """True while the state needs the operator's attention (behind or no data)."""
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
        """Show ``snapshot``'s health; ``age_s`` = seconds since the feed last delivered anything."""
        if snapshot is None:
            self._set_state("waiting", f"waiting for the processor at {self.endpoint}")
            self.counters_label.setText("")
            self.rate_label.setText("")
            self.progress.setValue(0)
            return
        c = snapshot.counters
        n_skipped = skipped(snapshot)
        self.counters_label.setText(
            f"{snapshot.run}: received {c.get('received', 0)} · processed {c.get('processed', 0)} · "
            f"skipped {n_skipped} · corrupt {c.get('corrupt', 0)}")
        fps = _first(snapshot.rates, _FPS_KEYS)
        latency = _first(snapshot.rates, _LATENCY_KEYS)
        parts = []
        if math.isfinite(fps):
            parts.append(f"{fps:.1f} frames/s")
        if math.isfinite(latency):
            parts.append(f"latency {latency:.0f} ms")
        self.rate_label.setText(" · ".join(parts))
        self.progress.setValue(int(round(1000 * min(max(snapshot.progress, 0.0), 1.0))))
        if age_s > self.stale_after_s:
            # the processor stopped, restarted or the connection dropped; ZeroMQ reconnects by itself
            finished = " (scan finished)" if snapshot.done else ""
            self._set_state("done" if snapshot.done else "stale", f"no data for {age_s:.0f} s{finished}")
        elif snapshot.behind or n_skipped > 0:
            self._set_state("behind", f"processor behind: {n_skipped} frames skipped")
        elif snapshot.done:
            self._set_state("done", "scan finished")
        else:
            self._set_state("ok", "live")

    def _set_state(self, state: str, text: str) -> None:
        self.state = state
        bg, fg = STATE_COLOURS[state]
        self.state_label.setText(text)
        self.state_label.setStyleSheet(f"background: {bg}; color: {fg}; font-weight: bold; padding: 3px 8px;")
