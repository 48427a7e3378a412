"""``nanomaps demo``: the whole offline path on the embedded default, no hardware needed.

Simulates a scan of the model supercrystal into DECTRIS files, reprocesses them on a
local process pool, writes ``results.h5`` and the paper-style ``maps.png``, and prints
how well the maps recover the known truth.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np

from monitor import report
from monitor.progress import progress_bar
from monitor.reprocess import reprocess
from processors.config import load_config
from processors.demo_setup import write_demo_config
from processors.simulate_scan import simulate_scan_file


def truth_comparison(results_path: Path, truth_path: Path) -> dict[str, float]:
    """Median absolute errors of the recovered maps against the simulator's truth."""
    out = {}
    with h5py.File(results_path, "r") as r, h5py.File(truth_path, "r") as t:
        for peak in t["truth/spots"]:
            for key in ("q0", "dq", "phi0", "dphi"):
                fit = r[f"entry/results/{peak}/{key}"][()]
                true = t[f"truth/spots/{peak}/{key}"][()]
                err = fit - true
                if key == "phi0":
                    err = np.mod(err + 180, 360) - 180
                if key in ("dq", "dphi"):
                    err = err / true
                out[f"{peak}/{key}"] = float(np.nanmedian(np.abs(err)))
        size = r["entry/results/derived/size"][()]
        out["size"] = float(np.nanmedian(np.abs(size / t["truth/size_nm"][()] - 1)))
        out["a"] = float(np.nanmedian(np.abs(r["entry/results/derived/a"][()] - t["truth/a_A"][()])))
        out["b"] = float(np.nanmedian(np.abs(r["entry/results/derived/b"][()] - t["truth/b_A"][()])))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="nanomaps demo",
        description="Run nanomaps end to end on an embedded default: simulate a scan of the model CsPbBr3 "
                    "supercrystal (EIGER 1M, 24 x 32 points) into DECTRIS files, fit every frame, write "
                    "results.h5 and maps.png, and compare the maps with the known truth.")
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--headless", action="store_true",
                   help="no window: write results and pictures only (the offline demo always is)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    p.add_argument("--shape", type=int, nargs=2, metavar=("ROWS", "COLS"), help="override the scan shape")
    args = p.parse_args(argv)
    out = Path(args.out)
    config = load_config(write_demo_config(out / "config", shape=args.shape))
    master = out / "raw" / "scan_master.h5"
    n = config.scan.n_frames
    print(f"1/3 simulating {n} frames of the model supercrystal -> {master}")
    with progress_bar(n, "simulate") as bar:
        sim = simulate_scan_file(config, master, progress=bar.update)
    results = out / "results.h5"
    print(f"2/3 reprocessing -> {results}")
    summary = reprocess([master], config, results, workers=args.workers)
    c = summary.counters
    print(f"    {c.processed}/{c.received} frames in {summary.seconds:.1f} s on {summary.workers}; "
          f"fits ok {c.fits_ok}, rejected {c.fits_rejected} (off-crystal points have no spots)")
    figure = out / "maps.png"
    print(f"3/3 drawing {figure}")
    rc = report.main([str(results), "--out", str(figure)])
    if rc != 0:
        return rc
    errors = truth_comparison(results, sim.truth_path)
    print("recovered vs truth (median absolute error; widths and size relative):")
    for key, value in errors.items():
        unit = {"q0": " 1/Å", "phi0": "°", "a": " Å", "b": " Å"}.get(key.split("/")[-1], "")
        shown = f"{100 * value:.2f} %" if unit == "" else f"{value:.4f}{unit}"
        print(f"    {key:12s} {shown}")
    print(f"done: {results}, {figure}")
    return 0 if c.processed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
