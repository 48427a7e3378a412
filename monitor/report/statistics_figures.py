"""The statistics figures of ``nanomaps report``: histograms, profiles against the distance
from the supercrystal's centre, and the size dependence with the power-law fits and the
correlations. Drawing only: the numbers come from :mod:`monitor.report.statistics`; each
function returns a ``matplotlib.figure.Figure`` (no pyplot, no global state)."""

from __future__ import annotations

import math

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from monitor.report.figure_data import ReportData
from monitor.report.statistics import ReportStatistics

__all__ = ["draw_histograms", "draw_profiles", "draw_size_dependence"]

_MINUS = "\u2212"


def _num(value: float, digits: int = 2) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}".replace("-", _MINUS)


def _scale(name: str, units: str) -> tuple[float, str]:
    """Microstrain in %, everything else as stored."""
    return (100.0, "%") if name == "microstrain" else (1.0, units)


def _grid(fig: Figure, n: int, cols: int) -> list[Axes]:
    rows = max(1, math.ceil(n / cols))
    grid = fig.add_gridspec(rows, cols)
    return [fig.add_subplot(grid[k // cols, k % cols]) for k in range(n)]


def _empty(fig: Figure, text: str) -> Figure:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.35")
    ax.set_axis_off()
    return fig


def _title(data: ReportData, stats: ReportStatistics, what: str) -> str:
    return f"{data.path.name} — {what} over {int(stats.mask.sum())} points ({stats.mask_source})"


def draw_histograms(data: ReportData, stats: ReportStatistics) -> Figure:
    """One histogram per quantity over the mask, with its median and N."""
    names = [n for n in stats.quantities if n != "distance"]
    fig = Figure(figsize=(4.0 * min(4, max(1, len(names))), 3.2 * max(1, math.ceil(len(names) / 4))),
                 layout="constrained")
    fig.suptitle(_title(data, stats, "histograms"), fontsize=11)
    if not names:
        return _empty(fig, "no derived quantity in the file")
    for ax, name in zip(_grid(fig, len(names), 4), names):
        q = stats.quantities[name]
        k, units = _scale(name, q.units)
        v = q.values[stats.mask & np.isfinite(q.values)] * k
        ax.set_label(f"hist_{name}")
        s = stats.summary(name)
        if v.size:
            lo, hi = np.percentile(v, [0.5, 99.5])
            ax.hist(v, bins=30, range=(lo, hi) if hi > lo else None, color="tab:blue", alpha=0.75)
            ax.axvline(s["median"] * k, color="k", lw=1.2)
        ax.set_title(f"{q.label}: N = {s['n']}, median {_num(s['median'] * k, 3)} {units}", fontsize=9)
        ax.set_xlabel(f"{q.label} ({units})", fontsize=8)
        ax.tick_params(labelsize=7)
    return fig


def draw_profiles(data: ReportData, stats: ReportStatistics) -> Figure:
    """The mask with its centre, then the median and IQR of each quantity against distance."""
    names = [n for n in stats.profiles]
    fig = Figure(figsize=(16.0, 3.4 * math.ceil((len(names) + 1) / 4)), layout="constrained")
    fig.suptitle(_title(data, stats, "profiles from the supercrystal's centre"), fontsize=11)
    axes = _grid(fig, len(names) + 1, 4)
    ax = axes[0]
    ax.set_label("mask")
    x0, x1 = data.x.edges()
    y0, y1 = data.y.edges()
    ax.imshow(stats.mask.astype(float), origin="lower", extent=(x0, x1, y0, y1), interpolation="nearest",
              cmap=ListedColormap(["0.9", "tab:green"]), vmin=0, vmax=1, aspect="equal")
    ax.plot([stats.centre[0]], [stats.centre[1]], marker="+", color="k", ms=12, mew=2)
    ax.set_title("supercrystal mask and centre (+)", fontsize=9)
    ax.set_xlabel(data.x.label, fontsize=8)
    ax.set_ylabel(data.y.label, fontsize=8)
    ax.tick_params(labelsize=7)
    for ax, name in zip(axes[1:], names):
        q, p = stats.quantities[name], stats.profiles[name]
        k, units = _scale(name, q.units)
        ax.set_label(f"profile_{name}")
        ok = np.isfinite(p.median)
        ax.fill_between(p.centres[ok], p.q25[ok] * k, p.q75[ok] * k, color="tab:orange", alpha=0.3, label="IQR")
        ax.plot(p.centres[ok], p.median[ok] * k, color="tab:red", marker="o", ms=3, label="median")
        ax.set_title(q.label, fontsize=9)
        ax.set_xlabel(f"distance from centre ({stats.distance_units})", fontsize=8)
        ax.set_ylabel(f"{q.label} ({units})", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return fig


def _scatter(ax: Axes, x: np.ndarray, y: np.ndarray, colour: str, label: str) -> None:
    n = x.size
    ax.scatter(x, y, s=6, alpha=float(np.clip(40 / math.sqrt(max(n, 1)), 0.08, 0.5)), color=colour, linewidths=0,
               label=label, rasterized=True)


def _rho_text(stats: ReportStatistics, pair: tuple[str, str]) -> str:
    c = stats.correlations.get(pair)
    if c is None:
        return ""
    pct = f"{100 * stats.options.confidence:g} %"
    return (f"ρ_P = {_num(c.pearson)} [{_num(c.pearson_ci[0])}, {_num(c.pearson_ci[1])}]\n"
            f"ρ_S = {_num(c.spearman)} [{_num(c.spearman_ci[0])}, {_num(c.spearman_ci[1])}] ({pct}, N = {c.n})")


def draw_size_dependence(data: ReportData, stats: ReportStatistics) -> Figure:
    """a and b against size with the power-law fits, and a − b, microstrain, Δφ_do against size
    and distance, each with Pearson and Spearman ρ and their bootstrap intervals."""
    q = stats.quantities
    panels = [(x, y) for x, y in (("size", "a"), ("size", "a_minus_b"), ("size", "microstrain"), ("size", "dphi_do"),
                                  ("distance", "dphi_do"), ("distance", "size")) if x in q and y in q]
    fig = Figure(figsize=(16.0, 4.2 * math.ceil(max(len(panels), 1) / 3)), layout="constrained")
    fig.suptitle(_title(data, stats, "correlations"), fontsize=11)
    if not panels:
        return _empty(fig, "needs size or distance and a derived quantity")
    colours = colormaps["tab10"]
    for ax, (xn, yn) in zip(_grid(fig, len(panels), 3), panels):
        ax.set_label(f"{yn}_vs_{xn}")
        kx, ux = _scale(xn, q[xn].units)
        ys = ["a", "b"] if (xn, yn) == ("size", "a") and "b" in q else [yn]
        text = []
        for i, name in enumerate(ys):
            ky, uy = _scale(name, q[name].units)
            ok = stats.mask & np.isfinite(q[xn].values) & np.isfinite(q[name].values)
            _scatter(ax, q[xn].values[ok] * kx, q[name].values[ok] * ky, colours(i), q[name].label)
            fit = stats.power_laws.get(name) if xn == "size" else None
            if fit is not None and ok.any():
                s = np.linspace(np.nanmin(q[xn].values[ok]), np.nanmax(q[xn].values[ok]), 100)
                ax.plot(s, fit(s) * ky, color=colours(i), lw=2,
                        label=f"{name} = {fit.y_inf:.4f} {'−' if fit.k < 0 else '+'} {abs(fit.k):.3g}·s^−{fit.n:.2f}")
            rho = _rho_text(stats, (xn, name))
            if rho:
                text.append(f"{q[name].label}: {rho}" if len(ys) > 1 else rho)
        ax.text(0.02, 0.98, "\n".join(text), transform=ax.transAxes, ha="left", va="top", fontsize=7,
                bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7", "alpha": 0.85})
        ax.set_xlabel(f"{q[xn].label} ({ux})", fontsize=8)
        ax.set_ylabel(f"{q[yn].label if len(ys) == 1 else 'lattice parameter'} ({uy})", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if len(ys) > 1 or any(stats.power_laws.get(n) for n in ys if xn == "size"):
            ax.legend(loc="lower right", fontsize=7, markerscale=2)
    return fig
