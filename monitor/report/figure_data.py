"""The data of the report figure, read from a results file (all I/O and validation).

:func:`read_report_data` reads a results file into a frozen :class:`ReportData` and
raises :class:`ReportError` with a one-line message naming the file, the key and the
fix; :func:`williamson_hall_median_fit` and :func:`pearson` are the figure's statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from monitor.session.results_file import open_results

__all__ = ["MapAxis", "ReportData", "ReportError", "WilliamsonHallPeak", "pearson", "read_report_data",
           "williamson_hall_median_fit"]

RESULTS = "/entry/results"
DERIVED = "/entry/results/derived"
SCAN = "/entry/scan"
DEFAULT_SCHERRER_K = 0.85


class ReportError(Exception):
    """A results file (or an option) the report cannot use; the message is one line
    naming the file/key and the fix, printed by :func:`main` without a traceback."""


# --------------------------------------------------------------------------- data


def _readonly(a: np.ndarray | None) -> np.ndarray | None:
    if a is not None:
        a.setflags(write=False)
    return a


@dataclass(frozen=True)
class MapAxis:
    """Positions of the map's rows or columns (pixel centres) and the axis label."""

    centres: np.ndarray
    label: str
    units: str = ""  # "µm" when the scan step is known, else "" (point index)

    def __post_init__(self) -> None:
        if self.centres.ndim != 1 or self.centres.size < 1:
            raise ValueError("MapAxis.centres must be a non-empty 1-D array")
        _readonly(self.centres)

    def edges(self) -> tuple[float, float]:
        """Outer edges (first − step/2, last + step/2) for ``imshow(extent=...)``."""
        c = self.centres
        step = (c[-1] - c[0]) / (c.size - 1) if c.size > 1 else 1.0
        if step == 0.0:
            step = 1.0
        return float(c[0] - step / 2), float(c[-1] + step / 2)


@dataclass(frozen=True)
class WilliamsonHallPeak:
    """q0 and Δq (FWHM) maps of one peak entering Williamson–Hall, 1/Å."""

    name: str
    q0: np.ndarray
    dq: np.ndarray

    def __post_init__(self) -> None:
        if self.q0.shape != self.dq.shape:
            raise ValueError(f"peak {self.name}: q0 {self.q0.shape} and dq {self.dq.shape} differ in shape")
        _readonly(self.q0)
        _readonly(self.dq)


@dataclass(frozen=True)
class ReportData:
    """Everything the figure shows, read from one results file.

    Maps are ``[rows, cols]`` float64 with NaN where not measured / rejected, or
    ``None`` when the dataset is absent. Units: intensity in counts, φ0 and Δφ_do in
    degrees, size in nm, microstrain as a fraction, a and b in Å.
    """

    path: Path
    shape: tuple[int, int]
    x: MapAxis
    y: MapAxis
    peak: str | None
    peaks: tuple[str, ...]  # every peak group in the file (name order)
    intensity: np.ndarray | None = None
    phi0: np.ndarray | None = None
    dphi_do: np.ndarray | None = None
    size: np.ndarray | None = None
    microstrain: np.ndarray | None = None
    a: np.ndarray | None = None
    b: np.ndarray | None = None
    scherrer_k: float = DEFAULT_SCHERRER_K
    wh_peaks: tuple[WilliamsonHallPeak, ...] = field(default=())
    c: np.ndarray | None = None
    a_sc: np.ndarray | None = None
    #: Δφ_do (°) of every peak group that holds one, by peak name
    dphi_do_peaks: dict[str, np.ndarray] = field(default_factory=dict)
    #: standard-error maps by quantity name (a, b, c, size, microstrain, a_sc, dphi_do/<peak>)
    errors: dict[str, np.ndarray] = field(default_factory=dict)
    supercrystal_mask: np.ndarray | None = None  # bool; None when the file has none
    bragg_intensity: np.ndarray | None = None

    def __post_init__(self) -> None:
        arrays = [(name, getattr(self, name)) for name in ("intensity", "phi0", "dphi_do", "size", "microstrain", "a",
                                                            "b", "c", "a_sc", "supercrystal_mask", "bragg_intensity")]
        arrays += [(f"dphi_do/{k}", v) for k, v in self.dphi_do_peaks.items()]
        arrays += [(f"{k}_error", v) for k, v in self.errors.items()]
        for name, arr in arrays:
            if arr is not None and arr.shape != self.shape:
                raise ValueError(f"{name} has shape {arr.shape}, the map is {self.shape}")
            _readonly(arr)
        if self.x.centres.size != self.shape[1] or self.y.centres.size != self.shape[0]:
            raise ValueError("map axes do not match the map shape")
        if not (self.scherrer_k > 0):
            raise ValueError(f"scherrer_k must be positive, got {self.scherrer_k}")

    @property
    def n_measured(self) -> int:
        """Map points with a finite integrated intensity (else: with any finite map)."""
        if self.intensity is not None:
            return int(np.count_nonzero(np.isfinite(self.intensity)))
        maps = [m for m in (self.phi0, self.dphi_do, self.size, self.a, self.b) if m is not None]
        maps += [p.q0 for p in self.wh_peaks]
        if not maps:
            return 0
        return int(np.count_nonzero(np.logical_or.reduce([np.isfinite(m) for m in maps])))


# ----------------------------------------------------------------------- reading


def _as_str(value: Any) -> str:
    """An HDF5 attribute that is str, bytes, or a 0-d/1-element numpy array of either."""
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise TypeError(f"expected one string, got an array of {value.size}")
        value = value.reshape(-1)[0]
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _as_str_list(value: Any) -> list[str]:
    """A list-of-strings attribute, whatever h5py returned (str, bytes, arrays of either)."""
    if isinstance(value, (str, bytes, np.str_, np.bytes_)):
        return [_as_str(value)]
    return [_as_str(v) for v in np.asarray(value, dtype=object).reshape(-1)]


def _attr(obj: h5py.HLObject, key: str) -> Any | None:
    return obj.attrs[key] if key in obj.attrs else None


def _pretty_units(units: str) -> str:
    return {"um": "µm", "micrometer": "µm", "micrometre": "µm", "micron": "µm", "microns": "µm"}.get(
        units.strip(), units.strip()
    )


def _read_map(f: h5py.File, key: str, shape: tuple[int, int] | None) -> np.ndarray | None:
    """A 2-D float map, or None when absent. A present map of the wrong shape is an error."""
    obj = f.get(key)
    if obj is None or not isinstance(obj, h5py.Dataset):
        return None
    arr = np.asarray(obj[()], dtype=np.float64)
    if arr.ndim != 2 or (shape is not None and arr.shape != shape):
        want = f"{shape[0]}×{shape[1]}" if shape is not None else "2-D [rows, cols]"
        raise ReportError(
            f"{f.filename}: {key} has shape {arr.shape}, expected {want}; "
            "the results file is inconsistent — rewrite it with `nanomaps reprocess`"
        )
    return arr


def _map_axis(f: h5py.File, name: str, n: int, which: int, rows_cols: tuple[int, int]) -> MapAxis:
    """Row (``which=0``, name y) or column (``which=1``, name x) positions.

    Prefers ``/entry/scan/<name>``: per column/row (1-D, length n), per point as a map
    ``[rows, cols]`` (median across the other axis), or any other shape (assumed a
    uniform ascending grid between its finite min and max). Falls back to
    ``/entry/results/<name>``, then to the index.
    """
    for key in (f"{SCAN}/{name}", f"{RESULTS}/{name}"):
        obj = f.get(key)
        if not isinstance(obj, h5py.Dataset):
            continue
        raw = np.asarray(obj[()], dtype=np.float64)
        centres: np.ndarray | None = None
        if raw.ndim == 1 and raw.size == n:
            centres = raw
        elif raw.ndim == 2 and raw.shape == rows_cols:
            lines = raw.T if which == 1 else raw  # one line per column (x) or per row (y)
            centres = np.array([np.median(v[np.isfinite(v)]) if np.isfinite(v).any() else np.nan for v in lines])
        elif raw.size > 0 and np.isfinite(raw).any():
            lo, hi = float(np.nanmin(raw)), float(np.nanmax(raw))
            centres = np.linspace(lo, hi, n)
        if centres is None or not np.all(np.isfinite(centres)):
            continue
        long_name = _attr(obj, "long_name")
        units = _attr(obj, "units")
        label = _as_str(long_name) if long_name is not None else name
        pretty = _pretty_units(_as_str(units)) if units is not None else ""
        if pretty == "point":
            pretty = ""
        if units is not None and _as_str(units).strip():
            label = f"{label} ({_pretty_units(_as_str(units))})"
        return MapAxis(centres=centres, label=label, units=pretty)
    return MapAxis(centres=np.arange(n, dtype=np.float64), label="column" if which == 1 else "row")


def _peak_groups(results: h5py.Group) -> dict[str, h5py.Group]:
    """Subgroups of /entry/results that are peaks (every group except ``derived``)."""
    return {name: obj for name, obj in results.items() if isinstance(obj, h5py.Group) and name != "derived"}


def _default_peak(peaks: dict[str, h5py.Group]) -> str | None:
    """"100" when it is an hkl peak, else the first hkl peak, else None."""
    hkl_peaks = [name for name, g in peaks.items() if "hkl" in g.attrs]
    if "100" in hkl_peaks:
        return "100"
    return hkl_peaks[0] if hkl_peaks else None


def _is_h00_or_hh0(hkl: Any) -> bool:
    h = [abs(int(v)) for v in np.asarray(hkl).reshape(-1)]
    if len(h) != 3 or h[2] != 0 or h[0] == 0:
        return False
    return h[1] == 0 or h[1] == h[0]


def read_report_data(results_path: str | Path, peak: str | None = None) -> ReportData:
    """Read what the report shows from a results file (layout: design §5).

    ``peak`` chooses whose φ0 and Δφ_do maps to show; by default "100" or else the first
    peak group with an ``hkl`` attribute. Raises :class:`ReportError` for a missing or
    unreadable file, a file without ``/entry/results``, or an unknown ``peak``.
    """
    path = Path(results_path)
    if not path.exists():
        raise ReportError(f"results file {str(path)!r} not found; give the path of a results.h5 written by `nanomaps process` or `nanomaps reprocess`")
    if path.is_dir():
        raise ReportError(f"{str(path)!r} is a directory; give the path of a results.h5 file")
    try:
        f = open_results(path)  # also while a live run still writes it (SWMR)
    except OSError as exc:
        raise ReportError(f"cannot open {str(path)!r} as HDF5 ({exc}); give a results.h5 written by `nanomaps process` or `nanomaps reprocess`") from exc
    with f:
        results = f.get(RESULTS)
        if not isinstance(results, h5py.Group):
            raise ReportError(
                f"{str(path)!r} has no {RESULTS} group, so it is not a nanomaps results file "
                "(a raw recording *_master.h5?); run `nanomaps reprocess MASTER.h5 --config C --out R.h5` and report R.h5"
            )
        peaks = _peak_groups(results)
        if peak is None:
            peak = _default_peak(peaks)
        elif peak not in peaks:
            avail = ", ".join(sorted(peaks)) or "none"
            raise ReportError(f"{str(path)!r} has no peak group {RESULTS}/{peak}; available peaks: {avail} — pass one of them to --peak")

        intensity = _read_map(f, f"{RESULTS}/intensity", None)
        shape = intensity.shape if intensity is not None else None
        phi0 = dphi_do = None
        if peak is not None:
            phi0 = _read_map(f, f"{RESULTS}/{peak}/phi0", shape)
            shape = shape or (phi0.shape if phi0 is not None else None)
            dphi_do = _read_map(f, f"{RESULTS}/{peak}/dphi_do", shape)
            shape = shape or (dphi_do.shape if dphi_do is not None else None)

        derived = results.get("derived")
        derived_maps: dict[str, np.ndarray | None] = {}
        for name in ("size", "microstrain", "a", "b", "c", "a_sc", "bragg_intensity"):
            derived_maps[name] = _read_map(f, f"{DERIVED}/{name}", shape)
            if shape is None and derived_maps[name] is not None:
                shape = derived_maps[name].shape
        errors: dict[str, np.ndarray] = {}
        for name in ("size", "microstrain", "a", "b", "c", "a_sc"):
            err = _read_map(f, f"{DERIVED}/{name}_error", shape)
            if err is not None:
                errors[name] = err
        dphi_do_peaks: dict[str, np.ndarray] = {}
        for name in sorted(peaks):
            values = _read_map(f, f"{RESULTS}/{name}/dphi_do", shape)
            if values is not None:
                dphi_do_peaks[name] = values
                shape = shape or values.shape
                err = _read_map(f, f"{RESULTS}/{name}/dphi_do_error", shape)
                if err is not None:
                    errors[f"dphi_do/{name}"] = err
        mask = _read_map(f, f"{RESULTS}/supercrystal_mask", shape)

        scherrer_k = DEFAULT_SCHERRER_K
        wh_names: list[str] | None = None
        if isinstance(derived, h5py.Group):
            k = _attr(derived, "scherrer_k")
            if k is not None:
                scherrer_k = float(np.asarray(k).reshape(-1)[0])
            names = _attr(derived, "williamson_hall_peaks")
            if names is not None:
                wh_names = _as_str_list(names)
        if wh_names is None:  # the config's default: all h00 / hh0 peaks
            wh_names = [n for n, g in peaks.items() if "hkl" in g.attrs and _is_h00_or_hh0(g.attrs["hkl"])]
        wh_peaks: list[WilliamsonHallPeak] = []
        for name in wh_names:
            q0 = _read_map(f, f"{RESULTS}/{name}/q0", shape)
            dq = _read_map(f, f"{RESULTS}/{name}/dq", shape)
            if q0 is None or dq is None:
                continue  # a listed peak the file does not hold: nothing to plot
            shape = shape or q0.shape
            wh_peaks.append(WilliamsonHallPeak(name=name, q0=q0, dq=dq))

        if shape is None:
            xs, ys = f.get(f"{SCAN}/x"), f.get(f"{SCAN}/y")
            if isinstance(xs, h5py.Dataset) and isinstance(ys, h5py.Dataset) and xs.ndim == 1 and ys.ndim == 1:
                shape = (int(ys.shape[0]), int(xs.shape[0]))
            else:
                shape = (1, 1)
        x_axis = _map_axis(f, "x", shape[1], 1, shape)
        y_axis = _map_axis(f, "y", shape[0], 0, shape)

    return ReportData(
        path=path,
        shape=(int(shape[0]), int(shape[1])),
        x=x_axis,
        y=y_axis,
        peak=peak,
        peaks=tuple(sorted(peaks)),
        intensity=intensity,
        phi0=phi0,
        dphi_do=dphi_do,
        size=derived_maps["size"],
        microstrain=derived_maps["microstrain"],
        a=derived_maps["a"],
        b=derived_maps["b"],
        scherrer_k=scherrer_k,
        wh_peaks=tuple(wh_peaks),
        c=derived_maps["c"],
        a_sc=derived_maps["a_sc"],
        dphi_do_peaks=dphi_do_peaks,
        errors=errors,
        supercrystal_mask=None if mask is None else mask > 0,
        bragg_intensity=derived_maps["bragg_intensity"],
    )


# ------------------------------------------------------------------ computations


def williamson_hall_median_fit(data: ReportData) -> tuple[float, float] | None:
    """The "median fit" line Δq² = slope·q0² + intercept (Å⁻²).

    slope = median(ε²) over the microstrain map, intercept = median(Δq0²) with
    Δq0 = 2πK / (10·size_nm) (size in nm → Å). None without finite size and microstrain.
    """
    if data.size is None or data.microstrain is None:
        return None
    eps = data.microstrain[np.isfinite(data.microstrain)]
    size = data.size[np.isfinite(data.size) & (data.size > 0)]
    if eps.size == 0 or size.size == 0:
        return None
    dq0 = 2 * np.pi * data.scherrer_k / (10.0 * size)
    return float(np.median(eps**2)), float(np.median(dq0**2))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson ρ over points where both are finite; NaN with < 3 points or no spread."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    ok = np.isfinite(x) & np.isfinite(y)
    if np.count_nonzero(ok) < 3:
        return float("nan")
    xs, ys = x[ok], y[ok]
    if np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return float("nan")
    return float(np.corrcoef(xs, ys)[0, 1])



