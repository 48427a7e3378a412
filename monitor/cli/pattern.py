"""``nanomaps pattern``: a recorded scan's summed / mean / max pattern with the configured windows drawn."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg

from monitor.cli.command_parser import CommandParser
from monitor.exit_codes import EXIT_NOTHING_PROCESSED, EXIT_OK, EXIT_USAGE, exit_codes_help
from monitor.report.pattern_arrays import save_pattern_h5, save_pattern_npy
from monitor.report.pattern_figure import draw_pattern, pattern_figure_data
from monitor.session.scan_pattern import parse_frame_range, read_scan_pattern
from processors.config import ConfigError, load_config
from processors.detector_pattern import PATTERN_STATS
from processors.geometry import GeometryError
from stream.output_path import check_output_file, refuse_existing

FIGURE_FORMATS = ("png", "pdf", "svg")


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="nanomaps pattern",
        description="Read every frame of a recorded scan (DECTRIS master + data files) and draw its pattern: "
                    "the sum (or mean, or maximum) of each pixel over the frames, on the detector (log scale) and "
                    "as a (q, chi) histogram (q in 1/Å, chi in degrees as pyFAI defines it), with every [[peak]] "
                    "window of the config drawn: its outline on the detector, its rectangle in (q, chi). Use it "
                    "to place the windows on new data. Masked pixels (PONI detector, the file's pixel_mask, the "
                    "config's mask) and pixels at the dtype's maximum (gaps, saturated) are left out.",
        epilog="example: nanomaps pattern scan_master.h5 --config cfg.toml --out pattern.png --stat max\n\n"
               "--stat max shows spots that appear at only a few scan points (a sum drowns them in the "
               "background of all the others).\n\n" + exit_codes_help())
    p.add_argument("master", metavar="MASTER.h5", help="DECTRIS master file of the scan")
    p.add_argument("--config", required=True, metavar="C", help="TOML configuration (geometry, mask, [[peak]] windows)")
    p.add_argument("--out", required=True, type=Path, metavar="PNG", help="figure to write (.png, .pdf or .svg)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: refuse, exit 2)")
    p.add_argument("--frames", metavar="A:B", default=":", help="only frames A to B-1 (e.g. 0:500, :100, 300:)")
    p.add_argument("--stat", choices=PATTERN_STATS, default="sum",
                   help="per pixel: sum of counts, mean per frame, or max over frames (default: sum)")
    p.add_argument("--npy", type=Path, metavar="PATH", help="also save the shown image (float64, NaN = masked) as .npy")
    p.add_argument("--h5", type=Path, metavar="PATH",
                   help="also save sum, count, max, mask, the image and the (q, chi) histogram as HDF5")
    p.add_argument("--q-bins", type=int, default=500, metavar="N", help="q bins of the (q, chi) panel (default 500)")
    p.add_argument("--chi-bins", type=int, default=360, metavar="N", help="chi bins over 360° (default 360)")
    p.add_argument("--dpi", type=float, default=120.0, help="resolution of a PNG (default 120)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _check_arguments(args: argparse.Namespace) -> tuple[int, int | None]:
    """The frame range, once every argument and output path is usable (ValueError / OSError otherwise)."""
    fmt = args.out.suffix.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise ValueError(f"--out {str(args.out)!r}: unsupported figure format {args.out.suffix!r}; "
                         "use a .png, .pdf or .svg name")
    if args.q_bins < 1 or args.chi_bins < 1:
        raise ValueError("--q-bins and --chi-bins must be at least 1")
    if not args.dpi > 0:
        raise ValueError(f"--dpi {args.dpi:g}: must be positive, e.g. --dpi 120")
    outputs = [(args.out, "figure"), (args.npy, "--npy file"), (args.h5, "--h5 file")]
    outputs = [(path, what) for path, what in outputs if path is not None]
    names = [path.resolve() for path, _ in outputs]
    if len(set(names)) < len(names):
        raise ValueError("--out, --npy and --h5 must name different files")
    for path, what in outputs:
        if not args.overwrite:
            refuse_existing([path], what)
        check_output_file(path, what=what)
    return parse_frame_range(args.frames)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        start, stop = _check_arguments(args)  # before the (long) read
        config = load_config(args.config)
        scan = read_scan_pattern(args.master, config, start=start, stop=stop, progress=not args.no_progress)
        if scan.pattern.frames == 0:
            print(f"nanomaps pattern: not one of frames {scan.frames[0]} to {scan.frames[1] - 1} of {scan.master} "
                  "could be read (see the warnings above)", file=sys.stderr)
            return EXIT_NOTHING_PROCESSED
        data = pattern_figure_data(scan, config.peaks, args.stat, nq=args.q_bins, nchi=args.chi_bins)
        fig = draw_pattern(data)
        FigureCanvasAgg(fig).print_figure(str(args.out), dpi=args.dpi, format=args.out.suffix.lower().lstrip("."))
        if args.npy is not None:
            save_pattern_npy(args.npy, data)
        if args.h5 is not None:
            save_pattern_h5(args.h5, scan, data)
    except (ConfigError, GeometryError, OSError, ValueError) as exc:
        # OSError: DectrisFileError (missing file, not a master), OutputPathError, unwritable output
        print(f"nanomaps pattern: {exc}", file=sys.stderr)
        return EXIT_USAGE
    written = ", ".join(str(p) for p in (args.out, args.npy, args.h5) if p is not None)
    print(f"{written}: {args.stat} of {scan.pattern.frames} frames of {scan.master}"
          + (f" ({scan.skipped} skipped)" if scan.skipped else ""))
    return EXIT_OK
