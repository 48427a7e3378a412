"""``nanomaps demo``: the whole system on one machine, no hardware.

A bluesky RunEngine drives simulated motors through a grid scan over the model
supercrystal; a simulated EIGER streams each frame over loopback ZeroMQ in the real
wire format; the live processor fits it and the monitor window shows the maps fill in.
With a display you watch, click points and draw rectangles to rescan. Headless
(``--headless``, or no display) it runs the scan and one automatic rescan of an
interesting region, then writes ``results.h5`` (one per run: ``results_2.h5`` for the
rescan), ``maps.png`` (``maps_2.png``), screenshots of the monitor rendered offscreen,
and how well the maps recover the known truth.

The output folder is the demo's own: one that holds files an earlier demo did not
write is refused unless ``--overwrite``. Ctrl-C (exit 130) or SIGTERM (143) at any
moment aborts the scan, lets processing write what it has, stops the worker processes
and frees the shared memory, then prints one line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from monitor.cli.command_parser import CommandParser
from monitor.exit_codes import EXIT_INTERRUPTED, EXIT_NOTHING_PROCESSED, EXIT_OK, EXIT_USAGE, exit_codes_help

#: written into an output folder the demo made: a later demo may write there again
MARKER = ".nanomaps-demo"


class DemoError(Exception):
    """A user's or the environment's problem: one line on stderr, exit status 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be 1 or more")
    return value


def _scan_size(text: str) -> int:
    value = _positive_int(text)
    if value < 4:  # the automatic rescan needs room for a region inside the map
        raise argparse.ArgumentTypeError(f"{value}: the demo scans at least 4 points along each axis")
    return value


def _parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="nanomaps demo",
        description="Run nanomaps end to end on an embedded default: bluesky + simulated motors + simulated EIGER "
                    "(stream v1 over loopback ZeroMQ) + live processing + the monitor window. Headless it scans, "
                    "rescans one region by itself and writes results, figures and screenshots.",
        epilog=exit_codes_help("130 when stopped by Ctrl-C, 143 by SIGTERM (the results written so far stay "
                               "valid)"))
    p.add_argument("--out", default="demo_out",
                   help="output folder (default: demo_out); a folder holding other files is refused "
                        "unless --overwrite is given")
    p.add_argument("--overwrite", action="store_true",
                   help="write into --out even when it holds files that an earlier demo did not write")
    p.add_argument("--headless", action="store_true", help="no window on screen: run, rescan, write files, quit")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="worker processes (default: one per core)")
    p.add_argument("--shape", type=_scan_size, nargs=2, metavar=("ROWS", "COLS"),
                   help="override the scan shape (at least 4 × 4)")
    p.add_argument("--protocol", choices=("stream1", "stream2"), default="stream1", help="detector wire format")
    return p


class _Interrupted(BaseException):
    """SIGINT or SIGTERM in the main thread; a BaseException, so no ``except Exception`` swallows it."""


class _StopSignals:
    """SIGINT and SIGTERM end the demo; the first one counts, later ones are ignored.

    The first signal raises :class:`_Interrupted` in the main thread, except inside
    :meth:`deferred`, where it is only noted and :meth:`check` raises it: Qt calls
    Python code from its event loop, and an exception there would be printed as a
    traceback instead of ending the demo. Later signals are ignored so that the cleanup
    they would cut short runs to its end (each of its steps has a timeout).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._raising = True

    def _handle(self, signum: int, _frame) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        if self._raising:
            raise _Interrupted(signum)

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():  # only the main thread may install them
            yield self
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def deferred(self):
        before, self._raising = self._raising, False
        try:
            yield
        finally:
            self._raising = before

    def check(self) -> None:
        if self.signum is not None:
            raise _Interrupted(self.signum)


def truth_errors(session, uid: str) -> dict[str, float]:
    """Median absolute errors of a run's maps against the simulated sample (widths, size relative)."""
    run = session.processor.runs[uid]
    config = session.config
    maps = run.collector.result_maps(config.peaks, config.derived, config.williamson_hall_peaks)
    sample = session.eiger.source.sample
    scan = run.collector.scan
    ys, xs = scan.axis_positions()
    index = np.array([[sample.point_at(y, x) for x in xs] for y in ys])  # (rows, cols, 2)
    ok = index[..., 0] >= 0
    out = {}
    for peak in config.peaks:
        true = sample.truth.spot(peak.hkl)
        for key in ("q0", "dq", "phi0"):
            t = np.full(scan.shape, np.nan)
            t[ok] = true[key][index[ok, 0], index[ok, 1]]
            err = maps.spots[peak.name][key] - t
            if key == "phi0":
                err = np.mod(err + 180, 360) - 180
            if key == "dq":
                err = err / t
            out[f"{peak.name}/{key}"] = float(np.nanmedian(np.abs(err)))
    t = np.full(scan.shape, np.nan)
    t[ok] = sample.truth.size_nm[index[ok, 0], index[ok, 1]]
    out["size"] = float(np.nanmedian(np.abs(maps.derived["size"] / t - 1)))
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stop = _StopSignals()
    try:
        with stop.installed():
            code = _run(args, stop)
    except _Interrupted:
        code = None
    except DemoError as exc:
        print(f"nanomaps demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if stop.signum is not None:
        print("nanomaps demo: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED if stop.signum == signal.SIGINT else 128 + stop.signum
    return code


def _run(args: argparse.Namespace, stop: _StopSignals) -> int:
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    headless = (args.headless or platform in ("offscreen", "minimal")
                or not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")))
    out = Path(args.out)
    if headless:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    # Qt aborts the process (or PySide6 fails to import) where a library or the display is missing
    from monitor.gui.qt_prerequisites import qt_problem

    problem = qt_problem(headless_hint="--headless")
    if problem is not None:
        raise DemoError(problem)
    prepare_output_folder(out, overwrite=args.overwrite)
    from PySide6 import QtCore, QtWidgets

    from monitor.bluesky.plan_runner import GridScanRequest, check_rescan
    from monitor.gui.monitor_window import MonitorWindow
    from monitor.links.frame_link import FrameClient
    from monitor.links.snapshot_link import SnapshotSubscriber
    from monitor.report import figure as report
    from monitor.sim.demo_session import DemoSession, interesting_region

    _quiet_qt()
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    print(f"starting: simulated EIGER, bluesky RunEngine, live processor on loopback (results in {out})", flush=True)
    session = None
    summary = None
    try:
        # a signal here raises at once: DemoSession closes what it had started
        session = DemoSession(out, shape=tuple(args.shape) if args.shape else None, workers=args.workers,
                              protocol=args.protocol)
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
    results = [p for p in summary.results if p.exists()] if summary is not None else []
    for k, path in enumerate(results):
        figure = out / ("maps.png" if k == 0 else f"maps_{k + 1}.png")
        report.main([str(path), "--out", str(figure)])
    if headless:
        print("recovered vs truth, main scan (median absolute error; widths and size relative):")
        for key, value in truth_errors(session, uids[0]).items():
            unit = {"q0": " 1/Å", "phi0": "°"}.get(key.split("/")[-1], "")
            print(f"    {key:10s} " + (f"{100 * value:.2f} %" if not unit else f"{value:.4f}{unit}"))
    c = summary.counters if summary else None
    if c is not None:
        print(f"{c.processed} of {c.received} frames processed; skipped {c.dropped}, corrupt {c.corrupt}; "
              f"results: {', '.join(str(p) for p in results)}")
    return EXIT_OK if c is not None and c.processed > 0 else EXIT_NOTHING_PROCESSED


def prepare_output_folder(out: Path, *, overwrite: bool = False) -> None:
    """Make ``out`` and mark it as the demo's; raises :class:`DemoError` (one line) when it must not or cannot be.

    The demo writes ``results.h5``, ``raw/``, figures and more into ``out``. A folder
    that holds files no earlier demo wrote (no :data:`MARKER`) may be someone's data:
    it is refused unless ``overwrite``. A folder of an earlier demo is written again.
    """
    try:
        if out.exists() and not out.is_dir():
            raise DemoError(f"--out {out}: is a file, not a folder. Fix: give a folder name (it is created)")
        if out.is_dir() and not overwrite and not (out / MARKER).exists():
            present = sorted(p.name for p in out.iterdir())
            if present:
                raise DemoError(f"--out {out}: the folder already holds files ({', '.join(present[:3])}"
                                f"{', ...' if len(present) > 3 else ''}) that the demo would overwrite. "
                                "Fix: choose a new or empty folder, or pass --overwrite")
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("written by `nanomaps demo`: a later demo may write into this folder again\n")
    except OSError as exc:
        raise DemoError(f"--out {out}: cannot write there ({exc.strerror or exc}). "
                        "Fix: choose a folder you can write to") from None


@contextlib.contextmanager
def _quiet_stdout(quiet: bool):
    if not quiet:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _headless(session, app, window, out: Path, GridScanRequest, check_rescan, interesting_region,
              stop: _StopSignals):
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


def _settle(app, seconds: float, stop: _StopSignals) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        stop.check()
        app.processEvents()
        time.sleep(0.02)


if __name__ == "__main__":
    sys.exit(main())
