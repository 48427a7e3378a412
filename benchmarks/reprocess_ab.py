"""``reprocess`` of one EIGER 4M uint32 file by two checkouts, run alternately: the speed-up of
this checkout over another, on the same file and machine, in the same minutes.

Each run is a fresh process with the checkout first on ``sys.path`` and 2 workers; the rate is
taken over the middle half of the frames (``done_time``), so start-up (worker spawn, pyFAI
geometry, numba cache) and the last batches are left out. The first run of a checkout whose
numba cache is cold compiles for ~30 s: its middle-half rate is still fair.

    git archive cae33d9 | tar -x -C /tmp/nm_base
    .venv/bin/python benchmarks/reprocess_ab.py --base /tmp/nm_base --frames 1200 --rounds 2

Informative only: prints one line per run and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from run_bench import DETECTORS, make_file  # noqa: E402

RUN = """
import sys
sys.path.insert(0, {tree!r})
from processors.config import load_config
from monitor.session.reprocess import reprocess
reprocess([{master!r}], load_config({config!r}), {out!r}, workers=2, progress=False)
"""


def middle_half_rate(results: Path) -> float:
    """Frames per second over the middle half of the frames, by their ``done_time``."""
    with h5py.File(results, "r") as f:
        done = np.sort(f["entry/results/frames"]["done_time"])
    q = len(done) // 4
    return (len(done) - 1 - 2 * q) / (done[-1 - q] - done[q])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout (a directory)")
    parser.add_argument("--frames", type=int, default=1200, help="frames in the file (default 1200)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each checkout (default 2)")
    args = parser.parse_args(argv)
    if not (args.base / "processors").is_dir():
        print(f"reprocess_ab: {args.base} is not a nanomaps checkout (no processors/). Fix: "
              "git archive <commit> | tar -x -C DIR", file=sys.stderr)
        return 2
    rates: dict[str, list[float]] = {"base": [], "this": []}
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        config, master, _ = make_file(folder, "ab", DETECTORS["EIGER 4M"], args.frames, "uint32", seed=5)
        for k in range(args.rounds):
            for name, tree in (("base", args.base.resolve()), ("this", REPO)):
                out = folder / f"{name}{k}.h5"
                code = RUN.format(tree=str(tree), master=str(master), config=str(folder / "ab.toml"), out=str(out))
                subprocess.run([sys.executable, "-c", code], cwd=tree, check=True, capture_output=True)
                rates[name].append(middle_half_rate(out))
                print(f"round {k} {name}: {rates[name][-1]:.0f} frames/s", flush=True)
    base, this = float(np.median(rates["base"])), float(np.median(rates["this"]))
    print(f"median: base {base:.0f}, this {this:.0f} frames/s: {this / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
