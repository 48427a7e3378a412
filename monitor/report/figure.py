"""The paper-style summary figure of a results file: drawing (the data are read by
:mod:`monitor.report.figure_data`).

The figure follows Hiller et al., *Nano Lett.* 2026: a grid of maps (integrated
intensity, φ0 and Δφ_do of one peak, NC size, microstrain, a, b and a − b), the
Williamson–Hall scatter of every WH peak with the median fit, and a and b against NC
size with their Pearson correlation. :func:`draw_report_data` / :func:`draw_report`
build a ``matplotlib.figure.Figure`` (no pyplot, no global backend state: the module
never calls ``matplotlib.use``); ``nanomaps report`` is :mod:`monitor.cli.report`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, ScalarFormatter

from monitor.links.map_colours import CYCLIC_COLORMAP, robust_limits
from monitor.report.figure_data import ReportData, ReportError, pearson, read_report_data, williamson_hall_median_fit
from processors.angles import ORIENTATION_PERIOD_DEG, fold_orientation

__all__ = ["OUTPUT_FORMATS", "ReportError", "draw_report", "draw_report_data"]

OUTPUT_FORMATS = ("png", "pdf", "svg")
BAD_COLOUR = "0.72"  # neutral grey behind NaN (not measured / rejected)
_MINUS = "\u2212"


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
