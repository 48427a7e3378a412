"""The demo's window: the monitor over a live demo session, on screen or offscreen.

On screen the user scans, clicks and rescans until the window is closed; offscreen
(headless) it runs the main scan and one automatic rescan of the most interesting
region by itself and saves screenshots of the monitor.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.sim.demo_control import DemoError, DemoStop, prepare_output_folder


@dataclass
class DemoOutcome:
    """What the demo command reports: ``summary`` (LiveSummary, None if it never ran), run uids, the session."""

    summary: object
    uids: list[str]
    session: object


def run_demo(out: Path, *, headless: bool, overwrite: bool, shape: tuple[int, int] | None, workers: int | None,
             protocol: str, stop: DemoStop) -> DemoOutcome:
    """Run the demo session with its window (on screen, or offscreen when ``headless``).

    Raises :class:`DemoError` (one line for the user) before anything starts when the
    display, Qt's libraries or the output folder do not allow it, and
    :class:`DemoInterrupted` when ``stop`` saw a signal. Returns what the command
    reports: the processing summary, the run uids and the session (its runs' maps).
    """
    if headless:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    # Qt aborts the process (or PySide6 fails to import) where a library or the display is missing
    from monitor.gui.qt_prerequisites import qt_problem

    problem = qt_problem(headless_hint="--headless")
    if problem is not None:
        raise DemoError(problem)
    prepare_output_folder(out, overwrite=overwrite)
    from PySide6 import QtCore, QtWidgets

    from monitor.bluesky.plan_runner import GridScanRequest, check_rescan
    from monitor.gui.monitor_window import MonitorWindow
    from monitor.links.frame_link import FrameClient
    from monitor.links.snapshot_link import SnapshotSubscriber
    from monitor.sim.demo_session import DemoSession, interesting_region

    _quiet_qt()
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    print(f"starting: simulated EIGER, bluesky RunEngine, live processor on loopback (results in {out})", flush=True)
    session = None
    summary = None
    uids: list[str] = []
    try:
        # a signal here raises at once: DemoSession closes what it had started
        session = DemoSession(out, shape=shape, workers=workers, protocol=protocol)
        with stop.deferred():
            stop.check()
            feed = SnapshotSubscriber(session.snapshots_endpoint)
            frames = FrameClient(session.frames_endpoint)
            window = MonitorWindow(feed, frames, session.runner, session.config.rescan)
            window.show()
            try:
                if not headless:
                    session.runner.submit(session.main_scan())
                    print("scanning; click a point to see its frame, draw a rectangle ('Select region') to rescan. "
                          "Close the window to finish.", flush=True)
                    # Python runs signal handlers only between its own bytecodes: wake it now and then
                    timer = QtCore.QTimer()
                    timer.timeout.connect(lambda: app.quit() if stop.signum is not None else None)
                    timer.start(100)
                    app.exec()
                    timer.stop()
                    stop.check()
                    summary = session.finish()
                else:
                    summary, uids = _headless(session, app, window, out, GridScanRequest, check_rescan,
                                              interesting_region, stop)
            finally:
                window.close()
                feed.close()
                frames.close()
    finally:
        if session is not None:
            with stop.deferred(), _quiet_stdout(stop.signum is not None):  # bluesky prints "Aborting: ..."
                session.close()
    stop.check()
    return DemoOutcome(summary, uids, session)


@contextlib.contextmanager
def _quiet_stdout(quiet: bool):
    if not quiet:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _headless(session, app, window, out: Path, GridScanRequest, check_rescan, interesting_region,
              stop: DemoStop):
    """Main scan, then an automatic finer rescan of the most interesting region; screenshots."""
    done = threading.Event()
    state: dict = {}

    def scans():
        try:
            main = session.main_scan()
            print(f"1/3 grid scan {main.slow_num} × {main.fast_num} points", flush=True)
            state["uid1"] = uid1 = session.run_scan(main)
            session.processor.runs[uid1].dirty_file = True
            time.sleep(1.5)  # the results file is rewritten every second
            y0, y1, x0, x1 = interesting_region(session.processor.runs[uid1].out, session.config)
            dy, dx = main.step
            ny, nx = int(round((y1 - y0) / (dy / 2))) + 1, int(round((x1 - x0) / (dx / 2))) + 1
            rescan = GridScanRequest(main.slow_motor, y0, y1, ny, main.fast_motor, x0, x1, nx, snake=main.snake,
                                     parent_uid=uid1, md={"purpose": "automatic demo rescan"})
            check_rescan(rescan, session.config.rescan)
            print(f"2/3 rescan of y {y0:.2f}–{y1:.2f} µm, x {x0:.2f}–{x1:.2f} µm at half the step "
                  f"({ny} × {nx} points)", flush=True)
            state["uid2"] = session.run_scan(rescan)
        except BaseException as exc:  # reported in the main thread
            state["error"] = exc
        finally:
            done.set()

    stop.check()  # not one frame more once stopped
    worker = threading.Thread(target=scans, name="nanomaps-demo-scans", daemon=True)
    worker.start()
    while not done.is_set():
        stop.check()
        app.processEvents()
        time.sleep(0.02)
    stop.check()
    if "error" in state:
        raise state["error"]
    uids = [state["uid1"], state["uid2"]]
    print("3/3 screenshots of the monitor", flush=True)
    _settle(app, 1.0, stop)
    for k, uid in enumerate(uids):
        window.map_view.select_run(uid)
        window.map_view.select_quantity("derived/size") if "derived/size" in window.map_view.quantities else None
        run = session.processor.runs[uid]
        size = run.collector.result_maps(session.config.peaks, session.config.derived,
                                         session.config.williamson_hall_peaks).derived.get("size")
        if size is not None and np.isfinite(size).any():
            r, c = np.unravel_index(np.nanargmax(size), size.shape)
            window.map_view.click_point(int(r), int(c))
            deadline = time.monotonic() + 20
            while window.inspector.view is None or window.inspector.view.run != uid:
                stop.check()
                app.processEvents()
                time.sleep(0.02)
                if time.monotonic() > deadline:
                    break
        _settle(app, 0.5, stop)
        window.save_screenshot(out / ("monitor.png" if k == 0 else f"monitor_{k + 1}.png"))
    summary = session.finish()
    return summary, uids


def _quiet_qt() -> None:
    """Drop the offscreen platform's harmless "propagateSizeHints" chatter; keep every other message."""
    from PySide6 import QtCore

    def handler(_mode, _context, message):
        if "propagateSizeHints" not in message:
            sys.stderr.write(message + "\n")

    QtCore.qInstallMessageHandler(handler)


def _settle(app, seconds: float, stop: DemoStop) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        stop.check()
        app.processEvents()
        time.sleep(0.02)
