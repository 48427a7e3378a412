"""``nanomaps process``: live processing of a detector stream into results.h5."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monitor.bluesky.documents import DocumentSubscriber, check_proxy
from monitor.cli.command_parser import CommandParser
from monitor.exit_codes import EXIT_NOTHING_PROCESSED, EXIT_OK, EXIT_USAGE, exit_codes_help
from monitor.session.live_processor import LiveOptions, LiveProcessor, LiveSummary
from monitor.session.stop_signals import stop_on_signals
from processors.config import ConfigError, load_config
from processors.geometry import GeometryError
from stream.output_path import recording_globs, refuse_existing, results_series_globs


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:  # refused here, before the sockets and the shared memory exist
        raise argparse.ArgumentTypeError(f"{value}: must be 1 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="nanomaps process",
        description="Receive EIGER frames over ZeroMQ (stream v1 or stream2, as the detector, `nanomaps replay` or "
                    "`nanomaps simulate` send them), fit every configured spot of every frame on worker processes, "
                    "and keep results.h5 up to date (rewritten at least once per second, valid after Ctrl-C or "
                    "SIGTERM). A status line shows received / processed / skipped / corrupt frames and latency.",
        epilog="example: nanomaps process --config cfg.toml --connect tcp://127.0.0.1:9999 --out results.h5 "
               "--record raw_master.h5\n\n" + exit_codes_help(
                   "Ctrl-C or SIGTERM end the session like the end of the stream: the frames received are "
                   "finished and written, then 0 or 1 as above; 1 also when the receiver or the recording "
                   "failed (the error on stderr and in each results file)"))
    p.add_argument("--config", required=True, metavar="C", help="TOML configuration")
    p.add_argument("--connect", metavar="tcp://HOST:PORT",
                   help="detector stream endpoint (default: [stream] connect in the config)")
    p.add_argument("--out", required=True, metavar="R.h5", help="results file; later runs: R_2.h5, ... (must not exist)")
    p.add_argument("--record", metavar="RAW_master.h5",
                   help="also record every received frame, raw, in the DECTRIS layout (later series: RAW_2_master.h5, ...)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing results (R.h5, R_<n>.h5) and recordings (default: refuse, exit 2)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, metavar="N",
                       help="local worker processes (default: one per core)")
    where.add_argument("--scheduler", metavar="ADDR", help="Dask scheduler address, e.g. tcp://host:8786")
    p.add_argument("--series", type=int, default=1, metavar="N",
                   help="stop after N series (default 1; 0 = until Ctrl-C)")
    p.add_argument("--idle-timeout", type=float, metavar="S",
                   help="stop when nothing arrived for S seconds once data came (e.g. the end message was lost)")
    p.add_argument("--protocol", choices=("auto", "stream1", "stream2"), help="override [stream] protocol")
    p.add_argument("--channel", help="stream2 threshold channel (default: [stream] channel, threshold_1)")
    p.add_argument("--no-status", action="store_true", help="no live status line")
    p.add_argument("--publish", metavar="tcp://HOST:PORT",
                   help="map snapshots for `nanomaps monitor` (default: [monitor] publish; 'none' to disable); "
                        "frames on demand are served on the next port")
    p.add_argument("--bluesky", metavar="tcp://HOST:PORT",
                   help="bluesky 0MQ proxy (msgpack documents): each run's start document sets its map geometry")
    p.add_argument("--gui", action="store_true", help="also open the monitor window")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"nanomaps process: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.overwrite:  # before any socket binds or worker starts
        try:
            refuse_existing(results_series_globs(args.out), "results file")
            if args.record:
                refuse_existing(recording_globs(args.record), "recording")
        except OSError as exc:
            print(f"nanomaps process: {exc}", file=sys.stderr)
            return EXIT_USAGE
    endpoint = args.connect or config.stream.connect
    if not endpoint:
        print("nanomaps process: no stream endpoint. Fix: pass --connect tcp://HOST:PORT or set [stream] connect",
              file=sys.stderr)
        return EXIT_USAGE
    if args.protocol or args.channel:
        from dataclasses import replace
        config = replace(config, stream=replace(config.stream, protocol=args.protocol or config.stream.protocol,
                                                channel=args.channel or config.stream.channel))
    publish = args.publish or config.monitor.publish
    publish = None if publish.lower() == "none" else publish
    frames = None
    if publish:
        from monitor.cli.monitor import default_frames_endpoint
        frames = default_frames_endpoint(publish)
    options = LiveOptions(endpoint=endpoint, out=Path(args.out), record=Path(args.record) if args.record else None,
                          publish=publish, frames=frames, expect_documents=bool(args.bluesky),
                          workers=args.workers or config.executor.workers,
                          scheduler=args.scheduler or config.executor.scheduler, series=max(0, args.series),
                          idle_timeout_s=args.idle_timeout, status=not args.no_status)
    if args.gui and not publish:
        print("nanomaps process: --gui needs map snapshots. Fix: do not pass --publish none", file=sys.stderr)
        return EXIT_USAGE
    if args.gui:
        from monitor.gui.qt_prerequisites import require_qt

        problem = require_qt("process", headless_hint="run without --gui and watch with `nanomaps monitor` "
                                                      "from a machine with a display")
        if problem is not None:
            return problem
    try:
        if args.bluesky:  # checked before anything is opened: a typo must not wait for a series
            check_proxy(args.bluesky)
        processor = LiveProcessor(config, options)
    except (ConfigError, GeometryError, ValueError, OSError) as exc:
        print(f"nanomaps process: {exc}", file=sys.stderr)
        return EXIT_USAGE
    documents = None
    if args.bluesky:
        try:
            documents = DocumentSubscriber(args.bluesky, processor.on_document)
        except ValueError as exc:
            processor.close()
            print(f"nanomaps process: {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        if args.gui:
            from monitor.gui.process_window import run_with_gui  # Qt only when a window is asked for

            summary = run_with_gui(processor, config, publish, frames)
        else:
            with stop_on_signals() as stop:
                summary = processor.run(stop)
    except ConnectionError as exc:  # the Dask scheduler, tried only once run() opens the executor
        print(f"nanomaps process: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        # run() releases everything when it ends, but not when the executor could not be opened:
        # the shared memory and the bound sockets must not outlive the command on any path
        processor.close()
        if documents is not None:
            documents.close()
    c = summary.counters
    p50, p95 = summary.latency_ms
    trouble = "".join(f", {label} {n}" for label, n in (("wrong shape", c.wrong_shape), ("missing", c.missing),
                                                         ("outside scan", c.outside_scan),
                                                         ("hot pixels masked", c.hot_pixels_masked)) if n)
    print(f"{args.out}: {c.processed} of {c.received} frames processed in {summary.seconds:.1f} s "
          f"(stopped by {summary.stopped_by}); skipped {c.dropped}, corrupt {c.corrupt}, late {c.late}{trouble}; "
          f"latency {p50:.0f} ms median, {p95:.0f} ms p95")
    if len(summary.results) > 1:  # one file per run (bluesky run, or series without bluesky)
        print(f"{len(summary.results)} results files: {', '.join(map(str, summary.results))}")
    for path in summary.record_paths:
        print(f"recorded {path}")
    return exit_status(summary)


def exit_status(summary: LiveSummary) -> int:
    """The exit code for a finished session, its reason on stderr: a failure of the receiver or the
    recording is loud (1), like a session where data came but no frame could be processed."""
    c = summary.counters
    if summary.error:
        print(f"nanomaps process: {summary.error}", file=sys.stderr)
        return EXIT_NOTHING_PROCESSED
    if not c.processed and (c.received or c.corrupt or c.late):
        print("nanomaps process: data arrived but no frame could be processed (see the counts above)",
              file=sys.stderr)
        return EXIT_NOTHING_PROCESSED
    return EXIT_OK
