"""numba kernels: what the 2-D Gaussian fit starts from on a polar patch.

The valid bins are copied into the work buffer (``prepare``), summed in blocks of bins;
the background is a low quantile of the block means (``background``), the most
significant box of blocks locates the spot (``best_box``), and half-maximum crossings of
profiles through it give the start centre, widths and height (``start``). q in 1/Å, φ in
degrees, widths FWHM. Pure functions on caller-allocated arrays, no allocation.
"""

from __future__ import annotations

import math

import numba as nb

_FASTMATH = False

#: Extra variance (in bins²) added to a width by the 3-bin smoothing of start profiles,
#: times 8 ln2: a box of 3 bins has variance 2/3 bin².
_SMOOTH_FWHM2 = 8.0 * math.log(2.0) * 2.0 / 3.0


@nb.njit(cache=True, nogil=True)
def select(a, n: int, k: int) -> float:
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
def prepare(sums, counts, C, S, bq, bp, BS, BC, rs, rc, rm) -> tuple:
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
def background(BS, BC, sel) -> float:
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
    q25 = max(select(sel, n, n // 4), 0.0)
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
def best_box(BS, BC, PS, PC, b0) -> tuple:
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
def smoothed(ps, pc, k: int, b0: float) -> float:
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
def half_max(ps, pc, k0: int, k1: int, b0: float, x, out) -> None:
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
        m = smoothed(ps, pc, k, b0)
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
        m = smoothed(ps, pc, k, b0)
        if math.isnan(m):
            continue
        if m < half:
            xl = x[k] + dx * (half - m) / (prev - m)
            break
        prev = m
    xr = math.nan
    prev = best
    for k in range(kb + 1, n):
        m = smoothed(ps, pc, k, b0)
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
def start(C, S, q, chi, b0, bq, bp, bi0, bi1, bj0, bj1, prof, tmp, p) -> None:
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
    half_max(psq, pcq, i0, i1, b0, q, tmp)
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
    half_max(psp, pcp, j0, j1, b0, chi, tmp)
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
    half_max(psp, pcp, max(jc - hp, 0), min(jc + hp + 1, nchi), b0, chi, tmp)
    p[3] = tmp[0]
    p[4] = tmp[1]
    amp = tmp[2]
    half_max(psq, pcq, max(ic - hq, 0), min(ic + hq + 1, nq), b0, q, tmp)
    p[1] = tmp[0]
    p[2] = tmp[1]
    # Band averages and smoothing flatten the top a little.
    p[0] = 1.1 * max(amp, tmp[2])
    p[5] = b0
    p[6] = 0.0
    p[7] = 0.0
