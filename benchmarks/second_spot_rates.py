"""False-positive and detection rates of the second-spot test (docs/second_spot_and_hot_pixels.md).

Poisson realisations of the window of ``tests/test_second_spot.py`` (30 × 30 bins of four
pixels, spots Δq = 0.045 1/Å, Δφ = 4° FWHM): single spots on flat, sloped and faint
backgrounds (how often a second spot is reported), then two domains 10° apart at several
intensity ratios (how often it is found). ``python benchmarks/second_spot_rates.py [N]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from test_second_spot import NCHI, NQ, WINDOW, fit_both, gaussian, plane  # noqa: E402

from processors.fit_gaussian2d import make_fit_work  # noqa: E402
from processors.frame_record import SECOND_FIT_FAILED, SECOND_FOUND  # noqa: E402
from processors.second_spot import SecondSpotFinder  # noqa: E402


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 2000
    finder, work = SecondSpotFinder(WINDOW), make_fit_work(NQ, NCHI)
    rng = np.random.default_rng(11)
    cases = {"one spot A=60 on B=2": 2.0 + gaussian(60.0, 1.07, 0.045, 178.0, 4.0),
             "one spot A=20 on B=10 sloped ±35 % in q and chi": plane(10.0, 0.35, -0.35)
             + gaussian(20.0, 1.07, 0.045, 178.0, 4.0),
             "one spot A=15 on B=0.3": 0.3 + gaussian(15.0, 1.07, 0.045, 178.0, 4.0),
             "one spot A=500 on B=2": 2.0 + gaussian(500.0, 1.07, 0.045, 178.0, 4.0)}
    for name, per_pixel in cases.items():
        zs, statuses = [], []
        for _ in range(n):
            status, result, *_ = fit_both(rng, per_pixel, finder, work)
            if status == 0:
                zs.append(result.z)
                statuses.append(result.status)
        s = np.array(statuses)
        print(f"{name}: one-spot fits ok {s.size}, second found {np.sum(s == SECOND_FOUND)}, "
              f"fit failed {np.sum(s == SECOND_FIT_FAILED)}, z max {max(zs):.2f}, 99th pct {np.percentile(zs, 99):.2f}")
    for ratio in (1.0, 0.75, 0.5, 0.3, 0.2):
        found = 0
        for _ in range(n // 5):
            per_pixel = 2.0 + gaussian(60, 1.07, 0.045, 173, 4) + gaussian(60 * ratio, 1.072, 0.045, 183, 4)
            status, result, *_ = fit_both(rng, per_pixel, finder, work)
            found += status == 0 and result.status == SECOND_FOUND
        print(f"two domains 10° apart, weaker/stronger {ratio}: found in {found} of {n // 5}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
