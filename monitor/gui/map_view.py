"""The live map: one quantity of one run, placed in motor coordinates (µm), redrawn on demand.

The view never pulls data itself: the window's timer hands it the newest snapshot of
every run (:meth:`MapView.set_runs`) and the view redraws only when the snapshot it
shows changed, so its cost follows the timer (~10 Hz), not the publisher's rate.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from monitor.links.map_colours import CYCLIC_COLORMAP, robust_limits
from monitor.links.map_snapshot import MapSnapshot
from processors.angles import ORIENTATION_PERIOD_DEG, fold_orientation

#: Per-peak quantities offered, in selector order, with their units (science.md conventions).
PEAK_QUANTITIES: dict[str, str] = {
    "amplitude": "counts/px", "q0": "1/Å", "dq": "1/Å FWHM", "phi0": "°", "dphi": "° FWHM", "dphi_do": "°",
}
#: Derived quantities offered first (others present under ``derived/`` follow), with units.
DERIVED_QUANTITIES: dict[str, str] = {
    "a": "Å", "b": "Å", "c": "Å", "size": "nm", "microstrain": "fraction",
    "a_sc1": "nm", "a_sc2": "nm", "a_sc": "nm",
}
LINEAR_COLORMAP = "viridis"


def quantity_keys(keys) -> list[str]:
    """The map keys to offer, in a stable order: intensity, per peak, then derived.

    ``keys`` are a snapshot's map names; keys that are not displayable quantities
    (errors, status codes, backgrounds) are left out.
    """
    keys = list(keys)
    out = ["intensity"] if "intensity" in keys else []
    peaks: list[str] = []
    for k in keys:
        head, _, tail = k.partition("/")
        if tail in PEAK_QUANTITIES and head != "derived" and head not in peaks:
            peaks.append(head)
    for p in peaks:
        out += [f"{p}/{q}" for q in PEAK_QUANTITIES if f"{p}/{q}" in keys]
    out += [f"derived/{d}" for d in DERIVED_QUANTITIES if f"derived/{d}" in keys]
    out += sorted(k for k in keys if k.startswith("derived/") and k not in out)
    return out


def quantity_label(key: str) -> str:
    """Human label with units, e.g. ``"100 · q0 (1/Å)"``."""
    if key == "intensity":
        return "integrated intensity (counts)"
    head, _, tail = key.partition("/")
    if head == "derived":
        unit = DERIVED_QUANTITIES.get(tail)
        return f"{tail} ({unit})" if unit else tail
    unit = PEAK_QUANTITIES.get(tail)
    return f"{head} · {tail} ({unit})" if unit else key


def is_angle(key: str) -> bool:
    """True for orientation maps (φ0), which are shown folded with a cyclic colormap."""
    return key.rpartition("/")[2] == "phi0"


def _level_rounding(lo: float, hi: float) -> float:
    """Step the colour bar's handles move levels by: a thousandth of the range's decade.

    pyqtgraph's default (1) would make a q0 map (1.07 ± 0.003 1/Å) impossible to adjust.
    """
    span = abs(hi - lo)
    if not math.isfinite(span) or span == 0:
        return 1e-6
    return 10.0 ** (math.floor(math.log10(span)) - 3)


def _step(centres: np.ndarray) -> float:
    c = np.asarray(centres, dtype=np.float64)
    if c.size < 2:
        return 1.0
    d = float(np.median(np.diff(c)))
    return d if d != 0 else 1.0


def image_rect(x: np.ndarray, y: np.ndarray, shape: tuple[int, int] | None = None) -> QtCore.QRectF:
    """Rectangle covering pixels centred on ``x`` (columns) and ``y`` (rows), uniformly spaced.

    ``shape`` = (rows, cols) of the image when it differs from ``(len(y), len(x))``
    (positions then only give the origin and step). Width/height are negative for
    decreasing positions so that column 0 stays at ``x[0]``. A single position gets a
    unit-wide pixel.
    """
    rows, cols = (len(y), len(x)) if shape is None else shape
    dx, dy = _step(x), _step(y)
    x0 = float(x[0]) if len(x) else 0.0
    y0 = float(y[0]) if len(y) else 0.0
    return QtCore.QRectF(x0 - dx / 2, y0 - dy / 2, dx * max(cols, 1), dy * max(rows, 1))


def map_step(snapshot: MapSnapshot) -> tuple[float, float]:
    """Absolute step (µm) between map points along (rows/slow, columns/fast)."""
    return abs(_step(snapshot.y)), abs(_step(snapshot.x))


def strip_values(data: np.ndarray) -> np.ndarray:
    """A map of unknown geometry as a ``(1, N)`` strip in measurement order."""
    return np.asarray(data, dtype=np.float32).reshape(1, -1)


class _MapViewBox(pg.ViewBox):
    """A ViewBox that, in select mode, turns a left-button drag into a rectangle (view coords)."""

    sigRegionDragged = QtCore.Signal(object)   # QRectF in motor coordinates

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.select_mode = False
        self.band = QtWidgets.QGraphicsRectItem()
        pen = pg.mkPen((255, 255, 255), width=2, style=QtCore.Qt.PenStyle.DashLine)
        pen.setCosmetic(True)
        self.band.setPen(pen)
        self.band.setBrush(pg.mkBrush(255, 255, 255, 40))
        self.band.setZValue(20)
        self.band.hide()
        self.addItem(self.band, ignoreBounds=True)

    def mouseDragEvent(self, ev, axis=None):
        if not self.select_mode or ev.button() != QtCore.Qt.MouseButton.LeftButton:
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        p0 = self.mapSceneToView(ev.buttonDownScenePos())
        p1 = self.mapSceneToView(ev.scenePos())
        rect = QtCore.QRectF(p0, p1).normalized()
        self.band.setRect(rect)
        self.band.show()
        if ev.isFinish():
            self.sigRegionDragged.emit(rect)


class MapView(QtWidgets.QWidget):
    """Selectors (run, quantity), the map image with its colour bar (values and unit), and region selection.

    Signals: ``point_clicked(run, row, col)`` on a left click on a measured map point;
    ``region_selected(QRectF)`` with the rectangle in motor coordinates (x = fast
    motor, y = slow motor, µm) after a drag in select mode; ``run_changed(run)``.
    """

    point_clicked = QtCore.Signal(str, int, int)
    region_selected = QtCore.Signal(object)
    run_changed = QtCore.Signal(str)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self._snapshots: dict[str, MapSnapshot] = {}
        self._shown: tuple[MapSnapshot | None, str | None] = (None, None)
        self.snapshot: MapSnapshot | None = None
        self.displayed: np.ndarray | None = None     # the array handed to the ImageItem
        self.angle_centre: float | None = None       # fold centre (°) when an angle is shown
        self.redraws = 0

        self.run_box = QtWidgets.QComboBox()
        self.run_box.setMinimumContentsLength(12)
        # whole labels: "abc12345 · 40×60 (rescan of def67890)" cut short would hide which run it is
        self.run_box.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.run_box.setToolTip("Run shown; a new run (e.g. a rescan) is selected when it appears")
        self.quantity_box = QtWidgets.QComboBox()
        self.quantity_box.setMinimumContentsLength(16)
        self.quantity_box.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.auto_levels = QtWidgets.QCheckBox("auto levels")
        self.auto_levels.setChecked(True)
        self.auto_levels.setToolTip("Levels from the 2nd–98th percentiles at each update "
                                    "(φ0: one full 90° period around the median); dragging the colour "
                                    "bar's handles turns it off")
        self.select_button = QtWidgets.QPushButton("Select region")
        self.select_button.setCheckable(True)
        self.select_button.setToolTip("Drag a rectangle on the map to rescan it with a finer step")

        # two rows: run and quantity labels are long ("abc12345 · 40×60 (rescan of def67890)") and
        # must be read whole, which one row beside the buttons does not allow at the map's width
        controls = QtWidgets.QGridLayout()
        controls.addWidget(QtWidgets.QLabel("run"), 0, 0)
        controls.addWidget(self.run_box, 0, 1)
        controls.addWidget(self.select_button, 0, 3)
        controls.addWidget(QtWidgets.QLabel("map"), 1, 0)
        controls.addWidget(self.quantity_box, 1, 1)
        controls.addWidget(self.auto_levels, 1, 3)
        controls.setColumnStretch(2, 1)
        self.controls = controls

        self._last_rect: QtCore.QRectF | None = None
        self.view_box = _MapViewBox()
        self.graphics = pg.GraphicsLayoutWidget()
        self.plot: pg.PlotItem = self.graphics.addPlot(viewBox=self.view_box)
        self.plot.setAspectLocked(True)
        self.plot.showGrid(x=False, y=False)
        # row-major per item (not the global config option): no side effect on other widgets
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image_item)
        self.marker = pg.ScatterPlotItem(symbol="+", size=16, pen=pg.mkPen("w", width=2), brush=None)
        self.marker.setZValue(10)
        self.plot.addItem(self.marker)
        for side in ("bottom", "left"):
            # plain µm labels; an SI prefix would turn them into "(x0.001)" or "kµm"
            self.plot.getAxis(side).enableAutoSIPrefix(False)
        # the value ↔ colour key, with tick values and the quantity's unit, beside the map (inside its
        # layout, so it is never cut off); dragging its handles sets the levels by hand
        self.colorbar = pg.ColorBarItem(values=(0.0, 1.0), width=18, interactive=True,
                                        colorMap=pg.colormap.get(LINEAR_COLORMAP), colorMapMenu=False)
        self.colorbar.setImageItem(self.image_item, insert_in=self.plot)
        self.colorbar.axis.enableAutoSIPrefix(False)
        self.colorbar.axis.setWidth(78)     # tick values like "1.0725" and the rotated label
        self.colorbar.sigLevelsChanged.connect(self._levels_set_by_hand)
        self.colorbar.setToolTip("Colour scale of the map. Drag the handles to set the levels by hand")

        # before the first map, axes and a 0…1 colour bar would describe nothing
        self.placeholder = QtWidgets.QLabel("Waiting for the first map from the processor")
        self.placeholder.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.placeholder.setStyleSheet("color: #757575; font-size: 15pt;")
        self.pages = QtWidgets.QStackedWidget()
        self.pages.addWidget(self.placeholder)
        self.pages.addWidget(self.graphics)

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(controls)
        layout.addWidget(self.pages, 1)

        self._colormap_name = ""
        self._set_colormap(LINEAR_COLORMAP)
        self.run_box.currentIndexChanged.connect(self._on_run_chosen)
        self.quantity_box.currentIndexChanged.connect(lambda _i: self.redraw(force=True))
        self.auto_levels.toggled.connect(lambda _on: self.redraw(force=True))
        self.select_button.toggled.connect(self.set_select_mode)
        self.view_box.sigRegionDragged.connect(self.select_region)
        self.graphics.scene().sigMouseClicked.connect(self._on_click)

    # ---- state -------------------------------------------------------------------------
    @property
    def current_run(self) -> str | None:
        return self.run_box.currentData()

    @property
    def current_quantity(self) -> str | None:
        return self.quantity_box.currentData()

    @property
    def runs(self) -> list[str]:
        return [self.run_box.itemData(i) for i in range(self.run_box.count())]

    @property
    def quantities(self) -> list[str]:
        return [self.quantity_box.itemData(i) for i in range(self.quantity_box.count())]

    @property
    def colormap_name(self) -> str:
        return self._colormap_name

    @property
    def levels(self) -> tuple[float, float]:
        """(low, high) values mapped to the colour map's ends, in the quantity's unit."""
        lo, hi = self.image_item.getLevels()
        return float(lo), float(hi)

    @property
    def colorbar_ticks(self) -> list[tuple[float, str]]:
        """(value, label) of the colour bar's tick marks as drawn now (major and minor)."""
        axis = self.colorbar.axis
        lo, hi = self.colorbar.levels()
        size = axis.geometry().height() or 300.0
        out = []
        for spacing, values in axis.tickValues(lo, hi, size):
            strings = axis.tickStrings(values, axis.autoSIPrefixScale, spacing)
            out += [(float(v), str(t)) for v, t in zip(values, strings)]
        return out

    @property
    def runs_received(self) -> dict[str, MapSnapshot]:
        """The newest snapshot of every run received, by run id."""
        return dict(self._snapshots)

    # ---- feeding -----------------------------------------------------------------------
    def set_runs(self, snapshots: dict[str, MapSnapshot]) -> bool:
        """Take the newest snapshot of every run; redraw if the shown one changed.

        A run not seen before (a rescan, the next scan) becomes the shown run; older
        runs stay in the selector. Returns True when the map was redrawn.
        """
        new = [r for r in snapshots if r not in self._snapshots]
        self._snapshots = dict(snapshots)
        if new:
            with QtCore.QSignalBlocker(self.run_box):
                for run in new:
                    self.run_box.addItem(self._run_label(snapshots[run]), run)
                self.run_box.setCurrentIndex(self.run_box.findData(new[-1]))
            self.run_changed.emit(new[-1])
        return self.redraw()

    @staticmethod
    def _run_label(s: MapSnapshot) -> str:
        # bluesky uids are long: their first 8 characters tell runs apart in a menu
        label = f"{s.run[:8]} · {s.shape[0]}×{s.shape[1]}"
        return f"{label} (rescan of {s.parent_run[:8]})" if s.parent_run else label

    def select_run(self, run: str) -> None:
        """Show ``run`` (must have been received)."""
        index = self.run_box.findData(run)
        if index < 0:
            raise KeyError(f"run {run!r} has not been received; known runs: {self.runs}")
        self.run_box.setCurrentIndex(index)

    def select_quantity(self, key: str) -> None:
        """Show map ``key`` (e.g. ``"100/phi0"``) of the current run."""
        index = self.quantity_box.findData(key)
        if index < 0:
            raise KeyError(f"no map {key!r} in run {self.current_run}; available: {self.quantities}")
        self.quantity_box.setCurrentIndex(index)

    def _on_run_chosen(self, _index: int) -> None:
        self.marker.setData([], [])
        self.view_box.band.hide()
        self.redraw(force=True)
        if self.current_run is not None:
            self.run_changed.emit(self.current_run)

    def _sync_quantities(self, snap: MapSnapshot) -> None:
        keys = quantity_keys(snap.maps)
        if keys == self.quantities:
            return
        keep = self.current_quantity
        with QtCore.QSignalBlocker(self.quantity_box):
            self.quantity_box.clear()
            for k in keys:
                self.quantity_box.addItem(quantity_label(k), k)
            index = self.quantity_box.findData(keep)
            self.quantity_box.setCurrentIndex(index if index >= 0 else 0)

    # ---- drawing -----------------------------------------------------------------------
    def redraw(self, force: bool = False) -> bool:
        """Draw the current run and quantity if the snapshot changed (or ``force``)."""
        run = self.current_run
        snap = self._snapshots.get(run) if run is not None else None
        if snap is None:
            return False
        self._sync_quantities(snap)
        key = self.current_quantity
        # identity, not ==: each received snapshot is a new object, and == would compare arrays
        if not force and self._shown[0] is snap and self._shown[1] == key:
            return False
        self.snapshot = snap
        self._shown = (snap, key)
        if key is None or key not in snap.maps:
            self.image_item.clear()
            self.displayed = None
            self.placeholder.setText(f"Run {snap.run[:8]} has no maps yet")
            self.pages.setCurrentIndex(0)
            return True
        self.pages.setCurrentIndex(1)
        data = np.asarray(snap.maps[key], dtype=np.float32)
        strip = snap.geometry == "strip" or data.ndim != 2
        self.angle_centre = None
        if is_angle(key):
            folded, self.angle_centre = fold_orientation(data)
            data = folded.astype(np.float32)
            # one whole period: the cyclic colormap's two ends meet, as the orientations do
            levels = (self.angle_centre - ORIENTATION_PERIOD_DEG / 2, self.angle_centre + ORIENTATION_PERIOD_DEG / 2)
            self._set_colormap(CYCLIC_COLORMAP)
        else:
            # (0, 1) while nothing is measured yet
            levels = robust_limits(data) or (0.0, 1.0)
            self._set_colormap(LINEAR_COLORMAP)
        if not self.auto_levels.isChecked():
            levels = self.levels
        if strip:
            data = strip_values(data)
            rect = QtCore.QRectF(-0.5, -0.5, data.shape[1], 1.0)
        else:
            rect = image_rect(snap.x, snap.y, data.shape)
        self.displayed = data
        # levels always explicit: pyqtgraph's own would take nanmin/nanmax of a map not yet filled
        # (all NaN at a run's start) and warn "All-NaN slice encountered"
        self.image_item.setImage(data, autoLevels=False, levels=levels)
        self.image_item.setRect(rect)
        if rect != self._last_rect:  # a new run or a grown strip: show all of it
            self._last_rect = rect
            self.view_box.autoRange(padding=0.03)
        self.colorbar.rounding = _level_rounding(*levels)
        self.colorbar.setLevels(levels)
        self._label_axes(snap, key, strip)
        self.redraws += 1
        return True

    def _label_axes(self, snap: MapSnapshot, key: str, strip: bool) -> None:
        if strip:
            self.plot.setAspectLocked(False)
            self.plot.setLabel("bottom", "scan point (geometry unknown)")
            self.plot.setLabel("left", "")
        else:
            self.plot.setAspectLocked(True)
            # plain text, not units=: pyqtgraph would add SI prefixes ("kµm")
            self.plot.setLabel("bottom", f"{snap.motors[1]} (µm)")
            self.plot.setLabel("left", f"{snap.motors[0]} (µm)")
        title = f"{snap.run[:8]} · {quantity_label(key)}"
        if self.angle_centre is not None:
            title += f" mod {ORIENTATION_PERIOD_DEG:g}°, centre {self.angle_centre:.1f}°"
        self.plot.setTitle(title, size="10pt")
        self.colorbar.axis.setLabel(quantity_label(key))

    def _set_colormap(self, name: str) -> None:
        if name != self._colormap_name:
            # by matplotlib's name: the report (matplotlib) draws with the very same colours
            self.colorbar.setColorMap(pg.colormap.get(name, source="matplotlib"))
            self._colormap_name = name

    def _levels_set_by_hand(self, _bar) -> None:
        # the next snapshot would otherwise put the automatic levels back at once
        if self.auto_levels.isChecked():
            with QtCore.QSignalBlocker(self.auto_levels):
                self.auto_levels.setChecked(False)

    # ---- interaction -------------------------------------------------------------------
    def map_point_at(self, view_pos: QtCore.QPointF) -> tuple[int, int] | None:
        """(row, col) of the map point under ``view_pos`` (motor coordinates), or None."""
        if self.displayed is None:
            return None
        p = self.image_item.mapFromParent(view_pos)
        col, row = math.floor(p.x()), math.floor(p.y())
        rows, cols = self.displayed.shape
        if not (0 <= row < rows and 0 <= col < cols):
            return None
        # a strip is shown as (1, N): its points come back as (0, k), k in measurement order
        return row, col

    def point_position(self, row: int, col: int) -> QtCore.QPointF:
        """Centre of map point (row, col) in view (motor) coordinates."""
        return self.image_item.mapToParent(QtCore.QPointF(col + 0.5, row + 0.5))

    def _on_click(self, ev) -> None:
        if (ev.button() != QtCore.Qt.MouseButton.LeftButton or self.view_box.select_mode
                or not self.view_box.sceneBoundingRect().contains(ev.scenePos())):
            return
        hit = self.map_point_at(self.view_box.mapSceneToView(ev.scenePos()))
        if hit is None or self.current_run is None:
            return
        self.click_point(*hit)

    def click_point(self, row: int, col: int) -> None:
        """Mark map point (row, col) and ask for its frame (what a left click does)."""
        p = self.point_position(row, col)
        self.marker.setData([p.x()], [p.y()])
        self.point_clicked.emit(self.current_run, int(row), int(col))

    def set_select_mode(self, on: bool) -> None:
        """In select mode a left drag draws the rescan rectangle instead of panning."""
        self.view_box.select_mode = bool(on)
        if self.select_button.isChecked() != bool(on):
            self.select_button.setChecked(bool(on))
        self.graphics.setCursor(QtCore.Qt.CursorShape.CrossCursor if on else QtCore.Qt.CursorShape.ArrowCursor)

    def select_region(self, rect: QtCore.QRectF) -> None:
        """Show ``rect`` (motor coordinates, x = fast, y = slow) and emit ``region_selected``.

        The end of a drag in select mode comes here; tests call it directly too.
        """
        rect = QtCore.QRectF(rect).normalized()
        self.view_box.band.setRect(rect)
        self.view_box.band.show()
        self.set_select_mode(False)
        self.region_selected.emit(rect)
