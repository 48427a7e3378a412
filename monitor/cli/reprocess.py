"""``nanomaps reprocess``: recorded DECTRIS files → fitted maps → results.h5, offline."""

from __future__ import annotations

import argparse
import signal
import sys

from monitor.cli.command_parser import CommandParser
from monitor.exit_codes import EXIT_INTERRUPTED, EXIT_NOTHING_PROCESSED, EXIT_OK, EXIT_USAGE, exit_codes_help
from monitor.session.reprocess import reprocess
from monitor.session.stop_signals import stop_on_signals
from processors.config import ConfigError, load_config
from processors.geometry import GeometryError
from stream.output_path import refuse_existing


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="nanomaps reprocess",
        description="Fit every configured Bragg spot of every frame of recorded DECTRIS files (master + data "
                    "files, as the DECTRIS file writer or `nanomaps record` writes them) and write the maps to a "
                    "results file. Several master files are taken as consecutive parts of one scan.",
        epilog="example: nanomaps reprocess scan_master.h5 --config cfg.toml --out results.h5 --workers 2\n\n"
               "Ctrl-C or SIGTERM stops it early: the frames in flight are finished (or given up after a few "
               "seconds), the workers stop, and the maps of every frame processed so far are written to --out.\n\n"
               + exit_codes_help("130 when stopped by Ctrl-C, 143 by SIGTERM (the results file then holds the "
                                 "frames processed so far, and is valid)"))
    p.add_argument("masters", nargs="+", metavar="MASTER.h5", help="DECTRIS master file(s), in scan order")
    p.add_argument("--config", required=True, metavar="C", help="TOML configuration (peaks, scan, geometry)")
    p.add_argument("--out", required=True, metavar="R.h5", help="results file to write (must not exist)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (default: refuse, exit 2)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N", help="local worker processes (default: one per core)")
    where.add_argument("--scheduler", metavar="ADDR", help="Dask scheduler address, e.g. tcp://host:8786")
    p.add_argument("--batch-size", type=int, metavar="N", help="frames per task (default: [executor] batch_size)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers is not None and args.workers < 1:
        print("nanomaps reprocess: --workers must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        if not args.overwrite:  # before anything is read or any worker starts
            refuse_existing([args.out], "results file")
        config = load_config(args.config)
        with stop_on_signals() as stop:
            summary = reprocess(args.masters, config, args.out, workers=args.workers, scheduler=args.scheduler,
                                batch_size=args.batch_size, progress=not args.no_progress, stop=stop)
    except (ConfigError, GeometryError, ConnectionError, OSError, ValueError) as exc:
        # OSError: DectrisFileError, OutputPathError, ArenaSpaceError; ValueError: addresses
        print(f"nanomaps reprocess: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("nanomaps reprocess: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    c = summary.counters
    if summary.interrupted:
        print(f"nanomaps reprocess: interrupted after {c.processed} of {summary.frames_to_process} frames; "
              f"the maps of those are in {summary.out}", file=sys.stderr)
        return EXIT_INTERRUPTED if stop.signum in (None, signal.SIGINT) else 128 + stop.signum
    rate = c.received / summary.seconds if summary.seconds > 0 else 0.0
    print(f"{summary.out}: {c.processed} of {c.received} frames processed ({rate:.0f} frames/s on "
          f"{summary.workers}); fits ok {c.fits_ok}, rejected {c.fits_rejected}; corrupt {c.corrupt}, "
          f"missing {c.missing}, wrong shape {c.wrong_shape}, worker failures {c.worker_failures}"
          + (f", hot pixels masked {c.hot_pixels_masked}" if c.hot_pixels_masked else ""))
    if c.processed == 0:
        print("nanomaps reprocess: no frame could be processed (see the counts above)", file=sys.stderr)
        return EXIT_NOTHING_PROCESSED
    return EXIT_OK
