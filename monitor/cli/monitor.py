"""``nanomaps monitor``: the live viewer, attached to a running ``nanomaps process``."""

from __future__ import annotations

import argparse
import os
import sys

from monitor.cli.command_parser import CommandParser
from monitor.exit_codes import EXIT_USAGE
from monitor.session.stop_signals import stop_on_signals


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="nanomaps monitor",
        description="Watch the maps of a running `nanomaps process` fill in: pick a quantity, click a point to "
                    "see its detector frame with the fitted spots, draw a rectangle to rescan a region (with "
                    "--queue-server). Start it before or after the processor; it reconnects by itself.",
        epilog="example: nanomaps monitor --connect tcp://127.0.0.1:5557 --frames tcp://127.0.0.1:5558")
    p.add_argument("--connect", default="tcp://127.0.0.1:5557", metavar="tcp://HOST:PORT",
                   help="map snapshots published by `nanomaps process` (its [monitor] publish)")
    p.add_argument("--frames", metavar="tcp://HOST:PORT",
                   help="frame server of `nanomaps process` (default: the snapshot port + 1)")
    p.add_argument("--config", metavar="C", help="config with [rescan] rules (needed to rescan)")
    p.add_argument("--queue-server", metavar="tcp://HOST:PORT",
                   help="bluesky-queueserver control address: rescans are submitted there")
    p.add_argument("--screenshot", metavar="PNG", help="save a screenshot after --seconds and quit")
    p.add_argument("--seconds", type=float, default=5.0, help="with --screenshot: how long to watch first")
    return p


def default_frames_endpoint(snapshots: str) -> str:
    host, _, port = snapshots.rpartition(":")
    return f"{host}:{int(port) + 1}" if port.isdigit() else snapshots


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # from here a signal only sets the event: raised inside Qt's imports it became an ImportError
    # with a traceback; the window, once built, closes at once
    with stop_on_signals() as stop:
        return _main(args, stop)


def _main(args: argparse.Namespace, stop) -> int:
    if args.screenshot and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    # before PySide6 is imported: a missing library or display is then one line, not Qt's abort (exit 134)
    from monitor.gui.qt_prerequisites import require_qt
    refused = require_qt("monitor", headless_hint="--screenshot PNG")
    if refused is not None:
        return refused

    from processors.config import ConfigError, RescanConfig, load_config
    from stream.zmq_address import check_connect_address

    frames_endpoint = args.frames or default_frames_endpoint(args.connect)
    try:
        check_connect_address(args.connect, what="--connect")
        check_connect_address(frames_endpoint, what="--frames")
        config = load_config(args.config) if args.config else None
        rules = config.rescan if config else RescanConfig(limits={})
    except (ConfigError, ValueError) as exc:  # AddressError is a ValueError
        print(f"nanomaps monitor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    runner = None
    if args.queue_server:
        # checked before the window opens: a wrong address would otherwise surface at the first rescan
        from monitor.bluesky.queue_server_runner import QueueServerError, QueueServerRunner
        try:
            runner = QueueServerRunner(args.queue_server,
                                       zmq_public_key=config.bluesky.queue_server_public_key if config else None)
            runner.check()
        except (QueueServerError, ValueError) as exc:
            print(f"nanomaps monitor: {exc}", file=sys.stderr)
            if runner is not None:
                runner.close()
            return EXIT_USAGE

    from monitor.gui.monitor_app import run_monitor  # Qt only from here on

    return run_monitor(args.connect, frames_endpoint, runner, rules, screenshot=args.screenshot,
                       seconds=args.seconds, stop=stop)
