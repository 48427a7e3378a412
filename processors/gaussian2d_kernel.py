"""numba kernels for the per-frame 2-D Gaussian spot fit on a polar (q, χ) patch.

Model (science.md), parameters always in this order::

    p = (A, q0, dq, phi0, dphi, B)
    I(q, φ) = A · exp{−4 ln2 [(q − q0)² / dq² + w(φ − φ0)² / dφ²]} + B
    w(x) = x wrapped into (−180, 180]   (processors.angles.wrap_deg)

q in 1/Å, φ in degrees, dq and dphi are FWHM. The data are a patch of bins: ``sums`` (photon
counts summed over the bin's pixels) and ``counts`` (number of valid pixels; 0 = empty bin,
no data). The fit is least squares of the bin means ``sums / counts`` with weight ``counts``,
i.e. unweighted least squares over the pixels with each pixel placed at its bin centre.

Pure functions on typed arrays: caller-allocated outputs and one caller-allocated float64
work buffer (``work_size(nq, nchi)`` elements), an int status code, no raising, no logging,
no allocation. ``fit_gaussian2d_kernel`` may be called from other ``@njit`` code.

Why it is fast: the Gaussian is separable, G = gq(q) · gφ(φ), and every column of the
Jacobian is (scalar) · (function of q) · (function of φ). So each model evaluation needs only
nq + nchi exponentials, and JᵀWJ, JᵀW·data and χ² all follow from eleven running sums per
q row over the φ bins (counts times eight φ-functions, sums times three), combined per row
with powers of (q − q0). Bins where G < e⁻³⁶ (below double precision against the peak)
are skipped.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from processors.angles import wrap_deg_scalar
from processors.frame_record import (
    FIT_NO_PEAK,
    FIT_NOT_CONVERGED,
    FIT_OK,
    FIT_OUTSIDE_WINDOW,
    FIT_SINGULAR,
    FIT_TOO_FEW_BINS,
    N_PARAMS,
)

# Strict IEEE arithmetic, no fast-math flags: a frame's fit must be bit-identical whichever
# worker runs it. With "reassoc"/"contract" LLVM may order reductions and fuse multiply-adds
# differently each time it compiles a function, and the code a process runs depends on
# whether it compiled the kernels itself or loaded numba's cache (and on what it compiled
# before): the same window fitted in two processes differed by up to ~40 ulp. Reductions
# that must vectorize are written elementwise over an array (see _prepare) instead.
_FASTMATH = False

K4LN2 = 4.0 * math.log(2.0)

#: Blocks per axis at most for the background estimate and the pre-fit peak search.
_MAX_BLOCKS = 16
#: The pre-fit box search rejects a window whose best box falls below this fraction of
#: ``min_snr``: a box is a cruder matched filter than the fitted Gaussian, so it is lenient.
_PRECHECK_FRACTION = 0.8
#: Converged when the Gauss–Newton step would lower χ² by less than this times s², i.e.
#: the remaining step is about 1e-3 standard errors.
_CONV_TOL = 1e-6
#: Relative precision of χ² computed from the accumulated sums (it comes from an
#: expansion, so it carries rounding of the order of eps · Σ counts · mean²).
_CHI2_REL_PRECISION = 1e-13
#: Width bounds: FWHM ≥ half a bin (narrower is one sampled bin: unresolved), ≤ this many
#: window sizes.
_WIDTH_MIN_BINS = 0.5
_WIDTH_MAX_WINDOWS = 2.0
#: A fitted FWHM below one bin is not resolved (a hot pixel fits that way): the bin
#: sampling, not the data, then sets width and centre, so it is reported as no peak.
_MIN_RESOLVED_BINS = 1.0
#: exp(−36) ≈ 2e-16: bins beyond this contribute nothing in double precision.
_EXP_CUTOFF = 36.0
#: Extra variance (in bins²) added to a width by the 3-bin smoothing of start profiles,
#: times 8 ln2: a box of 3 bins has variance 2/3 bin².
_SMOOTH_FWHM2 = 8.0 * math.log(2.0) * 2.0 / 3.0


@nb.njit(cache=True, nogil=True)
def _layout(nq: int, nchi: int) -> tuple:
    """Block sizes and offsets of the pieces of the work buffer (last item: total size)."""
    bq = (nq + _MAX_BLOCKS - 1) // _MAX_BLOCKS
    bp = (nchi + _MAX_BLOCKS - 1) // _MAX_BLOCKS
    nbq = (nq + bq - 1) // bq
    nbp = (nchi + bp - 1) // bp
    nbin = nq * nchi
    o_c = 0
    o_s = o_c + nbin
    o_gq = o_s + nbin
    o_u = o_gq + nq
    o_gp = o_u + nq
    o_v = o_gp + nchi
    o_y = o_v + nchi                         # 8 φ-functions × nchi
    o_bs = o_y + 8 * nchi                    # block sums, nbq × nbp
    o_bc = o_bs + nbq * nbp                  # block counts
    o_ps = o_bc + nbq * nbp                  # prefix sums, (nbq + 1) × (nbp + 1)
    o_pc = o_ps + (nbq + 1) * (nbp + 1)
    o_sel = o_pc + (nbq + 1) * (nbp + 1)     # selection scratch, nbq × nbp
    o_prof = o_sel + nbq * nbp               # start profiles: S and C along q, then along χ
    o_mat = o_prof + 2 * (nq + nchi)         # 8 matrices 6 × 6
    o_vec = o_mat + 8 * 36                   # 12 vectors of 6
    total = o_vec + 12 * N_PARAMS
    return (bq, bp, nbq, nbp, o_c, o_s, o_gq, o_u, o_gp, o_v, o_y, o_bs, o_bc, o_ps, o_pc,
            o_sel, o_prof, o_mat, o_vec, total)


@nb.njit(cache=True, nogil=True)
def work_size(nq: int, nchi: int) -> int:
    """Number of float64 elements the work buffer needs for an ``nq × nchi`` patch."""
    return _layout(nq, nchi)[-1]


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def _moments(p, C, S, q, chi, power, bb, gq, u, gp, v, Y, H, gs) -> None:
    """Separable sums Σ c·G^power·J_a·J_b → ``H`` (6 × 6) and Σ S·J_a → ``gs`` (6).

    ``power`` 0 gives JᵀWJ (W = counts) and the data term JᵀW·m; ``power`` 1 gives the
    matrix Σ c·G·J·Jᵀ used by the Poisson covariance. The (B, B) entry Σ c·G^power is
    not a separable product of the per-row sums and is passed in as ``bb``. ``gs[5]``
    (Σ sums) is left to the caller.
    """
    a_amp = p[0]
    q0 = p[1]
    dq = p[2]
    ph0 = p[3]
    dph = p[4]
    nq = q.size
    nchi = chi.size
    aq = K4LN2 / (dq * dq)
    ap = K4LN2 / (dph * dph)

    ilo = nq
    ihi = -1
    for i in range(nq):
        ui = q[i] - q0
        x = aq * ui * ui
        u[i] = ui
        if x < _EXP_CUTOFF:
            gq[i] = math.exp(-x)
            ilo = min(ilo, i)
            ihi = i
        else:
            gq[i] = 0.0
    jlo = nchi
    jhi = -1
    for j in range(nchi):
        vj = wrap_deg_scalar(chi[j] - ph0)
        x = ap * vj * vj
        v[j] = vj
        if x < _EXP_CUTOFF:
            gp[j] = math.exp(-x)
            jlo = min(jlo, j)
            jhi = j
        else:
            gp[j] = 0.0

    # Unsigned bounds: with a signed start numba must allow negative (wrap-around) indices
    # on every access, which stops the inner loop from vectorizing (9× slower).
    ujlo = np.uint64(jlo)
    ujhi = np.uint64(jhi + 1)
    # φ-functions: gφ^(1+power)·v^k (k = 0..2) pair with the constant column B; gφ^(2+power)·v^k
    # (k = 0..4) are the products of two Gaussian columns.
    for j in range(ujlo, ujhi):
        g1 = gp[j]
        if power == 1:
            g1 = g1 * g1
        g2 = g1 * gp[j]
        vj = v[j]
        v2 = vj * vj
        Y[0, j] = g1
        Y[1, j] = g1 * vj
        Y[2, j] = g1 * v2
        Y[3, j] = g2
        Y[4, j] = g2 * vj
        Y[5, j] = g2 * v2
        Y[6, j] = g2 * v2 * vj
        Y[7, j] = g2 * v2 * v2

    h00 = h01 = h02 = h03 = h04 = 0.0
    h11 = h12 = h13 = h14 = 0.0
    h22 = h23 = h24 = 0.0
    h33 = h34 = h44 = 0.0
    h05 = h15 = h25 = h35 = h45 = 0.0
    s0 = s1 = s2 = s3 = s4 = 0.0
    # Plain 2-D indexing: row views (C[i]) would cost a refcount round trip per row.
    for i in range(ilo, ihi + 1):
        a0 = a1 = a2 = 0.0
        b0 = b1 = b2 = b3 = b4 = 0.0
        t0 = t1 = t2 = 0.0
        for j in range(ujlo, ujhi):
            c = C[i, j]
            s = S[i, j]
            a0 += c * Y[0, j]
            a1 += c * Y[1, j]
            a2 += c * Y[2, j]
            b0 += c * Y[3, j]
            b1 += c * Y[4, j]
            b2 += c * Y[5, j]
            b3 += c * Y[6, j]
            b4 += c * Y[7, j]
            t0 += s * Y[0, j]
            t1 += s * Y[1, j]
            t2 += s * Y[2, j]
        e10 = gq[i]
        if power == 1:
            e10 = e10 * e10
        e20 = e10 * gq[i]
        ui = u[i]
        e11 = e10 * ui
        e12 = e11 * ui
        e21 = e20 * ui
        e22 = e21 * ui
        e23 = e22 * ui
        e24 = e23 * ui
        # q-powers of the columns: A, φ0, dφ → u⁰; q0 → u¹; dq → u².
        # φ-powers: A, q0, dq → v⁰; φ0 → v¹; dφ → v².
        h00 += e20 * b0
        h01 += e21 * b0
        h02 += e22 * b0
        h03 += e20 * b1
        h04 += e20 * b2
        h11 += e22 * b0
        h12 += e23 * b0
        h13 += e21 * b1
        h14 += e21 * b2
        h22 += e24 * b0
        h23 += e22 * b1
        h24 += e22 * b2
        h33 += e20 * b2
        h34 += e20 * b3
        h44 += e20 * b4
        h05 += e10 * a0
        h15 += e11 * a0
        h25 += e12 * a0
        h35 += e10 * a1
        h45 += e10 * a2
        s0 += e10 * t0
        s1 += e11 * t0
        s2 += e12 * t0
        s3 += e10 * t1
        s4 += e10 * t2

    # Jacobian columns are these scalars times the separable shapes above.
    c1 = 2.0 * a_amp * aq
    c2 = c1 / dq
    c3 = 2.0 * a_amp * ap
    c4 = c3 / dph
    H[0, 0] = h00
    H[0, 1] = c1 * h01
    H[0, 2] = c2 * h02
    H[0, 3] = c3 * h03
    H[0, 4] = c4 * h04
    H[0, 5] = h05
    H[1, 1] = c1 * c1 * h11
    H[1, 2] = c1 * c2 * h12
    H[1, 3] = c1 * c3 * h13
    H[1, 4] = c1 * c4 * h14
    H[1, 5] = c1 * h15
    H[2, 2] = c2 * c2 * h22
    H[2, 3] = c2 * c3 * h23
    H[2, 4] = c2 * c4 * h24
    H[2, 5] = c2 * h25
    H[3, 3] = c3 * c3 * h33
    H[3, 4] = c3 * c4 * h34
    H[3, 5] = c3 * h35
    H[4, 4] = c4 * c4 * h44
    H[4, 5] = c4 * h45
    H[5, 5] = bb
    for a in range(N_PARAMS):
        for b in range(a):
            H[a, b] = H[b, a]
    gs[0] = s0
    gs[1] = c1 * s1
    gs[2] = c2 * s2
    gs[3] = c3 * s3
    gs[4] = c4 * s4


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def _evaluate(p, C, S, q, chi, n_pix, s_tot, sm2, gq, u, gp, v, Y, H, g) -> float:
    """χ² = Σ counts·(mean − model)² at ``p``; fills H = JᵀWJ and g = JᵀW·residual.

    χ² and g come from the same sums as H: the model is A·J_A + B·J_B, so
    JᵀW·model = A·H[:, 0] + B·H[:, 5], and χ² = Σ sums²/counts − 2 pᵀ(data term) + model².
    """
    _moments(p, C, S, q, chi, 0, n_pix, gq, u, gp, v, Y, H, g)
    a_amp = p[0]
    bg = p[5]
    sg = g[0]
    for a in range(5):
        g[a] = g[a] - a_amp * H[a, 0] - bg * H[a, 5]
    g[5] = s_tot - a_amp * H[5, 0] - bg * n_pix
    return (sm2 - 2.0 * (a_amp * sg + bg * s_tot)
            + a_amp * a_amp * H[0, 0] + 2.0 * a_amp * bg * H[0, 5] + bg * bg * n_pix)


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def _solve(H, g, free, lam, L, d, x) -> bool:
    """x = (H + λ·diag(H))⁻¹ g over the free parameters (others: x = 0); False if singular.

    Solved on the unit-diagonal scaled matrix (Marquardt scaling), so parameters of very
    different size (A ~ 10³ counts, dq ~ 10⁻² 1/Å) do not spoil the Cholesky pivots.
    """
    for a in range(N_PARAMS):
        if free[a] != 0.0:
            h = H[a, a]
            if not h > 0.0 or not math.isfinite(h):
                return False
            d[a] = math.sqrt(h)
        else:
            d[a] = 1.0
    for a in range(N_PARAMS):
        for b in range(a + 1):
            if a == b:
                L[a, a] = 1.0 + lam if free[a] != 0.0 else 1.0
            elif free[a] != 0.0 and free[b] != 0.0:
                L[a, b] = H[a, b] / (d[a] * d[b])
            else:
                L[a, b] = 0.0
    for j in range(N_PARAMS):
        s = L[j, j]
        for k in range(j):
            s -= L[j, k] * L[j, k]
        if not s > 1e-12:
            return False
        ljj = math.sqrt(s)
        L[j, j] = ljj
        for i in range(j + 1, N_PARAMS):
            t = L[i, j]
            for k in range(j):
                t -= L[i, k] * L[j, k]
            L[i, j] = t / ljj
    for i in range(N_PARAMS):
        t = g[i] / d[i] if free[i] != 0.0 else 0.0
        for k in range(i):
            t -= L[i, k] * x[k]
        x[i] = t / L[i, i]
    for i in range(N_PARAMS - 1, -1, -1):
        t = x[i]
        for k in range(i + 1, N_PARAMS):
            t -= L[k, i] * x[k]
        x[i] = t / L[i, i]
    for i in range(N_PARAMS):
        x[i] = x[i] / d[i] if free[i] != 0.0 else 0.0
    return True


@nb.njit(cache=True, nogil=True)
def _select(a, n: int, k: int) -> float:
    """k-th smallest of ``a[:n]`` (0-based), reordering ``a`` in place (Hoare quickselect)."""
    lo = 0
    hi = n - 1
    while lo < hi:
        pivot = a[(lo + hi) // 2]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                t = a[i]
                a[i] = a[j]
                a[j] = t
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return a[k]


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def _prepare(sums, counts, C, S, bq, bp, BS, BC, rs, rc, rm) -> tuple:
    """Copy the valid bins into C, S (empty or non-finite bins → 0) and sum them per block.

    A bin is valid when counts > 0 and both values are finite: an empty bin (possibly
    holding pyFAI's 0 or a NaN) must weigh nothing. ``rs``, ``rc``, ``rm`` are [nchi]
    scratch. Returns (n_bins, Σ counts, Σ sums, Σ sums²/counts).
    """
    nq, nchi = sums.shape
    nbq, nbp = BS.shape
    n_bins = 0
    sm2 = 0.0
    n_pix = 0.0
    s_tot = 0.0
    for bi in range(nbq):
        for j in range(nchi):
            rs[j] = 0.0
            rc[j] = 0.0
            rm[j] = 0.0
        # Branch-free so that the loop vectorizes; NaN compares false. Σ sums²/counts goes
        # per column into rm: a scalar float reduction would not vectorize without reassoc.
        for i in range(bi * bq, min((bi + 1) * bq, nq)):
            for j in range(nchi):
                c = counts[i, j]
                s = sums[i, j]
                ok = (c > 0.0) & (c < math.inf) & (abs(s) < math.inf)
                c = c if ok else 0.0
                s = s if ok else 0.0
                C[i, j] = c
                S[i, j] = s
                rs[j] += s
                rc[j] += c
                n_bins += 1 if ok else 0
                rm[j] += s * s / (c if ok else 1.0)
        for j in range(nchi):
            sm2 += rm[j]
        for bj in range(nbp):
            bs = 0.0
            bc = 0.0
            for j in range(bj * bp, min((bj + 1) * bp, nchi)):
                bs += rs[j]
                bc += rc[j]
            BS[bi, bj] = bs
            BC[bi, bj] = bc
            n_pix += bc
            s_tot += bs
    return n_bins, n_pix, s_tot, sm2


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def _background(BS, BC, sel) -> float:
    """Background per pixel from the block means: the pooled mean of the blocks not above a
    low (25 %) quantile by more than 3 Poisson standard deviations.

    A low quantile keeps a peak that covers much of the window from lifting the estimate;
    pooling all blocks up to quantile + 3σ (not just those below the quantile) removes the
    low bias a bare quantile has for Poisson data of a few counts per block.
    """
    nbq, nbp = BS.shape
    n_ne = 0
    tot_c = 0.0
    for bi in range(nbq):
        for bj in range(nbp):
            if BC[bi, bj] > 0.0:
                n_ne += 1
                tot_c += BC[bi, bj]
    if n_ne == 0:
        return 0.0
    cmin = 0.5 * tot_c / n_ne  # sparse blocks have noisy means: leave them out
    n = 0
    for bi in range(nbq):
        for bj in range(nbp):
            if BC[bi, bj] >= cmin:
                sel[n] = BS[bi, bj] / BC[bi, bj]
                n += 1
    q25 = max(_select(sel, n, n // 4), 0.0)
    ss = 0.0
    cc = 0.0
    for bi in range(nbq):
        for bj in range(nbp):
            c = BC[bi, bj]
            if c >= cmin:
                s = BS[bi, bj]
                if s / c <= q25 + 3.0 * math.sqrt(q25 * c + 1.0) / c:
                    ss += s
                    cc += c
    return ss / cc if cc > 0.0 else q25


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def _best_box(BS, BC, PS, PC, b0) -> tuple:
    """Most significant square box of 1–3 blocks: returns (Z, i0, i1, j0, j1) in blocks.

    Z = (n − μ) / √n with n the box's counts and μ = b0 × its pixels: the excess over its
    own Poisson noise, signal shot noise included (so a lone hot bin is not a peak).
    """
    nbq, nbp = BS.shape
    for bi in range(nbq + 1):
        PS[bi, 0] = 0.0
        PC[bi, 0] = 0.0
    for bj in range(nbp + 1):
        PS[0, bj] = 0.0
        PC[0, bj] = 0.0
    for bi in range(nbq):
        rs = 0.0
        rc = 0.0
        for bj in range(nbp):
            rs += BS[bi, bj]
            rc += BC[bi, bj]
            PS[bi + 1, bj + 1] = PS[bi, bj + 1] + rs
            PC[bi + 1, bj + 1] = PC[bi, bj + 1] + rc
    best_num = 0.0
    best_den = 1.0
    bi0 = 0
    bj0 = 0
    bsq = 1
    bsp = 1
    for size in range(1, 4):
        sq = min(size, nbq)
        sp = min(size, nbp)
        for bi in range(nbq - sq + 1):
            for bj in range(nbp - sp + 1):
                n = (PS[bi + sq, bj + sp] - PS[bi, bj + sp] - PS[bi + sq, bj] + PS[bi, bj])
                c = (PC[bi + sq, bj + sp] - PC[bi, bj + sp] - PC[bi + sq, bj] + PC[bi, bj])
                ex = n - b0 * c
                if ex > 0.0 and n > 0.0:
                    num = ex * ex
                    if num * best_den > best_num * n:
                        best_num = num
                        best_den = n
                        bi0 = bi
                        bj0 = bj
                        bsq = sq
                        bsp = sp
    return math.sqrt(best_num / best_den), bi0, bi0 + bsq, bj0, bj0 + bsp


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def _smoothed(ps, pc, k: int, b0: float) -> float:
    """Mean excess over b0 of bins k−1..k+1 of a profile (NaN when they are all empty)."""
    n = ps.size
    lo = max(k - 1, 0)
    hi = min(k + 1, n - 1)
    s = 0.0
    c = 0.0
    for m in range(lo, hi + 1):
        s += ps[m]
        c += pc[m]
    return s / c - b0 if c > 0.0 else math.nan


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def _half_max(ps, pc, k0: int, k1: int, b0: float, x, out) -> None:
    """Start centre, FWHM and height from a 1-D profile: the maximum of the smoothed excess
    within bins [k0, k1), then the half-maximum crossings walking out from it.

    Half-maximum crossings stop at the first dip, so other structure further out in the
    window does not widen the estimate (second moments would be). Results in ``out``:
    (centre, fwhm, height) in the units of ``x``.
    """
    n = ps.size
    dx = x[1] - x[0]
    best = -math.inf
    kb = k0
    for k in range(k0, k1):
        m = _smoothed(ps, pc, k, b0)
        if m > best:
            best = m
            kb = k
    xb = x[kb]
    span = x[n - 1] - x[0] + dx
    if not best > 0.0:
        out[0] = xb
        out[1] = 0.5 * span
        out[2] = 0.0
        return
    half = 0.5 * best
    xl = math.nan
    prev = best
    for k in range(kb - 1, -1, -1):
        m = _smoothed(ps, pc, k, b0)
        if math.isnan(m):
            continue
        if m < half:
            xl = x[k] + dx * (half - m) / (prev - m)
            break
        prev = m
    xr = math.nan
    prev = best
    for k in range(kb + 1, n):
        m = _smoothed(ps, pc, k, b0)
        if math.isnan(m):
            continue
        if m < half:
            xr = x[k] - dx * (half - m) / (prev - m)
            break
        prev = m
    if not math.isnan(xl) and not math.isnan(xr):
        centre = 0.5 * (xl + xr)
        fwhm = xr - xl
    elif not math.isnan(xl):
        centre = xb
        fwhm = 2.0 * (xb - xl)
    elif not math.isnan(xr):
        centre = xb
        fwhm = 2.0 * (xr - xb)
    else:
        centre = xb
        fwhm = span
    # Remove the broadening by the 3-bin smoothing.
    fwhm2 = fwhm * fwhm - _SMOOTH_FWHM2 * dx * dx
    out[0] = centre
    out[1] = math.sqrt(max(fwhm2, 0.25 * dx * dx))
    out[2] = best


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def _start(C, S, q, chi, b0, bq, bp, bi0, bi1, bj0, bj1, prof, tmp, p) -> None:
    """Start inside the best box (blocks bi0:bi1 × bj0:bj1): peak bin, then half-max widths
    along a band of rows (for χ) and a band of columns (for q) through it; background b0."""
    nq = q.size
    nchi = chi.size
    i0 = bi0 * bq
    i1 = min(bi1 * bq, nq)
    j0 = bj0 * bp
    j1 = min(bj1 * bp, nchi)
    psq = prof[:nq]
    pcq = prof[nq:2 * nq]
    psp = prof[2 * nq:2 * nq + nchi]
    pcp = prof[2 * nq + nchi:]
    # Locate the peak row and column inside the box.
    for i in range(nq):
        s = 0.0
        c = 0.0
        if i0 <= i < i1:
            for j in range(j0, j1):
                s += S[i, j]
                c += C[i, j]
        psq[i] = s
        pcq[i] = c
    _half_max(psq, pcq, i0, i1, b0, q, tmp)
    ic = min(max(int(round((tmp[0] - q[0]) / (q[1] - q[0]))), 0), nq - 1)
    for j in range(nchi):
        s = 0.0
        c = 0.0
        if j0 <= j < j1:
            for i in range(i0, i1):
                s += S[i, j]
                c += C[i, j]
        psp[j] = s
        pcp[j] = c
    _half_max(psp, pcp, j0, j1, b0, chi, tmp)
    jc = min(max(int(round((tmp[0] - chi[0]) / (chi[1] - chi[0]))), 0), nchi - 1)
    # Bands through (ic, jc) across the whole window.
    hq = max(1, bq // 2)
    hp = max(1, bp // 2)
    for j in range(nchi):
        s = 0.0
        c = 0.0
        for i in range(max(ic - hq, 0), min(ic + hq + 1, nq)):
            s += S[i, j]
            c += C[i, j]
        psp[j] = s
        pcp[j] = c
    for i in range(nq):
        s = 0.0
        c = 0.0
        for j in range(max(jc - hp, 0), min(jc + hp + 1, nchi)):
            s += S[i, j]
            c += C[i, j]
        psq[i] = s
        pcq[i] = c
    _half_max(psp, pcp, max(jc - hp, 0), min(jc + hp + 1, nchi), b0, chi, tmp)
    p[3] = tmp[0]
    p[4] = tmp[1]
    amp = tmp[2]
    _half_max(psq, pcq, max(ic - hq, 0), min(ic + hq + 1, nq), b0, q, tmp)
    p[1] = tmp[0]
    p[2] = tmp[1]
    # Band averages and smoothing flatten the top a little.
    p[0] = 1.1 * max(amp, tmp[2])
    p[5] = b0


@nb.njit(cache=True, nogil=True)
def _fill_nan(out_params, out_errors) -> None:
    for k in range(N_PARAMS):
        out_params[k] = math.nan
        out_errors[k] = math.nan


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def fit_gaussian2d_kernel(sums, counts, q_centers, chi_centers, out_params, out_errors, work,
                          min_bins, min_snr, max_iterations) -> int:
    """Fit the 2-D Gaussian + constant to one polar patch; returns a FIT_* status.

    Unvalidated hot path, callable from Python or from other ``@njit`` code.

    sums, counts : float64 [nq, nchi]
        Summed photon counts and number of valid pixels per bin (0 → empty, ignored;
        bins with non-finite values are ignored too).
    q_centers : float64 [nq], 1/Å, increasing and regular.
    chi_centers : float64 [nchi], degrees in the window's branch (may lie outside
        (−180, 180]), increasing and regular.
    out_params, out_errors : float64 [6]
        (A, q0, dq, phi0, dphi, B) and their standard errors; A and B in counts per pixel,
        q0 and dq in 1/Å, phi0 and dphi in degrees, dq and dphi FWHM, phi0 in the same
        branch as ``chi_centers`` (apply w() for pyFAI's χ). All NaN unless FIT_OK.
    work : float64 [work_size(nq, nchi)] scratch, contents irrelevant.
    min_bins : fewer non-empty bins than max(min_bins, 7) → FIT_TOO_FEW_BINS.
    min_snr : significance threshold of the spot (see below) → FIT_NO_PEAK.
    max_iterations : model evaluations allowed → FIT_NOT_CONVERGED.

    FIT_NO_PEAK, in the order tested (the first two are cheap filters):
      1. before iterating: the best box of 1–3 × 1–3 blocks has (n − μ)/√n below
         0.8·min_snr (n its counts, μ the background estimate times its pixels);
      2. after the fit, the fixed-shape signal-to-noise A·ΣcG² / √(A·ΣcG³ + B·ΣcG²) is
         below min_snr (needs no inverse; in practice ≈ 1.45 × the test below);
      3. a fitted FWHM below one bin (unresolved: a hot pixel) or at the upper bound;
      4. the decision: A / σ_A < min_snr, σ_A the standard error of A below (position,
         widths and background free), so a fit that latched onto noise, whose shape is
         poorly defined, has a large σ_A.

    Errors: Poisson ("sandwich") covariance H⁻¹·(Σ c·f·J·Jᵀ)·H⁻¹ with H = Σ c·J·Jᵀ and f
    the fitted model (per-pixel variance = expected counts): the least-squares weights
    are counts, but a pixel's variance grows with its intensity, so s²·H⁻¹ would
    understate the errors of a strong spot on a weak background several times.
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
                  min_bins, min_snr, max_iterations)
    if status != FIT_OK:
        _fill_nan(out_params, out_errors)
    return status


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def _fit(sums, counts, q, chi, out_params, out_errors, work, min_bins, min_snr,
         max_iterations) -> int:
    nq, nchi = sums.shape
    (bq, bp, nbq, nbp, o_c, o_s, o_gq, o_u, o_gp, o_v, o_y, o_bs, o_bc, o_ps, o_pc, o_sel,
     o_prof, o_mat, o_vec, total) = _layout(nq, nchi)
    nbin = nq * nchi
    C = work[o_c:o_c + nbin].reshape((nq, nchi))
    S = work[o_s:o_s + nbin].reshape((nq, nchi))
    gq = work[o_gq:o_gq + nq]
    u = work[o_u:o_u + nq]
    gp = work[o_gp:o_gp + nchi]
    v = work[o_v:o_v + nchi]
    Y = work[o_y:o_y + 8 * nchi].reshape((8, nchi))
    BS = work[o_bs:o_bs + nbq * nbp].reshape((nbq, nbp))
    BC = work[o_bc:o_bc + nbq * nbp].reshape((nbq, nbp))
    PS = work[o_ps:o_ps + (nbq + 1) * (nbp + 1)].reshape((nbq + 1, nbp + 1))
    PC = work[o_pc:o_pc + (nbq + 1) * (nbp + 1)].reshape((nbq + 1, nbp + 1))
    sel = work[o_sel:o_sel + nbq * nbp]
    prof = work[o_prof:o_prof + 2 * (nq + nchi)]
    H = work[o_mat:o_mat + 36].reshape((6, 6))
    Hn = work[o_mat + 36:o_mat + 72].reshape((6, 6))
    L = work[o_mat + 72:o_mat + 108].reshape((6, 6))
    K = work[o_mat + 108:o_mat + 144].reshape((6, 6))
    Hi = work[o_mat + 144:o_mat + 180].reshape((6, 6))
    M = work[o_mat + 180:o_mat + 216].reshape((6, 6))
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

    # Y is free until the first model evaluation.
    n_bins, n_pix, s_tot, sm2 = _prepare(sums, counts, C, S, bq, bp, BS, BC, Y[0], Y[1], Y[2])
    if n_bins < max(min_bins, N_PARAMS + 1):
        return FIT_TOO_FEW_BINS
    if not (math.isfinite(s_tot) and math.isfinite(sm2)):
        return FIT_SINGULAR

    b0 = _background(BS, BC, sel)
    z_box, bi0, bi1, bj0, bj1 = _best_box(BS, BC, PS, PC, b0)
    if z_box < _PRECHECK_FRACTION * min_snr:
        return FIT_NO_PEAK

    dqb = q[1] - q[0]
    dpb = chi[1] - chi[0]
    lo[0] = 0.0
    hi[0] = math.inf
    lo[1] = q[0] - 0.5 * dqb
    hi[1] = q[nq - 1] + 0.5 * dqb
    lo[2] = _WIDTH_MIN_BINS * dqb
    hi[2] = _WIDTH_MAX_WINDOWS * (hi[1] - lo[1])
    lo[3] = chi[0] - 0.5 * dpb
    hi[3] = chi[nchi - 1] + 0.5 * dpb
    lo[4] = _WIDTH_MIN_BINS * dpb
    hi[4] = _WIDTH_MAX_WINDOWS * (hi[3] - lo[3])
    lo[5] = -math.inf
    hi[5] = math.inf

    _start(C, S, q, chi, b0, bq, bp, bi0, bi1, bj0, bj1, prof, tmp, p)
    for k in range(N_PARAMS):
        p[k] = min(max(p[k], lo[k]), hi[k])
    if not p[0] > 0.0:
        return FIT_NO_PEAK

    # Levenberg–Marquardt with projection onto the bounds (Nielsen's damping update).
    dof = max(n_bins - N_PARAMS, 1)
    chi2_floor = _CHI2_REL_PRECISION * sm2
    chi2 = _evaluate(p, C, S, q, chi, n_pix, s_tot, sm2, gq, u, gp, v, Y, H, g)
    if not math.isfinite(chi2):
        return FIT_SINGULAR
    n_eval = 1
    lam = 1e-3
    nu = 2.0
    converged = False
    pinned = 0
    while True:
        # A parameter held at a bound by the gradient is fixed for this step.
        for k in range(N_PARAMS):
            held = (p[k] <= lo[k] and g[k] < 0.0) or (p[k] >= hi[k] and g[k] > 0.0)
            free[k] = 0.0 if held else 1.0
        if _solve(H, g, free, 0.0, L, d, x):
            dec = 0.0
            for k in range(N_PARAMS):
                dec += g[k] * x[k]
            if dec <= max(_CONV_TOL * max(chi2, 0.0) / dof, chi2_floor):
                converged = True
                break
        if n_eval >= max_iterations or pinned >= 3 or lam > 1e16:
            break
        if not _solve(H, g, free, lam, L, d, x):
            lam *= 10.0
            n_eval += 1  # counts as a try so a hopeless system cannot loop forever
            continue
        for k in range(N_PARAMS):
            pn[k] = min(max(p[k] + x[k], lo[k]), hi[k])
            dx[k] = pn[k] - p[k]
        pred = 0.0
        for a in range(N_PARAMS):
            hd = 0.0
            for b in range(N_PARAMS):
                hd += H[a, b] * dx[b]
            pred += dx[a] * (2.0 * g[a] - hd)
        chi2n = _evaluate(pn, C, S, q, chi, n_pix, s_tot, sm2, gq, u, gp, v, Y, Hn, gn)
        n_eval += 1
        if pred > 0.0 and math.isfinite(chi2n) and chi2n < chi2:
            rho = (chi2 - chi2n) / pred
            for k in range(N_PARAMS):
                p[k] = pn[k]
                g[k] = gn[k]
                for b in range(N_PARAMS):
                    H[k, b] = Hn[k, b]
            chi2 = chi2n
            t = 2.0 * rho - 1.0
            lam *= max(1.0 / 3.0, 1.0 - t * t * t)
            nu = 2.0
            if p[0] <= 0.0:
                break
            at_edge = (p[1] <= lo[1] or p[1] >= hi[1] or p[3] <= lo[3] or p[3] >= hi[3])
            pinned = pinned + 1 if at_edge else 0
        else:
            lam *= nu
            nu *= 2.0

    for k in range(N_PARAMS):
        if not math.isfinite(p[k]):
            return FIT_SINGULAR
    a_amp = p[0]
    if not a_amp > 0.0:
        return FIT_NO_PEAK

    # Covariance H⁻¹ M H⁻¹ with M = Σ c·f·J·Jᵀ = A·K + B·H, K = Σ c·G·J·Jᵀ (Poisson:
    # variance = expected counts; a negative fitted background has no variance).
    _moments(p, C, S, q, chi, 1, H[0, 5], gq, u, gp, v, Y, K, tmp)
    bg_var = max(p[5], 0.0)
    # The same significance with the shape held fixed needs no inverse, and is larger:
    # below the threshold, a degenerate (singular) fit is "no peak", not a solver failure.
    var_fixed = a_amp * K[0, 0] + bg_var * H[0, 0]
    if not a_amp * H[0, 0] >= min_snr * math.sqrt(max(var_fixed, 0.0)):
        return FIT_NO_PEAK
    # Narrower than a bin (unresolved: a hot pixel) or at the upper bound (a hump wider
    # than the window): not a spot this model can measure; its normal matrix is degenerate.
    if (p[2] < _MIN_RESOLVED_BINS * dqb or p[2] >= hi[2]
            or p[4] < _MIN_RESOLVED_BINS * dpb or p[4] >= hi[4]):
        return FIT_NO_PEAK
    for k in range(N_PARAMS):
        free[k] = 1.0
    for k in range(N_PARAMS):
        for b in range(N_PARAMS):
            tmp[b] = 1.0 if b == k else 0.0
        if not _solve(H, tmp, free, 0.0, L, d, x):
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
    # large error on A.
    if not a_amp >= min_snr * out_errors[0]:
        return FIT_NO_PEAK
    if p[1] <= lo[1] or p[1] >= hi[1] or p[3] <= lo[3] or p[3] >= hi[3]:
        return FIT_OUTSIDE_WINDOW
    if not converged:
        return FIT_NOT_CONVERGED
    for k in range(N_PARAMS):
        out_params[k] = p[k]
    return FIT_OK
