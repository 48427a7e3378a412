"""Geometry → compact polar lookup table of only the pixels inside the peak windows.

Built once per configuration (OM's ``RadialProfile`` pattern): the per-frame kernel then
only gathers these pixels and adds them into (peak, q bin, χ bin) sums and counts. A
window's χ range may straddle ±180° or lie outside (−180°, 180]: each pixel's χ is taken
into the window's own branch, ``w = lo + ((χ − lo) mod 360)``, so a window is always a
contiguous rectangle in (q, w). Binning is pyFAI's "no splitting" histogram: a pixel
falls in bin ``floor((x − lo) / δ)`` with ``δ = (hi − lo) / n``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from processors.angles import wrap_deg
from processors.config import ConfigError, PeakConfig
from processors.geometry import PixelGeometry
from processors.polar_lut_kernel import kept_positive_median, valid_window_pixels, window_bins

log = logging.getLogger(__name__)

#: A window with fewer valid pixels than this cannot hold a fittable spot.
MIN_WINDOW_PIXELS = 50
#: Default binning: about two pixels per bin along each axis (``[[peak]] pixels_per_bin``),
#: within these limits.
PIXELS_PER_BIN = 2.0
MIN_BINS, MAX_BINS = 8, 96


@dataclass(frozen=True)
class PolarWindow:
    """One peak's window: ``nq × nchi`` bins starting at global bin ``offset``.

    ``q_centers`` (1/Å) and ``chi_centers`` (degrees, in the window's branch, may lie
    outside (−180, 180]) are the bin centres. ``pixel_q`` (1/Å) and ``pixel_chi``
    (degrees) are the median extent of one detector pixel in the window, |∂x/∂row| +
    |∂x/∂col|: the fit's lower width limit is half of it.
    """

    name: str
    q_range: tuple[float, float]
    chi_range: tuple[float, float]
    nq: int
    nchi: int
    offset: int
    q_centers: np.ndarray = field(repr=False)
    chi_centers: np.ndarray = field(repr=False)
    n_pixels: int = 0
    pixel_q: float = 0.0
    pixel_chi: float = 0.0

    @property
    def n_bins(self) -> int:
        return self.nq * self.nchi


@dataclass(frozen=True)
class PolarLUT:
    """Pixels of all windows, sorted by pixel for a cache-friendly gather.

    ``pixel_index`` int32 ``[n]`` (int64 for frames of 2**31 pixels or more) flat indices
    into a ``(rows, cols)`` frame;
    ``bin_index`` int32 ``[n]`` global bin numbers (``window.offset + iq * nchi + ichi``).
    A pixel inside two overlapping windows appears twice.
    """

    shape: tuple[int, int]
    windows: tuple[PolarWindow, ...]
    pixel_index: np.ndarray = field(repr=False)
    bin_index: np.ndarray = field(repr=False)

    @property
    def n_bins(self) -> int:
        return sum(w.n_bins for w in self.windows)


def wrap_into_window(chi_deg: np.ndarray, lo: float) -> np.ndarray:
    """χ (degrees) taken into the branch ``[lo, lo + 360)``."""
    return lo + np.mod(chi_deg - lo, 360.0)


def window_pixels(geometry: PixelGeometry, q_range: tuple[float, float],
                  chi_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, cols, chi)`` of the pixels with q in ``[q_lo, q_hi)`` 1/Å and χ in ``[chi_lo, chi_hi)``
    degrees, masked or not, in row-major order; ``chi`` taken into ``[chi_lo, chi_lo + 360)``.

    Read-only arrays, remembered on ``geometry`` (``derived``): every header may bring a new
    mask, and finding a window's pixels means three passes over a 4M detector's q and χ
    (≈ 90 ms, paid in the main process and in each worker while the series' frames wait);
    the mask then only filters these.
    """
    def find() -> tuple[np.ndarray, ...]:
        q, chi = geometry.q_A, geometry.chi_deg
        rows, cols = np.nonzero((q >= q_range[0]) & (q < q_range[1]))
        w = wrap_into_window(chi[rows, cols], chi_range[0])
        inside = w < chi_range[1]
        return rows[inside], cols[inside], w[inside]

    return _remembered(geometry, "window_pixels", q_range, chi_range, find)


def pixel_steps(geometry: PixelGeometry, q_range: tuple[float, float],
                chi_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel of :func:`window_pixels` (same order), from the pixel to its neighbours one row
    and one column on: ``(dq, dchi, eq, echi)``, the steps ``hypot(Δrow, Δcol)`` of q (1/Å) and
    χ (degrees) and the extents ``|Δrow| + |Δcol|`` (a pixel on the last row or column steps to
    itself there). Mask-free and remembered on ``geometry`` like the pixels: a new mask only
    filters them before the medians (``build_polar_lut``)."""
    def find() -> tuple[np.ndarray, ...]:
        q, chi = geometry.q_A, geometry.chi_deg
        rows, cols, _ = window_pixels(geometry, q_range, chi_range)
        r1 = np.minimum(rows + 1, q.shape[0] - 1)
        c1 = np.minimum(cols + 1, q.shape[1] - 1)
        dq_r, dq_c = q[r1, cols] - q[rows, cols], q[rows, c1] - q[rows, cols]
        dchi_r = wrap_deg(chi[r1, cols] - chi[rows, cols])
        dchi_c = wrap_deg(chi[rows, c1] - chi[rows, cols])
        return (np.hypot(dq_r, dq_c), np.hypot(dchi_r, dchi_c),
                np.abs(dq_r) + np.abs(dq_c), np.abs(dchi_r) + np.abs(dchi_c))

    return _remembered(geometry, "pixel_steps", q_range, chi_range, find)


def _remembered(geometry: PixelGeometry, what: str, q_range: tuple[float, float], chi_range: tuple[float, float],
                find: Callable[[], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """``find()``'s arrays for a window, made read-only and kept in ``geometry.derived`` under
    ``what`` and the window: found once per geometry, shared by every later setup."""
    key = (what, float(q_range[0]), float(q_range[1]), float(chi_range[0]), float(chi_range[1]))
    found = geometry.derived.get(key)
    if found is None:
        found = find()
        for a in found:
            a.setflags(write=False)
        geometry.derived[key] = found
    return found


def _default_bins(width: float, step: float, pixels_per_bin: float = PIXELS_PER_BIN) -> int:
    return int(np.clip(round(width / (pixels_per_bin * step)), MIN_BINS, MAX_BINS))


def _window_error(geometry: PixelGeometry, valid: np.ndarray, peak: PeakConfig, n_valid: int,
                  source: str) -> ConfigError:
    """What to say of ``peak``'s window holding only ``n_valid`` valid pixels."""
    q_valid = geometry.q_A[valid]  # only for the message: a 4M frame's gather costs ~15 ms per setup
    if not q_valid.size:
        return ConfigError(f"{source}: every detector pixel is masked (detector, file and user masks "
                           "together): no window can be integrated. Fix: check the mask")
    return ConfigError(
        f"{source}: [[peak]] '{peak.name}' window q = {list(peak.q)} 1/Å, chi = {list(peak.chi)}° holds "
        f"{n_valid} valid detector pixels (need {MIN_WINDOW_PIXELS}); this detector covers q "
        f"{q_valid.min():.3f}–{q_valid.max():.3f} 1/Å. Fix: move the window onto the detector "
        "(check q in 1/Å, not 1/nm, and χ as pyFAI defines it)")


def check_windows(geometry: PixelGeometry, mask: np.ndarray, peaks: Sequence[PeakConfig],
                  source: str = "config") -> None:
    """Raise the :class:`ConfigError` :func:`build_polar_lut` would raise for ``peaks`` and
    ``mask``, without building the table (a few ms once the windows' pixels are known)."""
    if mask.shape != geometry.q_A.shape:
        raise ValueError(f"mask shape {mask.shape} != detector shape {geometry.q_A.shape}")
    mask = np.ascontiguousarray(mask, dtype=np.bool_)
    for peak in peaks:
        rows, cols, _ = window_pixels(geometry, peak.q, peak.chi)
        n_valid = valid_window_pixels(rows, cols, mask, np.empty(rows.size, dtype=np.bool_))
        if n_valid < MIN_WINDOW_PIXELS:
            raise _window_error(geometry, ~mask, peak, n_valid, source)


def step_orders(geometry: PixelGeometry, q_range: tuple[float, float],
                chi_range: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """``argsort`` of each of :func:`pixel_steps`' four arrays (int32 or int64 indices), remembered
    on ``geometry`` like them: a new mask's medians are then found by walking these orders
    (``polar_lut_kernel.kept_positive_median``) instead of partitioning filtered copies."""
    def find() -> tuple[np.ndarray, ...]:
        steps = pixel_steps(geometry, q_range, chi_range)
        index = np.int32 if steps[0].size < 2**31 else np.int64
        return tuple(np.argsort(a, kind="stable").astype(index) for a in steps)

    return _remembered(geometry, "step_orders", q_range, chi_range, find)


def build_polar_lut(geometry: PixelGeometry, mask: np.ndarray, peaks: Sequence[PeakConfig],
                    source: str = "config") -> PolarLUT:
    """Build the lookup table for ``peaks`` on ``geometry``.

    ``mask`` is bool ``(rows, cols)``, True = bad. Raises :class:`ConfigError` for a
    window that holds (almost) no valid pixel of this detector, naming the peak and the
    q/χ range the detector does cover (:func:`check_windows`).

    Each window's pixels, steps and their orders are mask-free and remembered on
    ``geometry``; the mask only selects among them (``processors.polar_lut_kernel``).
    """
    q = geometry.q_A
    if mask.shape != q.shape:
        raise ValueError(f"mask shape {mask.shape} != detector shape {q.shape}")
    mask = np.ascontiguousarray(mask, dtype=np.bool_)
    windows, pixel_parts, bin_parts = [], [], []
    offset = 0
    for peak in peaks:
        q_lo, q_hi = peak.q
        c_lo, c_hi = peak.chi
        rows, cols, w = window_pixels(geometry, peak.q, peak.chi)
        keep = np.empty(rows.size, dtype=np.bool_)
        n_valid = valid_window_pixels(rows, cols, mask, keep)
        if n_valid < MIN_WINDOW_PIXELS:
            raise _window_error(geometry, ~mask, peak, n_valid, source)
        dq, dchi, eq, echi = pixel_steps(geometry, peak.q, peak.chi)
        o_dq, o_dchi, o_eq, o_echi = step_orders(geometry, peak.q, peak.chi)
        if peak.bins is not None:
            nq, nchi = peak.bins
        else:
            nq = _default_bins(q_hi - q_lo, kept_positive_median(dq, o_dq, keep), peak.pixels_per_bin)
            nchi = _default_bins(c_hi - c_lo, kept_positive_median(dchi, o_dchi, keep), peak.pixels_per_bin)
        pixel_q = float(kept_positive_median(eq, o_eq, keep))
        pixel_chi = float(kept_positive_median(echi, o_echi, keep))
        delta_q = (q_hi - q_lo) / nq
        delta_c = (c_hi - c_lo) / nchi
        pixels = np.empty(n_valid, dtype=np.int64)
        bins = np.empty(n_valid, dtype=np.int32)
        bin_pixels = np.empty(nq * nchi, dtype=np.int64)
        n = window_bins(rows, cols, w, keep, q, float(q_lo), float(delta_q), int(nq), float(c_lo), float(delta_c),
                        int(nchi), int(offset),
                        pixels, bins, bin_pixels)
        pixel_parts.append(pixels[:n])
        bin_parts.append(bins[:n])
        covered = np.count_nonzero(bin_pixels) / (nq * nchi)
        if covered < 0.5:
            log.warning("%s: [[peak]] '%s': only %.0f %% of the window's bins see valid pixels "
                        "(gaps or detector edge)", source, peak.name, 100 * covered)
        windows.append(PolarWindow(
            name=peak.name, q_range=(q_lo, q_hi), chi_range=(c_lo, c_hi), nq=nq, nchi=nchi, offset=offset,
            q_centers=q_lo + (np.arange(nq) + 0.5) * delta_q,
            chi_centers=c_lo + (np.arange(nchi) + 0.5) * delta_c,
            n_pixels=int(n), pixel_q=pixel_q, pixel_chi=pixel_chi))
        offset += nq * nchi
    # int32 indices halve the index traffic per frame (EIGER frames have < 2**31 pixels)
    index_type = np.int32 if q.size < 2**31 else np.int64
    pixel_index = np.concatenate(pixel_parts).astype(index_type)
    bin_index = np.concatenate(bin_parts)
    order = np.argsort(pixel_index, kind="stable")
    return PolarLUT(shape=tuple(q.shape), windows=tuple(windows),
                    pixel_index=np.ascontiguousarray(pixel_index[order]),
                    bin_index=np.ascontiguousarray(bin_index[order]))
