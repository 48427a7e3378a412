"""``nanomaps report R.h5 --out fig.png``: the paper-style summary figure of a results file.

The figure follows Hiller et al., *Nano Lett.* 2026: a grid of maps (integrated
intensity, φ0 and Δφ_do of one peak, NC size, microstrain, a, b and a − b), the
Williamson–Hall scatter of every WH peak with the median fit, and a and b against NC
size with their Pearson correlation.

Three layers, each usable on its own:

* :func:`read_report_data` reads the results file into a frozen :class:`ReportData`
  (all I/O and all validation; raises :class:`ReportError` with a one-line message);
* :func:`draw_report_data` / :func:`draw_report` build a ``matplotlib.figure.Figure``
  (no pyplot, no global backend state: the module never calls ``matplotlib.use``);
* :func:`main` is the command, ``main(argv) -> int``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, ScalarFormatter

from monitor.links.map_colours import CYCLIC_COLORMAP, robust_limits
from processors.angles import ORIENTATION_PERIOD_DEG, fold_orientation

__all__ = [
    "MapAxis",
    "ReportData",
    "ReportError",
    "WilliamsonHallPeak",
    "draw_report",
    "draw_report_data",
    "pearson",
    "read_report_data",
    "williamson_hall_median_fit",
]

RESULTS = "/entry/results"
DERIVED = "/entry/results/derived"
SCAN = "/entry/scan"
DEFAULT_SCHERRER_K = 0.85
OUTPUT_FORMATS = ("png", "pdf", "svg")
BAD_COLOUR = "0.72"  # neutral grey behind NaN (not measured / rejected)
_MINUS = "\u2212"


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

    def __post_init__(self) -> None:
        for name in ("intensity", "phi0", "dphi_do", "size", "microstrain", "a", "b"):
            arr = getattr(self, name)
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
        if units is not None and _as_str(units).strip():
            label = f"{label} ({_pretty_units(_as_str(units))})"
        return MapAxis(centres=centres, label=label)
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
        f = h5py.File(path, "r")
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
        for name in ("size", "microstrain", "a", "b"):
            derived_maps[name] = _read_map(f, f"{DERIVED}/{name}", shape)
            if shape is None and derived_maps[name] is not None:
                shape = derived_maps[name].shape

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


def _fmt_signed(value: float, digits: int = 2) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}".replace("-", _MINUS)


# ---------------------------------------------------------------------- drawing


def _cmap(name: str) -> Colormap:
    return colormaps[name].with_extremes(bad=BAD_COLOUR)


def _not_available(ax: Axes, title: str, why: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.text(0.5, 0.5, f"not available\n({why})", ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.35")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_facecolor("0.96")


@dataclass(frozen=True)
class _MapPanel:
    key: str
    title: str
    values: np.ndarray | None
    why_missing: str
    units: str
    cmap: str
    norm: Normalize | None = None  # else robust limits
    ticks: tuple[float, ...] | None = None


def _draw_map(fig: Figure, ax: Axes, data: ReportData, panel: _MapPanel) -> None:
    ax.set_label(panel.key)
    x0, x1 = data.x.edges()
    y0, y1 = data.y.edges()
    norm = panel.norm
    if norm is None and panel.values is not None:
        lims = robust_limits(panel.values)
        norm = Normalize(*lims) if lims is not None else None
    if panel.values is None or norm is None:
        _not_available(ax, panel.title, panel.why_missing if panel.values is None else "no finite values")
        ax.set_box_aspect(min(abs((y1 - y0) / (x1 - x0)), 3.0))  # same shape as a drawn map
        return
    im = ax.imshow(
        panel.values,
        origin="lower",  # row 0 (first slow-axis position) at the bottom
        extent=(x0, x1, y0, y1),
        cmap=_cmap(panel.cmap),
        norm=norm,
        interpolation="nearest",
        aspect="equal",
    )
    ax.set_title(panel.title, fontsize=10)
    ax.set_xlabel(data.x.label, fontsize=8)
    ax.set_ylabel(data.y.label, fontsize=8)
    ax.tick_params(labelsize=7)
    cb = fig.colorbar(im, ax=ax, shrink=0.9, pad=0.02)
    cb.set_label(panel.units, fontsize=8)
    cb.ax.tick_params(labelsize=7)
    if isinstance(cb.formatter, ScalarFormatter):
        # plain numbers: matplotlib's "1e6" offset sits above the bar, in the title's line
        cb.formatter.set_useOffset(False)
        cb.formatter.set_scientific(False)
    if panel.ticks is not None:
        cb.set_ticks(list(panel.ticks))
        cb.ax.yaxis.set_major_formatter(FormatStrFormatter("%.0f"))


def _intensity_norm(values: np.ndarray) -> Normalize | None:
    """Log scale when the robust range spans more than a factor 30 of positive counts."""
    lims = robust_limits(values)
    if lims is None:
        return None
    lo, hi = lims
    if lo > 0 and hi / lo > 30:
        return LogNorm(lo, hi)
    return Normalize(lo, hi)


def _map_panels(data: ReportData) -> list[_MapPanel]:
    peak = data.peak
    no_peak = "no peak with hkl in the file" if peak is None else ""
    panels: list[_MapPanel] = [
        _MapPanel(
            "intensity",
            "integrated intensity",
            data.intensity,
            "no results/intensity",
            "counts",
            "inferno",
            norm=_intensity_norm(data.intensity) if data.intensity is not None else None,
        )
    ]
    if data.phi0 is not None and np.isfinite(data.phi0).any():
        folded, median = fold_orientation(data.phi0)  # the live map's fold: same numbers, same colours
        # Orientation domains are a few degrees apart: a full 90° colour period would show
        # them as one colour, so the cyclic map spans the robust spread around the median.
        spread = np.nanpercentile(np.abs(folded - median), 98)
        half = float(np.clip(np.ceil(1.2 * spread), 2.0, ORIENTATION_PERIOD_DEG / 2))
        panels.append(
            _MapPanel(
                "phi0",
                # two short lines: one long title ran into the neighbouring colour bar
                f"φ0 ({peak}) mod 90°\nmedian {median:.1f}° ± {half:.0f}°",
                folded,
                "",
                "φ0 (°)",
                CYCLIC_COLORMAP,
                norm=Normalize(median - half, median + half),
                ticks=(median - half, median - half / 2, median, median + half / 2, median + half),
            )
        )
    else:
        panels.append(_MapPanel("phi0", f"φ0 ({peak})" if peak else "φ0", data.phi0, no_peak or f"no {peak}/phi0", "°",
                                CYCLIC_COLORMAP))
    panels += [
        _MapPanel("dphi_do", f"Δφ_do ({peak}) orientational disorder" if peak else "Δφ_do", data.dphi_do,
                  no_peak or f"no {peak}/dphi_do", "Δφ_do (°)", "plasma"),
        _MapPanel("size", "NC size (Williamson–Hall)", data.size, "no derived/size", "size (nm)", "viridis"),
        _MapPanel("microstrain", "microstrain ε", None if data.microstrain is None else data.microstrain * 100.0,
                  "no derived/microstrain", "ε (%)", "magma"),
    ]
    # a and b share one colour range so the two panels compare directly.
    ab = [m for m in (data.a, data.b) if m is not None]
    ab_norm = None
    if ab:
        lims = robust_limits(np.concatenate([m.reshape(-1) for m in ab]))
        ab_norm = Normalize(*lims) if lims is not None else None
    panels += [
        _MapPanel("a", "a = 2π / q0(100)", data.a, "no derived/a", "a (Å)", "cividis", norm=ab_norm),
        _MapPanel("b", "b = 2π / √(q0(110)² − q0(100)²)", data.b, "no derived/b", "b (Å)", "cividis", norm=ab_norm),
    ]
    diff = None if data.a is None or data.b is None else data.a - data.b
    diff_norm = None
    if diff is not None:
        lims = robust_limits(diff)
        if lims is not None:
            m = max(abs(lims[0]), abs(lims[1]))
            diff_norm = Normalize(-m, m)
    panels.append(_MapPanel("a_minus_b", "lattice anisotropy a − b", diff, "needs derived/a and derived/b", "a − b (Å)", "RdBu_r", norm=diff_norm))
    return panels


def _legend_opaque(ax: Axes, **kwargs: Any) -> None:
    leg = ax.legend(**kwargs)
    for handle in leg.legend_handles:
        if handle is not None:
            handle.set_alpha(1.0)


def _draw_williamson_hall(ax: Axes, data: ReportData) -> None:
    ax.set_label("williamson_hall")
    title = "Williamson–Hall: Δq² = ε² q0² + Δq0²"
    pts = [(p, np.isfinite(p.q0) & np.isfinite(p.dq)) for p in data.wh_peaks]
    pts = [(p, ok) for p, ok in pts if ok.any()]
    if not pts:
        _not_available(ax, title, "no q0/dq of Williamson–Hall peaks")
        return
    ax.set_title(title, fontsize=10)
    colours = colormaps["tab10"]
    xmax = 0.0
    for i, (p, ok) in enumerate(pts):
        x = p.q0[ok] ** 2
        y = p.dq[ok] ** 2
        xmax = max(xmax, float(x.max()))
        ax.scatter(x, y, s=5, alpha=0.3, color=colours(i % 10), linewidths=0, label=f"{p.name} ({ok.sum()} pts)", rasterized=True)
    fit = williamson_hall_median_fit(data)
    if fit is not None:
        slope, intercept = fit
        xs = np.array([0.0, 1.05 * xmax])
        ax.plot(xs, slope * xs + intercept, color="k", lw=1.5, label="median fit")
        size_med = float(np.nanmedian(data.size))  # type: ignore[arg-type]
        eps_med = float(np.nanmedian(data.microstrain)) * 100.0  # type: ignore[arg-type]
        ax.text(
            0.03, 0.97,
            f"median size = {size_med:.1f} nm\nmedian microstrain = {eps_med:.2f} %\nK = {data.scherrer_k:g}",
            transform=ax.transAxes, ha="left", va="top", fontsize=9,
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7", "alpha": 0.9},
        )
    else:
        ax.text(0.03, 0.97, "median fit not available\n(no derived/size and microstrain)", transform=ax.transAxes,
                ha="left", va="top", fontsize=9, color="0.35")
    ax.set_xlim(0.0, 1.05 * xmax)
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("q0² (Å⁻²)", fontsize=9)
    ax.set_ylabel("Δq² (Å⁻²)", fontsize=9)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    _legend_opaque(ax, loc="lower right", fontsize=8, markerscale=2.5)


def _binned_median(x: np.ndarray, y: np.ndarray, n_bins: int = 12, min_count: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Median of y in equal-width bins of x over its 1st–99th percentile (bins with ≥ min_count points)."""
    if x.size < min_count:
        return np.empty(0), np.empty(0)
    lo, hi = np.percentile(x, [1.0, 99.0])
    if not hi > lo:
        return np.empty(0), np.empty(0)
    edges = np.linspace(lo, hi, n_bins + 1)
    idx = np.digitize(x, edges) - 1
    centres, medians = [], []
    for i in range(n_bins):
        sel = idx == i
        if np.count_nonzero(sel) >= min_count:
            centres.append((edges[i] + edges[i + 1]) / 2)
            medians.append(float(np.median(y[sel])))
    return np.asarray(centres), np.asarray(medians)


def _draw_ab_vs_size(ax: Axes, data: ReportData) -> None:
    ax.set_label("ab_vs_size")
    title = "a, b vs NC size"
    if data.size is None or (data.a is None and data.b is None):
        _not_available(ax, title, "needs derived/size and derived/a or b")
        return
    ax.set_title(title, fontsize=10)
    drawn = False
    for name, values, colour, dark in (("a", data.a, "tab:blue", "navy"), ("b", data.b, "tab:red", "darkred")):
        if values is None:
            continue
        ok = np.isfinite(values) & np.isfinite(data.size)
        if not ok.any():
            continue
        rho = pearson(data.size, values)
        n = int(ok.sum())
        ax.scatter(data.size[ok], values[ok], s=6, alpha=float(np.clip(40 / math.sqrt(n), 0.08, 0.4)), color=colour,
                   linewidths=0, label=f"{name} (ρ = {_fmt_signed(rho)})", rasterized=True)
        centres, medians = _binned_median(data.size[ok], values[ok])
        if centres.size >= 2:
            ax.plot(centres, medians, color=dark, lw=1.8, marker="o", ms=3, label="_median per size bin")
        drawn = True
    if not drawn:
        ax.cla()
        _not_available(ax, title, "no point with finite size and a or b")
        ax.set_label("ab_vs_size")
        return
    ax.plot([], [], color="0.2", lw=1.8, marker="o", ms=1.2, label="median per size bin")  # legend proxy
    ax.set_xlabel("NC size (nm)", fontsize=9)
    ax.set_ylabel("lattice parameter (Å)", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    _legend_opaque(ax, loc="best", fontsize=9, markerscale=2.5)


def draw_report_data(data: ReportData, *, figsize: tuple[float, float] = (16.0, 10.0)) -> Figure:
    """The report figure for already-read data (no file I/O, no pyplot)."""
    fig = Figure(figsize=figsize, layout="constrained")
    grid = fig.add_gridspec(3, 4, height_ratios=(1.0, 1.0, 1.0))
    map_axes = [fig.add_subplot(grid[r, c]) for r in range(2) for c in range(4)]
    for ax, panel in zip(map_axes, _map_panels(data)):
        _draw_map(fig, ax, data, panel)
    _draw_williamson_hall(fig.add_subplot(grid[2, 0:2]), data)
    _draw_ab_vs_size(fig.add_subplot(grid[2, 2:4]), data)
    rows, cols = data.shape
    peak = f", maps of peak {data.peak}" if data.peak else ""
    fig.suptitle(f"{data.path.name} — {data.n_measured} measured points ({rows} × {cols} map{peak})", fontsize=13)
    return fig


def draw_report(results_path: str | Path, *, peak: str | None = None) -> Figure:
    """Read ``results_path`` and build the report figure (see :func:`read_report_data`)."""
    return draw_report_data(read_report_data(results_path, peak=peak))
