"""The live monitor window over real links: snapshots on a loopback PUB socket, frames from a
real FrameServer fed by simulated EIGER frames, rescans checked and run on a real RunEngine.
"""

from __future__ import annotations

import os

# before Qt is imported anywhere in this module: no display needed
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import logging
import shutil
import signal
import statistics
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path

import msgpack
import numpy as np
import pytest
from PySide6 import QtCore, QtGui, QtWidgets
from PySide6.QtTest import QTest

from monitor.gui.frame_inspector import MASK_COLOR, PLACEHOLDER_TEXT, log_image
from monitor.gui.monitor_window import MonitorWindow
from monitor.gui.rescan_dialog import rescan_request
from monitor.links.frame_link import FrameClient, FrameServer, FrameUnavailable
from monitor.links.map_colours import CYCLIC_COLORMAP, robust_limits
from monitor.links.map_snapshot import MapSnapshot
from monitor.links.snapshot_link import SnapshotPublisher, SnapshotSubscriber
from monitor.session.frame_views import frame_view
from processors.config import RescanConfig, load_config
from processors.demo_setup import write_demo_config
from processors.frame_processor import FrameProcessor
from processors.frame_record import PARAM_NAMES, frame_record_dtype
from processors.geometry import pixel_geometry, read_poni
from processors.processing_setup import ProcessingSetup
from processors.simulate_scan import ScanSimulator
from stream.encoded_frame import EncodedFrame

SCREENSHOT_COPY = "/tmp/nanomaps_gui.png"
RULES = RescanConfig(allowed_plans=("grid_scan",), limits={"piezo_y": (-10.0, 10.0), "piezo_x": (0.0, 30.0)})
L = QtCore.Qt.MouseButton.LeftButton


# ---- data ---------------------------------------------------------------------------------
def known_snapshot(run: str = "scan-1", shape=(20, 30), *, parent: str = "", scale: float = 1.0,
                   **kw) -> MapSnapshot:
    """A map with known values: a ramp, NaN holes, φ0 domains of ±5° straddling ±180°."""
    rows, cols = shape
    r, c = np.mgrid[0:rows, 0:cols].astype(np.float32)
    intensity = scale * (1000 + 10 * r + c)
    intensity[3, 4] = np.nan
    intensity[10:12, 20:25] = np.nan
    domain = ((r // 5 + c // 6) % 2).astype(bool)
    phi0 = np.where(domain, -175.0, 175.0) + 0.1 * np.sin(r + c)       # 180 ± 5°, written in (−180, 180]
    phi0[0, 0] = np.nan
    maps = {"intensity": intensity, "100/amplitude": 100 + r, "100/q0": 1.07 + 1e-4 * (r - c),
            "100/dq": 0.03 + 1e-4 * c, "100/phi0": phi0, "100/dphi": 3 + 0 * r, "100/dphi_do": 2 + 0 * c,
            "derived/a": 5.87 + 1e-3 * r, "derived/size": 12 + 0.1 * c, "derived/microstrain": 0.018 + 0 * r}
    kw.setdefault("counters", {"received": 120, "processed": 115, "dropped": 0, "corrupt": 1})
    kw.setdefault("rates", {"frames_per_s": 25.0, "latency_median_ms": 80.0})
    kw.setdefault("progress", 0.4)
    return MapSnapshot(run=run, maps={k: np.asarray(v, dtype=np.float32) for k, v in maps.items()},
                       x=10 + 0.5 * np.arange(cols), y=-3 + 0.5 * np.arange(rows), motors=("piezo_y", "piezo_x"),
                       snake=True, parent_run=parent, peaks=("100",), geometry="bluesky", **kw)


class SimulatedFrames:
    """A 5 × 6 scan of the model supercrystal: real frames, processed for real, served by run/row/col."""

    RUN = "scan-A"

    def __init__(self, folder) -> None:
        self.config = load_config(write_demo_config(folder, shape=(5, 6)))
        sim = ScanSimulator(self.config, seed=3)
        self.processor = FrameProcessor(ProcessingSetup.from_config(self.config,
                                                                    pixel_mask=sim.metadata.pixel_mask))
        geo = pixel_geometry(read_poni(self.config.geometry.poni), str(self.config.geometry.poni))
        self.q_map, self.chi_map = geo.q_A, geo.chi_deg
        scan = self.config.scan
        rows, cols = scan.points_of(np.arange(scan.n_frames))
        self.frames = {}
        records = np.zeros(scan.n_frames, dtype=frame_record_dtype(self.processor.n_peaks))
        for k, blob in sim.encoded_frames():
            frame = EncodedFrame(series=1, frame=k, encoding="bslz4", dtype="uint32", shape=self.processor.shape,
                                 blob=blob)
            self.frames[int(rows[k]), int(cols[k])] = frame
            assert self.processor.process_into(frame, records[k]) == ""
        # the maps a processor would publish for these frames
        maps = {"intensity": np.full(scan.shape, np.nan, np.float32)}
        maps["intensity"][rows, cols] = records["intensity"]
        for j, peak in enumerate(self.config.peaks):
            for i, name in enumerate(PARAM_NAMES[:5]):
                m = np.full(scan.shape, np.nan, np.float32)
                m[rows, cols] = records["params"][:, j, i]
                maps[f"{peak.name}/{name}"] = m
        y, x = scan.axis_positions()
        self.snapshot = MapSnapshot(run=self.RUN, maps=maps, x=x, y=y, motors=scan.motors, snake=scan.snake,
                                    counters={"received": 30, "processed": 30, "dropped": 0, "corrupt": 0},
                                    rates={"frames_per_s": 120.0, "latency_median_ms": 35.0}, progress=1.0,
                                    peaks=tuple(p.name for p in self.config.peaks), done=True)
        self.served = []

    def handler(self, run: str, row: int, col: int):
        if run != self.RUN:
            raise FrameUnavailable(f"run {run!r} is not in the ring buffer of recent frames")
        frame = self.frames.get((row, col))
        if frame is None:
            raise FrameUnavailable(f"point ({row}, {col}) has no frame yet")
        view = frame_view(self.processor, frame, run=run, row=row, col=col, q_map=self.q_map,
                          chi_map=self.chi_map, source="ring buffer")
        self.served.append(view)
        return view


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    return SimulatedFrames(tmp_path_factory.mktemp("gui_frames"))


# ---- links and windows ------------------------------------------------------------------
@pytest.fixture
def publisher():
    pub = SnapshotPublisher("tcp://127.0.0.1:*")
    yield pub
    pub.close()


@pytest.fixture
def frame_server(simulated):
    simulated.served.clear()
    server = FrameServer("tcp://127.0.0.1:*", simulated.handler)
    yield server
    server.close()


@pytest.fixture
def make_window(qtbot):
    """Builds windows on a real subscriber; closes window, feed and frame client afterwards."""
    made = []

    def make(endpoint: str, *, frames: FrameClient | None = None, runner=None, rules: RescanConfig = RULES,
             **kw) -> MonitorWindow:
        feed = SnapshotSubscriber(endpoint)
        window = MonitorWindow(feed, frames, runner, rules, **kw)
        made.append((window, feed, frames))
        window.show()
        qtbot.waitExposed(window)
        return window

    yield make
    for window, feed, frames in made:
        if window.rescan_dialog is not None:
            window.rescan_dialog.close()
        window.close()
        feed.close()
        if frames is not None:
            frames.close()


def publish_until(qtbot, pub: SnapshotPublisher, snap: MapSnapshot, condition, timeout: int = 5000) -> None:
    """Publish ``snap`` repeatedly (PUB drops messages until the subscriber has joined) until ``condition``."""
    def check():
        pub.publish(snap)
        assert condition()
    qtbot.waitUntil(check, timeout=timeout)


def widget_pos(window: MonitorWindow, row: int, col: int) -> QtCore.QPoint:
    """Where map point (row, col) is on the map widget's viewport."""
    mv = window.map_view
    scene = mv.view_box.mapViewToScene(mv.point_position(row, col))
    return mv.graphics.mapFromScene(scene)


def view_to_widget(window: MonitorWindow, x: float, y: float) -> QtCore.QPoint:
    mv = window.map_view
    return mv.graphics.mapFromScene(mv.view_box.mapViewToScene(QtCore.QPointF(x, y)))


def click_map(window: MonitorWindow, row: int, col: int) -> None:
    QTest.qWait(50)     # let the view apply its auto-range before mapping coordinates
    QTest.mouseClick(window.map_view.graphics.viewport(), L, QtCore.Qt.KeyboardModifier.NoModifier,
                     widget_pos(window, row, col))


def drag_map(window: MonitorWindow, start_xy: tuple[float, float], stop_xy: tuple[float, float],
             steps: int = 6) -> None:
    """A real left-button drag on the map's viewport between two motor positions (µm).

    Moves are spaced by 30 ms: pyqtgraph drops mouse moves that come faster than its rate limit.
    """
    vp = window.map_view.graphics.viewport()
    QTest.qWait(50)     # let the view apply its auto-range before mapping coordinates
    start, stop = view_to_widget(window, *start_xy), view_to_widget(window, *stop_xy)

    def send(kind, pos, button, buttons):
        ev = QtGui.QMouseEvent(kind, QtCore.QPointF(pos), QtCore.QPointF(vp.mapToGlobal(pos)), button, buttons,
                               QtCore.Qt.KeyboardModifier.NoModifier)
        QtWidgets.QApplication.sendEvent(vp, ev)

    send(QtCore.QEvent.Type.MouseButtonPress, start, L, L)
    for t in np.linspace(0, 1, steps)[1:]:
        QTest.qWait(30)
        p = QtCore.QPoint(round(start.x() + t * (stop.x() - start.x())), round(start.y() + t * (stop.y() - start.y())))
        send(QtCore.QEvent.Type.MouseMove, p, QtCore.Qt.MouseButton.NoButton, L)
    QTest.qWait(30)
    send(QtCore.QEvent.Type.MouseButtonRelease, stop, L, QtCore.Qt.MouseButton.NoButton)


def assert_same(a, b) -> None:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def assert_colour_scale_matches(mv, unit: str) -> None:
    """The map has a visible colour bar whose tick values span its levels, labelled with the unit."""
    QTest.qWait(50)      # laid out and painted
    bar = mv.colorbar
    assert bar.isVisible() and bar.axis.isVisible() and bar.axis.style["showValues"]
    assert bar.levels() == pytest.approx(mv.levels)
    # the bar lies inside the map's widget: not cut off at its edge (the old histogram was)
    in_view = mv.graphics.mapFromScene(bar.axis.sceneBoundingRect()).boundingRect()
    assert mv.graphics.viewport().rect().contains(in_view), (in_view, mv.graphics.viewport().rect())
    lo, hi = mv.levels
    ticks = mv.colorbar_ticks
    values = [v for v, _ in ticks if lo - 1e-9 * abs(hi - lo) <= v <= hi + 1e-9 * abs(hi - lo)]
    labels = [t for _, t in ticks if t]
    assert len(values) >= 3 and labels, ticks
    assert max(values) - min(values) >= 0.5 * (hi - lo), (values, lo, hi)
    for value, label in ticks:   # the numbers printed are the values (no hidden SI scale)
        if label:
            assert float(label) == pytest.approx(value, rel=1e-3, abs=1e-3 * (hi - lo)), (label, value)
    assert unit in bar.axis.labelText and mv.quantity_box.currentText() in bar.axis.labelText


# ---- map -----------------------------------------------------------------------------------
def test_waiting_then_maps_show_the_published_values(qtbot, publisher, make_window):
    window = make_window(publisher.endpoint, refresh_hz=20)
    qtbot.waitUntil(lambda: window.ticks > 1)
    assert window.status.state == "waiting"
    assert f"waiting for the processor at {publisher.endpoint}" in window.status.text
    assert window.map_view.displayed is None
    # nothing to show yet: words, not empty axes and a 0…1 colour bar
    assert window.map_view.pages.currentWidget() is window.map_view.placeholder
    assert not window.inspector.showing_frame and window.inspector.placeholder.isVisible()
    assert window.inspector.placeholder.text().startswith("No frame server connected")   # frames=None here

    snap = known_snapshot()
    publish_until(qtbot, publisher, snap, lambda: window.map_view.displayed is not None)
    mv = window.map_view
    assert mv.current_run == "scan-1" and mv.current_quantity == "intensity"
    shown = mv.image_item.image
    assert shown.shape == (20, 30)
    assert_same(shown, snap.maps["intensity"])              # same values, NaN where NaN
    assert np.isnan(shown[3, 4]) and np.isnan(shown[10:12, 20:25]).all()
    # pixel centres at the motor positions: the image spans x ± half a step, y ± half a step
    extent = mv.image_item.mapRectToParent(mv.image_item.boundingRect())
    assert extent.left() == pytest.approx(9.75) and extent.right() == pytest.approx(24.75)
    assert extent.top() == pytest.approx(-3.25) and extent.bottom() == pytest.approx(6.75)
    assert mv.point_position(2, 3).x() == pytest.approx(11.5) and mv.point_position(2, 3).y() == pytest.approx(-2.0)
    assert "piezo_x" in mv.plot.getAxis("bottom").labelText and "piezo_y" in mv.plot.getAxis("left").labelText
    # robust levels: 2nd–98th percentiles, not the extremes
    finite = snap.maps["intensity"][np.isfinite(snap.maps["intensity"])]
    assert mv.levels == pytest.approx(tuple(np.percentile(finite, [2, 98])), rel=1e-6)
    assert mv.pages.currentWidget() is mv.graphics
    assert_colour_scale_matches(mv, "counts")

    # the selector offers what the snapshot has, in a stable order
    assert mv.quantities == ["intensity", "100/amplitude", "100/q0", "100/dq", "100/phi0", "100/dphi",
                             "100/dphi_do", "derived/a", "derived/size", "derived/microstrain"]
    mv.select_quantity("100/q0")
    assert_same(mv.image_item.image, snap.maps["100/q0"])
    mv.select_quantity("derived/size")
    assert_same(mv.image_item.image, snap.maps["derived/size"])

    # a newer snapshot of the same run is drawn by the timer; the chosen quantity stays
    newer = known_snapshot(scale=2.0)
    newer.maps["derived/size"][:] = 15.0
    publish_until(qtbot, publisher, newer, lambda: mv.snapshot is not None and mv.snapshot.time == newer.time)
    assert mv.current_quantity == "derived/size"
    assert_same(mv.image_item.image, newer.maps["derived/size"])

    # levels set by hand on the colour bar (its lower handle dragged up) stay through later snapshots
    mv.select_quantity("intensity")
    automatic = mv.levels
    mv.colorbar.region.setRegion((100, 191))
    manual = mv.levels
    assert not mv.auto_levels.isChecked() and manual[0] > automatic[0]
    assert manual[1] == pytest.approx(automatic[1], abs=1e-3 * (automatic[1] - automatic[0]))  # handle steps
    assert mv.colorbar.levels() == pytest.approx(manual)
    newest = known_snapshot(scale=3.0)
    publish_until(qtbot, publisher, newest, lambda: mv.snapshot.time == newest.time)
    assert mv.levels == pytest.approx(manual)
    mv.auto_levels.setChecked(True)
    assert mv.levels == pytest.approx(robust_limits(newest.maps["intensity"]))

    # status: counters, rate, latency, progress; no warning
    text = window.status.text
    for part in ("received 120", "processed 115", "skipped 0", "corrupt 1", "25.0 frames/s", "latency 80 ms",
                 "40 %"):
        assert part in text, (part, text)
    assert window.status.state == "ok" and not window.status.warning


def test_phi0_is_folded_mod_90_with_a_cyclic_colormap(qtbot, publisher, make_window):
    window = make_window(publisher.endpoint, refresh_hz=20)
    snap = known_snapshot()
    publish_until(qtbot, publisher, snap, lambda: window.map_view.displayed is not None)
    mv = window.map_view
    assert mv.colormap_name != CYCLIC_COLORMAP
    mv.select_quantity("100/phi0")
    raw = snap.maps["100/phi0"]
    shown = mv.image_item.image
    assert mv.colormap_name == CYCLIC_COLORMAP
    # the ±5° domains around 180° read 10° apart, not +175 / −175 (a 350° jump);
    # the fold centre is the median (one of the domains; ±180 are the same direction)
    assert 174.5 <= np.mod(mv.angle_centre, 360.0) <= 185.5
    assert np.nanmax(shown) - np.nanmin(shown) < 11
    assert np.nanmedian(shown[raw < 0]) - np.nanmedian(shown[raw > 0]) == pytest.approx(10.0, abs=0.2)
    assert abs(np.nanmedian(shown) - mv.angle_centre) < 0.2
    # the same orientation modulo 90°, NaN kept
    diff = np.mod(shown - raw, 90.0)
    finite = np.isfinite(raw)
    assert np.all((diff[finite] < 1e-3) | (diff[finite] > 90 - 1e-3))
    assert np.isnan(shown[0, 0])
    # levels span one period, and the lookup table is cyclic: both ends have the same colour
    lo, hi = mv.levels
    assert hi - lo == pytest.approx(90.0)
    lut = mv.colorbar.colorMap().getLookupTable(nPts=256)
    assert np.abs(lut[0].astype(int) - lut[-1].astype(int)).max() <= 8
    assert mv.image_item.lut is not None
    assert_colour_scale_matches(mv, "°")
    # back to a linear quantity, back to the linear colormap
    mv.select_quantity("100/dphi")
    assert mv.colormap_name != CYCLIC_COLORMAP


def test_live_phi0_map_and_report_show_the_same_fold_and_colormap(qtbot, publisher, make_window):
    """The live φ0 map and the report's φ0 panel fold the same values to the same numbers, with one colormap."""
    from monitor.report.figure import draw_report_data
    from monitor.report.figure_data import MapAxis, ReportData

    window = make_window(publisher.endpoint, refresh_hz=20)
    snap = known_snapshot()
    publish_until(qtbot, publisher, snap, lambda: window.map_view.displayed is not None)
    mv = window.map_view
    mv.select_quantity("100/phi0")
    raw = snap.maps["100/phi0"]
    data = ReportData(path=Path("scan_results.h5"), shape=raw.shape, x=MapAxis(np.asarray(snap.x, float), "x (µm)"),
                      y=MapAxis(np.asarray(snap.y, float), "y (µm)"), peak="100", peaks=("100",),
                      phi0=raw.astype(np.float64))
    fig = draw_report_data(data)
    (ax,) = [a for a in fig.axes if a.get_label() == "phi0"]
    image = ax.get_images()[0]
    in_report = np.ma.filled(image.get_array(), np.nan)
    np.testing.assert_allclose(in_report, mv.image_item.image, atol=1e-4)   # NaN where NaN
    assert f"median {mv.angle_centre:.1f}°" in ax.get_title()
    assert image.get_cmap().name == mv.colormap_name == CYCLIC_COLORMAP
    # the very same colours along the map: matplotlib's table and the live colour bar's
    report_lut = (image.get_cmap()(np.linspace(0, 1, 256))[:, :3] * 255).round()
    live_lut = mv.colorbar.colorMap().getLookupTable(nPts=256)[:, :3].astype(float)
    assert np.abs(report_lut - live_lut).max() <= 2


def test_new_run_is_selected_and_old_runs_stay_selectable(qtbot, publisher, make_window):
    window = make_window(publisher.endpoint, refresh_hz=20)
    mv = window.map_view
    first = known_snapshot("scan-1")
    publish_until(qtbot, publisher, first, lambda: mv.current_run == "scan-1")
    mv.select_quantity("100/q0")
    rescan = known_snapshot("scan-2", (8, 12), parent="scan-1", scale=3.0)
    publish_until(qtbot, publisher, rescan, lambda: mv.current_run == "scan-2")
    assert mv.runs == ["scan-1", "scan-2"]
    assert "rescan of scan-1" in mv.run_box.currentText()
    assert mv.current_quantity == "100/q0"                  # the quantity follows to the new run
    assert_same(mv.image_item.image, rescan.maps["100/q0"])
    # the old run is still there, with its own values and extent
    mv.select_run("scan-1")
    assert_same(mv.image_item.image, first.maps["100/q0"])
    # it stays selected while the new run keeps updating
    publisher.publish(replace(rescan, progress=0.9, time=time.time()))
    qtbot.wait(300)
    assert mv.current_run == "scan-1"


def test_strip_of_unknown_geometry_grows(qtbot, publisher, make_window):
    window = make_window(publisher.endpoint, refresh_hz=20)
    mv = window.map_view

    def strip(n):
        values = np.arange(n, dtype=np.float32)[None, :] * 2.0
        return MapSnapshot(run="strip-1", maps={"intensity": values}, x=np.arange(n, dtype=float), y=np.zeros(1),
                           motors=("", "point"), geometry="strip", progress=0.5)

    publish_until(qtbot, publisher, strip(7), lambda: mv.displayed is not None and mv.displayed.shape == (1, 7))
    publish_until(qtbot, publisher, strip(12), lambda: mv.displayed.shape == (1, 12))
    assert_same(mv.image_item.image, np.arange(12, dtype=np.float32)[None, :] * 2.0)
    assert "scan point" in mv.plot.getAxis("bottom").labelText
    # a region cannot be rescanned on a strip: said, not crashed
    assert window.open_rescan(QtCore.QRectF(0, 0, 3, 1)) is None
    assert "geometry is unknown" in window.message


# ---- status -------------------------------------------------------------------------------
def test_behind_warning_no_data_and_recovery(qtbot, publisher, make_window):
    window = make_window(publisher.endpoint, refresh_hz=20, stale_after_s=0.6)
    behind = known_snapshot(counters={"received": 500, "processed": 380, "dropped": 120, "corrupt": 0}, behind=True)
    publish_until(qtbot, publisher, behind, lambda: window.status.state == "behind")
    assert window.status.warning
    assert "120 frames skipped" in window.status.text and "skipped 120" in window.status.text
    assert window.status.state_colour == "#ff9800"
    assert "#ff9800" in window.status.state_label.styleSheet()

    # the processor stops: the window notices and keeps running
    endpoint = publisher.endpoint
    publisher.close()
    qtbot.waitUntil(lambda: window.status.state == "stale", timeout=5000)
    assert "no data for" in window.status.text and window.status.warning
    ticks = window.ticks
    qtbot.waitUntil(lambda: window.ticks > ticks + 3)

    # it comes back on the same address: the subscriber reconnects, the warning goes
    again = SnapshotPublisher(endpoint)
    try:
        fine = known_snapshot(counters={"received": 600, "processed": 600, "dropped": 0, "corrupt": 0})
        publish_until(qtbot, again, fine, lambda: window.status.state == "ok", timeout=10000)
        assert "no data" not in window.status.text and not window.status.warning
        assert "received 600" in window.status.text
    finally:
        again.close()


def test_status_and_progress_follow_the_run_the_map_shows(qtbot, publisher, make_window):
    window = make_window(publisher.endpoint, refresh_hz=20)
    mv, status = window.map_view, window.status
    parent = known_snapshot("scan-1", progress=1.0, done=True, exit_status="success",
                            counters={"received": 600, "processed": 600, "dropped": 0, "corrupt": 0})
    publish_until(qtbot, publisher, parent, lambda: mv.current_run == "scan-1")
    qtbot.waitUntil(lambda: status.state == "done")
    assert "run scan-1 done" in status.text and "received 600" in status.text
    assert status.progress.value() == 100 and status.progress.text() == "scan 100 %"
    assert "frames/s" not in status.text          # the processor's rate is not a finished run's

    # the rescan appears and is shown: the status is the rescan's
    rescan = known_snapshot("scan-2", (8, 12), parent="scan-1", progress=0.4,
                            counters={"received": 40, "processed": 38, "dropped": 0, "corrupt": 0})
    publish_until(qtbot, publisher, rescan, lambda: mv.current_run == "scan-2")
    qtbot.waitUntil(lambda: "scan-2" in status.counters_label.text())
    assert status.state == "ok" and "received 40" in status.text and status.progress.text() == "scan 40 %"

    # the operator looks back at the parent while the rescan goes on (its snapshots are the newest):
    # status and progress are the parent's, at once and at every later tick
    mv.select_run("scan-1")
    assert "run scan-1 done" in status.text and status.progress.value() == 100
    ticks = window.ticks
    publish_until(qtbot, publisher, replace(rescan, progress=0.6, time=time.time()),
                  lambda: window.feed.latest()["scan-2"].progress == 0.6 and window.ticks > ticks + 2)
    assert mv.current_run == "scan-1"
    assert "run scan-1 done" in status.text and "received 600" in status.text and status.progress.value() == 100

    # back to the rescan; it ends: the map shows the rescan, so does the status
    mv.select_run("scan-2")
    assert "scan-2" in status.counters_label.text() and status.progress.text() == "scan 60 %"
    ended = replace(rescan, progress=1.0, done=True, exit_status="success", time=time.time())
    publish_until(qtbot, publisher, ended, lambda: status.state == "done")
    assert "run scan-2 done" in status.text and status.progress.value() == 100 and mv.current_run == "scan-2"


@pytest.mark.parametrize("exit_status, state, word", [("abort", "aborted", "aborted"), ("fail", "failed", "failed")])
def test_an_aborted_or_failed_run_says_so_and_how_far_it_got(qtbot, publisher, make_window, exit_status, state,
                                                            word):
    window = make_window(publisher.endpoint, refresh_hz=20, stale_after_s=0.3)
    status = window.status
    running = known_snapshot("scan-X", progress=0.37)
    publish_until(qtbot, publisher, running, lambda: status.state == "ok")
    # the stop document came: the processor marks the run ended (done) with bluesky's exit status
    stopped = replace(running, done=True, exit_status=exit_status, time=time.time())
    publish_until(qtbot, publisher, stopped, lambda: status.state == state)
    assert f"run scan-X {word} at 37 %" in status.state_label.text()
    assert status.progress.value() == 37 and status.progress.text() == f"{word} at 37 %"
    assert "100 %" not in status.text
    assert status.warning == (state == "failed")
    assert status.state_colour in status.state_label.styleSheet()
    # ... and stays so when the processor has gone quiet: a finished run is not "no data"
    qtbot.waitUntil(lambda: window.feed.age() > 0.6)
    assert status.state == state and "no data" not in status.text


def test_progress_never_rounds_an_unfinished_scan_up_to_100(qtbot, publisher, make_window):
    window = make_window(publisher.endpoint, refresh_hz=20)
    publish_until(qtbot, publisher, known_snapshot("scan-9", progress=0.996),
                  lambda: window.status.progress.text() == "scan 99 %")
    assert window.status.progress.value() == 99


def test_maps_not_yet_filled_draw_without_warnings(qtbot, publisher, make_window):
    """At a run's start every map is NaN: drawn as such, with no "All-NaN slice" warnings."""
    window = make_window(publisher.endpoint, refresh_hz=20)
    mv = window.map_view
    empty = known_snapshot("scan-0", progress=0.0)
    empty = replace(empty, maps={k: np.full_like(v, np.nan) for k, v in empty.maps.items()})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        publish_until(qtbot, publisher, empty, lambda: mv.displayed is not None)
        for key in mv.quantities:
            mv.select_quantity(key)
            window.grab()         # paints map, colour bar and status
        qtbot.wait(200)
    assert np.isnan(mv.image_item.image).all()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert messages == []
    assert mv.levels == (0.0, 1.0) and mv.colorbar.levels() == (0.0, 1.0)


def test_snapshot_carries_exit_status_and_reads_old_publishers():
    snap = known_snapshot("run-e", progress=0.37, done=True, exit_status="abort")
    back = MapSnapshot.from_bytes(snap.to_bytes())
    assert (back.exit_status, back.progress, back.done) == ("abort", pytest.approx(0.37), True)
    assert MapSnapshot.from_bytes(known_snapshot().to_bytes()).exit_status == ""
    # a processor from before the field existed: no key at all
    old = msgpack.unpackb(snap.to_bytes(), raw=False)
    del old["exit_status"]
    legacy = MapSnapshot.from_bytes(msgpack.packb(old, use_bin_type=True))
    assert legacy.exit_status == "" and legacy.run == "run-e"
    assert_same(legacy.maps["intensity"], snap.maps["intensity"])


# ---- frame inspector ----------------------------------------------------------------------
def test_click_on_a_map_point_shows_its_frame(qtbot, simulated, publisher, frame_server, make_window):
    window = make_window(publisher.endpoint, frames=FrameClient(frame_server.endpoint), refresh_hz=20)
    publish_until(qtbot, publisher, simulated.snapshot, lambda: window.map_view.current_run == "scan-A")
    insp = window.inspector
    assert not insp.showing_frame and insp.placeholder.text() == PLACEHOLDER_TEXT
    with qtbot.waitSignal(insp.frame_shown, timeout=10000) as shown:
        click_map(window, 3, 4)
    assert insp.showing_frame and not insp.placeholder.isVisible()
    view = shown.args[0]
    assert (view.run, view.row, view.col) == ("scan-A", 3, 4)
    served = simulated.served[-1]
    assert (served.row, served.col) == (3, 4)
    assert view.frame == 3 * 6 + (6 - 1 - 4)                # snake: row 3 runs backwards
    assert "row 3, col 4" in insp.header.text() and insp.message == ""
    # the image is the frame (log scale), masked pixels painted distinctly
    assert_same(view.image, served.image)
    assert_same(insp.frame_item.image, log_image(served.image, served.mask))
    masked = insp.mask_item.image[served.mask]
    assert len(masked) > 0 and (masked == MASK_COLOR).all()
    assert (insp.mask_item.image[~served.mask][:, 3] == 0).all()
    # the peak windows are drawn exactly where the labels are; centres marked
    assert_same(insp.window_item.image[..., 3] > 0, served.window_labels > 0)
    centres = [p.centre_pixel for p in served.peaks]
    assert all(c is not None for c in centres)
    xs, ys = insp.centres.getData()
    assert_same(xs, [c[1] + 0.5 for c in centres])
    assert_same(ys, [c[0] + 0.5 for c in centres])
    # per peak: data, fit and residual patches with q/χ axes, and the parameters
    assert list(insp.patch_items) == ["100", "110", "200"]
    for peak in served.peaks:
        items = insp.patch_items[peak.name]
        f32 = np.float32   # patches are drawn as float32
        assert_same(items["data"].image, peak.mean.astype(f32))
        assert_same(items["fit"].image, peak.model.astype(f32))
        assert_same(items["residual"].image, (peak.mean - peak.model).astype(f32))
        extent = items["data"].mapRectToParent(items["data"].boundingRect())
        assert extent.left() < peak.chi_centers[0] < peak.chi_centers[-1] < extent.right()
        assert extent.top() < peak.q_centers[0] < peak.q_centers[-1] < extent.bottom()
        assert f"q0 {peak.params[1]:.4f} 1/Å" in insp.param_labels[peak.name]
    assert window.map_view.marker.data.size == 1             # the clicked point is marked on the map


def test_unavailable_frames_are_messages_not_crashes(qtbot, simulated, publisher, frame_server, make_window):
    window = make_window(publisher.endpoint, frames=FrameClient(frame_server.endpoint), refresh_hz=20)
    publish_until(qtbot, publisher, known_snapshot("scan-Z"), lambda: window.map_view.current_run == "scan-Z")
    insp = window.inspector
    with qtbot.waitSignal(insp.failed, timeout=10000) as failed:
        click_map(window, 2, 2)
    assert "not in the ring buffer" in failed.args[0]
    assert "not in the ring buffer" in insp.message and insp.message_label.isVisible()
    assert "b00020" in insp.message_label.styleSheet()
    assert insp.view is None

    # a processor that does not answer at all: a message after the client's timeout
    silent = FrameServer("tcp://127.0.0.1:*", simulated.handler)
    endpoint = silent.endpoint
    silent.close()
    insp.frames = FrameClient(endpoint, timeout_s=0.3)
    try:
        with qtbot.waitSignal(insp.failed, timeout=5000):
            click_map(window, 0, 0)
        assert "did not answer" in insp.message
    finally:
        insp.frames.close()


# ---- responsiveness -------------------------------------------------------------------------
def test_100x100_maps_redraw_fast_while_the_publisher_runs(qtbot, publisher, make_window):
    window = make_window(publisher.endpoint, refresh_hz=10)
    mv = window.map_view
    first = known_snapshot("big", (100, 100))
    publish_until(qtbot, publisher, first, lambda: mv.displayed is not None)
    assert mv.image_item.image.shape == (100, 100)

    # one redraw of a 100 × 100 map (levels, histogram, LUT): well under the 100 ms timer period
    times = []
    for k in range(10):
        snap = known_snapshot("big", (100, 100), scale=1.0 + k)
        t0 = time.perf_counter()
        assert mv.set_runs({"big": snap})
        times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 0.05, times

    # the publisher sends new maps far faster than the view redraws; the event loop keeps running
    stop = threading.Event()

    def flood():
        k = 0
        while not stop.is_set():
            publisher.publish(known_snapshot("big", (100, 100), scale=2.0 + k % 7))
            k += 1
            time.sleep(0.01)

    probe = {"ticks": 0}
    timer = QtCore.QTimer()
    timer.timeout.connect(lambda: probe.__setitem__("ticks", probe["ticks"] + 1))
    timer.start(20)
    thread = threading.Thread(target=flood, daemon=True)
    redraws = mv.redraws
    thread.start()
    try:
        qtbot.wait(2000)
    finally:
        stop.set()
        thread.join(5)
        timer.stop()
    drawn = mv.redraws - redraws
    assert 5 <= drawn <= 25          # at the 10 Hz timer's pace, not the publisher's (~100 Hz)
    assert probe["ticks"] >= 50      # of ~100 possible 20 ms ticks: the GUI thread was free most of the time


# ---- rescan and abort on a real RunEngine ---------------------------------------------------
@pytest.fixture
def make_runner():
    """RunEngineRunners with ophyd.sim motors named as in the maps; closed afterwards."""
    from ophyd.sim import SynAxis, det

    from monitor.bluesky.run_engine_runner import RunEngineRunner

    made = []

    def make(delay: float = 0.0):
        motors = {name: SynAxis(name=name, delay=delay) for name in ("piezo_y", "piezo_x")}
        runner = RunEngineRunner([det], motors)
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.close()


def test_rectangle_gives_a_finer_rescan_request(qtbot, publisher, make_window, make_runner):
    window = make_window(publisher.endpoint, runner=make_runner(), refresh_hz=20)
    snap = known_snapshot()                                   # step 0.5 µm, x 10…24.5, y −3…6.5
    publish_until(qtbot, publisher, snap, lambda: window.map_view.current_run == "scan-1")

    # the request for a given rectangle: motor ranges as drawn, half the step, rows = slow motor
    req = rescan_request(snap, QtCore.QRectF(QtCore.QPointF(13.0, -1.0), QtCore.QPointF(11.0, -2.0)))
    assert (req.slow_motor, req.slow_start, req.slow_stop, req.slow_num) == ("piezo_y", -2.0, -1.0, 5)
    assert (req.fast_motor, req.fast_start, req.fast_stop, req.fast_num) == ("piezo_x", 11.0, 13.0, 9)
    assert req.step == pytest.approx((0.25, 0.25))
    assert req.snake is True and req.parent_uid == "scan-1" and req.plan == "grid_scan"

    # the same by hand: "Select region", drag on the map → the dialog opens prefilled
    qtbot.mouseClick(window.map_view.select_button, L)
    assert window.map_view.view_box.select_mode
    drag_map(window, (11.0, -2.0), (13.0, -1.0))
    qtbot.waitUntil(lambda: window.rescan_dialog is not None and window.rescan_dialog.isVisible())
    dialog = window.rescan_dialog
    assert not window.map_view.view_box.select_mode          # one rectangle per selection
    pixel = 0.06                                              # a screen pixel is ~0.02 µm here
    assert dialog.fast_start.value() == pytest.approx(11.0, abs=pixel)
    assert dialog.fast_stop.value() == pytest.approx(13.0, abs=pixel)
    assert dialog.slow_start.value() == pytest.approx(-2.0, abs=pixel)
    assert dialog.slow_stop.value() == pytest.approx(-1.0, abs=pixel)
    assert (dialog.slow_step.value(), dialog.fast_step.value()) == (0.25, 0.25)
    drawn = dialog.request()
    assert drawn.shape == (5, 9) and drawn.parent_uid == "scan-1"
    assert "5 × 9 = 45 points" in dialog.points_label.text()
    band = window.map_view.view_box.band
    assert band.isVisible() and band.rect().width() == pytest.approx(2.0, abs=pixel)
    dialog.fast_step.setValue(0.5)
    assert "5 × 5 = 25 points" in dialog.points_label.text()


def test_rescan_outside_limits_is_refused_and_nothing_submitted(qtbot, publisher, make_window, make_runner):
    runner = make_runner()
    window = make_window(publisher.endpoint, runner=runner, refresh_hz=20)
    publish_until(qtbot, publisher, known_snapshot(), lambda: window.map_view.current_run == "scan-1")
    dialog = window.open_rescan(QtCore.QRectF(QtCore.QPointF(25.0, 5.0), QtCore.QPointF(35.0, 6.0)))
    with qtbot.waitSignal(dialog.refused) as refused:
        dialog.accept()
    assert "piezo_x would move to 25…35 µm, outside its limits 0…30 µm" in refused.args[0]
    assert "outside its limits" in dialog.message and dialog.isVisible()    # stays open to fix it
    assert "rescan refused" in window.message and "b00020" in window.message_label.styleSheet()
    time.sleep(0.2)
    assert not runner.busy and runner.start_documents == [] and dialog.submitted_id is None


def test_accepted_rescan_runs_on_the_run_engine_with_its_parent(qtbot, publisher, make_window, make_runner):
    runner = make_runner()
    window = make_window(publisher.endpoint, runner=runner, refresh_hz=20)
    publish_until(qtbot, publisher, known_snapshot(), lambda: window.map_view.current_run == "scan-1")
    dialog = window.open_rescan(QtCore.QRectF(QtCore.QPointF(11.0, -2.0), QtCore.QPointF(13.0, -1.0)))
    with qtbot.waitSignal(dialog.submitted) as submitted:
        dialog.accept()
    job_id, request = submitted.args
    assert window.message == f"rescan submitted ({job_id})" and not dialog.isVisible()
    outcome = runner.result(job_id, timeout=30)
    assert outcome.exit_status == "success"
    start = outcome.start
    assert start["parent_uid"] == "scan-1"
    assert start["motors"] == ["piezo_y", "piezo_x"] or tuple(start["motors"]) == ("piezo_y", "piezo_x")
    assert [list(e) for e in start["extents"]] == [[-2.0, -1.0], [11.0, 13.0]]
    assert tuple(start["shape"]) == (5, 9) and request.shape == (5, 9)
    assert outcome.stop["num_events"]["primary"] == 45


def test_abort_stops_a_long_scan(qtbot, publisher, make_window, make_runner, caplog, capsys):
    """Abort ends the run (exit_status "abort") and says so in one log line: no ERROR, no traceback."""
    caplog.set_level(logging.INFO, logger="monitor.bluesky.run_engine_runner")
    runner = make_runner(delay=0.02)                          # 40 × 40 points ≈ 60 s of moves
    window = make_window(publisher.endpoint, runner=runner, refresh_hz=20)
    publish_until(qtbot, publisher, known_snapshot(), lambda: window.map_view.current_run == "scan-1")
    dialog = window.open_rescan(QtCore.QRectF(QtCore.QPointF(10.0, -3.0), QtCore.QPointF(19.75, 6.75)))
    assert dialog.request().shape == (40, 40)
    with qtbot.waitSignal(dialog.submitted):
        dialog.accept()
    job_id = dialog.submitted_id
    runner.wait_started(job_id, timeout=10)
    assert runner.busy
    t0 = time.monotonic()
    qtbot.mouseClick(window.abort_button, L)
    outcome = runner.result(job_id, timeout=10)
    assert time.monotonic() - t0 < 5
    assert outcome.exit_status == "abort" and not runner.busy
    assert outcome.stop["num_events"].get("primary", 0) < 1600
    qtbot.waitUntil(lambda: window.message == "abort requested")
    ours = [r.getMessage() for r in caplog.records if r.name == "monitor.bluesky.run_engine_runner"]
    assert ours == [f"run {outcome.run_uid[:8]} ended: aborted by the user"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], \
        [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "Traceback" not in capsys.readouterr().err


def _beats(interval_ms: int = 20) -> tuple[QtCore.QTimer, list[float]]:
    """A QTimer noting when it fires: gaps in the list are times the Qt event loop was blocked."""
    times: list[float] = []
    beat = QtCore.QTimer()
    beat.setInterval(interval_ms)
    beat.timeout.connect(lambda: times.append(time.monotonic()))
    beat.start()
    return beat, times


def _longest_gap(times: list[float], since: float, until: float) -> float:
    marks = [since] + [t for t in times if since <= t <= until] + [until]
    return float(np.max(np.diff(marks)))


def test_an_unreachable_queue_server_never_freezes_the_window(qtbot, publisher, make_window):
    """A real QueueServerRunner where nothing listens: submit and abort each wait its 1.5 s request
    timeout in the worker thread while the event loop goes on; the error reaches dialog and window."""
    import socket

    from monitor.bluesky.queue_server_runner import QueueServerRunner

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    runner = QueueServerRunner(address, request_timeout_s=1.5)
    try:
        window = make_window(publisher.endpoint, runner=runner, refresh_hz=20)
        publish_until(qtbot, publisher, known_snapshot(), lambda: window.map_view.current_run == "scan-1")
        dialog = window.open_rescan(QtCore.QRectF(QtCore.QPointF(11.0, -2.0), QtCore.QPointF(13.0, -1.0)))
        ok = dialog.buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Ok)
        beat, times = _beats()

        t0 = time.monotonic()
        with qtbot.waitSignal(dialog.refused, timeout=15000) as refused:
            dialog.accept()
            assert time.monotonic() - t0 < 0.5                       # returned at once
            assert dialog.submitting and dialog.message == "submitting the rescan…" and not ok.isEnabled()
            assert window.runner_calls.pending == 1
            dialog.accept()                                          # a second click queues nothing
            assert window.runner_calls.pending == 1
        t1 = time.monotonic()
        assert t1 - t0 >= 1.4                                        # the request did wait its timeout ...
        assert _longest_gap(times, t0, t1) < 0.5                     # ... while the event loop ran
        text = refused.args[0]
        assert text.startswith(f"rescan not submitted: QueueServerTimeout: queue server {address} did not "
                               "answer within 1.5 s")
        assert dialog.isVisible() and not dialog.submitting and ok.isEnabled() and dialog.submitted_id is None
        assert window.message == text and "b00020" in window.message_label.styleSheet()

        t0 = time.monotonic()
        qtbot.mouseClick(window.abort_button, L)
        assert time.monotonic() - t0 < 0.5
        assert window.message == "aborting…" and not window.abort_button.isEnabled()
        qtbot.waitUntil(lambda: window.message.startswith("abort failed"), timeout=15000)
        t1 = time.monotonic()
        assert t1 - t0 >= 1.4 and _longest_gap(times, t0, t1) < 0.5
        assert f"QueueServerTimeout: queue server {address} did not answer" in window.message
        assert window.abort_button.isEnabled() and window.runner_calls.pending == 0
        beat.stop()
    finally:
        runner.close()


# ---- screenshot ---------------------------------------------------------------------------
def test_screenshot_with_map_inspector_and_refused_rescan(qtbot, tmp_path, simulated, publisher, frame_server,
                                                          make_window, make_runner):
    runner = make_runner()
    window = make_window(publisher.endpoint, frames=FrameClient(frame_server.endpoint), runner=runner,
                         refresh_hz=20)
    publish_until(qtbot, publisher, simulated.snapshot, lambda: window.map_view.current_run == "scan-A")
    window.map_view.select_quantity("100/phi0")
    with qtbot.waitSignal(window.inspector.frame_shown, timeout=10000):
        click_map(window, 2, 3)
    dialog = window.open_rescan(QtCore.QRectF(QtCore.QPointF(-1.0, 0.5), QtCore.QPointF(1.5, 1.5)))
    dialog.accept()
    assert "outside its limits" in window.message
    qtbot.wait(300)                                           # a few timer ticks: status drawn
    path = window.save_screenshot(tmp_path / "monitor.png")
    dialog_path = tmp_path / "rescan_dialog.png"
    assert dialog.grab().save(str(dialog_path))
    image = QtGui.QImage(str(path))
    assert image.width() >= 1200 and image.height() >= 700
    # not blank: the map and the frame put many different colours on screen
    pixels = np.frombuffer(image.convertToFormat(QtGui.QImage.Format.Format_RGB32).constBits(), np.uint32)
    assert len(np.unique(pixels)) > 500
    assert QtGui.QImage(str(dialog_path)).width() > 200
    shutil.copyfile(path, SCREENSHOT_COPY)


def test_a_failing_plan_is_one_warning_line_and_raises(make_runner, caplog):
    from ophyd.sim import SynAxis, det

    from monitor.bluesky.plan_runner import GridScanRequest
    from monitor.bluesky.run_engine_runner import RunEngineRunner

    class StalledAxis(SynAxis):
        def set(self, *args, **kwargs):
            raise RuntimeError("piezo_x stalled")

    caplog.set_level(logging.INFO, logger="monitor.bluesky.run_engine_runner")
    runner = RunEngineRunner([det], {"piezo_y": SynAxis(name="piezo_y"), "piezo_x": StalledAxis(name="piezo_x")})
    try:
        with pytest.raises(RuntimeError, match="piezo_x stalled"):
            runner.run_blocking(GridScanRequest("piezo_y", 0, 1, 2, "piezo_x", 0, 1, 2), timeout=30)
        start = runner.start_documents[-1]
    finally:
        runner.close()
    ours = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "monitor.bluesky.run_engine_runner"]
    assert ours == [("WARNING", f"run {start['uid'][:8]} failed: RuntimeError: piezo_x stalled")]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# ---- process --gui: the window stays until the user closes it -------------------------------
class ProcessorStandIn:
    """What run_with_gui needs of a LiveProcessor: bound publisher and frame server, run(stop) -> summary.

    ``run`` publishes the simulated scan's snapshot growing to done over ``points`` steps,
    then (``until_stopped``) keeps going until the stop event, closes its links like the
    real processor and returns a real LiveSummary.
    """

    def __init__(self, simulated, *, until_stopped: bool = False, points: int = 6) -> None:
        self.simulated = simulated
        self.until_stopped = until_stopped
        self.points = points
        self.publisher = SnapshotPublisher("tcp://127.0.0.1:*")
        self.frame_server = FrameServer("tcp://127.0.0.1:*", simulated.handler)
        self.stopped_by_event = False
        self.ended = threading.Event()

    def run(self, stop: threading.Event):
        from monitor.session.live_processor import LiveSummary
        from monitor.session.map_collector import RunCounters

        t0 = time.monotonic()
        snap = self.simulated.snapshot
        try:
            k = 0
            while k < self.points or self.until_stopped:
                if stop.wait(0.1):
                    self.stopped_by_event = True
                    break
                k += 1
                done = k >= self.points
                self.publisher.publish(replace(snap, progress=min(k / self.points, 1.0), done=done,
                                               exit_status="success" if done else "", time=time.time()))
        finally:
            self.frame_server.close()
            self.publisher.close()
            self.ended.set()
        counters = RunCounters(received=30, processed=30)
        return LiveSummary(counters, time.monotonic() - t0, "stop" if self.stopped_by_event else "series end",
                           (35.0, 60.0), results=(Path("results.h5"),))


def _config_with_rules():
    from types import SimpleNamespace
    return SimpleNamespace(rescan=RULES)


def test_process_window_stays_open_after_processing_ended(qtbot, simulated):
    from monitor.gui.process_window import run_with_gui

    processor = ProcessorStandIn(simulated)
    seen: dict = {}

    def watch(window):
        QtCore.QTimer.singleShot(60_000, window.close)      # a failing test ends, it does not hang
        seen["window"] = window

        def check():
            if not processor.ended.is_set() or "processing ended" not in window.message:
                QtCore.QTimer.singleShot(50, check)
                return
            # well after processing ended, the window is still there, with the last maps
            QtCore.QTimer.singleShot(1000, lambda: (seen.update(visible=window.isVisible(), message=window.message,
                                                                status=window.status.text,
                                                                run=window.map_view.current_run),
                                                    window.close()))
        check()

    summary = run_with_gui(processor, _config_with_rules(), None, None, on_window=watch)
    assert seen["visible"] and seen["run"] == "scan-A"
    assert "processing ended (stopped by series end): 30 of 30 frames processed" in seen["message"]
    assert "results.h5" in seen["message"] and "Close the window" in seen["message"]
    assert "run scan-A done" in seen["status"]
    assert summary.stopped_by == "series end" and not processor.stopped_by_event
    assert not seen["window"].isVisible()


def test_closing_the_process_window_stops_processing(qtbot, simulated):
    from monitor.gui.process_window import run_with_gui

    processor = ProcessorStandIn(simulated, until_stopped=True)

    def watch(window):
        QtCore.QTimer.singleShot(60_000, window.close)      # a failing test ends, it does not hang
        def close_once_drawn():
            if window.map_view.displayed is None:
                QtCore.QTimer.singleShot(50, close_once_drawn)
                return
            assert not processor.ended.is_set()
            window.close()
        close_once_drawn()

    t0 = time.monotonic()
    summary = run_with_gui(processor, _config_with_rules(), None, None, on_window=watch)
    assert processor.stopped_by_event and processor.ended.is_set()
    assert summary.stopped_by == "stop" and time.monotonic() - t0 < 20


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_closes_the_process_window_cleanly(qtbot, simulated, signum, capsys):
    from monitor.gui.process_window import run_with_gui

    processor = ProcessorStandIn(simulated, until_stopped=True)
    before = signal.getsignal(signum)
    seen: dict = {}

    def watch(window):
        QtCore.QTimer.singleShot(60_000, window.close)      # a failing test ends, it does not hang
        seen["window"] = window

        def signal_once_drawn():
            if window.map_view.displayed is None:
                QtCore.QTimer.singleShot(50, signal_once_drawn)
                return
            os.kill(os.getpid(), signum)     # as the terminal's Ctrl-C, or `kill`, would
        signal_once_drawn()

    summary = run_with_gui(processor, _config_with_rules(), None, None, on_window=watch)
    assert summary.stopped_by == "stop" and processor.stopped_by_event
    assert not seen["window"].isVisible()
    assert signal.getsignal(signum) is before           # the handlers are put back
    assert "KeyboardInterrupt" not in capsys.readouterr().err
