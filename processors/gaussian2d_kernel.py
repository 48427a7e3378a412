"""numba kernel of the per-frame 2-D Gaussian spot fit on a polar (q, χ) patch.

Model (docs/fit_model.md), parameters always in ``processors.frame_record.PARAM_NAMES``
order::

    p = (A, q0, dq, phi0, dphi, B, Bq, Bchi)
    I(q, φ) = A · exp{−4 ln2 [(q − q0)² / dq² + w(φ − φ0)² / dφ²]}
              + B + Bq·(q − qc) + Bchi·(χ − χc)
    w(x) = x wrapped into (−180, 180]   (processors.angles.wrap_deg)

(qc, χc) the window centre (mean of the bin centres). q in 1/Å, φ in degrees, dq and dphi
are FWHM; A and B in counts per pixel, Bq per 1/Å, Bchi per degree. With ``integrated``
the Gaussian is averaged over each bin (an erf difference) rather than sampled at its
centre, so spots narrower than a few bins keep unbiased widths and amplitudes.

The data are a patch of bins: ``sums`` (photon counts summed over the bin's pixels) and
``counts`` (number of valid pixels; 0 = empty bin, no data). The fit is least squares of
the bin means ``sums / counts`` with weight ``counts``.

Pure functions on typed arrays: caller-allocated outputs and one caller-allocated float64
work buffer (``work_size(nq, nchi)`` elements), an int status code, no raising, no
logging, no allocation. ``fit_gaussian2d_kernel`` may be called from other ``@njit`` code.
The pieces: ``gaussian2d_start`` (valid bins, background, start), ``gaussian2d_moments``
(separable normal matrix, gradient, χ²), ``gaussian2d_solver`` (Levenberg–Marquardt),
``gaussian2d_outliers`` (bins left out).
"""

from __future__ import annotations

import math

import numba as nb

from processors.frame_record import (
    FIT_NO_PEAK,
    FIT_NOT_CONVERGED,
    FIT_OK,
    FIT_OUTSIDE_WINDOW,
    FIT_SINGULAR,
    FIT_TOO_FEW_BINS,
    N_PARAMS,
)
from processors.gaussian2d_moments import (
    N_BG_SUMS,
    N_PHI_ROWS,
    axis_functions,
    axis_span,
    background_sums,
    moments,
    moments_from_axes,
)
from processors.gaussian2d_outliers import (
    bin_is_outlier,
    exclude_core,
    exclude_outliers,
    peak_bin,
    spike_in_box,
)
from processors.gaussian2d_solver import levenberg_marquardt, solve
from processors.gaussian2d_start import background, best_box, prepare, start

# Strict IEEE arithmetic, no fast-math flags: a frame's fit must be bit-identical whichever
# worker runs it. With "reassoc"/"contract" LLVM may order reductions and fuse multiply-adds
# differently each time it compiles a function, and the code a process runs depends on
# whether it compiled the kernels itself or loaded numba's cache (and on what it compiled
# before): the same window fitted in two processes differed by up to ~40 ulp. Reductions
# that must vectorize are written elementwise over an array (see prepare) instead.
_FASTMATH = False

#: Blocks per axis at most for the background estimate and the pre-fit peak search.
_MAX_BLOCKS = 16
#: The pre-fit box search rejects a window whose best box falls below this fraction of
#: ``min_snr``: a box is a cruder matched filter than the fitted Gaussian, so it is lenient.
_PRECHECK_FRACTION = 0.8
#: Width bounds of the solver: FWHM ≥ this many detector pixels, ≤ this many windows.
_WIDTH_MIN_PIXELS = 0.25
_WIDTH_MAX_WINDOWS = 2.0
#: A fitted FWHM below this many detector pixels is not resolved (a hot pixel fits that
#: way): after the outlier rounds it is reported as no peak.
_MIN_RESOLVED_PIXELS = 0.5
#: Outlier rule (gaussian2d_outliers): a spike's excess per pixel against its neighbours'
#: largest, at the start search (against the background) and after a fit (against the model).
_SPIKE_RATIO = 30.0
_RESIDUAL_RATIO = 3.0
#: Fits per window at most: the first and up to three refits without outlying bins.
_MAX_ROUNDS = 4
#: Spikes left out at most before each start search.
_MAX_SPIKES = 4
#: A fit narrower than this many pixels on both axes may be a spike fitted instead of the
#: spot around it: its peak bin is tested as an outlier of a fit without it.
_SPIKE_CHECK_PIXELS = 2.0
#: Spots narrower than this many pixels (on either axis) are judged by the significance of
#: their volume A·dq·dφ: their amplitude and width are correlated, not their volume.
_VOLUME_TEST_PIXELS = 2.0


@nb.njit(cache=True, nogil=True)
def _layout(nq: int, nchi: int) -> tuple:
    """Block sizes and offsets of the pieces of the work buffer (last item: total size)."""
    bq = (nq + _MAX_BLOCKS - 1) // _MAX_BLOCKS
    bp = (nchi + _MAX_BLOCKS - 1) // _MAX_BLOCKS
    nbq = (nq + bq - 1) // bq
    nbp = (nchi + bp - 1) // bp
    nbin = nq * nchi
    nmax = max(nq, nchi)
    o_c = 0
    o_s = o_c + nbin
    o_fq = o_s + nbin                        # q functions, 3 × nq
    o_fp = o_fq + 3 * nq                     # φ functions, 3 × nchi
    o_r = o_fp + 3 * nchi                    # q − qc
    o_sv = o_r + nq                          # χ − χc
    o_y = o_sv + nchi                        # φ functions, nchi × N_PHI_ROWS
    o_f = o_y + N_PHI_ROWS * nchi            # outlier scratch, 2 × max(nq, nchi)
    o_bs = o_f + 2 * nmax                    # block sums, nbq × nbp
    o_bc = o_bs + nbq * nbp                  # block counts
    o_ps = o_bc + nbq * nbp                  # prefix sums, (nbq + 1) × (nbp + 1)
    o_pc = o_ps + (nbq + 1) * (nbp + 1)
    o_sel = o_pc + (nbq + 1) * (nbp + 1)     # selection scratch, nbq × nbp
    o_prof = o_sel + nbq * nbp               # start profiles: S and C along q, then along χ
    o_bg = o_prof + 2 * (nq + nchi)          # background-only sums
    o_mat = o_bg + N_BG_SUMS                 # 6 matrices N_PARAMS × N_PARAMS
    o_vec = o_mat + 6 * N_PARAMS * N_PARAMS  # 12 vectors of N_PARAMS
    total = o_vec + 12 * N_PARAMS
    return (bq, bp, nbq, nbp, o_c, o_s, o_fq, o_fp, o_r, o_sv, o_y, o_f, o_bs, o_bc, o_ps,
            o_pc, o_sel, o_prof, o_bg, o_mat, o_vec, total)


@nb.njit(cache=True, nogil=True)
def work_layout(nq: int, nchi: int) -> tuple:
    """Offsets in the work buffer of ``fq`` (3 × nq) and ``fp`` (3 × nchi): after a fit that
    returned FIT_OK with ``integrated``, the bin-averaged axis functions (g, ∂g/∂centre,
    ∂g/∂width: ``gaussian2d_moments.axis_functions``) at the fitted parameters."""
    layout = _layout(nq, nchi)
    return layout[6], layout[7]


@nb.njit(cache=True, nogil=True)
def work_size(nq: int, nchi: int) -> int:
    """Number of float64 elements the work buffer needs for an ``nq × nchi`` patch."""
    return _layout(nq, nchi)[-1]


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def _spike_fitted(p, saved, C, S, sums, counts, q, chi, r, s, integrated, min_snr,
                  max_iterations, outlier_sigma, lo, hi, fq, fp, Y, bgs, H, Hn, L, g, gn, pn, x,
                  dx, free, d, F, bq, bp, BS, BC, PS, PC, sel, prof, tmp, need) -> bool:
    """Did the fit ``p`` (narrow on both axes, ``fq``/``fp`` at ``p``) fit a spike?

    Its peak bin is left out and the window fitted again from a new start; the bin is a
    spike when it is an outlier of that fit (``bin_is_outlier``). True: ``p`` is the new
    fit and the bin stays out (C, S changed; the caller re-prepares). False: ``p`` and the
    data are as they were (the caller re-prepares and re-evaluates).
    """
    i, j = peak_bin(fq, fp)
    c_peak = C[i, j]
    s_peak = S[i, j]
    for k in range(N_PARAMS):
        saved[k] = p[k]
    spike = False
    if c_peak > 0.0:
        C[i, j] = 0.0
        S[i, j] = 0.0
        n_bins, n_pix, s_tot, sm2 = prepare(S, C, C, S, bq, bp, BS, BC, fp[0], fp[1], fp[2])
        b0 = background(BS, BC, sel)
        z_box, bi0, bi1, bj0, bj1 = best_box(BS, BC, PS, PC, b0)
        if n_bins >= need and z_box >= _PRECHECK_FRACTION * min_snr:
            start(C, S, q, chi, b0, bq, bp, bi0, bi1, bj0, bj1, prof, tmp, p)
            for k in range(N_PARAMS):
                p[k] = min(max(p[k], lo[k]), hi[k])
            if p[0] > 0.0:
                background_sums(C, S, r, s, bgs, Y.reshape(Y.size))
                levenberg_marquardt(p, C, S, q, chi, r, s, integrated, sm2, n_bins,
                                     max_iterations, lo, hi, fq, fp, Y, bgs, H, Hn, L, g, gn, pn,
                                     x, dx, free, d)
                ok = p[0] > 0.0
                for k in range(N_PARAMS):
                    ok = ok and math.isfinite(p[k])
                if ok:
                    axis_functions(q, p[1], p[2], integrated, False, fq)
                    axis_functions(chi, p[3], p[4], integrated, True, fp)
                    C[i, j] = c_peak
                    S[i, j] = s_peak
                    spike = bin_is_outlier(C, S, p, fq, fp, r, s, outlier_sigma,
                                           _RESIDUAL_RATIO, F, i, j)
        if spike:
            C[i, j] = 0.0
            S[i, j] = 0.0
        else:
            C[i, j] = c_peak
            S[i, j] = s_peak
    if not spike:
        for k in range(N_PARAMS):
            p[k] = saved[k]
    return spike


@nb.njit(cache=True, nogil=True)
def _fill_nan(out_params, out_errors) -> None:
    for k in range(N_PARAMS):
        out_params[k] = math.nan
        out_errors[k] = math.nan


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def fit_gaussian2d_kernel(sums, counts, q_centers, chi_centers, out_params, out_errors, work,
                          min_bins, min_snr, max_iterations, pixel_q, pixel_chi,
                          outlier_sigma, integrated) -> int:
    """Fit the 2-D Gaussian + planar background to one polar patch; returns a FIT_* status.

    Unvalidated hot path, callable from Python or from other ``@njit`` code.

    sums, counts : float64 [nq, nchi]
        Summed photon counts and number of valid pixels per bin (0 → empty, ignored;
        bins with non-finite values are ignored too).
    q_centers : float64 [nq], 1/Å, increasing and regular.
    chi_centers : float64 [nchi], degrees in the window's branch (may lie outside
        (−180, 180]), increasing and regular.
    out_params, out_errors : float64 [8]
        (A, q0, dq, phi0, dphi, B, Bq, Bchi) and their standard errors; A and B in counts
        per pixel (B at the window centre), q0 and dq in 1/Å, phi0 and dphi in degrees, dq
        and dphi FWHM, Bq per 1/Å, Bchi per degree, phi0 in the same branch as
        ``chi_centers`` (apply w() for pyFAI's χ). All NaN unless FIT_OK.
    work : float64 [work_size(nq, nchi)] scratch, contents irrelevant.
    min_bins : fewer non-empty bins than max(min_bins, 9) → FIT_TOO_FEW_BINS.
    min_snr : significance threshold of the spot (see below) → FIT_NO_PEAK.
    max_iterations : model evaluations allowed per fitting round → FIT_NOT_CONVERGED.
    pixel_q, pixel_chi : one detector pixel's extent in q (1/Å) and χ (degrees) in this
        window: a FWHM below half of it is unresolved (a hot pixel) → FIT_NO_PEAK.
    outlier_sigma : threshold of the outlier rule (Poisson standard deviations); 0 turns
        the rule off (no spike removal, one fitting round).
    integrated : the Gaussian averaged over each bin (True) or sampled at its centre.

    FIT_NO_PEAK, in the order tested (the first two are cheap filters):
      1. before iterating: the best box of 1–3 × 1–3 blocks has (n − μ)/√n below
         0.8·min_snr (n its counts, μ the background estimate times its pixels);
      2. after the fit, the fixed-shape signal-to-noise A·ΣcG² / √(A·ΣcG³ + b·ΣcG²) is
         below min_snr (needs no inverse; in practice ≈ 1.45 × the test below);
      3. a fitted FWHM below half a pixel (unresolved) or at the upper bound;
      4. the decision: A / σ_A < min_snr, σ_A the standard error of A below.

    Outliers (outlier_sigma > 0): an isolated single-bin spike that chose the start box is
    left out and the search repeated; after each fit, bins far above the model are left
    out and the fit repeated from where it stopped; a fit that came out unresolved is
    repeated from a new start without the bins it collapsed onto; a fit narrow on both
    axes is checked for being a spike (at most ``_MAX_ROUNDS`` fits).

    Errors: Poisson ("sandwich") covariance H⁻¹·(Σ c·f·J·Jᵀ)·H⁻¹ with H = Σ c·J·Jᵀ and f
    the fitted model, its background taken at the spot centre (per-pixel variance =
    expected counts).
    """
    nq, nchi = sums.shape
    if (counts.shape[0] != nq or counts.shape[1] != nchi or q_centers.size != nq
            or chi_centers.size != nchi or nq < 2 or nchi < 2 or out_params.size < N_PARAMS
            or out_errors.size < N_PARAMS or work.size < work_size(nq, nchi)):
        _fill_nan(out_params, out_errors)
        # The codes stay 0–5 (callers store them next to their own); the validating
        # wrapper raises a ValueError for this instead.
        return FIT_SINGULAR
    status = _fit(sums, counts, q_centers, chi_centers, out_params, out_errors, work,
                  min_bins, min_snr, max_iterations, pixel_q, pixel_chi, outlier_sigma,
                  integrated)
    if status != FIT_OK:
        _fill_nan(out_params, out_errors)
    return status


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def _fit(sums, counts, q, chi, out_params, out_errors, work, min_bins, min_snr,
         max_iterations, pixel_q, pixel_chi, outlier_sigma, integrated) -> int:
    nq, nchi = sums.shape
    (bq, bp, nbq, nbp, o_c, o_s, o_fq, o_fp, o_r, o_sv, o_y, o_f, o_bs, o_bc, o_ps, o_pc,
     o_sel, o_prof, o_bg, o_mat, o_vec, total) = _layout(nq, nchi)
    nbin = nq * nchi
    nmax = max(nq, nchi)
    nn = N_PARAMS * N_PARAMS
    C = work[o_c:o_c + nbin].reshape((nq, nchi))
    S = work[o_s:o_s + nbin].reshape((nq, nchi))
    fq = work[o_fq:o_fq + 3 * nq].reshape((3, nq))
    fp = work[o_fp:o_fp + 3 * nchi].reshape((3, nchi))
    r = work[o_r:o_r + nq]
    s = work[o_sv:o_sv + nchi]
    Y = work[o_y:o_y + N_PHI_ROWS * nchi].reshape((nchi, N_PHI_ROWS))
    F = work[o_f:o_f + 2 * nmax].reshape((2, nmax))
    BS = work[o_bs:o_bs + nbq * nbp].reshape((nbq, nbp))
    BC = work[o_bc:o_bc + nbq * nbp].reshape((nbq, nbp))
    PS = work[o_ps:o_ps + (nbq + 1) * (nbp + 1)].reshape((nbq + 1, nbp + 1))
    PC = work[o_pc:o_pc + (nbq + 1) * (nbp + 1)].reshape((nbq + 1, nbp + 1))
    sel = work[o_sel:o_sel + nbq * nbp]
    prof = work[o_prof:o_prof + 2 * (nq + nchi)]
    bgs = work[o_bg:o_bg + N_BG_SUMS]
    H = work[o_mat:o_mat + nn].reshape((N_PARAMS, N_PARAMS))
    Hn = work[o_mat + nn:o_mat + 2 * nn].reshape((N_PARAMS, N_PARAMS))
    L = work[o_mat + 2 * nn:o_mat + 3 * nn].reshape((N_PARAMS, N_PARAMS))
    K = work[o_mat + 3 * nn:o_mat + 4 * nn].reshape((N_PARAMS, N_PARAMS))
    Hi = work[o_mat + 4 * nn:o_mat + 5 * nn].reshape((N_PARAMS, N_PARAMS))
    M = work[o_mat + 5 * nn:o_mat + 6 * nn].reshape((N_PARAMS, N_PARAMS))
    vec = work[o_vec:o_vec + 12 * N_PARAMS].reshape((12, N_PARAMS))
    p = vec[0]
    pn = vec[1]
    g = vec[2]
    gn = vec[3]
    x = vec[4]
    dx = vec[5]
    lo = vec[6]
    hi = vec[7]
    free = vec[8]
    d = vec[9]
    tmp = vec[10]
    need = max(min_bins, N_PARAMS + 1)

    # fp is free until the first model evaluation.
    n_bins, n_pix, s_tot, sm2 = prepare(sums, counts, C, S, bq, bp, BS, BC, fp[0], fp[1], fp[2])
    if n_bins < need:
        return FIT_TOO_FEW_BINS
    if not (math.isfinite(s_tot) and math.isfinite(sm2)):
        return FIT_SINGULAR

    dqb = q[1] - q[0]
    dpb = chi[1] - chi[0]
    qc = 0.5 * (q[0] + q[nq - 1])
    cc = 0.5 * (chi[0] + chi[nchi - 1])
    for i in range(nq):
        r[i] = q[i] - qc
    for j in range(nchi):
        s[j] = chi[j] - cc
    lo[0] = 0.0
    hi[0] = math.inf
    lo[1] = q[0] - 0.5 * dqb
    hi[1] = q[nq - 1] + 0.5 * dqb
    lo[2] = _WIDTH_MIN_PIXELS * pixel_q
    hi[2] = _WIDTH_MAX_WINDOWS * (hi[1] - lo[1])
    lo[3] = chi[0] - 0.5 * dpb
    hi[3] = chi[nchi - 1] + 0.5 * dpb
    lo[4] = _WIDTH_MIN_PIXELS * pixel_chi
    hi[4] = _WIDTH_MAX_WINDOWS * (hi[3] - lo[3])
    for k in range(5, N_PARAMS):
        lo[k] = -math.inf
        hi[k] = math.inf
    res_q = _MIN_RESOLVED_PIXELS * pixel_q
    res_chi = _MIN_RESOLVED_PIXELS * pixel_chi
    robust = outlier_sigma > 0.0

    b0 = background(BS, BC, sel)

    saved = vec[11]
    restart = True
    converged = False
    axes_at_p = False
    checked_spike = False
    for rnd in range(_MAX_ROUNDS):
        if restart:
            z_box, bi0, bi1, bj0, bj1 = best_box(BS, BC, PS, PC, b0)
            for _ in range(_MAX_SPIKES):
                if not robust:
                    break
                spike, si, sj = spike_in_box(C, S, b0, outlier_sigma, _SPIKE_RATIO, bi0 * bq,
                                             min(bi1 * bq, nq), bj0 * bp, min(bj1 * bp, nchi))
                if not spike:
                    break
                # A hot bin chose the box: leave it out and search again.
                C[si, sj] = 0.0
                S[si, sj] = 0.0
                n_bins, n_pix, s_tot, sm2 = prepare(S, C, C, S, bq, bp, BS, BC, fp[0], fp[1],
                                                    fp[2])
                if n_bins < need:
                    return FIT_TOO_FEW_BINS
                b0 = background(BS, BC, sel)
                z_box, bi0, bi1, bj0, bj1 = best_box(BS, BC, PS, PC, b0)
            if z_box < _PRECHECK_FRACTION * min_snr:
                return FIT_NO_PEAK
            start(C, S, q, chi, b0, bq, bp, bi0, bi1, bj0, bj1, prof, tmp, p)
            for k in range(N_PARAMS):
                p[k] = min(max(p[k], lo[k]), hi[k])
            if not p[0] > 0.0:
                return FIT_NO_PEAK
        background_sums(C, S, r, s, bgs, Y.reshape(Y.size))
        converged = levenberg_marquardt(p, C, S, q, chi, r, s, integrated, sm2, n_bins,
                                         max_iterations, lo, hi, fq, fp, Y, bgs, H, Hn, L, g,
                                         gn, pn, x, dx, free, d)
        # A converged solver returns right after evaluating the model at p, so fq, fp hold
        # the axis functions at p (a rejected trial step never ends in convergence).
        axes_at_p = converged
        if not robust or rnd == _MAX_ROUNDS - 1:
            break
        finite = True
        for k in range(N_PARAMS):
            finite = finite and math.isfinite(p[k])
        if not finite or not p[0] > 0.0:
            break
        if not axes_at_p:
            axis_functions(q, p[1], p[2], integrated, False, fq)
            axis_functions(chi, p[3], p[4], integrated, True, fp)
            axes_at_p = True
        restart = p[2] < res_q or p[4] < res_chi
        if (not restart and not checked_spike and rnd < _MAX_ROUNDS - 2
                and p[2] < _SPIKE_CHECK_PIXELS * pixel_q and p[4] < _SPIKE_CHECK_PIXELS * pixel_chi):
            checked_spike = True
            spike_out = _spike_fitted(p, saved, C, S, sums, counts, q, chi, r, s, integrated, min_snr,
                                      max_iterations, outlier_sigma, lo, hi, fq, fp, Y, bgs, H, Hn, L, g,
                                      gn, pn, x, dx, free, d, F, bq, bp, BS, BC, PS, PC, sel, prof, tmp,
                                      need)
            # Either way the window is fitted again: without the spike, or as it was.
            n_bins, n_pix, s_tot, sm2 = prepare(S, C, C, S, bq, bp, BS, BC, fp[0], fp[1], fp[2])
            background_sums(C, S, r, s, bgs, Y.reshape(Y.size))
            converged = levenberg_marquardt(p, C, S, q, chi, r, s, integrated, sm2, n_bins,
                                             max_iterations, lo, hi, fq, fp, Y, bgs, H, Hn, L,
                                             g, gn, pn, x, dx, free, d)
            axis_functions(q, p[1], p[2], integrated, False, fq)
            axis_functions(chi, p[3], p[4], integrated, True, fp)
            if spike_out:
                restart = p[2] < res_q or p[4] < res_chi
        if restart:
            n_out = exclude_core(C, S, fq, fp)
        else:
            n_out = exclude_outliers(C, S, p, fq, fp, r, s, outlier_sigma, _RESIDUAL_RATIO, F)
        if n_out == 0:
            break
        n_bins, n_pix, s_tot, sm2 = prepare(S, C, C, S, bq, bp, BS, BC, fp[0], fp[1], fp[2])
        if n_bins < need:
            return FIT_TOO_FEW_BINS
        if restart:
            b0 = background(BS, BC, sel)
    # H and g are those at p (the solver keeps them in step).

    for k in range(N_PARAMS):
        if not math.isfinite(p[k]):
            return FIT_SINGULAR
    a_amp = p[0]
    if not a_amp > 0.0:
        return FIT_NO_PEAK

    # Covariance H⁻¹ M H⁻¹ with M = Σ c·f·J·Jᵀ ≈ A·K + b·H, K = Σ c·G·J·Jᵀ, b the
    # background at the spot centre (Poisson: variance = expected counts; the slopes
    # change b by tens of per cent across a window, little across the spot itself).
    if axes_at_p:
        ilo, ihi = axis_span(fq)
        jlo, jhi = axis_span(fp)
        moments_from_axes(p, C, S, r, s, 1, ilo, ihi, jlo, jhi, fq, fp, Y, bgs, K, tmp)
    else:
        moments(p, C, S, q, chi, r, s, 1, integrated, fq, fp, Y, bgs, K, tmp)
    bg_var = max(p[5] + p[6] * (p[1] - qc) + p[7] * (p[3] - cc), 0.0)
    # The same significance with the shape held fixed needs no inverse, and is larger:
    # below the threshold, a degenerate (singular) fit is "no peak", not a solver failure.
    var_fixed = a_amp * K[0, 0] + bg_var * H[0, 0]
    if not a_amp * H[0, 0] >= min_snr * math.sqrt(max(var_fixed, 0.0)):
        return FIT_NO_PEAK
    # Narrower than half a pixel (unresolved: a hot pixel) or at the upper bound (a hump
    # wider than the window): not a spot this model can measure.
    if p[2] < res_q or p[2] >= hi[2] or p[4] < res_chi or p[4] >= hi[4]:
        return FIT_NO_PEAK
    for k in range(N_PARAMS):
        free[k] = 1.0
    for k in range(N_PARAMS):
        for b in range(N_PARAMS):
            tmp[b] = 1.0 if b == k else 0.0
        if not solve(H, tmp, free, 0.0, L, d, x):
            return FIT_SINGULAR
        for b in range(N_PARAMS):
            Hi[b, k] = x[b]
    for a in range(N_PARAMS):
        for b in range(N_PARAMS):
            M[a, b] = a_amp * K[a, b] + bg_var * H[a, b]
    for k in range(N_PARAMS):
        # (H⁻¹ M H⁻¹)_kk = Σ_ab Hi[k, a] M[a, b] Hi[b, k]
        var = 0.0
        for a in range(N_PARAMS):
            t = 0.0
            for b in range(N_PARAMS):
                t += M[a, b] * Hi[b, k]
            var += Hi[k, a] * t
        if not (var >= 0.0 and math.isfinite(var)):
            return FIT_SINGULAR
        out_errors[k] = math.sqrt(var)

    # Significance: the amplitude over its own standard error, position, widths and
    # background free — a fit that latched onto noise has a poorly defined shape and so a
    # large error on A. A spot of a pixel or two has a well-measured volume A·dq·dφ but
    # amplitude and widths that trade against each other: it is judged by the volume.
    if p[2] < _VOLUME_TEST_PIXELS * pixel_q or p[4] < _VOLUME_TEST_PIXELS * pixel_chi:
        tmp[0] = p[2] * p[4]
        tmp[2] = a_amp * p[4]
        tmp[4] = a_amp * p[2]
        tmp[1] = tmp[3] = tmp[5] = tmp[6] = tmp[7] = 0.0
        var_v = 0.0
        for a in range(N_PARAMS):
            ua = 0.0
            for b in range(N_PARAMS):
                ua += Hi[a, b] * tmp[b]
            x[a] = ua
        for a in range(N_PARAMS):
            t = 0.0
            for b in range(N_PARAMS):
                t += M[a, b] * x[b]
            var_v += x[a] * t
        significant = var_v > 0.0 and a_amp * p[2] * p[4] >= min_snr * math.sqrt(var_v)
    else:
        significant = a_amp >= min_snr * out_errors[0]
    if not significant:
        return FIT_NO_PEAK
    if p[1] <= lo[1] or p[1] >= hi[1] or p[3] <= lo[3] or p[3] >= hi[3]:
        return FIT_OUTSIDE_WINDOW
    if not converged:
        return FIT_NOT_CONVERGED
    for k in range(N_PARAMS):
        out_params[k] = p[k]
    return FIT_OK
