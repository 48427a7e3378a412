"""``nanomaps replay``: a recording (or DECTRIS file-writer output) played back as a detector."""

from __future__ import annotations

import argparse
import sys

from monitor.cli.command_parser import CommandParser
from monitor.exit_codes import EXIT_INTERRUPTED, EXIT_NOTHING_PROCESSED, EXIT_OK, EXIT_USAGE, exit_codes_help
from monitor.session.progress import progress_bar
from stream.dectris_file import DectrisFile, DectrisFileError
from stream.dectris_replay import parse_rate, replay_file
from stream.heap_freeze import freeze_long_lived
from stream.stream_sender import BindAddressError, StreamSender


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="nanomaps replay",
        description="Send a DECTRIS-layout recording (nanomaps record, or the DECTRIS file writer) as a detector "
                    "stream: headers built from the master file (pixel mask with --header-detail all), chunks sent "
                    "exactly as stored. Waits for a receiver to connect; prints the rate achieved.",
        epilog="example: nanomaps replay raw_master.h5 --bind tcp://127.0.0.1:9999 --rate max --protocol stream2"
               "\n\n" + exit_codes_help().replace("data came but not one frame could be processed",
                                                 "not one frame could be read and sent"))
    p.add_argument("master", metavar="MASTER.h5")
    p.add_argument("--bind", default="tcp://127.0.0.1:9999", metavar="tcp://HOST:PORT",
                   help="where to listen (default tcp://127.0.0.1:9999; loopback unless --allow-remote)")
    p.add_argument("--protocol", choices=("stream1", "stream2"), default="stream1")
    p.add_argument("--rate", default="original", metavar="original|max|HZ",
                   help="recorded pace (default), as fast as the receiver takes, or frames per second")
    p.add_argument("--header-detail", choices=("all", "basic", "none"), default="all",
                   help="stream v1 header detail (all sends the pixel mask); stream2 sends the mask unless none")
    p.add_argument("--series", type=int, metavar="N", help="series number to announce (default: as recorded, or 1)")
    p.add_argument("--channel", default="threshold_1", help="stream2 threshold channel name")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="send the frames N times as one longer series (soak tests, benchmarks)")
    p.add_argument("--no-map", action="store_true",
                   help="read each chunk instead of sending it from the data files mapped into memory (mapped "
                        "costs less CPU, but a data file cut short while it is replayed ends the replay with SIGBUS)")
    p.add_argument("--allow-remote", action="store_true", help="allow binding to a non-loopback interface")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rate = parse_rate(args.rate)
        with DectrisFile(args.master) as f:
            f.check_readable()  # a master without its data would "send" nothing and claim success
            total = f.frame_count * max(1, args.repeat)
            unreadable = f.unreadable_parts
        sender = StreamSender(args.bind, allow_remote=args.allow_remote)
    except (ValueError, BindAddressError, DectrisFileError) as exc:
        print(f"nanomaps replay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"replaying {total} frames of {args.master} on {sender.endpoint} ({args.protocol}, rate {args.rate}); "
          "waiting for a receiver", flush=True)
    freeze_long_lived()  # h5py, zmq and numpy's objects need no GC walks while frames go out
    try:
        with progress_bar(total, "replay") as bar:
            stats = replay_file(args.master, sender, protocol=args.protocol, rate=rate,
                                header_detail=args.header_detail, series=args.series, channel=args.channel,
                                progress=bar.update, repeat=max(1, args.repeat), mapped=not args.no_map)
    except KeyboardInterrupt:
        print("nanomaps replay: interrupted", file=sys.stderr)
        sender.close(linger_s=0)
        return EXIT_INTERRUPTED
    sender.close()
    if unreadable:
        print(f"nanomaps replay: {len(unreadable)} data file(s) could not be read "
              f"({', '.join(p.filename for p in unreadable[:3])}): their frames were not sent", file=sys.stderr)
    print(f"sent {stats.frames} frames ({stats.skipped} unreadable skipped) in {stats.seconds:.2f} s: "
          f"{stats.rate_hz:.1f} frames/s, {stats.bytes / max(stats.seconds, 1e-9) / 1e6:.1f} MB/s")
    return EXIT_OK if stats.frames else EXIT_NOTHING_PROCESSED
