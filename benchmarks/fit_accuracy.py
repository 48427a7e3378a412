"""Issue 10's "Done when", measured: fits of simulated scans against their truth.

For each case it renders the demo's scan (EIGER 1M, the demo config and PONI; 24 × 32
points unless ``--shape``) into DECTRIS files with :func:`processors.simulate_scan.simulate_scan_file`,
processes them with the real offline pipeline (``reprocess``: the same process_batch as
live), and prints the medians of :mod:`processors.truth_comparison` against the truth,
with PASS/FAIL per target:

- ``clean``: the model as the demo renders it;
- ``messy``: :data:`processors.frame_realism.MESSY_BEAMTIME`: a sloped amorphous ring
  background (±35 % across the 100 and 200 windows, in q and χ), spots 3× weaker, 12 hot
  pixels missing from the pixel mask (2 in each window) and one zinger per frame.

Targets: ≥ 95 % of windows inside the crystal fitted, ≤ 10 % false fits outside, |q0 error|
≤ 1e-3 1/Å, widths (dq, dphi) ≤ 3 %, φ0 ≤ 0.1°, a and b ≤ 3 mÅ, size ≤ 5 %, microstrain
≤ 2e-3 (medians). Informative: the exit status is 0 whatever the verdict (2 on bad usage).

    .venv/bin/python benchmarks/fit_accuracy.py                      # both cases, ~1-3 min on 2 cores
    .venv/bin/python benchmarks/fit_accuracy.py --cases messy --json accuracy.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from monitor.session.reprocess import reprocess  # noqa: E402
from processors.config import load_config  # noqa: E402
from processors.demo_setup import write_demo_config  # noqa: E402
from processors.frame_realism import MESSY_BEAMTIME, FrameRealism, background_change_across  # noqa: E402
from processors.simulate_scan import simulate_scan_file  # noqa: E402
from processors.truth_comparison import judge, recovered_vs_truth, target_of  # noqa: E402

CASES = {"clean": FrameRealism(), "messy": MESSY_BEAMTIME}
SPOT_KEYS = ("q0", "dq", "phi0", "dphi")
DERIVED_KEYS = ("a", "b", "size", "microstrain")


def read_maps(results: Path, peaks) -> tuple[dict, dict]:
    """Spot maps ``{peak: {key: map}}`` and derived maps of a results file."""
    with h5py.File(results, "r") as f:
        res = f["entry/results"]
        spots = {p.name: {k: res[f"{p.name}/{k}"][()] for k in SPOT_KEYS} for p in peaks if p.name in res}
        derived = {k: res[f"derived/{k}"][()] for k in DERIVED_KEYS if f"derived/{k}" in res}
    return spots, derived


def run_case(name: str, realism: FrameRealism, folder: Path, shape, workers: int, seed: int) -> dict:
    config = load_config(write_demo_config(folder / name, shape=shape))
    t0 = time.perf_counter()
    sim = simulate_scan_file(config, folder / name / "scan_master.h5", seed=seed, realism=realism)
    t1 = time.perf_counter()
    results = folder / name / "results.h5"
    summary = reprocess([sim.master_path], config, results, workers=workers, progress=False)
    t2 = time.perf_counter()
    spots, derived = read_maps(results, config.peaks)
    metrics = recovered_vs_truth(spots, derived, sim.truth, config.peaks)
    slopes = {p.name: background_change_across(realism, p.q, p.chi) for p in config.peaks}
    return {"case": name, "frames": sim.frames, "processed": summary.counters.processed,
            "simulate_s": round(t1 - t0, 1), "reprocess_s": round(t2 - t1, 1),
            "realism": {k: v for k, v in realism.__dict__.items()},
            "background_change_q_chi": {k: [round(v[0], 3), round(v[1], 3)] for k, v in slopes.items()},
            "metrics": metrics, "pass": judge(metrics)}


def _format(value: float, metric: str) -> str:
    key = metric.rsplit("/", 1)[-1]
    if key in ("fitted_inside", "false_outside", "dq", "dphi", "size"):
        return f"{100 * value:7.2f} %"
    if key in ("a", "b", "a_bias", "b_bias"):
        return f"{1000 * value:7.2f} mÅ"
    if key == "phi0":
        return f"{value:7.3f}°"
    if key == "q0":
        return f"{value:9.2e} 1/Å"
    return f"{value:9.2e}"


def print_case(result: dict) -> None:
    print(f"\n== {result['case']}: {result['processed']} of {result['frames']} frames "
          f"(simulated in {result['simulate_s']} s, processed in {result['reprocess_s']} s)")
    if result["case"] != "clean":
        print("   background change across each window (q, χ): "
              + ", ".join(f"{k} {v[0]:+.2f} {v[1]:+.2f}" for k, v in result["background_change_q_chi"].items()))
    for metric, value in result["metrics"].items():
        target = target_of(metric)
        bound = "" if target is None else (">= " if target.at_least else "<= ") + _format(target.limit, metric).strip()
        verdict = "" if metric not in result["pass"] else ("PASS" if result["pass"][metric] else "FAIL")
        print(f"   {metric:20s} {_format(value, metric):>14s}   {bound:16s} {verdict}")
    n_pass = sum(result["pass"].values())
    print(f"   {n_pass} of {len(result['pass'])} targets met")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["clean", "messy"])
    parser.add_argument("--shape", type=int, nargs=2, metavar=("ROWS", "COLS"), default=(24, 32),
                        help="scan shape (default: the demo's 24 × 32)")
    parser.add_argument("--workers", type=int, default=2, help="reprocess worker processes (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of sample and noise (default 0)")
    parser.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    parser.add_argument("--keep", metavar="DIR", help="keep the simulated files and results in DIR")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nanomaps-accuracy-") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        results = []
        for name in args.cases:
            result = run_case(name, CASES[name], folder, tuple(args.shape), args.workers, args.seed)
            print_case(result)
            results.append(result)
    if args.json:
        Path(args.json).write_text(json.dumps({"shape": list(args.shape), "seed": args.seed, "cases": results},
                                              indent=2, default=lambda x: x if not isinstance(x, tuple) else list(x)))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
