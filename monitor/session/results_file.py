"""The results file (``results.h5``): NeXus-flavoured, opens in ``silx view``.

Layout (design §5)::

    /                            @default = "entry"
    /entry                       NXentry, @default = "results"
    /entry/results               NXdata, @signal = "intensity", @axes = ["y", "x"]
        intensity                [rows, cols] counts of valid pixels
        frame_status             [rows, cols] frame status per point (0 ok, -1 not measured, ...)
        frames                   per-frame table (series, frame, row, col, receive_time, done_time, status)
        y, x                     map axes (µm when the scan step is known, else point index)
        <peak>/                  NXdata per peak, @signal = "amplitude"
            amplitude q0 dq phi0 dphi background  (+ *_error), status, dphi_do, dphi_do_error
            second/              NXdata: a second spot in the window, amplitude q0 dq phi0 dphi (+ *_error),
                                 found (uint8: 1 where a point's frame had one)
        derived/                 NXdata, @signal = "size": a b c size microstrain a_sc1 a_sc2 a_sc strain_*
                                 (+ *_error), bragg_intensity
        supercrystal_mask        [rows, cols] uint8, 1 inside the supercrystal (docs/statistics.md)
    /entry/scan                  x, y positions, shape, snake, motor names
    /entry/process               NXprocess: program, version, config and PONI text, times, counters,
                                 run_uid, parent_uid, geometry, exit_status, timing/ (this run's),
                                 hot_pixels [n, 2] (row, col) found hot and masked by the workers

The file is written in HDF5 SWMR mode (single writer, multiple readers): every group,
dataset and attribute it will ever hold is made when it is created, then SWMR starts and
each write only changes values inside existing datasets (maps and axes are chunked and
resized when a strip grows; the frames table is appended to) and flushes. So a reader
may open it at any time during a run with ``h5py.File(p, "r", swmr=True)`` (or
:func:`open_results`, or ``silx view``), and it is complete whenever the writer is closed.
Strings written after SWMR starts (``end_time``, ``exit_status``, ``stopped_by``, ``error``)
are fixed-length UTF-8 (:data:`STRING_BYTES`): SWMR cannot write variable-length strings.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np

from monitor.session.map_collector import FRAMES_TABLE_DTYPE, MapCollector, RunCounters
from monitor.session.results_template import ResultsTemplate, ResultsTemplates
from monitor.session.results_update import ResultsUpdate
from processors.config import NanomapsConfig
from processors.frame_record import FRAME_STATUS_NAMES
from stream.output_path import OutputPathError, check_output_file
from stream.raster_scan import RasterScan

UNITS = {
    "amplitude": "counts", "q0": "1/angstrom", "dq": "1/angstrom", "phi0": "degrees", "dphi": "degrees",
    "background": "counts", "background_dq": "counts angstrom", "background_dchi": "counts/degree",
    "dphi_do": "degrees", "a": "angstrom", "b": "angstrom", "c": "angstrom",
    "size": "nm", "microstrain": "1", "a_sc1": "nm", "a_sc2": "nm", "a_sc": "nm",
    "bragg_intensity": "counts/pixel * 1/angstrom * degrees",
}
LONG_NAMES = {
    "amplitude": "peak amplitude", "q0": "peak position q0", "dq": "radial width Δq (FWHM)",
    "phi0": "azimuth φ0", "dphi": "azimuthal width Δφ (FWHM)", "background": "background at the window centre",
    "background_dq": "background slope in q", "background_dchi": "background slope in χ",
    "dphi_do": "orientational disorder Δφ_do", "a": "lattice parameter a", "b": "lattice parameter b",
    "c": "lattice parameter c", "size": "NC size (Williamson–Hall)", "microstrain": "microstrain ε",
    "a_sc1": "superlattice a1", "a_sc2": "superlattice a2", "a_sc": "⟨a_SC⟩", "intensity": "integrated intensity",
    "bragg_intensity": "Bragg spot volume above background", "supercrystal_mask": "inside the supercrystal (1)",
}


#: Size in bytes of the string fields written during a run (longer text is cut at a character).
STRING_BYTES = {"end_time": 64, "exit_status": 64, "stopped_by": 64, "error": 4096}
#: Frames table rows per chunk (it grows by appending).
FRAMES_CHUNK = 4096


def nanomaps_version() -> str:
    try:
        return metadata.version("nanomaps")
    except metadata.PackageNotFoundError:
        return "unknown"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat()


def _fixed(text: str, size: int) -> bytes:
    """``text`` as UTF-8 in at most ``size`` bytes, cut at a character boundary."""
    return text.encode("utf-8")[:size].decode("utf-8", errors="ignore").encode("utf-8")


def _map_chunks(shape: tuple[int, int], itemsize: int) -> tuple[int, int]:
    """Chunks of whole rows (~64 KiB), so a write of the rows just measured touches few chunks;
    a 1-D strip (one row, grows) gets fixed 1024-point chunks."""
    rows, cols = shape
    if rows == 1:
        return (1, 1024)
    cols_c = max(1, min(cols, 65536 // itemsize))
    return (max(1, min(rows, 65536 // (itemsize * cols_c))), cols_c)


def make_layout_template(templates: ResultsTemplates, scan: RasterScan, **layout) -> None:
    """Make the template of files of ``scan`` and ``layout`` (:class:`ResultsWriter`'s keyword
    arguments) now, ahead of the first such file (a live session, for a run on its config's
    ``[scan]``, before data flow). Never raises: without a usable temporary folder each file is
    made directly, as without templates."""
    with contextlib.suppress(OSError):  # OutputPathError included
        writer = ResultsWriter(Path(tempfile.gettempdir()) / "nanomaps-layout.h5", templates.config, scan,
                               create=False, templates=templates, **layout)
        writer._template()


def open_results(path: str | Path) -> h5py.File:
    """Open a results file for reading, also while a run still writes it (SWMR reader).

    A plain open fails on a file open for SWMR writing ("already open for write"); a SWMR
    open of a closed file works too but is tried second, so a finished file opens as usual.
    """
    try:
        return h5py.File(path, "r")
    except OSError as plain:
        try:
            return h5py.File(path, "r", swmr=True)
        except OSError:
            raise plain from None


class ResultsWriter:
    """Creates ``path`` with every dataset it will hold, switches to SWMR, then :meth:`write`
    writes :class:`ResultsUpdate` s into them.

    ``timing_keys``: the ``/entry/process/timing`` figures the run will write (ms; NaN until
    written); none: no ``timing`` group. Not thread-safe: one thread writes at a time.

    :attr:`stale` is True after a failed write, until a ``full`` update succeeds: the failed
    update's changes were taken from the collector, so the next update must hold everything.
    """

    def __init__(self, path: str | Path, config: NanomapsConfig, scan: RasterScan, *,
                 inputs: tuple[str, ...] = (), poni_text: str = "", setup_id: str = "", run_uid: str = "",
                 parent_uid: str = "", geometry: str = "config", timing_keys: tuple[str, ...] = (),
                 create: bool = True, templates: ResultsTemplates | None = None) -> None:
        """``create=False`` leaves making the file to :meth:`create` (or the first :meth:`write`):
        a live run has it made on its writer thread, not in the loop its frames wait in.
        ``templates``: the session's layouts (``monitor.session.results_template``): the file
        is made from the template of its layout, which is made first if there is none."""
        self.path = check_output_file(path, what="results file")
        self.config = config
        self.scan = scan
        self.start_time = time.time()
        self._map_paths: list[str] = []  # every map (resized together when the scan grows)
        # the file's objects by path, looked up once: a periodic write touches about 130 datasets,
        # and each h5py path lookup costs ≈ 0.1 ms holding the GIL (twice the write itself)
        self._handles: dict[str, h5py.Group | h5py.Dataset] = {}
        self.stale = False
        self._file: h5py.File | None = None
        self._layout = (inputs, poni_text, setup_id, run_uid, parent_uid, geometry, timing_keys)
        self._templates = templates if templates is not None and templates.config is config else None
        if create:
            self.create()

    def create(self) -> None:
        """Make the file with every dataset it will hold and switch it to SWMR (once: later
        calls do nothing). Raises :class:`OutputPathError` when the file cannot be made."""
        if self._file is not None:
            return
        # made under a hidden name and renamed once in SWMR mode: a reader never meets the file
        # while it is open for plain writing (locked); the rename keeps the open file (POSIX)
        creating = self.path.with_name(f".{self.path.name}.creating-{os.getpid()}")
        template = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._templates is not None:
                with contextlib.suppress(OSError):  # no temporary folder: the file is made directly
                    template = self._template()
            if template is not None:
                creating.write_bytes(template.image)
                self._file = h5py.File(creating, "r+", libver=("v110", "latest"))
            else:
                # v110 is the oldest file format SWMR works with (readers need HDF5 >= 1.10)
                self._file = h5py.File(creating, "w", libver=("v110", "latest"))
        except OSError as exc:
            with contextlib.suppress(OSError):  # the template's bytes, written before the open failed
                creating.unlink(missing_ok=True)
            raise OutputPathError(f"results file {self.path}: cannot create it ({exc}). "
                                  "Fix: choose another folder or name") from None
        try:
            if template is None:
                self._create(*self._layout)
            else:
                self._map_paths = list(template.map_paths)
                self._write_run_strings()
            self._file.flush()
            self._file.swmr_mode = True
            os.replace(creating, self.path)
        except BaseException:
            self._file.close()
            self._file = None
            self._map_paths = []
            self._handles.clear()
            creating.unlink(missing_ok=True)
            raise

    def _layout_key(self) -> tuple:
        """What the layout depends on besides the config: the scan, the timing figures and how
        many inputs are named (``process/inputs`` has one string each)."""
        inputs, timing_keys = self._layout[0], self._layout[6]
        return self.scan, tuple(timing_keys), len(inputs) or 1

    def _template(self) -> ResultsTemplate:
        """The template of this file's layout, made now if the session has none yet (as a
        file of its own in a temporary folder, read back and removed)."""
        key = self._layout_key()
        template = self._templates.get(key)
        if template is not None:
            return template
        with tempfile.TemporaryDirectory(prefix="nanomaps-template-") as folder:
            path = Path(folder) / "template.h5"
            self._file = h5py.File(path, "w", libver=("v110", "latest"))
            try:
                self._create(*self._layout)
                map_paths = tuple(self._map_paths)
            finally:
                self._file.close()
                self._file = None
                self._map_paths = []
            template = ResultsTemplate(path.read_bytes(), map_paths)
        self._templates.put(key, template)
        return template

    def _write_run_strings(self) -> None:
        """The strings that differ between files of one layout, over the template's: written
        before SWMR starts (SWMR cannot write variable-length strings)."""
        inputs, poni_text, setup_id, run_uid, parent_uid, geometry, _ = self._layout
        process = self._file["entry/process"]
        for name, value in (("config", self.config.text), ("config_file", str(self.config.path)),
                            ("poni", poni_text), ("setup_id", setup_id), ("run_uid", run_uid),
                            ("parent_uid", parent_uid), ("geometry", geometry),
                            ("start_time", _iso(self.start_time))):
            process[name][()] = value
        process["inputs"][...] = np.array(list(inputs) if inputs else [""], dtype=h5py.string_dtype())

    # --- layout: everything before SWMR --------------------------------------------------
    def _create(self, inputs, poni_text, setup_id, run_uid, parent_uid, geometry, timing_keys) -> None:
        config, f = self.config, self._file
        f.attrs["default"] = "entry"  # NeXus: silx and friends open the maps directly
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["default"] = "results"
        results = entry.create_group("results")
        results.attrs["NX_class"] = "NXdata"
        results.attrs["signal"] = "intensity"
        results.attrs["axes"] = ["y", "x"]
        self._create_scan(entry.create_group("scan"))
        process = entry.create_group("process")
        process.attrs["NX_class"] = "NXprocess"
        process.create_dataset("program", data="nanomaps")
        process.create_dataset("version", data=nanomaps_version())
        process.create_dataset("config", data=config.text)
        process.create_dataset("config_file", data=str(config.path))
        process.create_dataset("poni", data=poni_text)
        process.create_dataset("inputs", data=list(inputs) if inputs else [""])
        process.create_dataset("setup_id", data=setup_id)
        process.create_dataset("run_uid", data=run_uid)          # bluesky run (live) or "" (offline)
        process.create_dataset("parent_uid", data=parent_uid)    # the run a rescan was drawn on
        process.create_dataset("geometry", data=geometry)        # where the map shape came from
        process.create_dataset("start_time", data=_iso(self.start_time))
        # end_time; exit_status: the bluesky run's (success / abort / fail); stopped_by (live: series,
        # signal, idle or error, set at the end); error: what failed when stopped_by is "error"
        for name, size in STRING_BYTES.items():
            process.create_dataset(name, shape=(), dtype=h5py.string_dtype("utf-8", size))
        process.create_dataset("status_codes", data=[f"{k}: {v}" for k, v in sorted(FRAME_STATUS_NAMES.items())])
        for key in RunCounters().as_dict():
            process.create_dataset(key, data=np.int64(0))
        if timing_keys:
            group = process.create_group("timing")
            group.attrs["NX_class"] = "NXcollection"
            for key in timing_keys:
                ds = group.create_dataset(key, data=np.float64(np.nan))
                if key.endswith("_ms"):
                    ds.attrs["units"] = "ms"
        hot = process.create_dataset("hot_pixels", shape=(0, 2), maxshape=(None, 2), dtype=np.int64, chunks=(256, 2))
        hot.attrs["columns"] = ["row", "col"]
        hot.attrs["long_name"] = "detector pixels found hot during the run and masked in the peak windows"
        results.create_dataset("frames", shape=(0,), maxshape=(None,), dtype=FRAMES_TABLE_DTYPE, chunks=(FRAMES_CHUNK,))
        # the maps of an empty 1 × 1 scan give every map's name, dtype and "not measured" value
        template = MapCollector(RasterScan((1, 1)), tuple(p.name for p in config.peaks)).result_maps(
            config.peaks, config.derived, config.williamson_hall_peaks)
        self._new_map(results, "intensity", template.intensity, "counts")
        self._new_map(results, "frame_status", template.frame_status)
        if template.supercrystal_mask is not None:
            self._new_map(results, "supercrystal_mask", template.supercrystal_mask)
        for peak in config.peaks:
            g = self._nxdata(results, peak.name, "amplitude")
            if peak.hkl is not None:
                g.attrs["hkl"] = np.asarray(peak.hkl, dtype=np.int64)
            else:
                g.attrs["superlattice"] = np.asarray(peak.superlattice, dtype=np.int64)
            g.attrs["q_window"] = np.asarray(peak.q)
            g.attrs["chi_window"] = np.asarray(peak.chi)
            for key, values in template.spots[peak.name].items():
                self._new_map(g, key, values, UNITS.get(key.removesuffix("_error")) if key != "status" else None)
            second = self._nxdata(g, "second", "amplitude")
            for key, values in template.second[peak.name].items():
                self._new_map(second, key, values, UNITS.get(key.removesuffix("_error")) if key != "found" else None)
        d = self._nxdata(results, "derived", "size" if "size" in template.derived
                         else next(iter(template.derived), "size"))
        d.attrs["scherrer_k"] = config.derived.scherrer_k
        d.attrs["williamson_hall_peaks"] = list(config.williamson_hall_peaks) or [""]
        for key, values in template.derived.items():
            base = key.removesuffix("_error")
            self._new_map(d, key, values, UNITS.get(base, "1" if base.startswith("strain_") else None))

    def _create_scan(self, group: h5py.Group) -> None:
        """Scan description and map axes (resizable: a strip grows); every NXdata links the axes."""
        scan = self.scan
        group.attrs["NX_class"] = "NXcollection"
        y, x, units = self._axes(scan)
        for name, values, motor in (("y", y, scan.motors[0]), ("x", x, scan.motors[1])):
            ds = group.create_dataset(name, data=values, maxshape=(None,), chunks=(1024,))
            ds.attrs["units"] = units
            ds.attrs["long_name"] = motor if units == "um" else f"{motor} point"
        group.create_dataset("shape", data=np.asarray(scan.shape, dtype=np.int64))
        group.create_dataset("snake", data=bool(scan.snake))
        group.create_dataset("frames_per_point", data=scan.frames_per_point)
        group.create_dataset("motors", data=list(scan.motors))
        results = self._file["entry/results"]
        results["y"], results["x"] = group["y"], group["x"]  # hard links

    @staticmethod
    def _axes(scan: RasterScan) -> tuple[np.ndarray, np.ndarray, str]:
        """Row and column axes (µm when the step is known, else point index) and their units."""
        positions = scan.axis_positions()
        if positions is None:
            return np.arange(scan.shape[0], dtype=np.float64), np.arange(scan.shape[1], dtype=np.float64), "point"
        (y, x), units = positions, "um"
        return y, x, units

    def _new_map(self, group: h5py.Group, name: str, template: np.ndarray, units: str | None = None) -> None:
        """A ``[rows, cols]`` map dataset filled with ``template``'s "not measured" value."""
        shape = self.scan.shape
        ds = group.create_dataset(name, shape=shape, maxshape=(None, None), dtype=template.dtype,
                                  chunks=_map_chunks(shape, template.dtype.itemsize),
                                  fillvalue=template.flat[0])
        if units:
            ds.attrs["units"] = units
        base = name.removesuffix("_error")
        if base in LONG_NAMES:
            ds.attrs["long_name"] = LONG_NAMES[base] + (" (standard error)" if name.endswith("_error") else "")
        self._map_paths.append(ds.name.lstrip("/"))

    def _nxdata(self, parent: h5py.Group, name: str, signal: str) -> h5py.Group:
        g = parent.create_group(name)
        g.attrs["NX_class"] = "NXdata"
        g.attrs["signal"] = signal
        g.attrs["axes"] = ["y", "x"]
        g["y"] = self._file["entry/scan/y"]
        g["x"] = self._file["entry/scan/x"]
        return g

    # --- writes: values into existing datasets only (SWMR) --------------------------------
    def _set_scan(self, scan: RasterScan) -> None:
        """Resize maps and axes to ``scan`` (a strip grew, or rows were added: old points keep
        their place); anything else would move points or change attributes, which SWMR forbids."""
        old = self.scan
        if (scan.snake, scan.frames_per_point, scan.motors) != (old.snake, old.frames_per_point, old.motors) \
                or (scan.axis_positions() is None) != (old.axis_positions() is None) \
                or (old.shape[0] > 1 and scan.shape[1] != old.shape[1]):
            raise ValueError(f"results file {self.path}: the scan changed from {old} to {scan}; "
                             "only a strip (or more rows) can grow while the file is written")
        y, x, _ = self._axes(scan)
        for name, values in (("y", y), ("x", x)):
            axis = self._at(f"entry/scan/{name}")
            axis.resize(values.shape)
            axis[...] = values
        self._at("entry/scan/shape")[...] = np.asarray(scan.shape, dtype=np.int64)
        for path in self._map_paths:
            self._at(path).resize(scan.shape)
        self.scan = scan

    def _at(self, path: str) -> h5py.Group | h5py.Dataset:
        """The file's object at ``path`` (absolute, without the leading /), looked up once."""
        obj = self._handles.get(path)
        if obj is None:
            obj = self._handles[path] = self._file[path]
        return obj

    def write(self, update: ResultsUpdate) -> None:
        """Write ``update`` (changed maps region, frames, counters, timing, status), then flush.

        Raises ValueError when the update does not fit the file (a scan that cannot grow into
        the stored one, an unknown timing figure), OSError when HDF5 cannot write; either way
        :attr:`stale` is then set.
        """
        try:
            self.create()
            self._write(update)
        except BaseException:
            self.stale = True
            raise
        if update.full:
            self.stale = False

    def _write(self, update: ResultsUpdate) -> None:
        timing_keys = self._layout[6]
        unknown = sorted(set(update.timing) - set(timing_keys))
        if unknown:  # checked before anything is written: an update that does not fit changes nothing
            raise ValueError(f"results file {self.path}: no timing figure {unknown[0]!r} was made at creation")
        if update.scan != self.scan:
            self._set_scan(update.scan)
        at = self._at
        if update.maps is not None and update.region is not None:
            r = update.region
            cut = (slice(r.row0, r.row1), slice(r.col0, r.col1))
            at("entry/results/intensity")[cut] = update.maps.intensity
            at("entry/results/frame_status")[cut] = update.maps.frame_status
            if update.maps.supercrystal_mask is not None:
                at("entry/results/supercrystal_mask")[cut] = update.maps.supercrystal_mask
            for peak, values in update.maps.spots.items():
                for key, m in values.items():
                    at(f"entry/results/{peak}/{key}")[cut] = m
            for key, m in update.maps.derived.items():
                at(f"entry/results/derived/{key}")[cut] = m
            for peak, values in update.maps.second.items():
                for key, m in values.items():
                    at(f"entry/results/{peak}/second/{key}")[cut] = m
        frames = at("entry/results/frames")
        if update.frames is not None:
            frames.resize((len(update.frames),))
            if len(update.frames):
                frames[...] = update.frames.astype(FRAMES_TABLE_DTYPE, copy=False)
        elif len(update.new_frames):
            n = frames.shape[0]
            frames.resize((n + len(update.new_frames),))
            frames[n:] = update.new_frames.astype(FRAMES_TABLE_DTYPE, copy=False)
        for key, value in update.counters.items():
            at(f"entry/process/{key}")[()] = np.int64(value)
        hot = at("entry/process/hot_pixels")
        if len(update.hot_pixels) != hot.shape[0]:
            hot.resize((len(update.hot_pixels), 2))
            hot[...] = update.hot_pixels
        for key, value in update.timing.items():
            at(f"entry/process/timing/{key}")[()] = np.float64(value)
        for name in ("exit_status", "stopped_by", "error"):
            value = getattr(update, name)
            if value:
                at(f"entry/process/{name}")[()] = _fixed(value, STRING_BYTES[name])
        if update.final:
            at("entry/process/end_time")[()] = _fixed(_iso(time.time()), STRING_BYTES["end_time"])
        self._file.flush()

    def close(self) -> None:
        self._handles.clear()
        if self._file is not None and self._file.id.valid:
            self._file.close()

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
