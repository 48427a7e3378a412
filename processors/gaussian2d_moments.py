"""numba kernels: the model's separable normal matrix, gradient and χ² on a polar patch.

Model (docs/fit_model.md), parameters in ``processors.frame_record.PARAM_NAMES`` order::

    p = (A, q0, dq, phi0, dphi, B, Bq, Bchi)
    I(q, φ) = A · gq(q) · gφ(φ) + B + Bq·(q − qc) + Bchi·(χ − χc)

with (qc, χc) the window centre (mean of the bin centres) and gq, gφ the Gaussian
exp{−4 ln2 x² / w²} of x = q − q0 and x = w(χ − φ0) (wrapped into (−180, 180]), either
sampled at the bin centre or averaged over the bin (``integrated``: an erf difference).

Every Jacobian column is (scalar) · (function of q) · (function of φ): the Gaussian columns
are A·fq_a·fφ_b with fq, fφ ∈ {g, ∂g/∂centre, ∂g/∂width}, the background columns 1, r = q − qc
and s = χ − χc. So each model evaluation needs nq + nchi function values, and JᵀWJ, JᵀW·data
and χ² follow from fifteen running sums per q row over the φ bins, combined per row with the
q functions. The background-only entries (Σc, Σc·r, … Σ S·s) do not depend on the
parameters: they are computed once per set of valid bins (``background_sums``).

Pure functions on caller-allocated arrays, strict IEEE (no fastmath: fits must be
bit-identical whichever process runs them), no allocation.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from processors.angles import wrap_deg_scalar

_FASTMATH = False

K4LN2 = 4.0 * math.log(2.0)
#: Bins where the Gaussian is below exp(−20) ≈ 2e-9 of its peak are left out of the model
#: (±2.7 FWHM around the centre): 2e-9·A is far below the Poisson noise of any bin (1e-3
#: counts for A = 10⁶ counts per pixel), and the sums cover about half the bins they did
#: at exp(−36) (±3.6 FWHM, the double-precision limit).
EXP_CUTOFF = 20.0
_SQRT_PI = math.sqrt(math.pi)

#: Columns of the φ-functions buffer ``Y`` (nchi × 16: 15 used, one pad so that a bin's
#: values are four aligned groups of four — the compiler packs the running sums into SIMD
#: registers group by group).
N_PHI_ROWS = 16
#: Entries of the background-only sums (``background_sums``).
N_BG_SUMS = 9

@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def axis_functions(x, x0: float, width: float, integrated: bool, wrap: bool, f) -> tuple:
    """g, ∂g/∂x0, ∂g/∂width of the 1-D Gaussian exp{−4 ln2 (x − x0)² / width²} → f[0:3].

    ``x`` are regular bin centres; with ``integrated`` each value is the mean over the bin
    [x − δ/2, x + δ/2] (δ the bin step), else the value at the centre. ``wrap`` takes
    x − x0 into (−180, 180] (degrees). Returns (first, last + 1) of the bins where g is
    not negligible; f is 0 outside them.
    """
    n = x.size
    a = K4LN2 / (width * width)
    sa = math.sqrt(a)
    step = x[1] - x[0]
    # x increases: when x − x0 lies in (−180, 180] at both ends it does for every bin, and the
    # wrap would return it unchanged (bit for bit): skip the wrap's division and ceil per bin
    if wrap and x[0] - x0 > -180.0 and x[n - 1] - x0 <= 180.0:
        wrap = False
    half = 0.5 * step
    lo = n
    hi = 0
    # Neighbouring bins share an edge: its erf and exp are carried to the next bin (not
    # across the ±180° seam, where the wrapped edges are not the same point).
    th_prev = math.nan
    eh_prev = 0.0
    uh_prev = 0.0
    for k in range(n):
        t = x[k] - x0
        if wrap:
            t = wrap_deg_scalar(t)
        if integrated:
            tl = t - half
            th = t + half
            if (tl > 0.0 and a * tl * tl > EXP_CUTOFF) or (th < 0.0 and a * th * th > EXP_CUTOFF):
                f[0, k] = 0.0
                f[1, k] = 0.0
                f[2, k] = 0.0
                th_prev = math.nan
                continue
            # Each edge keeps u = erfc(sa·|t|), the tail beyond it: differences of tails
            # stay accurate far from the peak, where erf(x) − erf(y) would cancel.
            if abs(tl - th_prev) <= 1e-9 * step:
                ul = uh_prev
                el = eh_prev
            else:
                ul = math.erfc(sa * abs(tl))
                el = math.exp(-a * tl * tl)
            uh = math.erfc(sa * abs(th))
            eh = math.exp(-a * th * th)
            if tl >= 0.0:
                diff = ul - uh
            elif th <= 0.0:
                diff = uh - ul
            else:
                diff = 2.0 - ul - uh
            th_prev = th
            uh_prev = uh
            eh_prev = eh
            g = _SQRT_PI * diff / (2.0 * sa * step)
            f[0, k] = g
            f[1, k] = (el - eh) / step
            f[2, k] = (g - (th * eh - tl * el) / step) / width
        else:
            x2 = a * t * t
            if x2 > EXP_CUTOFF:
                f[0, k] = 0.0
                f[1, k] = 0.0
                f[2, k] = 0.0
                continue
            g = math.exp(-x2)
            f[0, k] = g
            f[1, k] = 2.0 * a * t * g
            f[2, k] = 2.0 * x2 * g / width
        lo = min(lo, k)
        hi = k + 1
    return lo, max(hi, lo)


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def background_sums(C, S, r, s, out, scratch) -> None:
    """Parameter-free sums of the background columns → ``out[0:9]``:
    Σc, Σc·r, Σc·s, Σc·r², Σc·r·s, Σc·s², ΣS, ΣS·r, ΣS·s (c counts, S sums per bin).

    ``scratch`` is float64 with at least 5·nchi elements (e.g. the flattened ``Y``).
    """
    nq, nchi = C.shape
    # Column sums first (Σ over q of c, c·r, c·r², S, S·r per χ bin): elementwise over the
    # row, so the loop vectorizes under strict IEEE; a per-row reduction over χ would not.
    u0 = scratch[0:nchi]
    u1 = scratch[nchi:2 * nchi]
    u2 = scratch[2 * nchi:3 * nchi]
    v0 = scratch[3 * nchi:4 * nchi]
    v1 = scratch[4 * nchi:5 * nchi]
    n = np.uint64(nchi)
    for j in range(n):
        u0[j] = 0.0
        u1[j] = 0.0
        u2[j] = 0.0
        v0[j] = 0.0
        v1[j] = 0.0
    for i in range(nq):
        ri = r[i]
        ri2 = ri * ri
        for j in range(n):
            c = C[i, j]
            x = S[i, j]
            u0[j] += c
            u1[j] += c * ri
            u2[j] += c * ri2
            v0[j] += x
            v1[j] += x * ri
    for k in range(N_BG_SUMS):
        out[k] = 0.0
    for j in range(nchi):
        sj = s[j]
        out[0] += u0[j]
        out[1] += u1[j]
        out[2] += u0[j] * sj
        out[3] += u2[j]
        out[4] += u1[j] * sj
        out[5] += u0[j] * sj * sj
        out[6] += v0[j]
        out[7] += v1[j]
        out[8] += v0[j] * sj


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def moments(p, C, S, q, chi, r, s, power: int, integrated: bool, fq, fp, Y, bgs, H, gs) -> None:
    """Σ c·G^power·J_a·J_b → ``H`` (8 × 8) and, for power 0, Σ S·J_a → ``gs`` (8).

    ``power`` 0 gives JᵀWJ (W = counts) and the data term; ``power`` 1 the matrix
    Σ c·G·J·Jᵀ of the Poisson covariance (G = gq·gφ the Gaussian's shape). ``bgs`` are
    the ``background_sums``; ``fq`` [3, nq], ``fp`` [3, nchi], ``Y`` [nchi, 16] scratch.
    """
    ilo, ihi = axis_functions(q, p[1], p[2], integrated, False, fq)
    jlo, jhi = axis_functions(chi, p[3], p[4], integrated, True, fp)
    moments_from_axes(p, C, S, r, s, power, ilo, ihi, jlo, jhi, fq, fp, Y, bgs, H, gs)


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def axis_span(f) -> tuple:
    """(first, last + 1) of the non-zero ``f[0]`` — the span ``axis_functions`` returned
    when it filled ``f`` (inside it the Gaussian is above exp(−EXP_CUTOFF), never 0)."""
    n = f.shape[1]
    lo = n
    hi = 0
    for k in range(n):
        if f[0, k] != 0.0:
            lo = min(lo, k)
            hi = k + 1
    return lo, max(hi, lo)


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def moments_from_axes(p, C, S, r, s, power: int, ilo: int, ihi: int, jlo: int, jhi: int, fq, fp, Y,
                      bgs, H, gs) -> None:
    """``moments`` from axis functions ``fq``, ``fp`` already computed at ``p`` (spans
    ilo:ihi, jlo:jhi): the same sums, without evaluating the functions again."""
    amp = p[0]
    # Unsigned bounds: with a signed start numba must allow negative (wrap-around) indices
    # on every access, which stops the inner loop from vectorizing.
    ujlo = np.uint64(jlo)
    ujhi = np.uint64(jhi)
    # φ columns: 0–5 products fφ_a·fφ_b (a ≤ b) for Gaussian × Gaussian; 6–8 fφ_a and 9–11
    # fφ_a·s for Gaussian × background; 12–14 what the X sums take: fφ_a with X = S (data
    # term, power 0) or gφ·{1, s, s²} with X = C (background × background, power 1).
    for j in range(ujlo, ujhi):
        f0 = fp[0, j]
        f1 = fp[1, j]
        f2 = fp[2, j]
        w = f0 if power == 1 else 1.0
        sj = s[j]
        Y[j, 0] = f0 * f0 * w
        Y[j, 1] = f0 * f1 * w
        Y[j, 2] = f0 * f2 * w
        Y[j, 3] = f1 * f1 * w
        Y[j, 4] = f1 * f2 * w
        Y[j, 5] = f2 * f2 * w
        Y[j, 6] = f0 * w
        Y[j, 7] = f1 * w
        Y[j, 8] = f2 * w
        Y[j, 9] = f0 * w * sj
        Y[j, 10] = f1 * w * sj
        Y[j, 11] = f2 * w * sj
        if power == 1:
            Y[j, 12] = f0
            Y[j, 13] = f0 * sj
            Y[j, 14] = f0 * sj * sj
        else:
            Y[j, 12] = f0
            Y[j, 13] = f1
            Y[j, 14] = f2
    X = C if power == 1 else S

    # Accumulators: hg Gaussian × Gaussian (15, upper triangle of 5 × 5), hb Gaussian ×
    # {1, r, s} (15), t data / background × background (6).
    g00 = g01 = g02 = g03 = g04 = g11 = g12 = g13 = g14 = 0.0
    g22 = g23 = g24 = g33 = g34 = g44 = 0.0
    b0_ = b1_ = b2_ = b3_ = b4_ = 0.0          # × 1
    r0_ = r1_ = r2_ = r3_ = r4_ = 0.0          # × r
    s0_ = s1_ = s2_ = s3_ = s4_ = 0.0          # × s
    d0 = d1 = d2 = d3 = d4 = 0.0               # data (power 0)
    e0 = e1 = e2 = e3 = e4 = e5 = 0.0          # background × background (power 1)
    for i in range(ilo, ihi):
        y0 = y1 = y2 = y3 = y4 = y5 = y6 = y7 = y8 = y9 = y10 = y11 = 0.0
        x0 = x1 = x2 = 0.0
        for j in range(ujlo, ujhi):
            c = C[i, j]
            xx = X[i, j]
            y0 += c * Y[j, 0]
            y1 += c * Y[j, 1]
            y2 += c * Y[j, 2]
            y3 += c * Y[j, 3]
            y4 += c * Y[j, 4]
            y5 += c * Y[j, 5]
            y6 += c * Y[j, 6]
            y7 += c * Y[j, 7]
            y8 += c * Y[j, 8]
            y9 += c * Y[j, 9]
            y10 += c * Y[j, 10]
            y11 += c * Y[j, 11]
            x0 += xx * Y[j, 12]
            x1 += xx * Y[j, 13]
            x2 += xx * Y[j, 14]
        q0f = fq[0, i]
        q1f = fq[1, i]
        q2f = fq[2, i]
        w = q0f if power == 1 else 1.0
        ri = r[i]
        # Gaussian columns: A (q0f, p0), q0 (q1f, p0), dq (q2f, p0), φ0 (q0f, p1), dφ (q0f, p2).
        a00 = q0f * q0f * w
        a01 = q0f * q1f * w
        a02 = q0f * q2f * w
        g00 += a00 * y0
        g01 += a01 * y0
        g02 += a02 * y0
        g03 += a00 * y1
        g04 += a00 * y2
        g11 += q1f * q1f * w * y0
        g12 += q1f * q2f * w * y0
        g13 += a01 * y1
        g14 += a01 * y2
        g22 += q2f * q2f * w * y0
        g23 += a02 * y1
        g24 += a02 * y2
        g33 += a00 * y3
        g34 += a00 * y4
        g44 += a00 * y5
        w0 = q0f * w
        w1 = q1f * w
        w2 = q2f * w
        b0_ += w0 * y6
        b1_ += w1 * y6
        b2_ += w2 * y6
        b3_ += w0 * y7
        b4_ += w0 * y8
        r0_ += w0 * y6 * ri
        r1_ += w1 * y6 * ri
        r2_ += w2 * y6 * ri
        r3_ += w0 * y7 * ri
        r4_ += w0 * y8 * ri
        s0_ += w0 * y9
        s1_ += w1 * y9
        s2_ += w2 * y9
        s3_ += w0 * y10
        s4_ += w0 * y11
        if power == 1:
            e0 += q0f * x0
            e1 += q0f * ri * x0
            e2 += q0f * x1
            e3 += q0f * ri * ri * x0
            e4 += q0f * ri * x1
            e5 += q0f * x2
        else:
            d0 += q0f * x0
            d1 += q1f * x0
            d2 += q2f * x0
            d3 += q0f * x1
            d4 += q0f * x2

    # Column scales: 1 for A, A for the other Gaussian columns, 1 for the background.
    H[0, 0] = g00
    H[0, 1] = amp * g01
    H[0, 2] = amp * g02
    H[0, 3] = amp * g03
    H[0, 4] = amp * g04
    a2 = amp * amp
    H[1, 1] = a2 * g11
    H[1, 2] = a2 * g12
    H[1, 3] = a2 * g13
    H[1, 4] = a2 * g14
    H[2, 2] = a2 * g22
    H[2, 3] = a2 * g23
    H[2, 4] = a2 * g24
    H[3, 3] = a2 * g33
    H[3, 4] = a2 * g34
    H[4, 4] = a2 * g44
    H[0, 5] = b0_
    H[1, 5] = amp * b1_
    H[2, 5] = amp * b2_
    H[3, 5] = amp * b3_
    H[4, 5] = amp * b4_
    H[0, 6] = r0_
    H[1, 6] = amp * r1_
    H[2, 6] = amp * r2_
    H[3, 6] = amp * r3_
    H[4, 6] = amp * r4_
    H[0, 7] = s0_
    H[1, 7] = amp * s1_
    H[2, 7] = amp * s2_
    H[3, 7] = amp * s3_
    H[4, 7] = amp * s4_
    if power == 1:
        H[5, 5] = e0
        H[5, 6] = e1
        H[5, 7] = e2
        H[6, 6] = e3
        H[6, 7] = e4
        H[7, 7] = e5
    else:
        H[5, 5] = bgs[0]
        H[5, 6] = bgs[1]
        H[5, 7] = bgs[2]
        H[6, 6] = bgs[3]
        H[6, 7] = bgs[4]
        H[7, 7] = bgs[5]
        gs[0] = d0
        gs[1] = amp * d1
        gs[2] = amp * d2
        gs[3] = amp * d3
        gs[4] = amp * d4
        gs[5] = bgs[6]
        gs[6] = bgs[7]
        gs[7] = bgs[8]
    for a in range(8):
        for b in range(a):
            H[a, b] = H[b, a]


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def evaluate(p, C, S, q, chi, r, s, integrated, sm2, fq, fp, Y, bgs, H, g) -> float:
    """χ² = Σ counts·(mean − model)² at ``p``; fills H = JᵀWJ and g = JᵀW·residual.

    The model is linear in A, B, Bq, Bchi with columns equal to its own terms, so
    JᵀW·model = Σ_l p_l H[:, l] over those four, and χ² = Σ sums²/counts − 2 Σ_l p_l d_l
    + Σ_lm p_l p_m H[l, m] (d the data term): no pass over the bins beyond the moments.
    """
    moments(p, C, S, q, chi, r, s, 0, integrated, fq, fp, Y, bgs, H, g)
    a0 = p[0]
    b5 = p[5]
    b6 = p[6]
    b7 = p[7]
    lin = a0 * g[0] + b5 * g[5] + b6 * g[6] + b7 * g[7]
    quad = (a0 * (a0 * H[0, 0] + 2.0 * (b5 * H[0, 5] + b6 * H[0, 6] + b7 * H[0, 7]))
            + b5 * (b5 * H[5, 5] + 2.0 * (b6 * H[5, 6] + b7 * H[5, 7]))
            + b6 * (b6 * H[6, 6] + 2.0 * b7 * H[6, 7]) + b7 * b7 * H[7, 7])
    for a in range(8):
        g[a] = g[a] - (a0 * H[a, 0] + b5 * H[a, 5] + b6 * H[a, 6] + b7 * H[a, 7])
    return sm2 - 2.0 * lin + quad


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def model_value(p, fq, fp, r, s, i: int, j: int) -> float:
    """The model in bin (i, j), from axis functions ``fq``, ``fp`` computed at ``p``."""
    return p[0] * fq[0, i] * fp[0, j] + p[5] + p[6] * r[i] + p[7] * s[j]
