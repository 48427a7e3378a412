"""``nanomaps record``: raw recording of a detector stream in the DECTRIS layout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monitor.cli.command_parser import CommandParser
from monitor.exit_codes import EXIT_NOTHING_PROCESSED, EXIT_OK, EXIT_USAGE, exit_codes_help
from monitor.session.recording import record_stream
from monitor.session.stop_signals import stop_on_signals
from stream.output_path import check_output_file, recording_globs, refuse_existing
from stream.stream_receiver import StreamReceiver


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="nanomaps record",
        description="Record a detector stream (stream v1 or stream2) exactly as received: DECTRIS master + data "
                    "files written with direct chunk writes (no recompression), the stream's header parts verbatim "
                    "and a per-frame table of detector and receive times. Ends on the series' end message, Ctrl-C "
                    "or SIGTERM, always leaving files that open in h5py + hdf5plugin.",
        epilog="example: nanomaps record --connect tcp://127.0.0.1:9999 --out raw_master.h5\n\n"
               + exit_codes_help("Ctrl-C or SIGTERM close the files (valid) and exit 0 or 1 as above; 1 also when "
                                 "writing fails, e.g. a full disk"))
    p.add_argument("--connect", required=True, metavar="tcp://HOST:PORT", help="detector stream endpoint")
    p.add_argument("--out", required=True, metavar="MASTER.h5", help="master file (later series: NAME_2_master.h5 ...); must not exist")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing recording of that name (default: refuse, exit 2)")
    p.add_argument("--series", type=int, default=1, metavar="N", help="stop after N series (0 = until Ctrl-C)")
    p.add_argument("--protocol", choices=("auto", "stream1", "stream2"), default="auto")
    p.add_argument("--channel", default="threshold_1", help="stream2 threshold channel")
    p.add_argument("--socket", choices=("pull", "sub"), default="pull")
    p.add_argument("--frames-per-file", type=int, default=1000, metavar="N")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_output_file(args.out, what="recording")
        if not args.overwrite:  # before the socket connects
            refuse_existing(recording_globs(args.out), "recording")
        receiver = StreamReceiver(args.connect, socket_type=args.socket, protocol=args.protocol,
                                  channel=args.channel)
    except (ValueError, OSError) as exc:
        print(f"nanomaps record: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with stop_on_signals() as stop:
            recorder = record_stream(receiver, Path(args.out), frames_per_file=args.frames_per_file,
                                     series=args.series, stop=stop)
    except OSError as exc:  # e.g. the disk is full: loud, one line, not a traceback
        print(f"nanomaps record: recording failed: {exc}", file=sys.stderr)
        return EXIT_NOTHING_PROCESSED
    c = receiver.counters
    for path in recorder.paths:
        print(f"{path}: recorded")
    print(f"{recorder.frames_recorded} frames recorded; corrupt {c.corrupt}, late {c.late}")
    if c.images and not recorder.frames_recorded or not c.images and (c.corrupt or c.late):
        print("nanomaps record: data arrived but not one frame could be recorded", file=sys.stderr)
        return EXIT_NOTHING_PROCESSED
    return EXIT_OK
