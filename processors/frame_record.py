"""The fixed-size record a worker returns for each frame, and the status codes in it."""

from __future__ import annotations

import numpy as np

#: Frame-level status (``status`` field, and ``/entry/results/frames`` ``status``).
FRAME_OK = 0
FRAME_CORRUPT = 1          # blob does not decode (truncated, bad header, size that lies)
FRAME_WRONG_SHAPE = 2      # decoded shape is not the detector's
FRAME_WRONG_DTYPE = 3      # pixel type we cannot use
FRAME_ALL_MASKED = 4       # no valid pixel left
FRAME_MISSING = 5          # known to exist but unreadable (e.g. data file behind a link missing)
FRAME_WORKER_FAILED = 6    # the worker processing it died or raised, even after a retry
FRAME_NOT_MEASURED = -1    # map points no frame arrived for

FRAME_STATUS_NAMES = {
    FRAME_OK: "ok", FRAME_CORRUPT: "corrupt", FRAME_WRONG_SHAPE: "wrong_shape",
    FRAME_WRONG_DTYPE: "wrong_dtype", FRAME_ALL_MASKED: "all_masked", FRAME_MISSING: "missing",
    FRAME_WORKER_FAILED: "worker_failed",
    FRAME_NOT_MEASURED: "not_measured",
}

#: Per-peak fit status (``fit_status``): the fitter's own codes, 0–5 (what decides them:
#: ``processors.fit_gaussian2d``), then the two set when there was no fit.
FIT_OK = 0
FIT_TOO_FEW_BINS = 1
FIT_NO_PEAK = 2
FIT_OUTSIDE_WINDOW = 3
FIT_NOT_CONVERGED = 4
FIT_SINGULAR = 5           # also: array sizes disagree or ``work`` too small (unvalidated kernel call)
FIT_FRAME_FAILED = 6       # the frame itself failed (see ``status``)
FIT_NOT_MEASURED = -1      # map points no frame arrived for

#: The fitter's own codes (exactly 0–5) and their names.
FIT_STATUS_NAMES: dict[int, str] = {
    FIT_OK: "ok",
    FIT_TOO_FEW_BINS: "too_few_bins",
    FIT_NO_PEAK: "no_peak",
    FIT_OUTSIDE_WINDOW: "outside_window",
    FIT_NOT_CONVERGED: "not_converged",
    FIT_SINGULAR: "singular",
}

#: Second-spot status per peak (``second_status``; ``processors.second_spot``).
SECOND_NOT_TRIED = -1      # the first fit was not ok (or the frame failed / was not measured)
SECOND_NONE = 0            # the residual test found no second significant spot
SECOND_FOUND = 1           # a second spot was found and fitted (``second_params``)
SECOND_FIT_FAILED = 2      # the residual test found one, but the two-spot fit failed (first kept as fitted alone)

SECOND_STATUS_NAMES: dict[int, str] = {
    SECOND_NOT_TRIED: "not_tried", SECOND_NONE: "none", SECOND_FOUND: "found", SECOND_FIT_FAILED: "fit_failed",
}

#: Newly masked hot pixels a record can carry ((row, col) detector pixels, −1 padded); a
#: worker that finds more reports the rest with its next records.
MAX_HOT_PER_RECORD = 16

#: Order of the eight fit parameters in ``params``/``errors``.
PARAM_NAMES = ("amplitude", "q0", "dq", "phi0", "dphi", "background", "background_dq", "background_dchi")
N_PARAMS = len(PARAM_NAMES)


def frame_record_dtype(n_peaks: int) -> np.dtype:
    """Structured dtype of one frame's result for ``n_peaks`` configured peaks.

    ``params``/``errors`` are ``(n_peaks, N_PARAMS)`` in :data:`PARAM_NAMES` order: amplitude
    (counts/pixel), q0 (1/Å), dq (FWHM, 1/Å), phi0 (degrees, (−180, 180]), dphi (FWHM,
    degrees), background (counts/pixel). ``intensity`` is the sum of valid pixels.
    ``second_params``/``second_errors`` (same shape and order) hold a second spot found in
    the window (NaN when none), ``second_status`` its ``SECOND_*`` code;
    ``hot_pixels`` ``(MAX_HOT_PER_RECORD, 2)`` (row, col) of detector pixels the worker
    masked as hot while processing this frame, −1 padded.
    Times are seconds (``receive_time``/``done_time`` Unix time).
    """
    return np.dtype([
        ("series", "<i8"), ("frame", "<i8"), ("status", "<i4"),
        ("n_valid", "<i8"), ("intensity", "<f8"),
        ("params", "<f8", (n_peaks, N_PARAMS)), ("errors", "<f8", (n_peaks, N_PARAMS)),
        ("fit_status", "<i4", (n_peaks,)),
        ("second_params", "<f8", (n_peaks, N_PARAMS)), ("second_errors", "<f8", (n_peaks, N_PARAMS)),
        ("second_status", "<i4", (n_peaks,)),
        ("hot_pixels", "<i4", (MAX_HOT_PER_RECORD, 2)),
        ("receive_time", "<f8"), ("done_time", "<f8"),
        ("decode_s", "<f4"), ("process_s", "<f4"),
    ])


def empty_records(n: int, n_peaks: int) -> np.ndarray:
    """``n`` records meaning "not measured": NaN values, status codes set accordingly."""
    rec = np.zeros(n, dtype=frame_record_dtype(n_peaks))
    rec["series"] = -1
    rec["frame"] = -1
    rec["status"] = FRAME_NOT_MEASURED
    rec["intensity"] = np.nan
    rec["params"] = np.nan
    rec["errors"] = np.nan
    rec["fit_status"] = FIT_NOT_MEASURED
    rec["second_params"] = np.nan
    rec["second_errors"] = np.nan
    rec["second_status"] = SECOND_NOT_TRIED
    rec["hot_pixels"] = -1
    rec["receive_time"] = np.nan
    rec["done_time"] = np.nan
    return rec


def failed_records(frames, n_peaks: int, status: int) -> np.ndarray:
    """Records for ``frames`` (EncodedFrame-like: series, frame, receive_time) that all failed with ``status``."""
    rec = empty_records(len(frames), n_peaks)
    rec["series"] = [f.series for f in frames]
    rec["frame"] = [f.frame for f in frames]
    rec["receive_time"] = [f.receive_time for f in frames]
    rec["status"] = status
    rec["fit_status"] = FIT_FRAME_FAILED
    return rec
