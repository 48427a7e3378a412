"""One detector frame on demand: the frame with its peak windows and fitted centres, and per
peak the polar patch (data, fit, residual) with the fitted parameters.

Fetching goes to a worker thread (a REQ/REP round trip plus decoding can take a while on
a 4M detector); the GUI thread only draws. A failed fetch becomes a visible message.
"""

from __future__ import annotations

import itertools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from monitor.gui.map_view import image_rect
from monitor.links.frame_link import FrameClient, FrameUnavailable
from monitor.links.map_colours import robust_limits
from monitor.links.map_snapshot import FrameView, PeakView
from processors.frame_record import FIT_STATUS_NAMES, PARAM_NAMES

log = logging.getLogger(__name__)

#: Colours (RGB) of peak windows and centres, peak k gets colour k modulo the list.
PEAK_COLORS = ((0, 230, 118), (255, 145, 0), (41, 182, 246), (255, 64, 129), (255, 235, 59), (179, 136, 255))
#: Masked pixels (gaps, dead pixels, user mask) are painted in this colour, never as counts.
MASK_COLOR = (90, 200, 255, 255)
FRAME_COLORMAP = "inferno"
PLACEHOLDER_TEXT = "Click a point on the map to see its detector frame here"
RESIDUAL_COLORMAP = "CET-D1"


def log_image(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``log10(1 + counts)`` as float32 ``(rows, cols)``; masked pixels NaN (drawn by the mask overlay).

    Masked pixels are NaN so that gap values (2³²−1) do not set the colour scale.
    """
    out = np.log10(1.0 + np.clip(np.asarray(image, dtype=np.float32), 0, None))
    out[np.asarray(mask, dtype=bool)] = np.nan
    return out


def mask_overlay(mask: np.ndarray) -> np.ndarray:
    """``(rows, cols, 4)`` uint8 RGBA: masked pixels opaque :data:`MASK_COLOR`, others transparent."""
    rgba = np.zeros(mask.shape + (4,), dtype=np.uint8)
    rgba[np.asarray(mask, dtype=bool)] = MASK_COLOR
    return rgba


def window_overlay(labels: np.ndarray, fill_alpha: int = 50, outline_px: int = 3) -> np.ndarray:
    """``(rows, cols, 4)`` uint8 RGBA of the peak windows: opaque outline, faint fill.

    ``labels`` is ``FrameView.window_labels`` (0 none, k = window of peak k−1). The
    outline is ``outline_px`` detector pixels wide inside each window: a whole 1M–4M
    frame is shown a few times smaller than the screen, where a 1-pixel line vanishes.
    """
    labels = np.asarray(labels)
    rgba = np.zeros(labels.shape + (4,), dtype=np.uint8)
    edge = np.zeros(labels.shape, dtype=bool)
    # a pixel is on the outline when a neighbour up to outline_px away belongs to another label
    for d in range(1, outline_px + 1):
        edge[d:, :] |= labels[d:, :] != labels[:-d, :]
        edge[:-d, :] |= labels[:-d, :] != labels[d:, :]
        edge[:, d:] |= labels[:, d:] != labels[:, :-d]
        edge[:, :-d] |= labels[:, :-d] != labels[:, d:]
    for k in np.unique(labels):
        if k == 0:
            continue
        colour = PEAK_COLORS[(int(k) - 1) % len(PEAK_COLORS)]
        inside = labels == k
        rgba[inside] = (*colour, fill_alpha)
        rgba[inside & edge] = (*colour, 255)
    return rgba


def params_text(peak: PeakView) -> str:
    """The fitted parameters of one peak with units (FWHM widths, q in 1/Å, angles in °)."""
    p = dict(zip(PARAM_NAMES, (float(v) for v in peak.params)))
    status = FIT_STATUS_NAMES.get(peak.status, str(peak.status))
    if not np.isfinite(p["q0"]):
        return f"{peak.name}: no fit ({status})"
    return (f"{peak.name} ({status}): q0 {p['q0']:.4f} 1/Å · Δq {p['dq']:.4f} 1/Å · φ0 {p['phi0']:.2f}° · "
            f"Δφ {p['dphi']:.2f}°\nA {p['amplitude']:.1f} counts/px · B {p['background']:.2f} counts/px "
            f"(slopes {p['background_dq']:.3g} /(1/Å), {p['background_dchi']:.3g} /°) (widths FWHM)")


class FrameInspector(QtWidgets.QWidget):
    """Shows the :class:`FrameView` of a clicked map point.

    :meth:`request` fetches in a worker thread (only the newest request is drawn);
    :meth:`show_frame` draws a view; :meth:`show_message` shows a problem instead.
    Signals: ``frame_shown(FrameView)``, ``failed(str)``.
    """

    frame_shown = QtCore.Signal(object)
    failed = QtCore.Signal(str)
    _fetched = QtCore.Signal(int, object, str)   # sequence number, FrameView or None, error

    def __init__(self, frames: FrameClient | None, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.frames = frames
        self.view: FrameView | None = None
        self._seq = itertools.count(1)
        self._latest = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nanomaps-frame-fetch")
        self._fetched.connect(self._on_fetched)

        self.header = QtWidgets.QLabel("")    # which frame is shown or fetched; the placeholder says what to do
        self.header.setWordWrap(True)
        self.message_label = QtWidgets.QLabel("")
        self.message_label.setWordWrap(True)
        self.message_label.hide()

        self.detector = pg.GraphicsLayoutWidget()
        self.frame_plot: pg.PlotItem = self.detector.addPlot()
        self.frame_plot.setAspectLocked(True)
        self.frame_plot.invertY(True)     # detector row 0 at the top, as the detector sees it
        self.frame_plot.setLabel("bottom", "detector column (px)")
        self.frame_plot.setLabel("left", "detector row (px)")
        for side in ("bottom", "left"):
            self.frame_plot.getAxis(side).enableAutoSIPrefix(False)   # pixels, never "(x0.001)"
        self.frame_item = pg.ImageItem(axisOrder="row-major")
        self.frame_item.setColorMap(pg.colormap.get(FRAME_COLORMAP))
        self.mask_item = pg.ImageItem(axisOrder="row-major")
        self.window_item = pg.ImageItem(axisOrder="row-major")
        self.centres = pg.ScatterPlotItem(symbol="+", size=22, pen=pg.mkPen("w", width=2), brush=None)
        for z, item in enumerate((self.frame_item, self.mask_item, self.window_item, self.centres)):
            item.setZValue(z)
            self.frame_plot.addItem(item)
        self._centre_labels: list[pg.TextItem] = []

        self.patches = pg.GraphicsLayoutWidget()
        self.patch_items: dict[str, dict[str, pg.ImageItem]] = {}
        self.param_labels: dict[str, str] = {}

        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        split.addWidget(self.detector)
        split.addWidget(self.patches)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 1)
        split.setSizes([450, 550])
        # until a frame is drawn, empty axes would only suggest a frame of nothing: say what to do instead
        self.placeholder = QtWidgets.QLabel(PLACEHOLDER_TEXT)
        self.placeholder.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setWordWrap(True)
        self.placeholder.setStyleSheet("color: #757575; font-size: 15pt;")
        self.pages = QtWidgets.QStackedWidget()
        self.pages.addWidget(self.placeholder)
        self.pages.addWidget(split)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.header)
        layout.addWidget(self.message_label)
        layout.addWidget(self.pages, 1)
        if frames is None:
            self.show_message("no frame server connected: frames on demand are not available", error=False)
            self.placeholder.setText("No frame server connected: frames on demand are not available")

    # ---- fetching ----------------------------------------------------------------------
    @property
    def message(self) -> str:
        """The visible message ("" when none)."""
        # isHidden, not isVisible: the message counts even while the window itself is not shown
        return "" if self.message_label.isHidden() else self.message_label.text()

    def request(self, run: str, row: int, col: int) -> None:
        """Fetch the frame of map point (row, col) of ``run`` in the worker thread, then draw it."""
        if self.frames is None:
            self.show_message(f"cannot fetch {run} row {row}, col {col}: no frame server connected")
            return
        seq = next(self._seq)
        with self._lock:
            self._latest = seq
        self.header.setText(f"fetching {run} · row {row}, col {col} …")
        self._pool.submit(self._fetch, seq, run, int(row), int(col))

    def _fetch(self, seq: int, run: str, row: int, col: int) -> None:
        with self._lock:
            if seq != self._latest:
                return       # superseded by a newer click before it started: skip the round trip
        try:
            view = self.frames.fetch(run, row, col)
        except FrameUnavailable as exc:
            self._fetched.emit(seq, None, f"frame of {run} row {row}, col {col} unavailable: {exc}")
        except Exception as exc:  # any failure must reach the user as a message, not kill the thread
            log.warning("fetching frame %s (%d, %d) failed", run, row, col, exc_info=True)
            self._fetched.emit(seq, None, f"fetching {run} row {row}, col {col} failed: "
                                          f"{type(exc).__name__}: {exc}")
        else:
            self._fetched.emit(seq, view, "")

    @QtCore.Slot(int, object, str)
    def _on_fetched(self, seq: int, view: FrameView | None, error: str) -> None:
        if seq != self._latest:
            return
        if view is None:
            self.clear()
            self.header.setText("no frame")
            self.show_message(error)
            self.failed.emit(error)
            return
        try:
            self.show_frame(view)
        except Exception as exc:  # a malformed view must not take the window down
            log.warning("cannot draw frame %s (%d, %d)", view.run, view.row, view.col, exc_info=True)
            self.show_message(f"cannot draw this frame: {type(exc).__name__}: {exc}")
            self.failed.emit(str(exc))

    def close_worker(self) -> None:
        """Stop the fetch thread (waits for a fetch in flight, bounded by the client's timeout)."""
        with self._lock:
            self._latest = -1
        self._pool.shutdown(wait=True, cancel_futures=True)

    # ---- drawing -----------------------------------------------------------------------
    def show_message(self, text: str, *, error: bool = True) -> None:
        colour = "#b00020" if error else "#555555"
        self.message_label.setStyleSheet(f"color: {colour}; font-weight: {'bold' if error else 'normal'};")
        self.message_label.setText(text)
        self.message_label.setVisible(bool(text))

    @property
    def showing_frame(self) -> bool:
        """True while a frame is drawn (else the placeholder text is shown instead of empty axes)."""
        return self.pages.currentIndex() == 1

    def clear(self) -> None:
        """Remove the drawn frame; the placeholder text takes its place."""
        self.pages.setCurrentIndex(0)
        self.view = None
        for item in (self.frame_item, self.mask_item, self.window_item):
            item.clear()
        self.centres.setData([], [])
        for t in self._centre_labels:
            self.frame_plot.removeItem(t)
        self._centre_labels = []
        self.patches.clear()
        self.patch_items = {}
        self.param_labels = {}

    def show_frame(self, view: FrameView) -> None:
        """Draw ``view``: log-scaled frame, masked pixels, windows, centres, polar patches."""
        self.clear()
        self.view = view
        self.show_message("")
        source = f" · {view.source}" if view.source else ""
        self.header.setText(f"<b>{view.run}</b> · row {view.row}, col {view.col} · series {view.series}, "
                            f"frame {view.frame}{source}")
        img = log_image(view.image, view.mask)
        finite = img[np.isfinite(img)]
        hi = float(np.percentile(finite, 99.9)) if finite.size else 1.0
        self.frame_item.setImage(img, autoLevels=False, levels=(0.0, max(hi, 0.5)))
        self.mask_item.setImage(mask_overlay(view.mask), autoLevels=False, levels=(0, 255))
        self.window_item.setImage(window_overlay(view.window_labels), autoLevels=False, levels=(0, 255))
        xs, ys, pens = [], [], []
        for k, peak in enumerate(view.peaks):
            colour = PEAK_COLORS[k % len(PEAK_COLORS)]
            if peak.centre_pixel is not None:
                r, c = peak.centre_pixel
                xs.append(c + 0.5)
                ys.append(r + 0.5)
                pens.append(pg.mkPen(colour, width=2))
                label = pg.TextItem(peak.name, color=colour, anchor=(0, 1))
                label.setPos(c + 12, r - 6)
                label.setZValue(5)
                self.frame_plot.addItem(label)
                self._centre_labels.append(label)
        if xs:
            self.centres.setData(xs, ys, pen=pens)
        self.pages.setCurrentIndex(1)
        self.frame_plot.autoRange()
        self._draw_patches(view)
        self.frame_shown.emit(view)

    def _draw_patches(self, view: FrameView) -> None:
        for k, peak in enumerate(view.peaks):
            colour = PEAK_COLORS[k % len(PEAK_COLORS)]
            residual = peak.mean - peak.model
            both = np.concatenate([peak.mean.ravel(), peak.model.ravel()])
            levels = robust_limits(both, 0.5, 99.5) or (0.0, 1.0)  # (0, 1): a patch without data
            r = (robust_limits(np.abs(residual), 0, 99) or (0.0, 1.0))[1]
            items = {}
            for j, (title, data, lv, cmap) in enumerate((
                    ("data", peak.mean, levels, FRAME_COLORMAP),
                    ("fit", peak.model, levels, FRAME_COLORMAP),
                    ("residual", residual, (-r, r), RESIDUAL_COLORMAP))):
                plot = self.patches.addPlot(row=2 * k, col=j)
                plot.setTitle(f"{peak.name} {title}", color=colour if j == 0 else None, size="9pt")
                item = pg.ImageItem(axisOrder="row-major")
                item.setColorMap(pg.colormap.get(cmap))
                item.setImage(np.asarray(data, dtype=np.float32), autoLevels=False, levels=lv)
                # rows are q bins, columns χ bins: x = χ (°), y = q (1/Å)
                item.setRect(image_rect(peak.chi_centers, peak.q_centers))
                plot.addItem(item)
                plot.setLabel("bottom", "χ (°)")
                if j == 0:
                    plot.setLabel("left", "q (1/Å)")
                else:
                    plot.getAxis("left").setStyle(showValues=False)
                items[title] = item
            text = params_text(peak)
            self.patches.addLabel(text.replace("\n", "<br>"), row=2 * k + 1, col=0, colspan=3, size="8pt")
            self.patch_items[peak.name] = items
            self.param_labels[peak.name] = text
