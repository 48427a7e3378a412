"""How correlated are one spot's fitted q0, dq, phi0, dphi? (The error propagation of the
derived maps neglects these covariances: docs/statistics.md.)

Fits many Poisson realisations of one polar patch with processors.fit_gaussian2d and prints
the empirical correlation matrix of the position and width parameters, for a centred spot,
an off-centre spot and a weak wide spot. Usage: ``python benchmarks/fit_parameter_correlation.py``.
"""

from __future__ import annotations

import math

import numpy as np

from processors.fit_gaussian2d import fit_gaussian2d, make_fit_work
from processors.frame_record import PARAM_NAMES

NAMES = ("q0", "dq", "phi0", "dphi")


def patch(q, chi, amplitude, q0, dq, phi0, dphi, background, pixels=4.0):
    """Expected summed counts per bin (``pixels`` valid pixels per bin)."""
    g = amplitude * np.exp(-4 * math.log(2) * ((q[:, None] - q0) ** 2 / dq ** 2 + (chi[None, :] - phi0) ** 2 / dphi ** 2))
    return pixels * (g + background)


def correlations(case: dict, n: int = 400, seed: int = 0) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(seed)
    q = np.linspace(0.95, 1.19, 48)
    chi = np.linspace(153.0, 203.0, 50)
    expected = patch(q, chi, **case)
    counts = np.full(expected.shape, 4.0)
    work = make_fit_work(q.size, chi.size)
    cols = [PARAM_NAMES.index(k) for k in NAMES]
    rows = []
    for _ in range(n):
        params, _, status = fit_gaussian2d(rng.poisson(expected).astype(np.float64), counts, q, chi, work=work)
        if status == 0:
            rows.append(params[cols])
    return np.corrcoef(np.array(rows).T), len(rows)


CASES = {
    "centred, strong": dict(amplitude=300.0, q0=1.07, dq=0.05, phi0=178.0, dphi=6.0, background=1.0),
    "off-centre": dict(amplitude=300.0, q0=1.12, dq=0.05, phi0=188.0, dphi=6.0, background=1.0),
    "weak, wide": dict(amplitude=20.0, q0=1.07, dq=0.08, phi0=178.0, dphi=12.0, background=2.0),
}


def main() -> None:
    for name, case in CASES.items():
        corr, n = correlations(case)
        off = np.abs(corr[np.triu_indices(4, 1)])
        print(f"{name}: {n} fits, largest |correlation| among {', '.join(NAMES)} = {off.max():.3f}")
        print(np.array2string(corr, precision=3, suppress_small=True))


if __name__ == "__main__":
    main()
