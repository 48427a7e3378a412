"""Read a recorded scan (DECTRIS master + data files) into its :class:`DetectorPattern`.

Frames are read as stored chunks and decoded into one reused buffer, as ``reprocess``'s
workers do; each is added into the per-pixel sums, counts and maxima. Frames that a missing
data file should have held, or that do not decode, are skipped and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.session.progress import progress_bar
from processors.config import NanomapsConfig
from processors.detector_pattern import DetectorPattern, PatternAccumulator
from processors.frame_processor import cached_pixel_geometry
from processors.geometry import GeometryError, PixelGeometry, combine_masks
from processors.polar_lut import build_polar_lut
from processors.processing_setup import ProcessingSetup
from stream.chunk_codec import ChunkDecoder, CorruptFrameError
from stream.dectris_file import DectrisFile
from stream.rate_limited_log import RateLimitedLog

log = logging.getLogger("nanomaps.pattern")


@dataclass(frozen=True)
class ScanPattern:
    """A scan's pattern with what it was made from.

    ``frames`` = (first, stop) series frame numbers read; ``skipped`` frames that were
    missing, corrupt or of another shape or dtype (not in the pattern; when every frame
    was skipped, ``pattern.frames`` is 0).
    """

    pattern: DetectorPattern
    geometry: PixelGeometry
    master: Path
    frames: tuple[int, int]
    skipped: int


def parse_frame_range(text: str) -> tuple[int, int | None]:
    """``"a:b"`` → ``(a, b)`` (Python slice rules, no negatives or step; ``b`` None = to the end)."""
    if ":" not in text:
        raise ValueError(f"--frames {text!r}: expected a:b (e.g. 0:100, :50 or 200:)")
    lo, _, hi = text.partition(":")
    try:
        start = int(lo) if lo.strip() else 0
        stop = int(hi) if hi.strip() else None
    except ValueError:
        raise ValueError(f"--frames {text!r}: a and b of a:b must be whole numbers (e.g. 0:100)") from None
    if start < 0 or (stop is not None and stop <= start):
        raise ValueError(f"--frames {text!r}: need 0 <= a < b (frames a to b - 1)")
    return start, stop


def read_scan_pattern(master: str | Path, config: NanomapsConfig, *, start: int = 0, stop: int | None = None,
                      progress: bool = True) -> ScanPattern:
    """Sum, count and maximum per pixel over frames ``start <= k < stop`` of ``master``.

    Masked: the PONI detector's mask, the file's ``pixel_mask`` and the config's mask; the
    config's windows are checked on this detector (``ConfigError`` as for ``reprocess``).
    Raises ``DectrisFileError`` (an ``OSError``) for an unusable file, ``GeometryError`` for
    a PONI file of another detector, ``ValueError`` for a frame range outside the file.
    """
    with DectrisFile(master) as f:
        f.check_readable()
        md = f.metadata
        setup = ProcessingSetup.from_config(config, pixel_mask=md.pixel_mask, shape=md.shape)
        geometry = cached_pixel_geometry(setup.poni_text, setup.poni_source)
        if tuple(md.shape) != geometry.shape:
            raise GeometryError(f"{setup.poni_source}: the PONI detector is {geometry.shape} (rows, cols) but the "
                                f"frames of {f.path} are {tuple(md.shape)}. Fix: use a PONI file for this detector")
        mask = combine_masks(geometry.shape, geometry.mask, setup.extra_mask_array())
        build_polar_lut(geometry, mask, config.peaks, source=str(config.geometry.poni))  # windows on the detector?
        total = f.frame_count
        stop = total if stop is None else stop
        if start >= total:
            raise ValueError(f"--frames {start}:{stop}: {f.path} holds frames 0 to {total - 1}")
        if stop > total:
            log.warning("%s holds %d frames: reading %d to %d", f.path, total, start, total - 1)
            stop = total
        if md.pixel_mask is None:
            log.info("%s has no pixel_mask: only the PONI detector's mask and the config's are applied", f.path)
        accumulator = PatternAccumulator(mask)
        decoder = ChunkDecoder()
        buffer = np.empty(geometry.shape[0] * geometry.shape[1], dtype=np.uint32)
        limiter = RateLimitedLog(log)
        skipped = 0
        bar = progress_bar(stop - start, "pattern", enabled=progress)
        try:
            for frame in f.iter_frames(start=start, stop=stop):
                bar.update(1)
                problem = ""
                if frame.error:
                    problem = frame.error
                elif tuple(frame.shape) != geometry.shape:
                    problem = f"shape {tuple(frame.shape)} is not the detector's {geometry.shape}"
                else:
                    try:
                        accumulator.add(decoder.decode_into(frame, buffer))
                    except (CorruptFrameError, ValueError) as exc:
                        problem = f"not decodable ({exc})"
                if problem:
                    skipped += 1
                    limiter.log(logging.WARNING, "skipped", "frame %d skipped: %s", frame.frame, problem)
        finally:
            bar.close()
            limiter.flush()
        return ScanPattern(accumulator.result(), geometry, f.path, (start, stop), skipped)
