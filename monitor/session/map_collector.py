"""Collector: frame records → maps, joined by ``(series, frame)``, never by arrival order."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np

from processors.config import DerivedConfig, PeakConfig
from processors.derived_maps import derived_maps
from processors.frame_record import (
    FIT_NOT_MEASURED,
    FRAME_ALL_MASKED,
    FRAME_CORRUPT,
    FRAME_MISSING,
    FRAME_NOT_MEASURED,
    FRAME_OK,
    FRAME_WORKER_FAILED,
    FRAME_WRONG_DTYPE,
    FRAME_WRONG_SHAPE,
    PARAM_NAMES,
    SECOND_FOUND,
    empty_records,
)
from processors.process_batch import BatchResult
from stream.raster_scan import RasterScan

log = logging.getLogger(__name__)

#: One row of the per-frame table (``/entry/results/frames``); times in s since the epoch.
FRAMES_TABLE_DTYPE = np.dtype([("series", "<i8"), ("frame", "<i8"), ("row", "<i8"), ("col", "<i8"),
                               ("receive_time", "<f8"), ("done_time", "<f8"), ("status", "<i4")])


@dataclass
class RunCounters:
    """What happened to the frames of a run (written to ``/entry/process``)."""

    received: int = 0       # frames that arrived (read from file or socket)
    decoded: int = 0        # frames whose pixels were decoded
    processed: int = 0      # frames decoded with valid pixels, spots fitted
    dropped: int = 0        # frames skipped by live processing (backlog beyond its bound); none offline
    corrupt: int = 0        # frames that did not decode, or stream messages that were malformed
    late: int = 0           # images for a series that had already ended
    reordered: int = 0      # frames that came after a later frame of their series (placed by number all the same)
    repeated_point: int = 0  # frames displaced by a later frame that the run's events put at their point
    missing: int = 0        # frames known to exist but unreadable (missing data file)
    wrong_shape: int = 0
    wrong_dtype: int = 0
    all_masked: int = 0
    outside_scan: int = 0   # frame numbers beyond the scan's points
    duplicate: int = 0      # a frame number seen twice (the first result is kept)
    worker_failed: int = 0  # frames lost with a worker that died twice on them
    worker_failures: int = 0  # worker deaths and exceptions (each one logged)
    fits_ok: int = 0
    fits_rejected: int = 0
    hot_pixels_masked: int = 0  # distinct detector pixels the workers found hot and masked (list: /entry/process/hot_pixels)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def count_records(c: RunCounters, recs: np.ndarray) -> None:
    """Add what the frame records say (decoded, processed, corrupt, ... fits) to ``c``."""
    status = recs["status"]
    c.decoded += int(np.count_nonzero((status == FRAME_OK) | (status == FRAME_ALL_MASKED)))
    c.processed += int(np.count_nonzero(status == FRAME_OK))
    c.corrupt += int(np.count_nonzero(status == FRAME_CORRUPT))
    c.missing += int(np.count_nonzero(status == FRAME_MISSING))
    c.wrong_shape += int(np.count_nonzero(status == FRAME_WRONG_SHAPE))
    c.wrong_dtype += int(np.count_nonzero(status == FRAME_WRONG_DTYPE))
    c.all_masked += int(np.count_nonzero(status == FRAME_ALL_MASKED))
    c.worker_failed += int(np.count_nonzero(status == FRAME_WORKER_FAILED))
    ok = status == FRAME_OK
    fit_ok = recs["fit_status"][ok] == 0
    c.fits_ok += int(fit_ok.sum())
    c.fits_rejected += int(fit_ok.size - fit_ok.sum())


#: Hot pixels named in one log line at most (the rest are counted).
HOT_PIXELS_LOGGED = 8


def hot_pixels_message(pixels: list[tuple[int, int]]) -> str:
    """One log line for a batch of newly found hot pixels: ``hot pixels masked: N at (row, col), …``."""
    shown = ", ".join(f"({r}, {c})" for r, c in pixels[:HOT_PIXELS_LOGGED])
    more = f" and {len(pixels) - HOT_PIXELS_LOGGED} more" if len(pixels) > HOT_PIXELS_LOGGED else ""
    return (f"hot pixels masked: {len(pixels)} at {shown}{more} (found hot in most frames; "
            "add them to the detector mask)")


@dataclass(frozen=True)
class MapRegion:
    """A rectangle of a map: rows ``row0:row1``, columns ``col0:col1`` (ends exclusive)."""

    row0: int
    row1: int
    col0: int
    col1: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.row1 - self.row0, self.col1 - self.col0)

    @classmethod
    def around(cls, rows: np.ndarray, cols: np.ndarray) -> MapRegion | None:
        """The smallest rectangle holding every ``(rows[i], cols[i])``; None when there are none."""
        if rows.size == 0:
            return None
        return cls(int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1)


@dataclass(frozen=True)
class ResultMaps:
    """All maps of a run, ``[rows, cols]``; see :mod:`monitor.session.results_file` for the layout."""

    intensity: np.ndarray
    frame_status: np.ndarray
    spots: dict[str, dict[str, np.ndarray]] = field(repr=False)
    derived: dict[str, np.ndarray] = field(repr=False)
    #: uint8, 1 inside the supercrystal (processors.supercrystal_mask); None without Bragg peaks
    supercrystal_mask: np.ndarray | None = field(default=None, repr=False)
    #: per peak, its second spot: SECOND_PARAMS (+ ``_error``) and ``found`` (uint8, 1 = found)
    second: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)


#: The second spot's parameters that get maps (``<peak>/second/``); its background duplicates the first's.
SECOND_PARAMS = ("amplitude", "q0", "dq", "phi0", "dphi")


MAX_PARKED = 4096  # records kept aside for the events that may still place them (per run)



def _mean_over_frames(values: np.ndarray, errors: np.ndarray, use: np.ndarray,
                      angle: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per point, the mean of the frames ``use`` marks, and its standard error.

    ``values``, ``errors``, ``use`` are ``(points, frames_per_point)``; an angle (degrees) is
    averaged on the circle when a point has several frames. NaN where no frame is used.
    """
    vals = np.where(use, values, np.nan)
    errs = np.where(use, errors, np.nan)
    n = use.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if angle and values.shape[1] > 1:
            mean = np.degrees(np.angle(np.nansum(np.exp(1j * np.radians(vals)), axis=1)))
        else:
            mean = np.nansum(vals, axis=1) / n
        err = np.sqrt(np.nansum(errs ** 2, axis=1)) / n
    return np.where(n > 0, mean, np.nan), np.where(n > 0, err, np.nan)

class MapCollector:
    """Places frame records into per-frame slots of the scan and builds maps from them.

    ``series_offsets`` maps a series number to the scan frame of its first frame (for a
    scan recorded as several series, e.g. one per line); a series not listed starts at 0.
    """

    def __init__(self, scan: RasterScan, peak_names: tuple[str, ...],
                 series_offsets: dict[int, int] | None = None) -> None:
        self.scan = scan
        self.peak_names = tuple(peak_names)
        self.series_offsets = dict(series_offsets or {})
        self.records = empty_records(scan.n_frames, len(peak_names))
        self.counters = RunCounters()
        # placement by the run's events (bluesky pause and resume: a series gets a frame more than
        # the run has points): the slot each event gave, the frame owning each such slot, and per
        # series the shifts (slot − offset − frame) from the frame on where each one starts
        self._event_slot: dict[tuple[int, int], int] = {}
        self._claimed: dict[int, tuple[int, int]] = {}
        self._shifts: dict[int, list[tuple[int, int]]] = {}
        # records no slot would take (yet): an event may still place them (counted meanwhile)
        self._parked: dict[tuple[int, int], tuple[np.void, str]] = {}
        self._filled: list[np.ndarray] = []  # slots filled since the last take_filled(), in fill order
        self._moved = False                   # placed records moved or removed since take_moved()
        # hot pixels the workers masked (union over the run, in the order reported) and those
        # not yet taken by take_new_hot_pixels()
        self._hot: dict[tuple[int, int], None] = {}
        self._hot_new: list[tuple[int, int]] = []

    def grow(self, n_frames: int) -> None:
        """Make room for ``n_frames`` frames in a 1-D strip (a scan of unknown geometry)."""
        if n_frames <= self.scan.n_frames:
            return
        if self.scan.shape[0] != 1 or self.scan.frames_per_point != 1:
            raise ValueError("only a 1-D strip can grow")
        more = empty_records(n_frames - self.scan.n_frames, len(self.peak_names))
        self.records = np.concatenate([self.records, more])
        self.scan = RasterScan((1, n_frames), motors=self.scan.motors)

    def slot_of_point(self, row: int, col: int) -> int:
        """Index into :attr:`records` of the first frame of map point (row, col); -1 if outside."""
        rows, cols = self.scan.shape
        if not (0 <= row < rows and 0 <= col < cols):
            return -1
        point = row * cols + (cols - 1 - col if self.scan.snake and row % 2 else col)
        return point * self.scan.frames_per_point

    def add(self, result: BatchResult) -> None:
        """Take one batch's records; counts problems, keeps the first result per frame."""
        recs = result.records
        if recs.size == 0:
            return
        c = self.counters
        count_records(c, recs)
        self._add_hot_pixels(recs)
        if self._event_slot:  # a run placed by its events: frame by frame (batches are small)
            for k in range(recs.size):
                self._put(recs[k])
            return
        # a batch holds one series or two: look their offsets up once, not once per record
        series, which = np.unique(recs["series"], return_inverse=True)
        offsets = np.array([self.series_offsets.get(int(s), 0) for s in series], dtype=np.int64)
        slot = recs["frame"] + offsets[which.reshape(-1)]
        inside = (slot >= 0) & (slot < self.scan.n_frames)
        c.outside_scan += int(np.count_nonzero(~inside))
        for r in recs[~inside][:max(0, MAX_PARKED - len(self._parked))]:  # an event may still place them
            self._parked.setdefault((int(r["series"]), int(r["frame"])), (r.copy(), "outside_scan"))
        slot, recs = slot[inside], recs[inside]
        seen = self.records["status"][slot] != FRAME_NOT_MEASURED
        # within one batch a frame number may repeat too: keep its first occurrence
        _, first = np.unique(slot, return_index=True)
        fresh = np.zeros(slot.size, dtype=bool)
        fresh[first] = True
        fresh &= ~seen
        c.duplicate += int(slot.size - fresh.sum())
        self.records[slot[fresh]] = recs[fresh]
        self._filled.append(slot[fresh])

    def _add_hot_pixels(self, recs: np.ndarray) -> None:
        """Add the hot pixels ``recs`` report (whatever their frames' fate: the worker masked them)."""
        pixels = recs["hot_pixels"].reshape(-1, 2)
        for row, col in pixels[pixels[:, 0] >= 0].tolist():
            if (row, col) not in self._hot:
                self._hot[(row, col)] = None
                self._hot_new.append((row, col))
        self.counters.hot_pixels_masked = len(self._hot)

    @property
    def hot_pixels(self) -> np.ndarray:
        """Every hot pixel reported in this run, ``(n, 2)`` int64 (row, col), in the order reported."""
        return np.array(list(self._hot), dtype=np.int64).reshape(-1, 2)

    def take_new_hot_pixels(self) -> list[tuple[int, int]]:
        """Hot pixels (row, col) reported since the last call (to log them)."""
        new, self._hot_new = self._hot_new, []
        return new

    def take_moved(self) -> bool:
        """Whether placed records moved or were removed (events placed frames) since the last call."""
        moved, self._moved = self._moved, False
        return moved

    def take_filled(self) -> np.ndarray:
        """Slots (int64, fill order) filled since the last call: what a results file must add."""
        filled = np.concatenate(self._filled) if self._filled else np.zeros(0, dtype=np.int64)
        self._filled = []
        return filled.astype(np.int64, copy=False)

    def place_by_event(self, series: int, frame: int, slot: int) -> None:
        """The run's events put frame ``frame`` of ``series`` at ``slot`` (0 ≤ slot < n_frames).

        Later frames of the series without an event of their own shift alike (already
        placed ones move); a frame at ``slot`` that no event placed there (the exposure a
        pause interrupted, whose point was measured again) gives way, counted as
        ``repeated_point``, as does any such frame coming later.
        """
        if not 0 <= slot < self.scan.n_frames:
            raise ValueError(f"slot {slot} is outside the map's {self.scan.n_frames} frames")
        key = (series, frame)
        self._event_slot[key] = slot
        self._claimed[slot] = key
        shift = slot - self.series_offsets.get(series, 0) - frame
        shifts = self._shifts.setdefault(series, [])
        changed = self._shift_of(series, frame) != shift
        if changed:
            shifts[:] = sorted([s for s in shifts if s[0] != frame] + [(frame, shift)])
        rec = self.records
        measured = rec["status"] != FRAME_NOT_MEASURED
        mine = measured & (rec["series"] == series)
        # to place again: this frame, whatever sits at its slot, and (when the shift changed)
        # every later frame of the series that no event placed
        again = mine & (rec["frame"] == frame)
        again[slot] |= measured[slot]
        if changed:
            later = mine & (rec["frame"] > frame)
            for k in np.flatnonzero(later):
                later[k] = (series, int(rec["frame"][k])) not in self._event_slot
            again |= later
        if again[slot] and not again.sum() > 1 and (int(rec["series"][slot]), int(rec["frame"][slot])) == key:
            return
        moving = rec[again].copy()
        rec[again] = empty_records(1, len(self.peak_names))[0]
        self._filled.append(np.flatnonzero(again))  # vacated: the file must show them unmeasured
        self._moved = True
        for r in moving[np.argsort(moving["frame"], kind="stable")]:
            self._put(r)
        if changed:
            for parked in [k for k in self._parked if k[0] == series and k[1] >= frame]:
                self._unpark(parked)
        elif key in self._parked:
            self._unpark(key)

    def _unpark(self, key: tuple[int, int]) -> None:
        r, counted_as = self._parked.pop(key)
        setattr(self.counters, counted_as, getattr(self.counters, counted_as) - 1)
        self._put(r)

    def _shift_of(self, series: int, frame: int) -> int:
        """The slot shift of ``frame`` of ``series`` from the events so far (0 without any)."""
        shift = 0
        for start, value in self._shifts.get(series, ()):
            if start > frame:
                break
            shift = value
        return shift

    def _put(self, r: np.void) -> None:
        """Place one record where the events (else its number) put it; count what cannot be placed."""
        key = (int(r["series"]), int(r["frame"]))
        slot = self._event_slot.get(key)
        if slot is None:
            slot = self.series_offsets.get(key[0], 0) + key[1] + self._shift_of(*key)
        inside = 0 <= slot < self.scan.n_frames
        if inside and self._claimed.get(slot, key) == key and self.records["status"][slot] == FRAME_NOT_MEASURED:
            self.records[slot] = r
            self._filled.append(np.array([slot], dtype=np.int64))
            return
        counted_as = ("outside_scan" if not inside else "repeated_point" if self._claimed.get(slot, key) != key
                      else "duplicate")
        setattr(self.counters, counted_as, getattr(self.counters, counted_as) + 1)
        held = self.records[slot] if inside else None
        if held is not None and (int(held["series"]), int(held["frame"])) == key:
            return  # the same frame twice: nothing to keep
        if len(self._parked) < MAX_PARKED and key not in self._parked:
            self._parked[key] = (r.copy(), counted_as)

    # --- maps ------------------------------------------------------------------------
    def _per_point(self, region: MapRegion | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Records ``(n, fpp)`` of the points in ``region`` (all: point order) and their (row, col)
        relative to the region's corner."""
        fpp = self.scan.frames_per_point
        per_point = self.records.reshape(self.scan.n_points, fpp)
        if region is None:
            rows, cols = self.scan.points_of(np.arange(self.scan.n_points) * fpp)
            return per_point, rows, cols
        n_cols = self.scan.shape[1]
        rows, cols = np.meshgrid(np.arange(region.row0, region.row1), np.arange(region.col0, region.col1),
                                 indexing="ij")
        rows, cols = rows.ravel(), cols.ravel()
        # a snake scan's odd rows run backwards: the inverse of RasterScan.points_of
        along = np.where(self.scan.snake & (rows % 2 == 1), n_cols - 1 - cols, cols)
        return per_point[rows * n_cols + along], rows - region.row0, cols - region.col0

    def result_maps(self, peaks: tuple[PeakConfig, ...], derived: DerivedConfig,
                    wh_peaks: tuple[str, ...], region: MapRegion | None = None) -> ResultMaps:
        """Maps of every fitted quantity, errors, statuses and derived quantities.

        With several frames per point, a point shows the mean of its frames' accepted
        fits and the sum of their intensities. ``region``: only that rectangle of the map
        (maps of its shape); every value depends on its own point only, so a region's maps
        equal the same cut of the whole maps.
        """
        points, rows, cols = self._per_point(region)
        shape = self.scan.shape if region is None else region.shape

        def place(values: np.ndarray, fill=np.nan, dtype=np.float64) -> np.ndarray:
            out = np.full(shape, fill, dtype=dtype)
            out[rows, cols] = values
            return out

        status = points["status"]
        measured = status != FRAME_NOT_MEASURED
        values = points["intensity"]
        intensity = np.where(np.isfinite(values).any(axis=1), np.nansum(values, axis=1), np.nan)
        frame_status = np.where(measured.any(axis=1), np.where(measured, status, 10**6).min(axis=1),
                                FRAME_NOT_MEASURED)
        spots: dict[str, dict[str, np.ndarray]] = {}
        for k, name in enumerate(self.peak_names):
            fit_status = points["fit_status"][:, :, k]
            accepted = fit_status == 0
            m: dict[str, np.ndarray] = {}
            for j, pname in enumerate(PARAM_NAMES):
                mean, err = _mean_over_frames(points["params"][:, :, k, j], points["errors"][:, :, k, j],
                                              accepted, pname == "phi0")
                m[pname] = place(mean)
                m[f"{pname}_error"] = place(err)
            # a point's status: ok if any frame fitted, else the first frame's reason
            best = np.where(accepted.any(axis=1), 0, fit_status[:, 0])
            m["status"] = place(best, FIT_NOT_MEASURED, np.int32)
            spots[name] = m
        second = {name: self._second_maps(points, k, place) for k, name in enumerate(self.peak_names)}
        derived_out = derived_maps(peaks, derived, wh_peaks, spots)
        for name in self.peak_names:
            spots[name]["dphi_do"] = derived_out.pop(f"dphi_do/{name}")
            spots[name]["dphi_do_error"] = derived_out.pop(f"dphi_do_error/{name}")
        return ResultMaps(intensity=place(intensity), frame_status=place(frame_status, FRAME_NOT_MEASURED, np.int32),
                          spots=spots, derived=derived_out, second=second,
                          supercrystal_mask=derived_out.pop("supercrystal_mask", None))

    @staticmethod
    def _second_maps(points: np.ndarray, k: int, place) -> dict[str, np.ndarray]:
        """Peak ``k``'s second-spot maps: the mean over a point's frames that found one, and the flag."""
        found = points["second_status"][:, :, k] == SECOND_FOUND
        n = found.sum(axis=1)
        m: dict[str, np.ndarray] = {}
        for pname in SECOND_PARAMS:
            j = PARAM_NAMES.index(pname)
            mean, err = _mean_over_frames(points["second_params"][:, :, k, j], points["second_errors"][:, :, k, j],
                                          found, pname == "phi0")
            m[pname] = place(mean)
            m[f"{pname}_error"] = place(err)
        m["found"] = place((n > 0).astype(np.uint8), 0, np.uint8)
        return m

    def frames_table(self, slots: np.ndarray | None = None) -> np.ndarray:
        """Per-frame table: series, frame, row, col, receive/done times, status; one row per
        measured frame in slot order, or per slot of ``slots`` (in their order)."""
        rec = self.records
        idx = np.flatnonzero(rec["status"] != FRAME_NOT_MEASURED) if slots is None else np.asarray(slots)
        rows, cols = self.scan.points_of(idx)
        table = np.zeros(idx.size, dtype=FRAMES_TABLE_DTYPE)
        table["series"] = rec["series"][idx]
        table["frame"] = rec["frame"][idx]
        table["row"], table["col"] = rows, cols
        table["receive_time"] = rec["receive_time"][idx]
        table["done_time"] = rec["done_time"][idx]
        table["status"] = rec["status"][idx]
        return table
