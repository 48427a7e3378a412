"""ROI pass per EIGER 4M uint32 frame: ``PolarROI.accumulate`` and ``HotPixelTracker.accumulate``
(the same pass counting hot-pixel spikes), with the bench's file and windows (``run_bench.py``).

Prints min / median over repeats of the mean time per frame over 16 frames (8 decoded frames
cycled, so mostly out of cache). Informative only; ``python benchmarks/roi_pass_bench.py [--repeats N]``.
See docs/polar_roi.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from run_bench import DETECTORS, make_file, time_per_frame  # noqa: E402

from processors.frame_processor import FrameProcessor  # noqa: E402
from processors.frame_record import frame_record_dtype  # noqa: E402
from processors.processing_setup import ProcessingSetup  # noqa: E402
from stream.dectris_file import DectrisFile  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    n = 16
    with tempfile.TemporaryDirectory() as d:
        config, master, _ = make_file(Path(d), "4M_uint32", DETECTORS["EIGER 4M"], n, "uint32")
        with DectrisFile(master) as f:
            frames = list(f.iter_frames())
            md = f.metadata
        proc = FrameProcessor(ProcessingSetup.from_config(config, pixel_mask=md.pixel_mask, shape=md.shape))
        rec = np.zeros(1, dtype=frame_record_dtype(3))
        proc.process_into(frames[0], rec[0])  # compiles everything
        images = [proc.decode(fr).copy() for fr in frames[:8]]
        k = len(images)
        res = []
        for _ in range(args.repeats):
            t_roi = time_per_frame(lambda i: proc.roi.accumulate(images[i % k]), n)
            t_hot = time_per_frame(lambda i: proc.hot_pixels.accumulate(images[i % k]), n)
            res.append((t_roi * 1e3, t_hot * 1e3))
        a = np.array(res)
        print(f"EIGER 4M uint32, {proc.roi.lut.pixel_index.size} LUT entries, {proc.roi.lut.n_bins} bins; ms per frame, "
              f"min / median of {args.repeats}: ROI {a[:, 0].min():.3f} / {np.median(a[:, 0]):.3f} | "
              f"ROI counting spikes {a[:, 1].min():.3f} / {np.median(a[:, 1]):.3f}")


if __name__ == "__main__":
    main()
