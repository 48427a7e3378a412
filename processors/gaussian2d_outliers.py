"""numba kernels: bins the 2-D Gaussian fit leaves out (hot pixels, zingers), docs/fit_model.md.

A bin is left out by zeroing its counts and sums in the fit's own copy of the patch (the
work buffer): no allocation, the caller's arrays untouched. Three rules:

- ``spike_in_box`` (at the start search): the brightest bin of the box the search chose,
  when it is significantly above the background and its excess per pixel is more than
  ``ratio`` times the largest excess of its eight neighbours — a single hot bin, which no
  spot resolved by the binning makes. It is left out and the search repeated. (Spikes
  elsewhere do not decide the start; the rule after the fit takes them out.)
- ``exclude_outliers`` (after a converged fit): a bin whose counts exceed the model's by
  more than ``z`` Poisson standard deviations, S − f·c > z·√(f·c + 1), and whose excess
  per pixel is more than ``ratio`` times the largest of its neighbours' (a smooth model
  mismatch, e.g. a non-Gaussian peak shape, raises neighbours alike and is kept).
- ``exclude_core`` (after a fit that came out unresolved): the bins the collapsed
  Gaussian sits on, so the spike it fitted no longer decides the start.
- ``bin_is_outlier`` (after a fit narrow on both axes): the fit's peak bin is taken out,
  the window fitted again from a new start, and the bin tested against that fit with the
  ``exclude_outliers`` rule: a hot pixel on a spot's flank is an outlier of the spot's
  fit and stays out; the core of a real narrow spot is not, and the first fit is kept.

Marked bins get their counts negated first and zeroed at the end, so a rule sees every
neighbour as it was.
"""

from __future__ import annotations

import numba as nb

_FASTMATH = False


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def _neighbour_max(C, S, F, r, s, p, i: int, j: int, use_model: bool) -> float:
    """Largest excess per pixel (mean − reference) among the valid neighbours of (i, j);
    −inf when none is valid. The reference is the background ``p[5]`` or the model."""
    nq, nchi = C.shape
    best = -1e300
    for di in range(-1, 2):
        ii = i + di
        if ii < 0 or ii >= nq:
            continue
        for dj in range(-1, 2):
            jj = j + dj
            if (di == 0 and dj == 0) or jj < 0 or jj >= nchi:
                continue
            c = abs(C[ii, jj])
            if c > 0.0:
                ref = p[5]
                if use_model:
                    ref = p[0] * F[0, ii] * F[1, jj] + p[5] + p[6] * r[ii] + p[7] * s[jj]
                best = max(best, S[ii, jj] / c - ref)
    return best


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def _isolated(C, S, b0: float, i: int, j: int, level: float) -> bool:
    """No valid neighbour of (i, j) has an excess per pixel over ``b0`` of ``level`` or
    more (stops at the first that has: inside a spot, that is the first one tried)."""
    nq, nchi = C.shape
    for di in range(-1, 2):
        ii = i + di
        if ii < 0 or ii >= nq:
            continue
        for dj in range(-1, 2):
            jj = j + dj
            if (di == 0 and dj == 0) or jj < 0 or jj >= nchi:
                continue
            c = abs(C[ii, jj])
            if c > 0.0 and S[ii, jj] - b0 * c >= level * c:
                return False
    return True


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def _zero_marked(C, S) -> int:
    nq, nchi = C.shape
    n = 0
    for i in range(nq):
        for j in range(nchi):
            if C[i, j] < 0.0:
                C[i, j] = 0.0
                S[i, j] = 0.0
                n += 1
    return n


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def spike_in_box(C, S, b0: float, z: float, ratio: float, i0: int, i1: int, j0: int, j1: int) -> tuple:
    """Is the brightest bin of rows i0:i1 × columns j0:j1 (the box the start search chose)
    an isolated spike above the background ``b0``? Returns (spike, i, j)."""
    best = -1e300
    bi = i0
    bj = j0
    for i in range(i0, i1):
        for j in range(j0, j1):
            c = C[i, j]
            if c > 0.0:
                e = (S[i, j] - b0 * c) / c
                if e > best:
                    best = e
                    bi = i
                    bj = j
    c = C[bi, bj]
    if not c > 0.0:
        return False, bi, bj
    ex = S[bi, bj] - b0 * c
    if not (ex > 0.0 and ex * ex > z * z * (max(b0, 0.0) * c + 1.0)):
        return False, bi, bj
    return _isolated(C, S, b0, bi, bj, ex / (c * ratio)), bi, bj


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def _copy_shapes(fq, fp, F) -> None:
    for i in range(fq.shape[1]):
        F[0, i] = fq[0, i]
    for j in range(fp.shape[1]):
        F[1, j] = fp[0, j]


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def exclude_outliers(C, S, p, fq, fp, r, s, z: float, ratio: float, F) -> int:
    """Zero bins far above the fitted model ``p`` (axis functions ``fq``, ``fp`` computed
    at ``p``); returns how many. ``F`` [2, ≥max(nq, nchi)] scratch."""
    nq, nchi = C.shape
    z2 = z * z
    # Branch-free count of the bins far above the model (vectorizes); the neighbour test
    # only when there are any.
    m = 0
    for i in range(nq):
        base = p[5] + p[6] * r[i]
        ai = p[0] * fq[0, i]
        for j in range(nchi):
            c = C[i, j]
            f = max(ai * fp[0, j] + base + p[7] * s[j], 0.0)
            res = S[i, j] - f * c
            m += 1 if (c > 0.0) & (res > 0.0) & (res * res > z2 * (f * c + 1.0)) else 0
    if m == 0:
        return 0
    _copy_shapes(fq, fp, F)
    n = 0
    for i in range(nq):
        base = p[5] + p[6] * r[i]
        ai = p[0] * fq[0, i]
        for j in range(nchi):
            c = C[i, j]
            if not c > 0.0:
                continue
            f = max(ai * fp[0, j] + base + p[7] * s[j], 0.0)
            res = S[i, j] - f * c
            if res > 0.0 and res * res > z2 * (f * c + 1.0):
                nb_res = _neighbour_max(C, S, F, r, s, p, i, j, True)
                if res / c > ratio * max(nb_res, 0.0):
                    C[i, j] = -c
                    n += 1
    if n == 0:
        return 0
    return _zero_marked(C, S)


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def bin_is_outlier(C, S, p, fq, fp, r, s, z: float, ratio: float, F, i: int, j: int) -> bool:
    """The ``exclude_outliers`` test for bin (i, j) alone."""
    _copy_shapes(fq, fp, F)
    c = C[i, j]
    if not c > 0.0:
        return False
    f = max(p[0] * fq[0, i] * fp[0, j] + p[5] + p[6] * r[i] + p[7] * s[j], 0.0)
    res = S[i, j] - f * c
    if not (res > 0.0 and res * res > z * z * (f * c + 1.0)):
        return False
    return res / c > ratio * max(_neighbour_max(C, S, F, r, s, p, i, j, True), 0.0)


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def peak_bin(fq, fp) -> tuple:
    """(i, j) of the bin where the Gaussian's shape is largest."""
    bi = 0
    bj = 0
    for i in range(fq.shape[1]):
        if fq[0, i] > fq[0, bi]:
            bi = i
    for j in range(fp.shape[1]):
        if fp[0, j] > fp[0, bj]:
            bj = j
    return bi, bj


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def exclude_core(C, S, fq, fp) -> int:
    """Zero the bins where the Gaussian's shape is above a quarter of its maximum;
    returns how many were valid."""
    nq, nchi = C.shape
    mq = 0.0
    mp = 0.0
    for i in range(nq):
        mq = max(mq, fq[0, i])
    for j in range(nchi):
        mp = max(mp, fp[0, j])
    cut = 0.25 * mq * mp
    n = 0
    for i in range(nq):
        for j in range(nchi):
            if fq[0, i] * fp[0, j] >= cut and cut > 0.0:
                if C[i, j] > 0.0:
                    n += 1
                C[i, j] = 0.0
                S[i, j] = 0.0
    return n
