"""Build the inspector's view of one frame: decode, integrate, fit, and locate on the detector."""

from __future__ import annotations

import numpy as np

from monitor.links.frame_link import FrameUnavailable
from monitor.links.map_snapshot import FrameView, PeakView
from processors.angles import wrap_deg
from processors.frame_processor import FrameProcessor, cached_pixel_geometry
from processors.frame_record import frame_record_dtype
from processors.gaussian2d_model import gaussian2d_patch
from processors.polar_lut import wrap_into_window
from processors.process_batch import processor_for
from stream.encoded_frame import EncodedFrame


def stored_frame_at(collector, row: int, col: int, recent, recorder) -> tuple[EncodedFrame, str]:
    """The still-compressed frame of map point ``(row, col)`` of ``collector`` (a MapCollector),
    from ``recent`` (RecentFrames) or else ``recorder`` (a StreamRecorder or None), and where it
    came from; :class:`FrameUnavailable` says why there is none."""
    slot = collector.slot_of_point(row, col)
    if slot < 0:
        raise FrameUnavailable(f"point ({row}, {col}) is outside the {collector.scan.shape} map")
    rec = collector.records[slot]
    series, number = int(rec["series"]), int(rec["frame"])
    if number < 0:
        raise FrameUnavailable(f"point ({row}, {col}) has no frame yet")
    frame = recent.get((series, number))
    source = "ring buffer of recent frames"
    if frame is None and recorder is not None:
        frame = recorder.read_frame(series, number)
        source = "recording"
    if frame is None:
        raise FrameUnavailable(f"frame {number} of series {series} is no longer in memory"
                               + ("" if recorder else "; record the run (--record) to inspect older frames"))
    return frame, source


def window_labels(processor: FrameProcessor) -> np.ndarray:
    """``(rows, cols)`` uint8: k where a pixel feeds peak window k−1, 0 elsewhere."""
    labels = np.zeros(processor.shape[0] * processor.shape[1], dtype=np.uint8)
    for k, w in enumerate(processor.lut.windows):
        inside = (processor.lut.bin_index >= w.offset) & (processor.lut.bin_index < w.offset + w.n_bins)
        labels[processor.lut.pixel_index[inside]] = k + 1
    return labels.reshape(processor.shape)


def frame_view(processor: FrameProcessor, frame: EncodedFrame, *, run: str, row: int, col: int,
               q_map: np.ndarray | None = None, chi_map: np.ndarray | None = None, source: str = "") -> FrameView:
    """The :class:`FrameView` of ``frame``: pixels, mask, windows, polar patches, fits.

    ``q_map``/``chi_map`` (1/Å, degrees per pixel) place the fitted centres on the
    detector; without them no centre is marked.
    """
    record = np.zeros(1, dtype=frame_record_dtype(processor.n_peaks))
    message = processor.process_into(frame, record[0])
    if message:
        raise ValueError(message)
    image = processor.decode(frame).astype(np.float32)
    rec = record[0]
    peaks = []
    for k, window in enumerate(processor.lut.windows):
        sums, counts = processor.roi.window_sums(k)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(counts > 0, sums / counts, np.nan)
        params = rec["params"][k].copy()
        # the fit works in the window's χ branch; show the model there too
        in_branch = params.copy()
        in_branch[3] = wrap_into_window(np.asarray(params[3]), window.chi_range[0])
        model = gaussian2d_patch(in_branch, window.q_centers, window.chi_centers)
        centre = None
        if q_map is not None and chi_map is not None and np.isfinite(params[1]):
            dchi = wrap_deg(chi_map - params[3])
            # nearest pixel in (q, χ), χ scaled to q by the window's aspect so neither dominates
            scale = (window.q_range[1] - window.q_range[0]) / (window.chi_range[1] - window.chi_range[0])
            dist = (q_map - params[1]) ** 2 + (dchi * scale) ** 2
            r, c = np.unravel_index(int(np.argmin(dist)), dist.shape)
            centre = (float(r), float(c))
        peaks.append(PeakView(window.name, window.q_centers, window.chi_centers, mean, model, params,
                              int(rec["fit_status"][k]), centre))
    return FrameView(run=run, series=frame.series, frame=frame.frame, row=row, col=col, image=image,
                     mask=processor.mask, window_labels=window_labels(processor), peaks=tuple(peaks), source=source)


def run_frame_view(runs: dict, setups, recent, recorder, run_id: str, row: int, col: int) -> FrameView:
    """The inspector's view of map point ``(row, col)`` of run ``run_id`` (``runs``: uid →
    ``RunState``): its frame found where it is kept (:func:`stored_frame_at`), processed with the
    setup of its series (``setups``: ``SeriesSetups``). :class:`FrameUnavailable` says why there
    is none."""
    run = runs.get(run_id)
    if run is None:
        raise FrameUnavailable(f"no run {run_id!r} in this processor (runs: {', '.join(runs) or 'none'})")
    frame, source = stored_frame_at(run.collector, row, col, recent, recorder)
    series, number = frame.series, frame.frame
    setup = setups.of_series(series)
    geometry = cached_pixel_geometry(setup.poni_text, setup.poni_source)
    try:
        return frame_view(processor_for(setup), frame, run=run_id, row=row, col=col, q_map=geometry.q_A,
                          chi_map=geometry.chi_deg, source=source)
    except ValueError as exc:
        raise FrameUnavailable(f"frame {number} of series {series}: {exc}") from exc
