"""Every peak window's fit and residual test for one frame, in one kernel call, with reused buffers."""

from __future__ import annotations

import numpy as np

from processors.config import FitConfig
from processors.fit_gaussian2d import fit_work_size
from processors.frame_record import N_PARAMS
from processors.polar_lut import PolarWindow
from processors.second_spot import CORE_RADIUS
from processors.window_fits_kernel import fit_windows_kernel


class WindowFits:
    """The per-frame fits of a fixed set of windows (:func:`fit_windows_kernel`).

    Built once per LUT: concatenates the windows' bin centres and work buffers so one
    kernel call does every window. After :meth:`run`, ``params``/``errors`` ``[n, 8]``
    hold each window's one-spot fit (``fit_gaussian2d_into``: φ0 in the window's branch,
    not wrapped; the record gets it wrapped), ``status`` ``[n]`` its FIT_* code and ``residual_z`` ``[n]`` the
    second-spot test's significance (NaN where the fit failed). ``works[k]`` is window
    ``k``'s fit work buffer, for the two-spot fit that follows where ``residual_z`` is high.
    Not thread-safe (one per worker).
    """

    def __init__(self, windows: tuple[PolarWindow, ...] | list[PolarWindow], fit: FitConfig) -> None:
        self.fit = fit
        n = len(windows)
        self.bin_offset = np.array([w.offset for w in windows], dtype=np.int64)
        self.nq = np.array([w.nq for w in windows], dtype=np.int64)
        self.nchi = np.array([w.nchi for w in windows], dtype=np.int64)
        self.q_all = np.concatenate([w.q_centers for w in windows]).astype(np.float64)
        self.chi_all = np.concatenate([w.chi_centers for w in windows]).astype(np.float64)
        self.q_offset = np.concatenate([[0], np.cumsum(self.nq)[:-1]]).astype(np.int64)
        self.chi_offset = np.concatenate([[0], np.cumsum(self.nchi)[:-1]]).astype(np.int64)
        self.pixel_q = np.array([w.pixel_q for w in windows], dtype=np.float64)
        self.pixel_chi = np.array([w.pixel_chi for w in windows], dtype=np.float64)
        sizes = [fit_work_size(w.nq, w.nchi) for w in windows]
        self.work_offset = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.work = np.empty(int(self.work_offset[-1]), dtype=np.float64)
        self.works = [self.work[self.work_offset[k]:self.work_offset[k + 1]] for k in range(n)]
        self.params = np.empty((n, N_PARAMS), dtype=np.float64)
        self.errors = np.empty((n, N_PARAMS), dtype=np.float64)
        self.status = np.empty(n, dtype=np.int64)
        self.residual_z = np.empty(n, dtype=np.float64)
        self._prefix = np.empty(3 * int(((self.nq + 1) * (self.nchi + 1)).max()), dtype=np.float64)
        self._t_chi = np.empty(int(self.nchi.max()), dtype=np.float64)

    def run(self, sums: np.ndarray, counts: np.ndarray, rec) -> int:
        """Fit every window of the flat per-bin ``sums``/``counts`` (float64, the LUT's bins) and
        write ``rec``'s fit fields (a :func:`~processors.frame_record.frame_record_dtype` record:
        ``params``/``errors`` with φ0 wrapped, ``fit_status``, the second spot's fields as "none
        found yet"). Returns how many windows need the two-spot fit (``residual_z ≥ min_snr``)."""
        fit = self.fit
        return fit_windows_kernel(sums, counts, self.bin_offset, self.nq, self.nchi, self.q_all, self.q_offset,
                                  self.chi_all, self.chi_offset, self.pixel_q, self.pixel_chi, self.work,
                                  self.work_offset, int(fit.min_bins), float(fit.min_snr), int(fit.max_iterations),
                                  float(fit.outlier_sigma), CORE_RADIUS, self.params, self.errors, self.status,
                                  self.residual_z, self._prefix, self._t_chi, rec["params"],
                                  rec["errors"], rec["fit_status"], rec["second_params"], rec["second_errors"],
                                  rec["second_status"])
