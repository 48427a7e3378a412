"""``nanomaps report``: the paper-style figure of a results file, and its statistics
(figures next to it and a JSON file: docs/statistics.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from monitor.cli.command_parser import CommandParser
from monitor.exit_codes import EXIT_OK, EXIT_USAGE
from monitor.report.figure import OUTPUT_FORMATS, ReportError, draw_report_data
from monitor.report.figure_data import read_report_data
from monitor.report.statistics import StatisticsOptions, report_statistics
from monitor.report.statistics_figures import draw_histograms, draw_profiles, draw_size_dependence
from stream.output_path import check_output_file

#: The statistics outputs, named after --out: STEM_<suffix>.<format of --out>, and STEM_statistics.json.
STATISTICS_FIGURES = {"histograms": draw_histograms, "profiles": draw_profiles, "correlations": draw_size_dependence}


def statistics_outputs(out: Path) -> dict[str, Path]:
    """The files written next to figure ``out``: one per statistics figure, and ``statistics`` (JSON)."""
    paths = {name: out.with_name(f"{out.stem}_{name}{out.suffix}") for name in STATISTICS_FIGURES}
    paths["statistics"] = out.with_name(f"{out.stem}_statistics.json")
    return paths


def _parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="nanomaps report",
        description="Paper-style figure of a results file: maps (intensity, φ0, Δφ_do, size, "
        "microstrain, a, b), the Williamson–Hall plot and a, b vs NC size; and the statistics over the "
        "supercrystal mask: histograms, profiles from the centre, correlations (Pearson and Spearman ρ with "
        "bootstrap intervals), the power law of a, b against size (OUT_*.png and OUT_statistics.json).",
    )
    p.add_argument("results", metavar="RESULTS", type=Path, help="results.h5 written by `nanomaps process` / `reprocess`")
    p.add_argument("--out", type=Path, default=None,
                   help="output figure, .png, .pdf or .svg (default: RESULTS with the suffix .png, next to it)")
    p.add_argument("--peak", default=None,
                   help='peak whose φ0 and Δφ_do maps are shown (default: "100", else the first peak with hkl)')
    p.add_argument("--dpi", type=float, default=150.0, help="resolution of raster output (default 150)")
    p.add_argument("--no-statistics", action="store_true",
                   help="only the figure: no statistics figures (OUT_histograms, OUT_profiles, OUT_correlations) "
                   "and no OUT_statistics.json")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap resamples for the confidence intervals of ρ (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0: reproducible)")
    return p


def _save(fig: Figure, path: Path, fmt: str, dpi: float) -> None:
    try:
        FigureCanvasAgg(fig).print_figure(str(path), dpi=dpi, format=fmt)
    except OSError as exc:
        raise ReportError(f"cannot write {str(path)!r} ({exc.strerror or exc}); choose a writable --out path") from exc


def main(argv: list[str] | None = None) -> int:
    """``nanomaps report RESULTS [--out PATH] [--peak NAME] [--dpi N] [--no-statistics] [--bootstrap N] [--seed S]``;
    0 on success, 2 on a usage/data error. Prints every file written, one per line."""
    args = _parser().parse_args(argv)
    out: Path = args.out if args.out is not None else args.results.with_suffix(".png")
    fmt = out.suffix.lower().lstrip(".")
    try:
        if fmt not in OUTPUT_FORMATS:
            raise ReportError(f"--out {str(out)!r}: unsupported figure format {out.suffix!r}; use a .png, .pdf or .svg name")
        if not args.dpi > 0:
            raise ReportError(f"--dpi {args.dpi:g}: must be positive, e.g. --dpi 150")
        if args.bootstrap < 1:
            raise ReportError(f"--bootstrap {args.bootstrap}: use at least 1 resample, e.g. --bootstrap 1000")
        if not out.parent.is_dir():
            raise ReportError(f"--out {str(out)!r}: directory {str(out.parent)!r} does not exist; create it or choose another path")
        extra = {} if args.no_statistics else statistics_outputs(out)
        try:
            for path in (out, *extra.values()):
                check_output_file(path, what="figure" if path == out else "statistics output")  # before any drawing
        except OSError as exc:
            raise ReportError(str(exc)) from None
        data = read_report_data(args.results, peak=args.peak)
        _save(draw_report_data(data), out, fmt, args.dpi)
        written = [out]
        if extra:
            stats = report_statistics(data, StatisticsOptions(resamples=args.bootstrap, seed=args.seed))
            for name, draw in STATISTICS_FIGURES.items():
                _save(draw(data, stats), extra[name], fmt, args.dpi)
                written.append(extra[name])
            try:
                extra["statistics"].write_text(json.dumps({"file": str(args.results), **stats.as_json()}, indent=1,
                                                          ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
            except OSError as exc:
                raise ReportError(f"cannot write {str(extra['statistics'])!r} ({exc.strerror or exc}); "
                                  "choose a writable --out path") from exc
            written.append(extra["statistics"])
    except ReportError as exc:
        print(f"nanomaps report: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for path in written:
        print(path)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
