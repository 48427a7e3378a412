"""Derived quantities against values computed by hand (science.md formulas)."""

import math

import numpy as np
import pytest

from processors import derived
from processors.config import DerivedConfig, PeakConfig
from processors.derived_maps import derived_maps


def test_d_spacing_and_strain():
    assert derived.d_spacing(2 * math.pi) == pytest.approx(1.0)
    # q(100) = 1.0704 1/Å ↔ a = 5.87 Å (science.md table)
    assert derived.d_spacing(1.0704) == pytest.approx(5.8699, abs=1e-4)
    assert derived.strain(5.89935, 5.87) == pytest.approx(0.005, abs=1e-6)


def test_lattice_parameters_by_hand():
    two_pi = 2 * math.pi
    assert derived.axial_lattice_parameter(two_pi / 5.87) == pytest.approx(5.87)
    assert derived.axial_lattice_parameter(2 * two_pi / 5.87, order=2) == pytest.approx(5.87)
    # q110 = 2π√2, q100 = 2π  →  b = 2π / √(8π² − 4π²) = 1
    assert derived.b_from_110_and_100(two_pi * math.sqrt(2), two_pi) == pytest.approx(1.0)
    # a = 5.87, b = 5.835: q110 = 2π √(1/a² + 1/b²)
    q100, q110 = two_pi / 5.87, two_pi * math.sqrt(1 / 5.87**2 + 1 / 5.835**2)
    assert derived.b_from_110_and_100(q110, q100) == pytest.approx(5.835)
    assert np.isnan(derived.b_from_110_and_100(1.0, 1.1))


def test_williamson_hall_by_hand():
    # ε = 0.01, Δq0 = 0.05 1/Å at q0 = 1 and 2:  Δq = √(1e-4 + 2.5e-3), √(4e-4 + 2.5e-3)
    q0 = np.array([1.0, 2.0])
    dq = np.sqrt(np.array([0.0026, 0.0029]))
    size, eps = derived.williamson_hall(q0, dq, 0.85)
    assert eps == pytest.approx(0.01)
    assert size == pytest.approx(2 * math.pi * 0.85 / 0.05 / 10)  # 10.681 nm
    assert size == pytest.approx(10.6814, abs=1e-4)


def test_williamson_hall_unphysical_and_vectorised():
    q0 = np.array([[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, np.nan, 2.0], [3.0, 3.0, 3.0, 3.0]])
    dq = np.sqrt(np.array([[0.0026, 0.0040, 0.0026, 0.0010], [0.0029, 0.0020, 0.0029, 0.0040],
                           [0.0034, 0.0010, 0.0034, 0.0090]]))
    size, eps = derived.williamson_hall(q0, dq)
    assert eps[0] == pytest.approx(0.01) and size[0] == pytest.approx(10.6814, abs=1e-4)
    assert np.isnan(eps[1]) and np.isnan(size[1])        # negative slope
    assert eps[2] == pytest.approx(0.01)                   # NaN spot left out, two remain
    assert np.isnan(size[3])                               # intercept ≤ 0 (Δq² = 0.001·q² + ... < 0)
    size1, eps1 = derived.williamson_hall(q0[:1], dq[:1])
    assert np.isnan(size1).all() and np.isnan(eps1).all()  # one spot: no line


def test_orientational_disorder_by_hand():
    # Δφ = 5° (0.0872665 rad), Δq/q0 = 0.05: √(0.0076154 − 0.0025) = 0.0715220 rad = 4.0979°
    assert derived.orientational_disorder(5.0, 0.05, 1.0) == pytest.approx(4.0979, abs=1e-4)
    assert derived.orientational_disorder(2.0, 0.05, 1.0) != derived.orientational_disorder(2.0, 0.05, 1.0)  # NaN


def test_superlattice_by_hand():
    a1, a2, mean = derived.superlattice_parameters(0.04, 0.042, 10.0, 100.0)
    assert a1 == pytest.approx(2 * math.pi / 0.04 / 10)     # 15.708 nm at γ* = 90°
    assert a2 == pytest.approx(2 * math.pi / 0.042 / 10)
    assert mean == pytest.approx((a1 + a2) / 2)
    a1, _, _ = derived.superlattice_parameters(0.04, 0.04, 0.0, 60.0)
    assert a1 == pytest.approx(2 * math.pi / (0.04 * math.sin(math.radians(60))) / 10)


def test_roles_from_hkl():
    two_pi = 2 * math.pi
    a, b, c = 5.88, 5.85, 5.91
    peaks = (PeakConfig("100", (1, 1.2), (0, 50), hkl=(1, 0, 0)),
             PeakConfig("110", (1.4, 1.6), (0, 50), hkl=(1, 1, 0)),
             PeakConfig("200", (2, 2.3), (0, 50), hkl=(2, 0, 0)),
             PeakConfig("001", (1, 1.2), (80, 100), hkl=(0, 0, 1)),
             PeakConfig("s10", (0.03, 0.05), (0, 30), superlattice=(1, 0)),
             PeakConfig("s01", (0.03, 0.05), (80, 120), superlattice=(0, 1)))
    q = {"100": two_pi / a, "110": two_pi * math.sqrt(1 / a**2 + 1 / b**2), "200": 2 * two_pi / a,
         "001": two_pi / c, "s10": 0.04, "s01": 0.04}
    phi = {"s10": 10.0, "s01": 100.0}
    spot = {n: {"q0": np.full((2, 3), v), "dq": np.full((2, 3), 0.05), "phi0": np.full((2, 3), phi.get(n, 0.0)),
                "dphi": np.full((2, 3), 5.0)} for n, v in q.items()}
    out = derived_maps(peaks, DerivedConfig(d_ref={"100": a}), ("100", "110", "200"), spot)
    np.testing.assert_allclose(out["a"], a)
    np.testing.assert_allclose(out["b"], b)
    np.testing.assert_allclose(out["c"], c)
    np.testing.assert_allclose(out["a_sc"], two_pi / 0.04 / 10)
    np.testing.assert_allclose(out["strain_100"], 0.0, atol=1e-12)
    assert out["size"].shape == (2, 3) and "dphi_do/110" in out
