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

from processors.angles import wrap_deg_exact
from processors.fit_gaussian2d import FIT_OK, PARAM_NAMES, fit_gaussian2d_into
from processors.frame_record import N_PARAMS, SECOND_NONE, SECOND_NOT_TRIED
from processors.gaussian2d_kernel import work_layout
from processors.second_spot_kernel import residual_significance_from_axes

_A, _Q0, _DQ, _PHI0, _DPHI = (PARAM_NAMES.index(n) for n in ("amplitude", "q0", "dq", "phi0", "dphi"))


@nb.njit(cache=True, nogil=True)
def fit_windows_kernel(sums, counts, bin_offset, nq, nchi, q_all, q_offset, chi_all, chi_offset,
                       pixel_q, pixel_chi, work, work_offset, min_bins, min_snr, max_iterations,
                       outlier_sigma, core_radius, params, errors, status, residual_z,
                       prefix, t_chi, out_params, out_errors, out_status, out_second_params,
                       out_second_errors, out_second_status) -> int:
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
    prefix : float64 [≥ 3·max((nq+1)(nchi+1))], t_chi : float64 [≥ max nchi]: scratch of the
        residual test.
    out_* : a frame record's fields (``processors.frame_record``), written by
        :func:`write_record_fields`. Returns how many windows need the two-spot fit
        (``residual_z ≥ min_snr``).
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
        # a fit that ends ok leaves the bin-averaged axis functions at its parameters in its
        # work buffer (fit_gaussian2d_kernel): the residual test's profiles, not recomputed
        w0 = work_offset[k]
        o_fq, o_fp = work_layout(m, n)
        z, _, _ = residual_significance_from_axes(s, c, q, chi, p[_A], p[_Q0], p[_DQ], p[_PHI0], p[_DPHI],
                                                  core_radius, prefix[:size].reshape(m + 1, n + 1),
                                                  prefix[size:2 * size].reshape(m + 1, n + 1),
                                                  prefix[2 * size:3 * size].reshape(m + 1, n + 1),
                                                  work[w0 + o_fq:w0 + o_fq + 3 * m].reshape(3, m),
                                                  work[w0 + o_fp:w0 + o_fp + 3 * n].reshape(3, n), t_chi[:n])
        residual_z[k] = z
    return write_record_fields(params, errors, status, residual_z, min_snr, out_params, out_errors, out_status,
                               out_second_params, out_second_errors, out_second_status)


@nb.njit(cache=True, nogil=True)
def write_record_fields(params, errors, status, residual_z, min_snr, out_params, out_errors, out_status,
                        out_second_params, out_second_errors, out_second_status) -> int:
    """The fits as a frame record holds them: ``out_params``/``out_errors`` [n, 8] the one-spot
    fits with φ0 wrapped to (−180, 180] (bit for bit as ``processors.angles.wrap_deg``),
    ``out_status`` the FIT_* codes, the second spot not found yet (NaN, ``SECOND_NONE`` where
    the fit is ok, ``SECOND_NOT_TRIED`` where not). Done here, not in numpy after the call: a
    dozen small numpy steps after the frame's passes cost ≈ 0.05 ms per frame with their
    data out of cache (measured, docs/fit_model.md). Returns how many windows have
    ``residual_z ≥ min_snr`` (the two-spot fit's test; NaN never passes it).
    """
    n_second = 0
    for k in range(status.size):
        for i in range(N_PARAMS):
            out_params[k, i] = params[k, i]
            out_errors[k, i] = errors[k, i]
            out_second_params[k, i] = math.nan
            out_second_errors[k, i] = math.nan
        out_params[k, _PHI0] = wrap_deg_exact(params[k, _PHI0])
        out_status[k] = status[k]
        out_second_status[k] = SECOND_NONE if status[k] == FIT_OK else SECOND_NOT_TRIED
        if residual_z[k] >= min_snr:
            n_second += 1
    return n_second
