"""Decode → polar ROI → 2-D Gaussian fits for one frame, with buffers reused across frames."""

from __future__ import annotations

import functools
import time
from typing import Sequence

import numpy as np

from processors.angles import wrap_deg
from processors.frame_record import (
    FIT_FRAME_FAILED,
    FRAME_ALL_MASKED,
    FRAME_CORRUPT,
    FRAME_MISSING,
    FRAME_OK,
    FRAME_WRONG_DTYPE,
    FRAME_WRONG_SHAPE,
    MAX_HOT_PER_RECORD,
    N_PARAMS,
    PARAM_NAMES,
    SECOND_NOT_TRIED,
)
from processors.geometry import GeometryError, PixelGeometry, combine_masks, pixel_geometry
from processors.hot_pixels import HotPixelTracker
from processors.polar_lut import PolarLUT, build_polar_lut, check_windows
from processors.polar_roi import PolarROI, sentinel_of
from processors.processing_setup import ProcessingSetup
from processors.second_spot import SecondSpotFinder
from processors.window_fits import WindowFits
from stream.bslz4_partial import SelectiveDecoder, with_neighbours
from stream.chunk_codec import ChunkDecoder, CorruptFrameError
from stream.dectris_file import ChunkReader
from stream.encoded_frame import DTYPES, ITEMSIZE, EncodedFrame
from stream.shared_arena import ArenaReader, ArenaSlice

_PHI0 = PARAM_NAMES.index("phi0")


@functools.lru_cache(maxsize=1)
def cached_pixel_geometry(poni_text: str, source: str):
    """pyFAI's per-pixel arrays take seconds for a 4M detector: a new series that only
    changes the mask (each header may send one) reuses them and rebuilds only the LUT."""
    return pixel_geometry(poni_text, source)


def geometry_and_mask(setup: ProcessingSetup) -> tuple[PixelGeometry, np.ndarray]:
    """``setup``'s detector geometry (cached) and its whole mask (bool, True = bad): PONI
    detector, file and user masks. :class:`GeometryError` when the data's shape is not the
    PONI detector's or a mask does not fit it."""
    geometry = cached_pixel_geometry(setup.poni_text, setup.poni_source)
    if setup.shape is not None and tuple(setup.shape) != geometry.shape:
        raise GeometryError(
            f"{setup.poni_source}: the PONI detector is {geometry.shape} (rows, cols) but the data are "
            f"{tuple(setup.shape)}. Fix: use a PONI file for this detector")
    return geometry, combine_masks(geometry.shape, geometry.mask, setup.extra_mask_array())


def check_setup(setup: ProcessingSetup) -> None:
    """Raise what building a :class:`FrameProcessor` for ``setup`` would raise for the setup
    itself (:class:`GeometryError`, :class:`ConfigError`), in ≈ 10 ms instead of the whole
    build's ≈ 30 ms for an EIGER 4M once its geometry is cached: a live series start checks
    its header's setup while the workers build it."""
    geometry, mask = geometry_and_mask(setup)
    check_windows(geometry, mask, setup.peaks, source="config")


class FrameProcessor:
    """Everything one worker needs per frame, built once from a :class:`ProcessingSetup`.

    :meth:`process_into` fills one record of
    :func:`~processors.frame_record.frame_record_dtype`; it never raises for bad frames
    and returns a message describing the problem ("" when the frame was fine).
    """

    def __init__(self, setup: ProcessingSetup, *, selective: bool = True, arena: ArenaReader | None = None) -> None:
        """``selective``: decode ``bslz4`` frames selectively (the windows' pixels and their
        neighbours, the valid-pixel sum from the compressed bit planes: ``stream.bslz4_partial``);
        False decodes every frame in full (the reference path; the records are the same).
        ``arena``: where frames in shared memory are read (default: a reader of its own); the
        processors of one worker share one, so a segment is mapped once."""
        self.setup = setup
        geometry, self.mask = geometry_and_mask(setup)
        self.shape = geometry.shape
        self.lut: PolarLUT = build_polar_lut(geometry, self.mask, setup.peaks, source="config")
        self.roi = PolarROI(self.lut, self.mask)
        self.decoder = ChunkDecoder()
        self.reader = ChunkReader(reuse_buffer=True)  # each frame is decoded before the next is read
        self.arena = arena if arena is not None else ArenaReader()
        self._buffer = np.empty(self.shape[0] * self.shape[1], dtype=np.uint32)
        self.window_fits = WindowFits(self.lut.windows, setup.fit)
        n = len(self.lut.windows)
        self.n_peaks = n
        self._second = [SecondSpotFinder(w) for w in self.lut.windows]
        self._second_params = np.empty((n, N_PARAMS), dtype=np.float64)
        self._second_errors = np.empty((n, N_PARAMS), dtype=np.float64)
        # hot pixels: found among the windows' pixels, masked here for the rest of this
        # processor's life, reported in the records (at most MAX_HOT_PER_RECORD each)
        self.hot_pixels = HotPixelTracker(self.roi, self.mask)
        self.selective = selective
        self._selective: dict[str, SelectiveDecoder] = {}  # per pixel type, made at its first frame
        self._hot_to_report: list[int] = []
        self._series: int | None = None
        # per-frame ROI sums of a batch (process_many_into), grown to the largest batch seen
        self._batch_sums = np.empty((0, self.roi.sums.size), dtype=np.float64)
        self._batch_counts = np.empty((0, self.roi.counts.size), dtype=np.float64)

    def decode(self, frame: EncodedFrame) -> np.ndarray:
        """The decoded frame as a view of the internal buffer (valid until the next call)."""
        return self.decoder.decode_into(frame, self._buffer)

    def _selective_decoder(self, frame: EncodedFrame) -> SelectiveDecoder | None:
        """The selective decoder for ``frame`` (shape already checked), or None: decode in full."""
        if not self.selective or frame.encoding != "bslz4":
            return None
        decoder = self.selective_decoder_for(frame.dtype)
        return decoder if decoder is not None and decoder.supports(frame) else None

    def selective_decoder_for(self, dtype: str) -> SelectiveDecoder | None:
        """The selective decoder for ``bslz4`` frames of ``dtype``, made at the first call
        (≈ 5 ms for an EIGER 4M); None for a pixel type it does not handle."""
        if dtype not in ITEMSIZE:
            return None
        decoder = self._selective.get(dtype)
        if decoder is None:
            # the pixels the ROI pass reads, from the LUT as built: hot pixels found later only
            # shrink it, and the whole-frame sum never depended on it
            needed = with_neighbours(self.lut.pixel_index, self.shape)
            decoder = self._selective[dtype] = SelectiveDecoder(self.shape, dtype, needed, self.mask)
        return decoder

    def _decode_frame(self, frame: EncodedFrame) -> tuple[np.ndarray, tuple[int, int] | None]:
        """``(image, valid)``: the frame as a view of the internal buffer, and ``(valid sum,
        valid pixels)`` when the selective decoder gave them (None: take them from the image).
        After a selective decode only the windows' pixels and their neighbours hold this frame."""
        decoder = self._selective_decoder(frame)
        if decoder is None:
            return self.decode(frame), None
        valid = decoder.decode_into(frame, self._buffer)
        rows, cols = self.shape
        itemsize = ITEMSIZE[frame.dtype]
        image = self._buffer.view(np.uint8)[:rows * cols * itemsize].view(frame.dtype).reshape(rows, cols)
        return image, valid

    def _fail(self, rec, status: int) -> None:
        rec["status"] = status
        rec["n_valid"] = 0
        rec["intensity"] = np.nan
        rec["params"] = np.nan
        rec["errors"] = np.nan
        rec["fit_status"] = FIT_FRAME_FAILED
        rec["second_params"] = np.nan
        rec["second_errors"] = np.nan
        rec["second_status"] = SECOND_NOT_TRIED

    def process_into(self, frame: EncodedFrame, rec) -> str:
        """Process ``frame`` into record ``rec`` (a structured-array element)."""
        sums = self.roi.sums
        rec["hot_pixels"] = -1
        message, counts = self._integrate(frame, rec, sums, self.roi.counts)
        if counts is not None:
            self._fit(rec, sums, counts)
        return message

    def process_many_into(self, frames: Sequence[EncodedFrame], records: np.ndarray) -> list[str]:
        """:meth:`process_into` of each frame into ``records[i]``, same records, in two passes:
        decode and ROI sums of every frame first (each frame's sums kept), then every frame's
        fits. The fits' code and tables then stay in cache from one frame to the next instead
        of being evicted by each frame's decode: ≈ 0.04 ms less per EIGER 4M frame (measured,
        docs/fit_model.md). Returns each frame's message ("" when fine)."""
        n = len(frames)
        if self._batch_sums.shape[0] < n:
            self._batch_sums = np.empty((n, self.roi.sums.size), dtype=np.float64)
            self._batch_counts = np.empty((n, self.roi.counts.size), dtype=np.float64)
        messages, pending = [], []
        # "no hot pixel reported" for the whole batch at once: per frame, this one numpy step
        # cost ≈ 16 µs with Python's code out of cache after each decode (docs/live_path.md)
        records["hot_pixels"][:n] = -1
        for i, frame in enumerate(frames):
            message, counts = self._integrate(frame, records[i], self._batch_sums[i], self._batch_counts[i])
            messages.append(message)
            if counts is not None:
                pending.append((i, counts))
        for i, counts in pending:
            self._fit(records[i], self._batch_sums[i], counts)
        return messages

    def _integrate(self, frame: EncodedFrame, rec, sums: np.ndarray,
                   counts: np.ndarray) -> tuple[str, np.ndarray | None]:
        """The first part of :meth:`process_into`: read, check, decode, valid-pixel sum and
        the windows' ROI sums into ``sums`` (and ``counts`` where needed). ``rec["hot_pixels"]``
        must hold −1 already (the callers fill it): only hot pixels found are written. Returns ``(message,
        counts)``: the valid pixels per bin (:meth:`integrate_windows`) when the frame is fine
        and :meth:`_fit` must follow with ``sums`` and them, else None."""
        t0 = time.perf_counter()
        if frame.source is not None and not len(frame.blob) and not frame.error:
            if isinstance(frame.source, ArenaSlice):
                frame = frame.with_blob(self.arena.view(frame.source))
            else:
                frame = self.reader.read(frame)
        if frame.series != self._series:
            # a processor outlives its series (workers are cached per setup): the pixels it
            # masked earlier are reported again, so each run's file lists every pixel masked in it
            if self._series is not None:
                self._hot_to_report.extend(p for p in self.hot_pixels.hot if p not in self._hot_to_report)
            self._series = frame.series
        rec["series"] = frame.series
        rec["frame"] = frame.frame
        rec["receive_time"] = frame.receive_time
        rec["decode_s"] = 0.0
        message = ""
        fit = None
        if frame.error:
            self._fail(rec, FRAME_MISSING)
            message = f"frame {frame.frame}: {frame.error}"
        elif frame.dtype not in DTYPES:
            self._fail(rec, FRAME_WRONG_DTYPE)
            message = f"frame {frame.frame}: pixel type {frame.dtype!r} is not one of {DTYPES}"
        elif tuple(frame.shape) != self.shape:
            self._fail(rec, FRAME_WRONG_SHAPE)
            message = f"frame {frame.frame}: shape {tuple(frame.shape)} is not the detector's {self.shape}"
        else:
            try:
                image, valid = self._decode_frame(frame)
            except CorruptFrameError as exc:
                self._fail(rec, FRAME_CORRUPT)
                message = f"frame {frame.frame}: corrupt ({exc})"
            else:
                rec["decode_s"] = time.perf_counter() - t0
                total, n_valid = self.roi.valid_sum(image) if valid is None else valid
                if n_valid == 0:
                    self._fail(rec, FRAME_ALL_MASKED)
                    message = f"frame {frame.frame}: every pixel is masked"
                else:
                    rec["status"] = FRAME_OK
                    rec["n_valid"] = n_valid
                    rec["intensity"] = float(total)
                    fit = self.integrate_windows(image, sums, counts)
        if self._hot_to_report:
            self._report_hot_pixels(rec)
        rec["process_s"] = time.perf_counter() - t0
        if fit is None:
            rec["done_time"] = time.time()
        return message, fit

    def _fit(self, rec, sums: np.ndarray, counts: np.ndarray) -> None:
        """The second part of :meth:`process_into`: the fits of the sums :meth:`_integrate` made."""
        t0 = time.perf_counter()
        self.fit_integrated(rec, sums, counts)
        rec["done_time"] = time.time()
        rec["process_s"] += time.perf_counter() - t0

    def fit_windows(self, image: np.ndarray, rec) -> None:
        """The windows' part of a frame (``make bench``'s "ROI + 3 fits"): polar ROI sums with the
        hot-pixel search, every window's fit and second-spot test, into ``rec``'s fit fields.
        ``image`` ``(rows, cols)`` is already checked for dtype and shape."""
        counts = self.integrate_windows(image, self.roi.sums, self.roi.counts)
        self.fit_integrated(rec, self.roi.sums, counts)

    def integrate_windows(self, image: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """The windows' ROI sums of ``image`` into ``sums`` (float64, the LUT's bins), finding hot
        pixels on the way (masked from now on, listed in the record of the frame found in).
        ``image`` ``(rows, cols)`` C-contiguous, its dtype and shape already checked (as the
        decoder's frames are: the checks are not repeated on this path). Returns the valid pixels per bin: ``counts``, filled, where some differ from the LUT's
        (a window pixel at the sentinel, a hot pixel found), else the LUT's own ``bin_pixels``
        (not copied: a new array replaces it when the LUT changes, so it stays this frame's)."""
        bin_pixels = self.roi.bin_pixels
        found = self.hot_pixels.accumulate_flat(image.reshape(-1), sentinel_of(image.dtype), sums, counts, True)
        if found.size:
            self.lut = self.roi.lut
            self._hot_to_report.extend(int(p) for p in found)
        return counts if self.hot_pixels.counts_written else bin_pixels

    def fit_integrated(self, rec, sums: np.ndarray, counts: np.ndarray) -> None:
        """Every window's fit and second-spot test of the ROI sums ``sums``/``counts`` into ``rec``."""
        if self.window_fits.run(sums, counts, rec):
            self._fit_second_spots(rec, sums, counts)

    def _fit_second_spots(self, rec, bin_sums: np.ndarray, bin_counts: np.ndarray) -> None:
        """The two-spot fit where the residual test found something (a few % of fits): the
        record's first spot may change (the stronger of the two), the second is filled in."""
        fits = self.window_fits
        params, errors = rec["params"], rec["errors"]
        second_params, second_errors, second_status = rec["second_params"], rec["second_errors"], rec["second_status"]
        sp, se = self._second_params, self._second_errors
        for k in np.flatnonzero(fits.residual_z >= self.setup.fit.min_snr):
            sums, counts = self.roi.window_sums(k, bin_sums, bin_counts)
            second_status[k] = self._second[k].find(sums, counts, fits.params[k], fits.errors[k], sp[k], se[k],
                                                    fits.works[k], self.setup.fit, float(fits.residual_z[k])).status
            params[k], errors[k] = fits.params[k], fits.errors[k]
            second_params[k], second_errors[k] = sp[k], se[k]
            params[k, _PHI0] = wrap_deg(params[k, _PHI0])
            second_params[k, _PHI0] = wrap_deg(second_params[k, _PHI0])

    def _report_hot_pixels(self, rec) -> None:
        """Put up to MAX_HOT_PER_RECORD hot pixels found and not yet reported into ``rec`` as
        (row, col); the rest of ``rec["hot_pixels"]`` keeps the −1 its callers filled in."""
        out = rec["hot_pixels"]
        pending = self._hot_to_report
        if pending:
            n = min(len(pending), MAX_HOT_PER_RECORD)
            out[:n, 0], out[:n, 1] = np.divmod(pending[:n], self.shape[1])
            del pending[:n]
