"""``nanomaps report``: the paper-style figure of a results file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg

from monitor.cli.command_parser import CommandParser
from monitor.exit_codes import EXIT_OK, EXIT_USAGE
from monitor.report.figure import OUTPUT_FORMATS, ReportError, draw_report
from stream.output_path import check_output_file


def _parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="nanomaps report",
        description="Paper-style figure of a results file: maps (intensity, φ0, Δφ_do, size, "
        "microstrain, a, b), the Williamson–Hall plot and a, b vs NC size.",
    )
    p.add_argument("results", metavar="RESULTS", type=Path, help="results.h5 written by `nanomaps process` / `reprocess`")
    p.add_argument("--out", type=Path, default=None,
                   help="output figure, .png, .pdf or .svg (default: RESULTS with the suffix .png, next to it)")
    p.add_argument("--peak", default=None,
                   help='peak whose φ0 and Δφ_do maps are shown (default: "100", else the first peak with hkl)')
    p.add_argument("--dpi", type=float, default=150.0, help="resolution of raster output (default 150)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``nanomaps report RESULTS [--out PATH] [--peak NAME] [--dpi N]``; 0 on success, 2 on a usage/data error."""
    args = _parser().parse_args(argv)
    out: Path = args.out if args.out is not None else args.results.with_suffix(".png")
    fmt = out.suffix.lower().lstrip(".")
    try:
        if fmt not in OUTPUT_FORMATS:
            raise ReportError(f"--out {str(out)!r}: unsupported figure format {out.suffix!r}; use a .png, .pdf or .svg name")
        if not args.dpi > 0:
            raise ReportError(f"--dpi {args.dpi:g}: must be positive, e.g. --dpi 150")
        if not out.parent.is_dir():
            raise ReportError(f"--out {str(out)!r}: directory {str(out.parent)!r} does not exist; create it or choose another path")
        try:
            check_output_file(out, what="figure")  # before the drawing, not after it
        except OSError as exc:
            raise ReportError(str(exc)) from None
        fig = draw_report(args.results, peak=args.peak)
        try:
            FigureCanvasAgg(fig).print_figure(str(out), dpi=args.dpi, format=fmt)
        except OSError as exc:
            raise ReportError(f"cannot write {str(out)!r} ({exc.strerror or exc}); choose a writable --out path") from exc
    except ReportError as exc:
        print(f"nanomaps report: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(out)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
