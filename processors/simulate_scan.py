"""Simulate a whole scan of the model supercrystal into a DECTRIS-layout file, with its truth."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import h5py
import numpy as np

from processors.config import NanomapsConfig
from processors.diffraction_simulator import FrameRenderer
from processors.frame_realism import FrameRealism
from processors.geometry import load_integrator, read_poni
from processors.supercrystal import SupercrystalTruth, model_supercrystal, with_second_domain
from stream.chunk_codec import encode_frame
from stream.dectris_writer import DectrisWriter
from stream.detector_metadata import DetectorMetadata


@dataclass(frozen=True)
class SimulatedScan:
    master_path: Path
    truth_path: Path
    truth: SupercrystalTruth
    frames: int


def dead_pixels(shape: tuple[int, int], n: int, seed: int) -> np.ndarray:
    """A pixel mask with ``n`` random dead/hot pixels (as in a real DECTRIS pixel_mask)."""
    rng = np.random.default_rng(seed + 7919)
    mask = np.zeros(shape, dtype=bool)
    mask.reshape(-1)[rng.choice(shape[0] * shape[1], size=n, replace=False)] = True
    return mask


def save_truth(path: Path, truth: SupercrystalTruth, config: NanomapsConfig,
               renderer: FrameRenderer | None = None) -> None:
    """Truth maps and the true parameters of every configured spot (HDF5).

    With a ``renderer`` also what it added: ``truth/realism`` (its options, as attributes),
    ``truth/hot_pixels`` (``(n, 2)`` row, col of the unmasked hot pixels), the SAXS spots'
    width and, where two domains are in the beam, ``truth/second_domain`` (bool map) and
    ``spots/<peak>/second_phi0`` (degrees, NaN where there is one domain).
    """
    saxs_dq = renderer.saxs_dq if renderer is not None else None
    with h5py.File(path, "w") as f:
        g = f.create_group("truth")
        for name in ("size_nm", "microstrain", "a_A", "b_A", "c_A", "orientation_deg", "disorder_deg", "brightness"):
            g.create_dataset(name, data=getattr(truth, name))
        g.create_dataset("on_crystal", data=truth.on_crystal)
        if truth.a_sc_nm is not None:
            g.create_dataset("a_sc_nm", data=truth.a_sc_nm)
        if truth.second_domain is not None:
            g.create_dataset("second_domain", data=truth.second_domain.points)
            g["second_domain"].attrs["rotation_deg"] = truth.second_domain.rotation_deg
            g["second_domain"].attrs["strength"] = truth.second_domain.strength
        for peak in config.peaks:
            if peak.hkl is not None:
                values = truth.spot(peak.hkl)
            elif saxs_dq is not None:
                values = truth.superlattice_spot(peak.superlattice, saxs_dq)
            else:
                continue
            s = g.create_group(f"spots/{peak.name}")
            for key, data in values.items():
                s.create_dataset(key, data=data)
            if truth.second_domain is not None and peak.hkl is not None:
                s.create_dataset("second_phi0", data=truth.second_phi0(values["phi0"]))
        if renderer is not None:
            r = g.create_group("realism")
            for key, value in asdict(renderer.realism).items():
                r.attrs[key] = "none" if value is None else value
            rows, cols = np.divmod(renderer.hot_pixels, renderer.shape[1])
            g.create_dataset("hot_pixels", data=np.stack([rows, cols], axis=1).astype(np.int64))


def simulated_detector_metadata(ai, dtype: str, encoding: str, mask: np.ndarray, nimages: int) -> DetectorMetadata:
    """What a simulated EIGER on pyFAI integrator ``ai`` announces (10 ms frames; gaps and dead pixels masked)."""
    rows, cols = ai.detector.shape
    return DetectorMetadata(
        description=f"nanomaps simulated {type(ai.detector).__name__}", x_pixels=cols, y_pixels=rows,
        dtype=dtype, x_pixel_size_m=ai.detector.pixel2, y_pixel_size_m=ai.detector.pixel1,
        detector_distance_m=ai.dist, beam_center_x_px=ai.poni2 / ai.detector.pixel2,
        beam_center_y_px=ai.poni1 / ai.detector.pixel1, wavelength_A=ai.wavelength * 1e10,
        count_time_s=0.01, frame_time_s=0.01, nimages=nimages, ntrigger=1, compression=encoding,
        pixel_mask=mask.astype(np.uint32))


class ScanSimulator:
    """Frames of ``config``'s scan over the model supercrystal, as the detector would send them.

    ``metadata`` describes the detector (from the PONI file; ``pixel_mask`` = gaps and
    a few dead pixels); :meth:`encoded_frames` yields ``(frame number, blob)`` in scan
    order. ``background_pool`` > 0 reuses that many background frames (a live
    simulator must keep pace; the spots are always drawn fresh). ``realism`` adds what
    real frames have (:class:`~processors.frame_realism.FrameRealism`; default: none).
    """

    def __init__(self, config: NanomapsConfig, *, dtype: str = "uint32", encoding: str = "bslz4", seed: int = 0,
                 n_frames: int | None = None, background_pool: int = 0,
                 realism: FrameRealism | None = None) -> None:
        self.config = config
        self.encoding = encoding
        self.seed = seed
        poni_text = read_poni(config.geometry.poni)
        ai = load_integrator(poni_text, str(config.geometry.poni))
        shape = tuple(ai.detector.shape)
        realism = realism if realism is not None else FrameRealism()
        self.truth = realistic_truth(model_supercrystal(config.scan.shape, seed=seed), realism)
        self.renderer = renderer_for(config, poni_text, self.truth, shape, dtype=dtype, seed=seed,
                                     background_pool=background_pool, realism=realism)
        self.n_frames = config.scan.n_frames if n_frames is None else n_frames
        self.metadata = simulated_detector_metadata(ai, dtype, encoding, self.renderer.mask, self.n_frames)

    def encoded_frames(self) -> Iterator[tuple[int, bytes]]:
        rng = np.random.default_rng(self.seed)
        rows, cols = self.config.scan.points_of(np.arange(self.n_frames))
        for k in range(self.n_frames):
            # frames beyond the scan (row -1) get background only
            yield k, encode_frame(self.renderer.render(int(rows[k]), int(cols[k]), rng), self.encoding)

    def save_truth(self, path: Path) -> None:
        save_truth(path, self.truth, self.config, self.renderer)


def realistic_truth(truth: SupercrystalTruth, realism: FrameRealism) -> SupercrystalTruth:
    """``truth`` with what ``realism`` changes in the sample (a second domain in its patch)."""
    if realism.second_domain_patch is None:
        return truth
    return with_second_domain(truth, realism.second_domain_patch, rotation_deg=realism.second_domain_rotation_deg,
                              strength=realism.second_domain_strength)


def renderer_for(config: NanomapsConfig, poni_text: str, truth: SupercrystalTruth, shape: tuple[int, int], *,
                 dtype: str, seed: int, background_pool: int, realism: FrameRealism) -> FrameRenderer:
    """The :class:`FrameRenderer` of ``config``'s peaks (200 dead pixels in the pixel mask, as on a real EIGER)."""
    hkls = [p.hkl for p in config.peaks if p.hkl is not None]
    return FrameRenderer(poni_text, truth, hkls, dtype=dtype, extra_mask=dead_pixels(shape, 200, seed),
                         background_pool=background_pool, seed=seed, realism=realism,
                         windows=[(p.q, p.chi) for p in config.peaks],
                         superlattice=[p.superlattice for p in config.peaks if p.superlattice is not None])


def truth_path_for(master_path: Path) -> Path:
    stem = master_path.name.removesuffix("_master.h5").removesuffix(".h5")
    return master_path.with_name(f"{stem}_truth.h5")


def simulate_scan_file(config: NanomapsConfig, master_path: str | Path, *, dtype: str = "uint32",
                       encoding: str = "bslz4", seed: int = 0, frames_per_file: int = 100,
                       n_frames: int | None = None, progress: Callable[[int], None] | None = None,
                       realism: FrameRealism | None = None) -> SimulatedScan:
    """Render ``config``'s scan of the model supercrystal into ``master_path`` (DECTRIS layout).

    ``n_frames`` defaults to the scan's frame count (give more or fewer to test the
    reader's warnings). The truth goes to ``<name>_truth.h5`` next to the master file.
    ``realism``: see :class:`~processors.frame_realism.FrameRealism` (default: a clean scan).
    """
    master_path = Path(master_path)
    sim = ScanSimulator(config, dtype=dtype, encoding=encoding, seed=seed, n_frames=n_frames, realism=realism)
    with DectrisWriter(master_path, sim.metadata, encoding=encoding, frames_per_file=frames_per_file) as writer:
        for k, blob in sim.encoded_frames():
            writer.write_chunk(blob, k)
            if progress is not None:
                progress(1)
    truth_path = truth_path_for(master_path)
    sim.save_truth(truth_path)
    return SimulatedScan(master_path, truth_path, sim.truth, sim.n_frames)
