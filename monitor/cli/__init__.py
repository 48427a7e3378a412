"""The ``nanomaps`` command: one entry point, one module per sub-command (``main(argv) -> int``)."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys

from monitor.exit_codes import EXIT_INTERRUPTED, exit_codes_help

#: name -> (module, one-line description); each module has ``main(argv) -> int``.
COMMANDS = {
    "demo": ("monitor.cli.demo", "simulate a scan of the model supercrystal, process it, write results and pictures"),
    "process": ("monitor.cli.process", "live: receive a detector stream, fit every frame, keep results.h5 current"),
    "reprocess": ("monitor.cli.reprocess", "fit recorded DECTRIS files (master + data) offline into results.h5"),
    "replay": ("monitor.cli.replay", "send a recording or DECTRIS file-writer output as a detector stream"),
    "simulate": ("monitor.cli.simulate", "a simulated EIGER over the model supercrystal: DECTRIS files or live"),
    "record": ("monitor.cli.record", "record a detector stream raw, in the DECTRIS layout"),
    "monitor": ("monitor.cli.monitor", "the live viewer: maps, frame inspector, rescans (attach to `process`)"),
    "pattern": ("monitor.cli.pattern", "a recorded scan's summed/mean/max pattern, on the detector and in (q, chi), "
                "with the [[peak]] windows drawn"),
    "report": ("monitor.cli.report", "draw the paper-style figure (maps, Williamson-Hall, a/b vs size) of results.h5"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: nanomaps COMMAND [options]   (nanomaps COMMAND --help for each)",
        "",
        "Live and offline processing of scanning X-ray nanodiffraction: every EIGER frame's Bragg spots are",
        "fitted with 2-D Gaussians in (q, chi), and maps of position, width, orientation, NC size, microstrain",
        "and lattice parameters are written to a NeXus-flavoured results.h5.",
        "",
        "commands:",
        *(f"  {name.ljust(width)}  {text}" for name, (_, text) in COMMANDS.items()),
        "",
        "conventions: q in 1/Å, chi (phi) in degrees as pyFAI defines it, widths FWHM.",
        exit_codes_help(),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv_given = argv  # None: this is the console script's own process
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from monitor.session.results_file import nanomaps_version  # heavy (h5py, numba): only when asked

        print(f"nanomaps {nanomaps_version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"nanomaps: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("distributed", "pyFAI", "numexpr", "bluesky", "bluesky_queueserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("silx").setLevel(logging.ERROR)  # "no pyopencl" is not our users' concern
    try:
        # importing a command takes seconds (numba, pyFAI): Ctrl-C then must not print a traceback
        module = importlib.import_module(COMMANDS[name][0])
        code = int(module.main(rest) or 0)
    except KeyboardInterrupt:
        print(f"nanomaps {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if argv_given is None and name == "demo" and code in (EXIT_INTERRUPTED, 128 + signal.SIGTERM):
        _exit_without_finalization(code)
    return code


def _exit_without_finalization(code: int) -> None:
    """End this process now, after an interrupted demo has closed and written everything.

    A signal can catch a library's daemon thread (bluesky's event loop, Qt's, zmq's) in
    the middle of native code; the interpreter's finalization then crashed now and then
    with SIGSEGV *after* the demo had cleaned up and said "interrupted" (seen under load
    in about one run in ten). Everything of ours is closed and flushed at this point:
    workers joined, shared memory unlinked, results files closed.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
