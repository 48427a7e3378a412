"""A second spot in a peak window: the residual test and the two-spot fit (issue 10, item 4).

After the window's spot was fitted alone (status ok), :class:`SecondSpotFinder` asks
whether the data minus that spot's Gaussian hold another significant spot
(:func:`processors.second_spot_kernel.best_residual_box`: a box of the first spot's size
against the ring around it, z ≥ ``min_snr``, outside the first spot's core). If so, the two
are fitted by alternation with the one-spot fit kernel as a black box
(:func:`fit_window`):

1. the second on the data minus the first's Gaussian (background kept), the first's core
   (within one FWHM of its centre) left out;
2. the first again on the data minus the second's Gaussian (every bin);
3. steps 1–2 once more with the refined spots (``ALTERNATIONS`` = 2).

The second counts as found when every fit is ok and the two centres end more than one
FWHM apart (normalised by the first's widths); the first stays the stronger (integrated
A·dq·dφ), the two are swapped otherwise. When the two-spot fit fails, the first keeps its
one-spot fit. Formulas, thresholds and measured rates: ``docs/second_spot_and_hot_pixels.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from processors.angles import wrap_deg
from processors.config import FitConfig
from processors.fit_gaussian2d import FIT_OK, fit_gaussian2d_into
from processors.frame_record import (
    N_PARAMS,
    PARAM_NAMES,
    SECOND_FIT_FAILED,
    SECOND_FOUND,
    SECOND_NONE,
)
from processors.polar_lut import PolarWindow
from processors.second_spot_kernel import exclude_core_into, residual_significance, subtract_gaussian_into

_A, _Q0, _DQ, _PHI0, _DPHI = (PARAM_NAMES.index(n) for n in ("amplitude", "q0", "dq", "phi0", "dphi"))

#: Two-spot fits by alternation: second on data − first, then first on data − second, this many times.
ALTERNATIONS = 2
#: The first spot's core, in FWHM (normalised distance): no candidate there, left out of the second's fit.
CORE_RADIUS = 1.0


def fit_window(sums: np.ndarray, counts: np.ndarray, window: PolarWindow, params: np.ndarray,
               errors: np.ndarray, work: np.ndarray, fit: FitConfig) -> int:
    """The one place this module calls the one-spot fit kernel (no checks, no allocation).

    ``sums``/``counts`` ``(nq, nchi)`` float64, ``params``/``errors`` ``[N_PARAMS]`` out,
    ``work`` from ``make_fit_work(window.nq, window.nchi)``; returns the FIT_* status.
    """
    return int(fit_gaussian2d_into(sums, counts, window.q_centers, window.chi_centers, params, errors, work,
                                   fit.min_bins, fit.min_snr, fit.max_iterations,
                                   window.pixel_q, window.pixel_chi, fit.outlier_sigma, True))


def integrated(params: np.ndarray) -> float:
    """A spot's integrated intensity up to a constant: A · dq · dφ."""
    return float(params[_A] * params[_DQ] * params[_DPHI])


def separation(a: np.ndarray, b: np.ndarray) -> float:
    """Distance of centre ``b`` from centre ``a`` in units of ``a``'s FWHM (q and φ)."""
    dphi = wrap_deg(b[_PHI0] - a[_PHI0])
    return float(np.hypot((b[_Q0] - a[_Q0]) / a[_DQ], dphi / a[_DPHI]))


@dataclass
class SecondSpotResult:
    """What :meth:`SecondSpotFinder.find` decided: its ``SECOND_*`` status and the best residual z."""

    status: int
    z: float


class SecondSpotFinder:
    """Second-spot search and two-spot fit for one window; every buffer is made here, once.

    Not thread-safe (one per window per worker).
    """

    def __init__(self, window: PolarWindow) -> None:
        self.window = window
        shape = (window.nq, window.nchi)
        self._sums = np.empty(shape)
        self._counts = np.empty(shape)
        self._prefix = np.empty((3, window.nq + 1, window.nchi + 1))
        self._gq = np.empty((3, window.nq))
        self._gp = np.empty((3, window.nchi))
        self._t = np.empty(window.nchi)
        self._first = np.empty(N_PARAMS)
        self._first_errors = np.empty(N_PARAMS)
        self._p = np.empty(N_PARAMS)
        self._e = np.empty(N_PARAMS)

    def _subtract(self, sums: np.ndarray, counts: np.ndarray, p: np.ndarray, out: np.ndarray,
                  clip: bool = True) -> None:
        w = self.window
        subtract_gaussian_into(sums, counts, w.q_centers, w.chi_centers, p[_A], p[_Q0], p[_DQ], p[_PHI0],
                               p[_DPHI], clip, out, self._gq, self._gp)

    def residual_z(self, sums: np.ndarray, counts: np.ndarray, first: np.ndarray) -> float:
        """Significance of the strongest excess left by the first spot (see ``best_residual_box``)."""
        w = self.window
        z, _, _ = residual_significance(sums, counts, w.q_centers, w.chi_centers, first[_A], first[_Q0], first[_DQ],
                                        first[_PHI0], first[_DPHI], CORE_RADIUS, self._prefix[0], self._prefix[1],
                                        self._prefix[2], self._gq, self._gp, self._t)
        return float(z)

    def find(self, sums: np.ndarray, counts: np.ndarray, params: np.ndarray, errors: np.ndarray,
             second_params: np.ndarray, second_errors: np.ndarray, work: np.ndarray,
             fit: FitConfig, z: float | None = None) -> SecondSpotResult:
        """Look for a second spot next to the one fitted alone in ``params``/``errors`` (status ok).

        On :data:`SECOND_FOUND` ``params``/``errors`` hold the stronger spot of the two-spot
        fit and ``second_params``/``second_errors`` the other; otherwise ``params``/``errors``
        are unchanged and the second's are NaN. ``work`` is the window's fit work buffer. ``z``:
        :meth:`residual_z` of these data and ``params`` when the caller has it already
        (``processors.window_fits``), computed here when None.
        """
        second_params[:] = np.nan
        second_errors[:] = np.nan
        if z is None:
            z = self.residual_z(sums, counts, params)
        if not z >= fit.min_snr:
            return SecondSpotResult(SECOND_NONE, z)
        w = self.window
        first, first_e, p, e = self._first, self._first_errors, self._p, self._e
        np.copyto(first, params)
        np.copyto(first_e, errors)
        for _ in range(ALTERNATIONS):
            self._subtract(sums, counts, first, self._sums)
            exclude_core_into(counts, w.q_centers, w.chi_centers, first[_Q0], first[_DQ], first[_PHI0],
                              first[_DPHI], CORE_RADIUS, self._counts)
            if fit_window(self._sums, self._counts, w, p, e, work, fit) != FIT_OK:
                return SecondSpotResult(SECOND_FIT_FAILED, z)
            self._subtract(sums, counts, p, self._sums)
            if fit_window(self._sums, counts, w, first, first_e, work, fit) != FIT_OK:
                return SecondSpotResult(SECOND_FIT_FAILED, z)
        if separation(first, p) < CORE_RADIUS:
            return SecondSpotResult(SECOND_FIT_FAILED, z)
        if integrated(p) > integrated(first):
            first, first_e, p, e = p, e, first, first_e
        np.copyto(params, first)
        np.copyto(errors, first_e)
        np.copyto(second_params, p)
        np.copyto(second_errors, e)
        return SecondSpotResult(SECOND_FOUND, z)
