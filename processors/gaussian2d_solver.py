"""numba kernels: the damped Gauss–Newton (Levenberg–Marquardt) solver of the spot fit.

Works on the 8 parameters of ``processors.gaussian2d_moments`` with bounds (a parameter at
a bound and pushed outwards by the gradient is held for that step), Marquardt's scaling
and Nielsen's damping update. Strict IEEE (no fastmath), no allocation.
"""

from __future__ import annotations

import math

import numba as nb

from processors.frame_record import N_PARAMS
from processors.gaussian2d_moments import evaluate

_FASTMATH = False

#: Converged when the Gauss–Newton step would lower χ² by less than this times s², i.e.
#: the remaining step is about 1e-2 standard errors. (Was 1e-6, 1e-3 standard errors: one
#: model evaluation more per fit on average, and the same accuracy against the truth to
#: 3–4 digits in benchmarks/fit_accuracy.py; docs/fit_model.md.)
_CONV_TOL = 1e-4
#: Relative precision of χ² computed from the accumulated sums (it comes from an
#: expansion, so it carries rounding of the order of eps · Σ counts · mean²).
_CHI2_REL_PRECISION = 1e-13


@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def solve(H, g, free, lam, L, d, x) -> bool:
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





@nb.njit(cache=True, fastmath=_FASTMATH, nogil=True)
def levenberg_marquardt(p, C, S, q, chi, r, s, integrated, sm2, n_bins, max_iterations,
                         lo, hi, fq, fp, Y, bgs, H, Hn, L, g, gn, pn, x, dx, free, d) -> bool:
    """Levenberg–Marquardt from ``p`` with projection onto the bounds (Nielsen's damping
    update); ``p`` and ``H``, ``g`` at ``p`` on return. True when converged."""
    dof = max(n_bins - N_PARAMS, 1)
    chi2_floor = _CHI2_REL_PRECISION * sm2
    chi2 = evaluate(p, C, S, q, chi, r, s, integrated, sm2, fq, fp, Y, bgs, H, g)
    if not math.isfinite(chi2):
        return False
    n_eval = 1
    lam = 1e-3
    nu = 2.0
    pinned = 0
    while True:
        # A parameter held at a bound by the gradient is fixed for this step.
        for k in range(N_PARAMS):
            held = (p[k] <= lo[k] and g[k] < 0.0) or (p[k] >= hi[k] and g[k] > 0.0)
            free[k] = 0.0 if held else 1.0
        if solve(H, g, free, 0.0, L, d, x):
            dec = 0.0
            for k in range(N_PARAMS):
                dec += g[k] * x[k]
            if dec <= max(_CONV_TOL * max(chi2, 0.0) / dof, chi2_floor):
                return True
        if n_eval >= max_iterations or pinned >= 3 or lam > 1e16:
            return False
        if not solve(H, g, free, lam, L, d, x):
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
        chi2n = evaluate(pn, C, S, q, chi, r, s, integrated, sm2, fq, fp, Y, bgs, Hn, gn)
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
                return False
            at_edge = (p[1] <= lo[1] or p[1] >= hi[1] or p[3] <= lo[3] or p[3] >= hi[3])
            pinned = pinned + 1 if at_edge else 0
        else:
            lam *= nu
            nu *= 2.0
