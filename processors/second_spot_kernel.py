"""numba kernels of the second-spot search: Gaussian subtraction, core exclusion, residual box test.

Pure functions on a window's ``(nq, nchi)`` bin arrays with caller-allocated outputs (the
wrapper is :mod:`processors.second_spot`). A Gaussian is given by its amplitude A (counts
per pixel), centre (q0 in 1/Å, φ0 in degrees, in the window's χ branch) and FWHM widths
(dq in 1/Å, dφ in degrees)::

    G(q, φ) = A · exp{−4 ln2 [(q − q0)² / dq² + w(φ − φ0)² / dφ²]},  w(x) = ((x + 180) mod 360) − 180

Strict IEEE arithmetic (no fastmath): the second spot decides a fit, and fits must be
bit-identical whichever process runs them.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from processors.angles import wrap_deg_scalar as _wrap
from processors.gaussian2d_moments import axis_functions

FOUR_LN2 = 4.0 * math.log(2.0)


@nb.njit(cache=True, nogil=True)
def subtract_gaussian_into(sums, counts, q, chi, amplitude, q0, dq, phi0, dphi, clip, out_sums, gq, gp) -> None:
    """``out_sums = sums − counts · G`` per bin (0 where ``counts`` is 0), ``max(…, 0)`` if ``clip``.

    ``sums``/``counts`` are a window's summed counts and valid pixels per bin; ``G`` is in
    counts per pixel, so ``counts · G`` is the spot's expected counts in the bin. Clipped for
    a fit: the fit kernel takes photon counts (its start guess and Poisson errors need n ≥ 0);
    not for the residual test, where clipping would bias the background up. ``gq`` (3, nq) and
    ``gp`` (3, nchi) are scratch for the separable bin-averaged profiles (nq + nchi of them, not nq·nchi).
    """
    nq, nchi = sums.shape
    # the profiles the fit used: each bin's mean of the Gaussian (processors.gaussian2d_moments)
    axis_functions(q, q0, dq, True, False, gq)
    axis_functions(chi, phi0, dphi, True, True, gp)
    for i in range(nq):
        for j in range(nchi):
            c = counts[i, j]
            if c > 0.0:
                r = sums[i, j] - c * amplitude * gq[0, i] * gp[0, j]
                out_sums[i, j] = r if (r > 0.0 or not clip) else 0.0
            else:
                out_sums[i, j] = 0.0


@nb.njit(cache=True, nogil=True)
def exclude_core_into(counts, q, chi, q0, dq, phi0, dphi, radius, out_counts) -> int:
    """``out_counts`` = ``counts`` except 0 inside the ellipse ((q − q0)/dq)² + (w(φ − φ0)/dφ)² < radius².

    With ``radius`` 1 that is where the spot is above 1/16 of its amplitude. Returns how many
    bins with data were left out.
    """
    nq, nchi = counts.shape
    r2 = radius * radius
    n = 0
    for i in range(nq):
        s = (q[i] - q0) / dq
        for j in range(nchi):
            t = _wrap(chi[j] - phi0) / dphi
            if s * s + t * t < r2:
                if counts[i, j] > 0.0:
                    n += 1
                out_counts[i, j] = 0.0
            else:
                out_counts[i, j] = counts[i, j]
    return n


@nb.njit(cache=True, nogil=True)
def _prefix(a, out) -> None:
    """Integral image: ``out[i, j]`` = sum of ``a[:i, :j]`` (``out`` is ``(nq + 1, nchi + 1)``)."""
    nq, nchi = a.shape
    for j in range(nchi + 1):
        out[0, j] = 0.0
    for i in range(nq):
        out[i + 1, 0] = 0.0
        row = 0.0
        for j in range(nchi):
            row += a[i, j]
            out[i + 1, j + 1] = out[i, j + 1] + row


@nb.njit(cache=True, nogil=True)
def _box(p, i0, i1, j0, j1) -> float:
    return p[i1, j1] - p[i0, j1] - p[i1, j0] + p[i0, j0]


@nb.njit(cache=True, nogil=True)
def box_bins(width, step, n) -> int:
    """A box side of ``width`` (FWHM) in bins of ``step``: at least 1, at most half the window's ``n``."""
    b = int(width / step + 0.5)
    return min(max(b, 1), max(n // 2, 1))


@nb.njit(cache=True, nogil=True)
def best_residual_box(residual, sums, counts, q, chi, q0, dq, phi0, dphi, core_radius,
                      prefix_r, prefix_s, prefix_c, t_chi):
    """The most significant excess of ``residual`` over its local background, outside the first spot's core.

    ``residual`` is the window's data with the first spot's Gaussian taken off (its
    background kept), ``sums`` the data themselves, ``counts`` valid pixels per bin. Boxes
    of the first spot's FWHM (``box_bins(dq, δq, nq) × box_bins(dφ, δχ, nchi)`` bins), placed every ``max(box // 2, 1)`` bins along each axis, are
    compared with the ring around them (the box grown by its own size on each side; near
    the window's edge by as much as fits on both sides, so the ring stays symmetric): a
    plane (sloped background) has the same mean over the ring as over the box, so slopes do
    not look like spots. With ``n`` the box's residual, ``μ = c_box · n_ring / c_ring`` its
    expected background, the significance is

        z = (n − μ) / √max(S_box + (c_box / c_ring)² · S_ring, 1)

    with ``S`` the raw counts (Poisson variance of the observed counts: conservative for
    boxes of few counts, where a Gaussian approximation of the expected counts would make
    single photons significant). Boxes whose centre lies inside the first spot's core
    (normalised distance below ``core_radius`` FWHM) are skipped: a spot fitted alone
    leaves its largest residuals there. ``prefix_*`` are ``(nq + 1, nchi + 1)`` scratch,
    ``t_chi`` ``(nchi,)`` scratch.

    Returns ``(z, iq, ichi)``: the best significance and its box centre bin (−inf, −1, −1
    when no box qualifies).
    """
    nq, nchi = residual.shape
    _prefix(residual, prefix_r)
    _prefix(sums, prefix_s)
    _prefix(counts, prefix_c)
    return _scan_boxes(nq, nchi, q, chi, q0, dq, phi0, dphi, core_radius, prefix_r, prefix_s, prefix_c, t_chi)


@nb.njit(cache=True, nogil=True)
def residual_significance(sums, counts, q, chi, amplitude, q0, dq, phi0, dphi, core_radius,
                          prefix_r, prefix_s, prefix_c, gq, gp, t_chi):
    """:func:`best_residual_box` of ``sums − counts · G`` (G the first spot's Gaussian, given
    by its amplitude, centre and FWHM widths) in one pass: the residual goes straight into its
    integral image. ``gq`` (3, nq), ``gp`` (3, nchi) and ``t_chi`` (nchi) are scratch."""
    # the profiles the fit used: each bin's mean of the Gaussian (processors.gaussian2d_moments)
    axis_functions(q, q0, dq, True, False, gq)
    axis_functions(chi, phi0, dphi, True, True, gp)
    return residual_significance_from_axes(sums, counts, q, chi, amplitude, q0, dq, phi0, dphi, core_radius,
                                           prefix_r, prefix_s, prefix_c, gq, gp, t_chi)


@nb.njit(cache=True, nogil=True)
def residual_significance_from_axes(sums, counts, q, chi, amplitude, q0, dq, phi0, dphi, core_radius,
                                    prefix_r, prefix_s, prefix_c, gq, gp, t_chi):
    """:func:`residual_significance` with ``gq`` (3, nq) and ``gp`` (3, nchi) already holding
    ``axis_functions`` (bin-averaged) of the spot: a fit that ends ok leaves them so in its work
    buffer (``processors.window_fits_kernel`` passes them; the same values, not recomputed)."""
    nq, nchi = sums.shape
    for j in range(nchi + 1):
        prefix_r[0, j] = 0.0
        prefix_s[0, j] = 0.0
        prefix_c[0, j] = 0.0
    for i in range(nq):
        prefix_r[i + 1, 0] = 0.0
        prefix_s[i + 1, 0] = 0.0
        prefix_c[i + 1, 0] = 0.0
        row_r = 0.0
        row_s = 0.0
        row_c = 0.0
        for j in range(nchi):
            c = counts[i, j]
            if c > 0.0:
                row_r += sums[i, j] - c * amplitude * gq[0, i] * gp[0, j]
                row_s += sums[i, j]
                row_c += c
            prefix_r[i + 1, j + 1] = prefix_r[i, j + 1] + row_r
            prefix_s[i + 1, j + 1] = prefix_s[i, j + 1] + row_s
            prefix_c[i + 1, j + 1] = prefix_c[i, j + 1] + row_c
    return _scan_boxes(nq, nchi, q, chi, q0, dq, phi0, dphi, core_radius, prefix_r, prefix_s, prefix_c, t_chi)


@nb.njit(cache=True, nogil=True)
def _scan_boxes(nq, nchi, q, chi, q0, dq, phi0, dphi, core_radius, prefix_r, prefix_s, prefix_c, t_chi):
    """The box loop of :func:`best_residual_box` on ready integral images."""
    box_q = box_bins(dq, q[1] - q[0], nq)
    box_chi = box_bins(dphi, chi[1] - chi[0], nchi)
    step_q = max(box_q // 2, 1)
    step_chi = max(box_chi // 2, 1)
    for j0 in range(0, nchi - box_chi + 1, step_chi):
        t = _wrap(0.5 * (chi[j0] + chi[j0 + box_chi - 1]) - phi0) / dphi
        t_chi[j0] = t * t
    best, best_i, best_j = -np.inf, -1, -1
    r2 = core_radius * core_radius
    for i0 in range(0, nq - box_q + 1, step_q):
        i1 = i0 + box_q
        s = (0.5 * (q[i0] + q[i1 - 1]) - q0) / dq
        s2 = s * s
        mq = min(box_q, i0, nq - i1)
        o0 = i0 - mq
        o1 = i1 + mq
        for j0 in range(0, nchi - box_chi + 1, step_chi):
            if s2 + t_chi[j0] < r2:
                continue
            j1 = j0 + box_chi
            mc = min(box_chi, j0, nchi - j1)
            if mq == 0 and mc == 0:
                continue
            c_box = _box(prefix_c, i0, i1, j0, j1)
            if c_box <= 0.0:
                continue
            p0 = j0 - mc
            p1 = j1 + mc
            c_ring = _box(prefix_c, o0, o1, p0, p1) - c_box
            if c_ring <= 0.0:
                continue
            n = _box(prefix_r, i0, i1, j0, j1)
            n_ring = _box(prefix_r, o0, o1, p0, p1) - n
            s_box = _box(prefix_s, i0, i1, j0, j1)
            s_ring = _box(prefix_s, o0, o1, p0, p1) - s_box
            f = c_box / c_ring
            var = s_box + f * f * s_ring
            num = n - f * n_ring
            v = var if var > 1.0 else 1.0
            # Skip the square root and division where the box cannot win: z ≤ 0 < best, or
            # z² below best² by a margin far beyond rounding (so the result is unchanged).
            if best > 0.0 and (num <= 0.0 or num * num < best * best * v * (1.0 - 1e-9)):
                continue
            z = num / math.sqrt(v)
            if z > best:
                best, best_i, best_j = z, i0 + box_q // 2, j0 + box_chi // 2
    return best, best_i, best_j
