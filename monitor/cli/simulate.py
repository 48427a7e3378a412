"""``nanomaps simulate``: the model supercrystal as DECTRIS files, or live as a detector stream."""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

from monitor.cli.command_parser import CommandParser
from monitor.exit_codes import EXIT_INTERRUPTED, EXIT_USAGE, exit_codes_help
from monitor.session.progress import progress_bar
from monitor.sim.live_scan import stream_scan
from processors.config import ConfigError, load_config
from processors.demo_setup import DEMO_DETECTORS, write_demo_config
from processors.frame_realism import MESSY_BEAMTIME, FrameRealism
from processors.geometry import GeometryError
from processors.simulate_scan import ScanSimulator, simulate_scan_file
from stream.dectris_replay import parse_rate
from stream.output_path import check_output_file
from stream.stream_sender import BindAddressError, StreamSender


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="nanomaps simulate",
        description="A simulated EIGER scanning the model CsPbBr3 supercrystal (NC size gradient, microstrain, a/b "
                    "anisotropy, orientation domains, disorder growing to the edge). With --out it writes the scan "
                    "in the DECTRIS file-writer layout; with --bind it streams it live in the real wire format "
                    "(stream v1 or stream2). The true maps go to <name>_truth.h5 (--truth for live runs).",
        epilog="example: nanomaps simulate --bind tcp://127.0.0.1:9999 --shape 40 60 --rate 500 --protocol stream1\n\n"
               "example: nanomaps simulate --out sim/scan_master.h5 --shape 24 32\n\n"
               + exit_codes_help().replace("1 data came but not one frame could be processed; ", ""))
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", metavar="MASTER.h5", help="write DECTRIS files (<name>_master.h5 + data files)")
    where.add_argument("--bind", metavar="tcp://HOST:PORT", help="stream live (loopback unless --allow-remote)")
    p.add_argument("--config", metavar="C", help="TOML config for geometry, scan and peaks (default: the demo's)")
    p.add_argument("--detector", choices=sorted(DEMO_DETECTORS), default="Eiger1M",
                   help="geometry of the default config (ignored with --config)")
    p.add_argument("--shape", type=int, nargs=2, metavar=("ROWS", "COLS"), help="scan shape (overrides the config)")
    p.add_argument("--dtype", choices=("uint16", "uint32"), default="uint32", help="pixel type (default uint32)")
    p.add_argument("--encoding", choices=("bslz4", "lz4"), default="bslz4", help="frame compression")
    p.add_argument("--seed", type=int, default=0, help="random seed of sample and noise")
    p.add_argument("--frames-per-file", type=int, default=100, metavar="N", help="frames per data file (--out)")
    p.add_argument("--rate", default="max", metavar="HZ|max", help="frames per second when streaming (default max)")
    p.add_argument("--protocol", choices=("stream1", "stream2"), default="stream1")
    p.add_argument("--header-detail", choices=("all", "basic", "none"), default="all")
    p.add_argument("--series", type=int, default=1, help="series number to announce")
    p.add_argument("--truth", metavar="TRUTH.h5", help="where to write the true maps of a live run")
    p.add_argument("--allow-remote", action="store_true", help="allow binding to a non-loopback interface")
    _add_realism_options(p)
    return p


def _add_realism_options(p: argparse.ArgumentParser) -> None:
    """What real frames have (all off by default; --messy sets the issue-10 case, other options override it)."""
    g = p.add_argument_group(
        "realism (what real frames have; default: a clean scan)",
        "--messy is the 'messy beamtime' preset: a sloped amorphous ring background (±35 % across the demo's "
        "100 and 200 windows), spots 3x weaker, 12 hot pixels missing from the pixel mask (2 in each window), "
        "1 zinger per frame. Options given with it override the preset.")
    g.add_argument("--messy", action="store_true", help="the messy-beamtime preset (see above)")
    g.add_argument("--spot-strength", type=float, metavar="F", help="factor on the Bragg spot amplitudes (1/3: 3x weaker)")
    g.add_argument("--ring-background", type=float, metavar="COUNTS", dest="ring_level",
                   help="amorphous/ligand ring: counts/pixel at its top (0: none)")
    g.add_argument("--ring-q", type=float, metavar="Q", help="ring centre, 1/Å (default 1.6)")
    g.add_argument("--ring-fwhm", type=float, metavar="DQ", help="ring FWHM in q, 1/Å (default 1.0; --messy 0.9)")
    g.add_argument("--ring-modulation", type=float, metavar="M",
                   help="azimuthal variation of the ring, B ∝ 1 + M cos(χ − χm), 0 <= M < 1")
    g.add_argument("--ring-chi", type=float, metavar="DEG", dest="ring_chi_deg", help="χm, the ring's brightest χ (degrees)")
    g.add_argument("--hot-pixels", type=int, metavar="N", help="N pixels, not in the pixel mask, high in every frame")
    g.add_argument("--hot-pixels-per-window", type=int, metavar="N", help="of those, N inside each [[peak]] window")
    g.add_argument("--hot-pixel-counts", type=float, metavar="COUNTS", help="value of a hot pixel (default 2000)")
    g.add_argument("--zingers", type=int, metavar="N", dest="zingers_per_frame",
                   help="N random high pixels per frame, anywhere unmasked")
    g.add_argument("--zinger-counts", type=float, metavar="COUNTS", help="value of a zinger (default 2000)")
    g.add_argument("--saxs", action="store_const", const=True, dest="superlattice_spots",
                   help="draw the config's superlattice ([[peak]] superlattice = [1, 0]) SAXS spots")
    g.add_argument("--saxs-fwhm-px", type=float, metavar="PX", help="SAXS spot FWHM in detector pixels (default 1)")
    g.add_argument("--two-domains", type=float, nargs=4, metavar=("ROW0", "ROW1", "COL0", "COL1"),
                   dest="second_domain_patch",
                   help="a second domain (rotated spots) on the crystal in this patch of the map, fractions 0-1")
    g.add_argument("--second-rotation", type=float, metavar="DEG", dest="second_domain_rotation_deg",
                   help="φ0 of the second domain minus the first's, degrees (default 10)")
    g.add_argument("--second-strength", type=float, metavar="F", dest="second_domain_strength",
                   help="amplitude of the second domain relative to the first (default 0.7)")
    g.add_argument("--pixel-integrated", action="store_const", const=True, dest="pixel_integrated",
                   help="spots averaged over each pixel's area, not sampled at its centre")
    g.add_argument("--subpixels", type=int, metavar="N", help="sub-samples per pixel side with --pixel-integrated (4)")


def realism_from_args(args: argparse.Namespace) -> FrameRealism:
    """The :class:`FrameRealism` the command line asks for (ValueError names a bad option)."""
    base = MESSY_BEAMTIME if args.messy else FrameRealism()
    # every option of the realism group is stored under its FrameRealism field name (dest)
    changes = {f.name: getattr(args, f.name) for f in fields(FrameRealism) if hasattr(args, f.name)}
    if changes["second_domain_patch"] is not None:
        changes["second_domain_patch"] = tuple(changes["second_domain_patch"])
    return base.with_changes(**changes)


def _config(args, tmp: Path):
    if args.config:
        config = load_config(args.config)
        if args.shape:
            from dataclasses import replace
            config = replace(config, scan=replace(config.scan, shape=(args.shape[0], args.shape[1])))
        return config
    return load_config(write_demo_config(tmp, detector=args.detector, shape=args.shape))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for path, what in ((args.out, "output"), (args.truth, "truth file")):
            if path:
                check_output_file(path, what=what)
        realism = realism_from_args(args)
        rate = parse_rate(args.rate)
        if rate == "original":
            raise ValueError("rate 'original' needs a recording: use a number of frames per second or max")
        with tempfile.TemporaryDirectory(prefix="nanomaps-sim-") as tmp:
            config = _config(args, Path(tmp))
            if args.out:
                with progress_bar(config.scan.n_frames, "simulate") as bar:
                    sim = simulate_scan_file(config, args.out, dtype=args.dtype, encoding=args.encoding,
                                             seed=args.seed, frames_per_file=args.frames_per_file,
                                             progress=bar.update, realism=realism)
                print(f"{sim.master_path}: {sim.frames} frames; truth in {sim.truth_path}")
                return 0
            sim = ScanSimulator(config, dtype=args.dtype, encoding=args.encoding, seed=args.seed,
                                background_pool=16, realism=realism)
            sender = StreamSender(args.bind, allow_remote=args.allow_remote)
            if args.truth:
                sim.save_truth(Path(args.truth))
            print(f"simulating {sim.n_frames} frames ({config.scan.shape[0]} x {config.scan.shape[1]} scan, "
                  f"{sim.metadata.description}) on {sender.endpoint} as {args.protocol}; waiting for a receiver",
                  flush=True)
            try:
                with progress_bar(sim.n_frames, "simulate") as bar:
                    n, seconds = stream_scan(sim, sender, protocol=args.protocol, rate=rate, series=args.series,
                                             header_detail=args.header_detail, progress=bar.update)
            except KeyboardInterrupt:
                sender.close(linger_s=0)
                print("nanomaps simulate: interrupted", file=sys.stderr)
                return EXIT_INTERRUPTED
            sender.close()
            print(f"sent {n} frames in {seconds:.2f} s: {n / max(seconds, 1e-9):.1f} frames/s"
                  + (f" (asked for {rate:g}; rendering limits the rate)" if rate != "max" and n / max(seconds, 1e-9)
                     < 0.95 * rate else ""))
            return 0
    except (ConfigError, GeometryError, ValueError, BindAddressError, OSError) as exc:
        print(f"nanomaps simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE

