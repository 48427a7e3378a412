"""The figure of ``nanomaps pattern``: a scan's pattern on the detector and in (q, χ), windows drawn.

Left, the detector image (log scale, row 0 at the top) with each ``[[peak]]`` window's
outline: the 0.5 contour of its pixel membership (q and χ bounds as pyFAI's per-pixel q and
χ put them). Right, the same image as a 2-D (q, χ) histogram, q in 1/Å along x and χ in
degrees along y, each window a rectangle (two where it crosses ±180°), labelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from monitor.session.scan_pattern import ScanPattern
from processors.config import PeakConfig
from processors.pattern_windows import chi_segments, window_pixels
from processors.polar_histogram import build_polar_histogram

_COLOURS = ("tab:red", "tab:cyan", "tab:orange", "tab:green", "tab:pink", "white", "tab:olive", "tab:purple")


@dataclass(frozen=True)
class WindowOutline:
    """One window: its pixels on the detector (bool ``(rows, cols)``) and χ pieces in [−180, 180] (degrees)."""

    name: str
    q_range: tuple[float, float]
    chi_segments: tuple[tuple[float, float], ...]
    pixels: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class PatternFigureData:
    """What the figure shows: ``image`` float64 ``(rows, cols)`` (NaN = masked), ``polar`` ``(nq, nchi)``
    over ``q_edges`` (1/Å) × ``chi_edges`` (degrees), the windows, and a title."""

    stat: str
    image: np.ndarray = field(repr=False)
    polar: np.ndarray = field(repr=False)
    q_edges: np.ndarray = field(repr=False)
    chi_edges: np.ndarray = field(repr=False)
    windows: tuple[WindowOutline, ...] = ()
    title: str = ""


def pattern_figure_data(scan: ScanPattern, peaks: Sequence[PeakConfig], stat: str = "sum", *,
                        nq: int = 500, nchi: int = 360) -> PatternFigureData:
    """The image of ``stat`` (sum, mean, max), its (q, χ) histogram (mean per bin; max per bin for max)."""
    image = scan.pattern.image(stat)
    g = scan.geometry
    hist = build_polar_histogram(g.q_A, g.chi_deg, scan.pattern.mask | ~np.isfinite(image), nq=nq, nchi=nchi)
    polar = hist.apply(image, "max" if stat == "max" else "mean")
    windows = tuple(WindowOutline(p.name, tuple(p.q), tuple(chi_segments(*p.chi)),
                                  window_pixels(g.q_A, g.chi_deg, p)) for p in peaks)
    first, stop = scan.frames
    title = (f"{scan.master.name}: {stat} of frames {first}–{stop - 1} ({scan.pattern.frames} read"
             + (f", {scan.skipped} skipped" if scan.skipped else "") + ")")
    return PatternFigureData(stat, image, polar, hist.q_edges, hist.chi_edges, windows, title)


def _log_norm(values: np.ndarray) -> tuple[LogNorm, np.ndarray]:
    """A log scale over the positive values, and ``values`` with zeros raised to its floor (NaN kept)."""
    positive = values[np.isfinite(values) & (values > 0)]
    vmin = float(positive.min()) if positive.size else 1.0
    vmax = float(positive.max()) if positive.size else 10.0
    vmax = max(vmax, vmin * 10.0)
    shown = np.where(np.isfinite(values) & (values <= 0), vmin, values)
    return LogNorm(vmin=vmin, vmax=vmax, clip=True), shown


def draw_pattern(data: PatternFigureData) -> Figure:
    """The two-panel figure (a matplotlib ``Figure``, no pyplot: headless)."""
    fig = Figure(figsize=(15, 6.5), layout="constrained")
    ax_det, ax_pol = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.0, 1.25]})
    ax_det.set_gid("detector")
    ax_pol.set_gid("polar")
    cmap = colormaps["viridis"].with_extremes(bad="0.75")
    unit = "counts" if data.stat == "sum" else "counts / frame" if data.stat == "mean" else "counts (max)"

    norm, shown = _log_norm(data.image)
    im = ax_det.imshow(shown, norm=norm, cmap=cmap, origin="upper", interpolation="nearest")
    fig.colorbar(im, ax=ax_det, shrink=0.85, label=f"{data.stat} ({unit})")
    ax_det.set_xlabel("column (pixel)")
    ax_det.set_ylabel("row (pixel)")
    ax_det.set_title("detector (grey: masked)")
    for k, w in enumerate(data.windows):
        colour = _COLOURS[k % len(_COLOURS)]
        if not w.pixels.any():
            continue
        ax_det.contour(w.pixels.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.2)
        rows, cols = np.nonzero(w.pixels)
        ax_det.text(cols.mean(), rows.mean(), w.name, color=colour, ha="center", va="center",
                    fontsize=9, fontweight="bold", gid=f"window-label:{w.name}")

    norm, shown = _log_norm(data.polar)
    mesh = ax_pol.pcolormesh(data.q_edges, data.chi_edges, shown.T, norm=norm, cmap=cmap, shading="flat")
    fig.colorbar(mesh, ax=ax_pol, shrink=0.85, label=f"{data.stat} per pixel ({unit})")
    ax_pol.set_xlabel("q (1/Å)")
    ax_pol.set_ylabel("χ (degrees, pyFAI)")
    ax_pol.set_ylim(-180, 180)
    ax_pol.set_yticks(np.arange(-180, 181, 45))
    ax_pol.set_title("(q, χ): mean of the pixels in each bin (grey: no pixel)"
                     if data.stat != "max" else "(q, χ): max of the pixels in each bin (grey: no pixel)")
    for k, w in enumerate(data.windows):
        colour = _COLOURS[k % len(_COLOURS)]
        q_lo, q_hi = w.q_range
        for j, (c_lo, c_hi) in enumerate(w.chi_segments):
            ax_pol.add_patch(Rectangle((q_lo, c_lo), q_hi - q_lo, c_hi - c_lo, fill=False, edgecolor=colour,
                                       linewidth=1.5, gid=f"window:{w.name}:{j}"))
        c_lo, c_hi = w.chi_segments[0]
        ax_pol.text(q_hi, c_hi, f" {w.name}", color=colour, ha="left", va="top", fontsize=9, fontweight="bold",
                    clip_on=True, gid=f"window-label:{w.name}")
    fig.suptitle(data.title)
    return fig
