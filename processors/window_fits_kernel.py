"""numba kernel of the per-frame loop over peak windows: each window's fit and residual test.

One call per frame instead of one Python call per window and kernel: the Python-level
loop (argument boxing, record field access, two kernel calls per window) cost about as
much as a whole fit (~0.07–0.1 ms per frame with three windows, measured, docs/fit_model.md).
The kernels called are the same ones the single-window path calls, with the same
arguments, so the results are the same (tests/test_window_fits.py compares the two).
Pure function on caller-allocated arrays (the wrapper is :mod:`processors.window_fits`).
"""

from __future__ import annotations

import math

import numba as nb

from processors.fit_gaussian2d import FIT_OK, PARAM_NAMES, fit_gaussian2d_into
from processors.second_spot_kernel import residual_significance

_A, _Q0, _DQ, _PHI0, _DPHI = (PARAM_NAMES.index(n) for n in ("amplitude", "q0", "dq", "phi0", "dphi"))


@nb.njit(cache=True, nogil=True)
def fit_windows_kernel(sums, counts, bin_offset, nq, nchi, q_all, q_offset, chi_all, chi_offset,
                       pixel_q, pixel_chi, work, work_offset, min_bins, min_snr, max_iterations,
                       outlier_sigma, core_radius, params, errors, status, residual_z,
                       prefix, gq, gp, t_chi) -> None:
    """Fit the spot of every window and test the residual of each spot fitted.

    sums, counts : float64 [n_bins] — every window's bins, window ``k`` at
        ``bin_offset[k] : bin_offset[k] + nq[k]·nchi[k]`` (row-major ``(nq, nchi)``).
    nq, nchi : int64 [n_windows]; q_all/chi_all : float64, window ``k``'s bin centres (1/Å,
        degrees) at ``q_offset[k]``/``chi_offset[k]``; pixel_q, pixel_chi : float64 [n_windows],
        one detector pixel in 1/Å and degrees.
    work : float64, window ``k``'s fit work at ``work_offset[k] : work_offset[k + 1]``.
    params, errors : float64 [n_windows, 8] out (``fit_gaussian2d_into``); status : int64
        [n_windows] out (FIT_*); residual_z : float64 [n_windows] out, the significance of the
        strongest excess left by the fitted spot (``residual_significance``), NaN where the
        fit failed.
    prefix : float64 [≥ 3·max((nq+1)(nchi+1))], gq : float64 [≥ 3·max nq], gp : float64
        [≥ 3·max nchi], t_chi : float64 [≥ max nchi]: scratch of the residual test.
    """
    for k in range(nq.size):
        m = nq[k]
        n = nchi[k]
        b0 = bin_offset[k]
        s = sums[b0:b0 + m * n].reshape(m, n)
        c = counts[b0:b0 + m * n].reshape(m, n)
        q = q_all[q_offset[k]:q_offset[k] + m]
        chi = chi_all[chi_offset[k]:chi_offset[k] + n]
        p = params[k]
        fit_status = fit_gaussian2d_into(s, c, q, chi, p, errors[k], work[work_offset[k]:work_offset[k + 1]],
                                         min_bins, min_snr, max_iterations, pixel_q[k], pixel_chi[k],
                                         outlier_sigma, True)
        status[k] = fit_status
        if fit_status != FIT_OK:
            residual_z[k] = math.nan
            continue
        size = (m + 1) * (n + 1)
        z, _, _ = residual_significance(s, c, q, chi, p[_A], p[_Q0], p[_DQ], p[_PHI0], p[_DPHI], core_radius,
                                        prefix[:size].reshape(m + 1, n + 1),
                                        prefix[size:2 * size].reshape(m + 1, n + 1),
                                        prefix[2 * size:3 * size].reshape(m + 1, n + 1),
                                        gq[:3 * m].reshape(3, m), gp[:3 * n].reshape(3, n), t_chi[:n])
        residual_z[k] = z
