"""``nanomaps process``: live processing of a detector stream into results.h5."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monitor.live_processor import LiveOptions, LiveProcessor
from monitor.stop_signals import stop_on_signals
from processors.config import ConfigError, load_config
from processors.geometry import GeometryError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nanomaps process",
        description="Receive EIGER frames over ZeroMQ (stream v1 or stream2, as the detector, `nanomaps replay` or "
                    "`nanomaps simulate` send them), fit every configured spot of every frame on worker processes, "
                    "and keep results.h5 up to date (rewritten at least once per second, valid after Ctrl-C or "
                    "SIGTERM). A status line shows received / processed / skipped / corrupt frames and latency.",
        epilog="example: nanomaps process --config cfg.toml --connect tcp://127.0.0.1:9999 --out results.h5 "
               "--record raw_master.h5")
    p.add_argument("--config", required=True, metavar="C", help="TOML configuration")
    p.add_argument("--connect", metavar="tcp://HOST:PORT",
                   help="detector stream endpoint (default: [stream] connect in the config)")
    p.add_argument("--out", required=True, metavar="R.h5", help="results file (overwritten)")
    p.add_argument("--record", metavar="RAW_master.h5",
                   help="also record every received frame, raw, in the DECTRIS layout (later series: RAW_2_master.h5, ...)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N", help="local worker processes (default: one per core)")
    where.add_argument("--scheduler", metavar="ADDR", help="Dask scheduler address, e.g. tcp://host:8786")
    p.add_argument("--series", type=int, default=1, metavar="N",
                   help="stop after N series (default 1; 0 = until Ctrl-C)")
    p.add_argument("--idle-timeout", type=float, metavar="S",
                   help="stop when nothing arrived for S seconds once data came (e.g. the end message was lost)")
    p.add_argument("--protocol", choices=("auto", "stream1", "stream2"), help="override [stream] protocol")
    p.add_argument("--channel", help="stream2 threshold channel (default: [stream] channel, threshold_1)")
    p.add_argument("--no-status", action="store_true", help="no live status line")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"nanomaps process: {exc}", file=sys.stderr)
        return 2
    endpoint = args.connect or config.stream.connect
    if not endpoint:
        print("nanomaps process: no stream endpoint. Fix: pass --connect tcp://HOST:PORT or set [stream] connect",
              file=sys.stderr)
        return 2
    if args.protocol or args.channel:
        from dataclasses import replace
        config = replace(config, stream=replace(config.stream, protocol=args.protocol or config.stream.protocol,
                                                channel=args.channel or config.stream.channel))
    options = LiveOptions(endpoint=endpoint, out=Path(args.out), record=Path(args.record) if args.record else None,
                          workers=args.workers or config.executor.workers,
                          scheduler=args.scheduler or config.executor.scheduler, series=max(0, args.series),
                          idle_timeout_s=args.idle_timeout, status=not args.no_status)
    try:
        processor = LiveProcessor(config, options)
    except (ConfigError, GeometryError, ValueError, OSError) as exc:
        print(f"nanomaps process: {exc}", file=sys.stderr)
        return 2
    with stop_on_signals() as stop:
        summary = processor.run(stop)
    c = summary.counters
    p50, p95 = summary.latency_ms
    print(f"{args.out}: {c.processed} of {c.received} frames processed in {summary.seconds:.1f} s "
          f"(stopped by {summary.stopped_by}); skipped {c.dropped}, corrupt {c.corrupt}, late {c.late}; "
          f"latency {p50:.0f} ms median, {p95:.0f} ms p95")
    for path in summary.record_paths:
        print(f"recorded {path}")
    if c.received and not c.processed:
        print("nanomaps process: no frame could be processed", file=sys.stderr)
        return 1
    return 0
