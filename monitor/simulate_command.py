"""``nanomaps simulate --out``: a simulated scan of the model supercrystal as DECTRIS files."""

from __future__ import annotations

import argparse
import sys

from monitor.progress import progress_bar
from processors.config import ConfigError, load_config
from processors.geometry import GeometryError
from processors.simulate_scan import simulate_scan_file


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nanomaps simulate",
        description="Render every frame of the config's [scan] over the model CsPbBr3 supercrystal (NC size "
                    "gradient, microstrain, a/b anisotropy, orientation domains, disorder growing to the edge) on "
                    "the config's PONI geometry, and write them in the DECTRIS file-writer layout. The true maps "
                    "go to <name>_truth.h5 beside the master file.",
        epilog="example: nanomaps simulate --config configs/demo.toml --out sim/scan_master.h5")
    p.add_argument("--config", required=True, metavar="C", help="TOML configuration (geometry, scan, peaks)")
    p.add_argument("--out", required=True, metavar="MASTER.h5", help="master file to write (<name>_master.h5)")
    p.add_argument("--dtype", choices=("uint16", "uint32"), default="uint32", help="pixel type (default uint32)")
    p.add_argument("--encoding", choices=("bslz4", "lz4"), default="bslz4", help="chunk compression")
    p.add_argument("--seed", type=int, default=0, help="random seed of sample and noise")
    p.add_argument("--frames-per-file", type=int, default=100, metavar="N", help="frames per data file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        total = config.scan.n_frames
        with progress_bar(total, "simulate") as bar:
            sim = simulate_scan_file(config, args.out, dtype=args.dtype, encoding=args.encoding, seed=args.seed,
                                     frames_per_file=args.frames_per_file, progress=bar.update)
    except (ConfigError, GeometryError, OSError) as exc:
        print(f"nanomaps simulate: {exc}", file=sys.stderr)
        return 2
    print(f"{sim.master_path}: {sim.frames} frames; truth in {sim.truth_path}")
    return 0
