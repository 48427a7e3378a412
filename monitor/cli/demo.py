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
import os
import signal
import sys
from pathlib import Path

from monitor.cli.command_parser import CommandParser
from monitor.exit_codes import EXIT_INTERRUPTED, EXIT_NOTHING_PROCESSED, EXIT_OK, EXIT_USAGE, exit_codes_help
from monitor.sim.demo_control import DemoError, DemoInterrupted, DemoStop


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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stop = DemoStop()
    try:
        with stop.installed():
            code = _run(args, stop)
    except DemoInterrupted:
        code = None
    except DemoError as exc:
        print(f"nanomaps demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if stop.signum is not None:
        print("nanomaps demo: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED if stop.signum == signal.SIGINT else 128 + stop.signum
    return code


def _run(args: argparse.Namespace, stop: DemoStop) -> int:
    from monitor.cli import report as report_cli
    from monitor.gui.demo_window import run_demo  # Qt is imported only now
    from monitor.sim.demo_session import truth_errors

    platform = os.environ.get("QT_QPA_PLATFORM", "")
    headless = (args.headless or platform in ("offscreen", "minimal")
                or not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")))
    out = Path(args.out)
    outcome = run_demo(out, headless=headless, overwrite=args.overwrite,
                       shape=tuple(args.shape) if args.shape else None, workers=args.workers,
                       protocol=args.protocol, stop=stop)
    summary, uids, session = outcome.summary, outcome.uids, outcome.session
    stop.check()
    results = [p for p in summary.results if p.exists()] if summary is not None else []
    for k, path in enumerate(results):
        figure = out / ("maps.png" if k == 0 else f"maps_{k + 1}.png")
        report_cli.main([str(path), "--out", str(figure)])
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


if __name__ == "__main__":
    sys.exit(main())
