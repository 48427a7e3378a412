"""``nanomaps demo``: the whole system on one machine, no hardware.

A bluesky RunEngine drives simulated motors through a grid scan over the model
supercrystal; a simulated EIGER streams each frame over loopback ZeroMQ in the real
wire format; the live processor fits it and the monitor window shows the maps fill in.
With a display you watch, click points and draw rectangles to rescan. Headless
(``--headless``, or no display) it runs the scan and one automatic rescan of an
interesting region, then writes ``results.h5`` (one per run: ``results_2.h5`` for the
rescan), ``maps.png`` (``maps_2.png``), screenshots of the monitor rendered offscreen,
and how well the maps recover the known truth.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nanomaps demo",
        description="Run nanomaps end to end on an embedded default: bluesky + simulated motors + simulated EIGER "
                    "(stream v1 over loopback ZeroMQ) + live processing + the monitor window. Headless it scans, "
                    "rescans one region by itself and writes results, figures and screenshots.")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--headless", action="store_true", help="no window on screen: run, rescan, write files, quit")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    p.add_argument("--shape", type=int, nargs=2, metavar=("ROWS", "COLS"), help="override the scan shape")
    p.add_argument("--protocol", choices=("stream1", "stream2"), default="stream1", help="detector wire format")
    return p


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
    headless = args.headless or not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if headless:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtWidgets

    from monitor import report
    from monitor.demo_session import DemoSession, interesting_region
    from monitor.frame_link import FrameClient
    from monitor.monitor_window import MonitorWindow
    from monitor.plan_runner import GridScanRequest, check_rescan
    from monitor.snapshot_link import SnapshotSubscriber

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _quiet_qt()
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    print(f"starting: simulated EIGER, bluesky RunEngine, live processor on loopback (results in {out})", flush=True)
    with DemoSession(out, shape=tuple(args.shape) if args.shape else None, workers=args.workers,
                     protocol=args.protocol) as session:
        feed = SnapshotSubscriber(session.snapshots_endpoint)
        frames = FrameClient(session.frames_endpoint)
        window = MonitorWindow(feed, frames, session.runner, session.config.rescan)
        window.show()
        try:
            if not headless:
                session.runner.submit(session.main_scan())
                print("scanning; click a point to see its frame, draw a rectangle ('Select region') to rescan. "
                      "Close the window to finish.", flush=True)
                app.exec()
                summary = session.finish()
            else:
                summary, uids = _headless(session, app, window, out, GridScanRequest, check_rescan,
                                          interesting_region)
        finally:
            window.close()
            feed.close()
            frames.close()
        results = sorted(out.glob("results*.h5"))
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
    return 0 if c is not None and c.processed > 0 else 1


def _headless(session, app, window, out: Path, GridScanRequest, check_rescan, interesting_region):
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

    worker = threading.Thread(target=scans, name="nanomaps-demo-scans", daemon=True)
    worker.start()
    while not done.is_set():
        app.processEvents()
        time.sleep(0.02)
    if "error" in state:
        raise state["error"]
    uids = [state["uid1"], state["uid2"]]
    print("3/3 screenshots of the monitor", flush=True)
    _settle(app, 1.0)
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
                app.processEvents()
                time.sleep(0.02)
                if time.monotonic() > deadline:
                    break
        _settle(app, 0.5)
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


def _settle(app, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


if __name__ == "__main__":
    sys.exit(main())
