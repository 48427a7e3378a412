"""Does weighting the Williamson–Hall fit by σ(Δq²) make size and microstrain more accurate?

Simulates the demo scan of the model supercrystal (spots at the default amplitudes, and 3×
weaker), reprocesses it, and compares size and microstrain of the plain and the weighted
fit against the truth; also how often |estimate − truth| < the propagated error (≈ 68 % if
the errors are right). Usage: ``python benchmarks/wh_weighting.py [--shape R C] [--workers N]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import h5py
import numpy as np

from monitor.session.reprocess import reprocess
from processors.config import load_config
from processors.demo_setup import write_demo_config
from processors.diffraction_simulator import FrameRenderer
from processors.geometry import load_integrator, read_poni
from processors.simulate_scan import ScanSimulator, dead_pixels, simulated_detector_metadata
from processors.supercrystal import SPOT_AMPLITUDE
from processors.williamson_hall import williamson_hall_fit
from stream.chunk_codec import encode_frame
from stream.dectris_writer import DectrisWriter


def simulate(config, master: Path, scale: float, seed: int = 0) -> ScanSimulator:
    sim = ScanSimulator(config, seed=seed)
    if scale != 1.0:
        poni_text = read_poni(config.geometry.poni)
        ai = load_integrator(poni_text, str(config.geometry.poni))
        hkls = [p.hkl for p in config.peaks if p.hkl is not None]
        sim.renderer = FrameRenderer(poni_text, sim.truth, hkls, dtype="uint32",
                                     extra_mask=dead_pixels(tuple(ai.detector.shape), 200, seed),
                                     amplitudes={k: v * scale for k, v in SPOT_AMPLITUDE.items()}, seed=seed)
        sim.metadata = simulated_detector_metadata(ai, "uint32", "bslz4", sim.renderer.mask, sim.n_frames)
    with DectrisWriter(master, sim.metadata, encoding="bslz4", frames_per_file=1000) as writer:
        rng = np.random.default_rng(seed)
        rows, cols = config.scan.points_of(np.arange(sim.n_frames))
        for k in range(sim.n_frames):
            writer.write_chunk(encode_frame(sim.renderer.render(int(rows[k]), int(cols[k]), rng), "bslz4"), k)
    return sim


def compare(results: Path, config, truth) -> dict:
    wh = config.williamson_hall_peaks
    with h5py.File(results, "r") as f:
        maps = {k: np.stack([f[f"entry/results/{n}/{k}"][()] for n in wh]) for k in ("q0", "dq", "q0_error", "dq_error")}
    out = {}
    on = truth.on_crystal
    for label, weighted in (("plain", False), ("weighted", True)):
        fit = williamson_hall_fit(maps["q0"], maps["dq"], maps["q0_error"], maps["dq_error"],
                                  config.derived.scherrer_k, weighted=weighted)
        ok = on & np.isfinite(fit.size) & np.isfinite(fit.microstrain)
        ds = fit.size[ok] - truth.size_nm[ok]
        de = fit.microstrain[ok] - truth.microstrain[ok]
        out[label] = {
            "points": int(ok.sum()), "on_crystal": int(on.sum()),
            "size_median_abs_rel_error": float(np.median(np.abs(ds) / truth.size_nm[ok])),
            "size_median_rel_bias": float(np.median(ds / truth.size_nm[ok])),
            "microstrain_median_abs_error": float(np.median(np.abs(de))),
            "microstrain_median_bias": float(np.median(de)),
            "size_within_1sigma": float(np.mean(np.abs(ds) < fit.size_error[ok])),
            "microstrain_within_1sigma": float(np.mean(np.abs(de) < fit.microstrain_error[ok])),
            "size_median_error": float(np.median(fit.size_error[ok])),
            "microstrain_median_error": float(np.median(fit.microstrain_error[ok])),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=2, default=(24, 32))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--scales", type=float, nargs="+", default=(1.0, 1 / 3))
    args = p.parse_args()
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(write_demo_config(tmp, shape=tuple(args.shape)))
        for scale in args.scales:
            master = Path(tmp) / f"scan_{scale:.3f}_master.h5"
            sim = simulate(config, master, scale)
            out = Path(tmp) / f"results_{scale:.3f}.h5"
            reprocess([master], config, out, workers=args.workers, progress=False)
            report[f"amplitude x{scale:.3f}"] = compare(out, config, sim.truth)
            print(json.dumps({f"amplitude x{scale:.3f}": report[f"amplitude x{scale:.3f}"]}, indent=1), flush=True)


if __name__ == "__main__":
    main()
