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
            amplitude q0 dq phi0 dphi background  (+ *_error), status, dphi_do
        derived/                 NXdata, @signal = "size": a b c size microstrain a_sc1 a_sc2 a_sc strain_*
    /entry/scan                  x, y positions, shape, snake, motor names
    /entry/process               NXprocess: program, version, config and PONI text, times, counters,
                                 run_uid, parent_uid, geometry, exit_status, timing/ (this run's)

Every write replaces the map contents in place and flushes, so the file is valid
whenever it is closed or the process stops between writes.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np

from monitor.session.map_collector import ResultMaps, RunCounters
from processors.config import NanomapsConfig
from processors.frame_record import FRAME_STATUS_NAMES
from stream.output_path import OutputPathError, check_output_file
from stream.raster_scan import RasterScan

UNITS = {
    "amplitude": "counts", "q0": "1/angstrom", "dq": "1/angstrom", "phi0": "degrees", "dphi": "degrees",
    "background": "counts", "dphi_do": "degrees", "a": "angstrom", "b": "angstrom", "c": "angstrom",
    "size": "nm", "microstrain": "1", "a_sc1": "nm", "a_sc2": "nm", "a_sc": "nm",
}
LONG_NAMES = {
    "amplitude": "peak amplitude", "q0": "peak position q0", "dq": "radial width Δq (FWHM)",
    "phi0": "azimuth φ0", "dphi": "azimuthal width Δφ (FWHM)", "background": "background",
    "dphi_do": "orientational disorder Δφ_do", "a": "lattice parameter a", "b": "lattice parameter b",
    "c": "lattice parameter c", "size": "NC size (Williamson–Hall)", "microstrain": "microstrain ε",
    "a_sc1": "superlattice a1", "a_sc2": "superlattice a2", "a_sc": "⟨a_SC⟩", "intensity": "integrated intensity",
}


def nanomaps_version() -> str:
    try:
        return metadata.version("nanomaps")
    except metadata.PackageNotFoundError:
        return "unknown"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat()


class ResultsWriter:
    """Creates ``path`` with the static parts; :meth:`write` (re)writes maps and counters."""

    def __init__(self, path: str | Path, config: NanomapsConfig, scan: RasterScan, *,
                 inputs: tuple[str, ...] = (), poni_text: str = "", setup_id: str = "", run_uid: str = "",
                 parent_uid: str = "", geometry: str = "config") -> None:
        self.path = check_output_file(path, what="results file")
        self.config = config
        self.scan: RasterScan | None = None
        self.start_time = time.time()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = h5py.File(self.path, "w")
        except OSError as exc:  # e.g. the file is open (locked) in another program
            raise OutputPathError(f"results file {self.path}: cannot create it ({exc}). "
                                  "Fix: close it in other programs, or choose another name") from None
        f = self._file
        f.attrs["default"] = "entry"  # NeXus: silx and friends open the maps directly
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["default"] = "results"
        results = entry.create_group("results")
        results.attrs["NX_class"] = "NXdata"
        results.attrs["signal"] = "intensity"
        results.attrs["axes"] = ["y", "x"]
        scan_group = entry.create_group("scan")
        scan_group.attrs["NX_class"] = "NXcollection"
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
        process.create_dataset("end_time", data="")
        process.create_dataset("exit_status", data="")  # the bluesky run's: success / abort / fail
        process.create_dataset("stopped_by", data="")   # live: series, signal, idle or error (set at the end)
        process.create_dataset("error", data="")        # what failed, when stopped_by is "error"
        process.create_dataset("status_codes", data=[f"{k}: {v}" for k, v in sorted(FRAME_STATUS_NAMES.items())])
        self._write_scan(scan)
        f.flush()

    def _write_scan(self, scan: RasterScan) -> None:
        """Scan description and map axes; every NXdata group links the axes."""
        group = self._file["entry/scan"]
        for name in ("x", "y", "shape", "snake", "frames_per_point", "motors"):
            if name in group:
                del group[name]
        positions = scan.axis_positions()
        if positions is None:
            y, x = np.arange(scan.shape[0], dtype=np.float64), np.arange(scan.shape[1], dtype=np.float64)
            units = "point"
        else:
            (y, x), units = positions, "um"
        for name, values, motor in (("y", y, scan.motors[0]), ("x", x, scan.motors[1])):
            ds = group.create_dataset(name, data=values)
            ds.attrs["units"] = units
            ds.attrs["long_name"] = motor if units == "um" else f"{motor} point"
        group.create_dataset("shape", data=np.asarray(scan.shape, dtype=np.int64))
        group.create_dataset("snake", data=bool(scan.snake))
        group.create_dataset("frames_per_point", data=scan.frames_per_point)
        group.create_dataset("motors", data=list(scan.motors))
        results = self._file["entry/results"]
        for nxdata in [results] + [g for g in results.values() if isinstance(g, h5py.Group)]:
            for name in ("y", "x"):
                if name in nxdata:
                    del nxdata[name]
                nxdata[name] = group[name]  # hard link: every NXdata carries its axes
        self.scan = scan

    def set_scan(self, scan: RasterScan) -> None:
        """The map grew or its geometry became known (e.g. a 1-D strip of unknown length)."""
        if scan != self.scan:
            self._write_scan(scan)
            self._file.flush()

    def _put(self, group: h5py.Group, name: str, data: np.ndarray, units: str | None = None) -> None:
        if name in group and group[name].shape == data.shape and group[name].dtype == data.dtype:
            group[name][...] = data
            return
        if name in group:
            del group[name]
        ds = group.create_dataset(name, data=data, chunks=True if data.ndim else None)
        if units:
            ds.attrs["units"] = units
        base = name.removesuffix("_error")
        if base in LONG_NAMES:
            ds.attrs["long_name"] = LONG_NAMES[base] + (" (standard error)" if name.endswith("_error") else "")

    def _nxdata(self, parent: h5py.Group, name: str, signal: str) -> h5py.Group:
        if name in parent:
            return parent[name]
        g = parent.create_group(name)
        g.attrs["NX_class"] = "NXdata"
        g.attrs["signal"] = signal
        g.attrs["axes"] = ["y", "x"]
        g["y"] = self._file["entry/scan/y"]
        g["x"] = self._file["entry/scan/x"]
        return g

    def write(self, maps: ResultMaps, frames: np.ndarray, counters: RunCounters, *, final: bool = False,
              timing: dict[str, float] | None = None, exit_status: str = "", stopped_by: str = "",
              error: str = "") -> None:
        """Write all maps, the frames table, counters and timing (``/entry/process/timing``), then flush.

        ``timing``: this run's figures (ms); ``exit_status``: how its bluesky run ended;
        ``stopped_by``/``error``: how the live session ended (given with the final write).
        """
        results = self._file["entry/results"]
        self._put(results, "intensity", maps.intensity, "counts")
        self._put(results, "frame_status", maps.frame_status)
        self._put(results, "frames", frames)
        for peak in self.config.peaks:
            g = self._nxdata(results, peak.name, "amplitude")
            if peak.hkl is not None:
                g.attrs["hkl"] = np.asarray(peak.hkl, dtype=np.int64)
            else:
                g.attrs["superlattice"] = np.asarray(peak.superlattice, dtype=np.int64)
            g.attrs["q_window"] = np.asarray(peak.q)
            g.attrs["chi_window"] = np.asarray(peak.chi)
            for key, values in maps.spots[peak.name].items():
                self._put(g, key, values, UNITS.get(key.removesuffix("_error")) if key != "status" else None)
        d = self._nxdata(results, "derived", "size" if "size" in maps.derived else next(iter(maps.derived), "size"))
        d.attrs["scherrer_k"] = self.config.derived.scherrer_k
        d.attrs["williamson_hall_peaks"] = list(self.config.williamson_hall_peaks) or [""]
        for key, values in maps.derived.items():
            self._put(d, key, values, UNITS.get(key, "1" if key.startswith("strain_") else None))
        process = self._file["entry/process"]
        counters_dict = counters.as_dict()
        for key, value in counters_dict.items():
            self._put(process, key, np.asarray(value, dtype=np.int64))
        if timing:
            group = process.require_group("timing")
            group.attrs["NX_class"] = "NXcollection"
            for key, value in timing.items():
                self._put(group, key, np.asarray(value, dtype=np.float64), "ms" if key.endswith("_ms") else None)
        for name, value in (("exit_status", exit_status), ("stopped_by", stopped_by), ("error", error)):
            if value and process[name][()].decode() != value:
                del process[name]
                process.create_dataset(name, data=value)
        if final:
            del process["end_time"]
            process.create_dataset("end_time", data=_iso(time.time()))
        self._file.flush()

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
