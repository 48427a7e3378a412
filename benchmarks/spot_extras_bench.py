"""Cost of the hot-pixel tracker and the second-spot search per EIGER 4M frame (issue 10).

Frames and windows as in ``run_bench.py`` (the model crystal's spots, the bench config's
three windows, uint32): prints per frame the ROI accumulation, the hot-pixel tracker
(counted in the ROI pass: ROI alone against ROI counting spikes), the three one-spot fits, the three second-spot
searches after them, and ``fit_windows`` as a whole (tracker + ROI + fits +
second spots). Informative only; ``python benchmarks/spot_extras_bench.py [--frames N]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from run_bench import DETECTORS, make_file  # noqa: E402

from processors.fit_gaussian2d import fit_gaussian2d_into  # noqa: E402
from processors.frame_processor import FrameProcessor  # noqa: E402
from processors.frame_record import N_PARAMS, frame_record_dtype  # noqa: E402
from processors.processing_setup import ProcessingSetup  # noqa: E402
from stream.dectris_file import DectrisFile  # noqa: E402


def per_call(fn, n: int) -> float:
    """Median CPU seconds of this thread for ``fn(i)`` over ``n`` calls: CPU time, not wall time,
    and medians, because the machine may be shared (waiting for a core is not counted)."""
    times = []
    for i in range(n):
        t = time.thread_time()
        fn(i)
        times.append(time.thread_time() - t)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    args = parser.parse_args(argv)
    n = args.frames
    with tempfile.TemporaryDirectory() as tmp:
        config, master, _ = make_file(Path(tmp), "4M_uint32", DETECTORS["EIGER 4M"], min(n, 16), "uint32")
        with DectrisFile(master) as f:
            frames = list(f.iter_frames())
            md = f.metadata
        setup = ProcessingSetup.from_config(config, pixel_mask=md.pixel_mask, shape=md.shape)
        proc = FrameProcessor(setup)
        rec = np.zeros(1, dtype=frame_record_dtype(proc.n_peaks))
        proc.process_into(frames[0], rec[0])  # compile / load every kernel
        images = [proc.decode(fr).copy() for fr in frames]
        k = len(images)
        fit = setup.fit
        print(f"EIGER 4M {images[0].shape}, {proc.hot_pixels.n_tracked} window pixels tracked, "
              f"{proc.lut.pixel_index.size} LUT entries, windows "
              + ", ".join(f"{w.name} {w.nq}x{w.nchi}" for w in proc.lut.windows))
        t_roi = per_call(lambda i: proc.roi.accumulate(images[i % k]), n)
        t_roi_hot = per_call(lambda i: proc.hot_pixels.accumulate(images[i % k]), n)
        # fits and second-spot searches alone, on the bins of each image (taken once)
        windows = []
        for image in images:
            proc.roi.accumulate(image)
            windows.append([tuple(a.copy() for a in proc.roi.window_sums(j)) for j in range(proc.n_peaks)])
        p, e = np.empty(N_PARAMS), np.empty(N_PARAMS)
        sp, se = np.empty(N_PARAMS), np.empty(N_PARAMS)
        fitted = [[None] * proc.n_peaks for _ in range(k)]
        for i in range(k):
            for j, w in enumerate(proc.lut.windows):
                sums, counts = windows[i][j]
                status = fit_gaussian2d_into(sums, counts, w.q_centers, w.chi_centers, p, e, proc.window_fits.works[j],
                                             fit.min_bins, fit.min_snr, fit.max_iterations,
                                             w.pixel_q, w.pixel_chi, fit.outlier_sigma, True)
                fitted[i][j] = (status, p.copy(), e.copy())

        def fits(i: int) -> None:
            for j, w in enumerate(proc.lut.windows):
                sums, counts = windows[i % k][j]
                fit_gaussian2d_into(sums, counts, w.q_centers, w.chi_centers, p, e, proc.window_fits.works[j],
                                    fit.min_bins, fit.min_snr, fit.max_iterations,
                                    w.pixel_q, w.pixel_chi, fit.outlier_sigma, True)

        def searches(i: int) -> None:
            for j in range(proc.n_peaks):
                status, p1, e1 = fitted[i % k][j]
                if status == 0:
                    sums, counts = windows[i % k][j]
                    np.copyto(p, p1)
                    np.copyto(e, e1)
                    proc._second[j].find(sums, counts, p, e, sp, se, proc.window_fits.works[j], fit)

        t_fits = per_call(fits, n)
        t_second = per_call(searches, n)
        t_windows = per_call(lambda i: proc.fit_windows(images[i % k], rec[0]), n)
        print("hot pixels found:", len(proc.hot_pixels.hot))
        print(f"CPU time per frame (median of {n}): ROI {1e3 * t_roi:.3f} ms | ROI counting spikes {1e3 * t_roi_hot:.3f} ms | "
              f"3 fits {1e3 * t_fits:.3f} ms | 3 second-spot searches {1e3 * t_second:.3f} ms | "
              f"ROI + tracker + fits + second spots (fit_windows) {1e3 * t_windows:.3f} ms | "
              f"fits ok {int((rec[0]['fit_status'] == 0).sum())}/3, second spots {rec[0]['second_status'].tolist()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
