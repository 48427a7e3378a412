"""The simulator draws what it says: (010) at 2π/b, and each realism option on a rendered frame."""

from __future__ import annotations

from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from monitor.cli import simulate as simulate_cmd
from processors.angles import wrap_deg
from processors.config import PeakConfig
from processors.diffraction_simulator import FrameRenderer
from processors.frame_realism import MESSY_BEAMTIME, FrameRealism, background_change_across, window_pixels
from processors.geometry import pixel_geometry
from processors.simulate_scan import save_truth
from processors.supercrystal import model_supercrystal, with_second_domain

from conftest import DEMO_DATA

#: the demo config's windows: ((q_lo, q_hi) 1/Å, (chi_lo, chi_hi) degrees)
WINDOWS = {"100": ((0.95, 1.19), (153.0, 203.0)), "110": ((1.39, 1.64), (198.0, 248.0)),
           "200": ((2.02, 2.26), (153.0, 203.0))}
HKLS = [(1, 0, 0), (1, 1, 0), (2, 0, 0)]


@pytest.fixture(scope="module")
def poni() -> str:
    return (DEMO_DATA / "eiger1m_demo.poni").read_text()


@pytest.fixture(scope="module")
def geometry(poni):
    return pixel_geometry(poni)


@pytest.fixture(scope="module")
def truth():
    return model_supercrystal((12, 16), seed=1)


def _renderer(poni, geometry, truth, hkls, **options) -> FrameRenderer:
    return FrameRenderer(poni, truth, hkls, geometry=geometry, **options)


def _centroid(geometry, pixels, lam) -> tuple[float, float]:
    """Intensity-weighted mean q (1/Å) and circular mean χ (degrees) of a drawn spot."""
    q = geometry.q_A.reshape(-1)[pixels]
    chi = np.radians(geometry.chi_deg.reshape(-1)[pixels])
    return float(np.average(q, weights=lam)), float(np.degrees(np.angle(np.average(np.exp(1j * chi), weights=lam))))


def _spot_near(geometry, spots, phi0) -> tuple[np.ndarray, np.ndarray]:
    """The drawn spot whose χ centroid is nearest ``phi0``."""
    drawn = [s for s in spots if len(s[0])]
    return min(drawn, key=lambda s: abs(wrap_deg(_centroid(geometry, *s)[1] - phi0)))


def test_010_is_drawn_at_two_pi_over_b(poni, geometry, truth):
    """Each in-plane equivalent has its own q: (100) at 2π/a, (010) at 2π/b, 90° further."""
    renderer = _renderer(poni, geometry, truth, [(1, 0, 0)])
    anisotropy = np.where(truth.on_crystal, np.abs(truth.a_A - truth.b_A), -1.0)
    row, col = np.unravel_index(np.argmax(anisotropy), truth.shape)
    assert anisotropy[row, col] > 0.02  # Å: (100) and (010) differ by > 3e-3 1/Å in q
    spots = renderer.expected_spots(row, col)
    assert len(spots) == 4
    centroids, true_q = {}, {}
    for hkl in ((1, 0, 0), (0, 1, 0), (-1, 0, 0), (0, -1, 0)):
        true = truth.spot(hkl)
        centroids[hkl] = _centroid(geometry, *_spot_near(geometry, spots, true["phi0"][row, col]))
        true_q[hkl] = true["q0"][row, col]
        assert abs(wrap_deg(centroids[hkl][1] - true["phi0"][row, col])) < 0.3, hkl
        assert abs(centroids[hkl][0] - true_q[hkl]) < 2e-3, hkl
    # a centroid over pixels is biased alike for all four (pixel density grows with q): compare differences
    for hkl in ((0, 1, 0), (0, -1, 0), (-1, 0, 0)):
        measured = centroids[hkl][0] - centroids[(1, 0, 0)][0]
        assert abs(measured - (true_q[hkl] - true_q[(1, 0, 0)])) < 3e-4, hkl
    assert abs(true_q[(0, 1, 0)] - true_q[(1, 0, 0)]) > 3e-3
    assert abs(truth.spot((0, 1, 0))["q0"][row, col] - 2 * np.pi / truth.b_A[row, col]) < 1e-12


def test_hot_pixels_sit_in_the_windows_with_their_value_and_not_in_the_mask(poni, geometry, truth, rng):
    realism = FrameRealism(hot_pixels=12, hot_pixels_per_window=2, hot_pixel_counts=2000)
    renderer = _renderer(poni, geometry, truth, HKLS, realism=realism, windows=list(WINDOWS.values()), seed=4)
    hot = renderer.hot_pixels
    assert hot.size == 12 and np.unique(hot).size == 12
    assert not renderer.mask.reshape(-1)[hot].any()
    q, chi = geometry.q_A.reshape(-1), geometry.chi_deg.reshape(-1)
    for name, (qw, cw) in WINDOWS.items():
        assert np.isin(window_pixels(q, chi, qw, cw), hot).sum() >= 2, name
    for point in ((6, 8), (-1, -1)):
        frame = renderer.render(*point, rng).reshape(-1)
        assert (frame[hot] == 2000).all()
    again = _renderer(poni, geometry, truth, HKLS, realism=realism, windows=list(WINDOWS.values()), seed=4)
    np.testing.assert_array_equal(again.hot_pixels, hot)  # fixed pixels: the same every run of a seed


def test_one_zinger_per_frame_anywhere_unmasked(poni, geometry, truth, rng):
    renderer = _renderer(poni, geometry, truth, HKLS, realism=FrameRealism(zingers_per_frame=1, zinger_counts=2500))
    places = set()
    for _ in range(3):
        frame = renderer.render(-1, -1, rng).reshape(-1)  # background only: nothing else reaches 2500
        high = np.flatnonzero((frame == 2500))
        assert high.size == 1 and not renderer.mask.reshape(-1)[high[0]]
        places.add(int(high[0]))
    assert len(places) == 3


def test_ring_background_slopes_across_the_windows(poni, geometry, truth, rng):
    """The messy preset: ±35 % across the 100 and 200 windows, along q and along χ, in the rendered counts."""
    renderer = _renderer(poni, geometry, truth, HKLS, realism=MESSY_BEAMTIME.with_changes(hot_pixels=0,
                                                                                    zingers_per_frame=0))
    frame = renderer.render(-1, -1, rng).reshape(-1).astype(float)
    q, chi = geometry.q_A.reshape(-1), geometry.chi_deg.reshape(-1)
    good = ~renderer.mask.reshape(-1)
    for name, sign_q in (("100", +1), ("200", -1)):
        (q0, q1), (c0, c1) = WINDOWS[name]
        along_q, along_chi = background_change_across(MESSY_BEAMTIME, (q0, q1), (c0, c1))
        assert abs(abs(along_q) - 0.35) < 0.02 and abs(abs(along_chi) - 0.35) < 0.03
        assert np.sign(along_q) == sign_q and along_chi < 0
        # measured on the frame: the mean counts in the first and last fifth of the window
        inside = good & (q >= q0) & (q <= q1) & (np.mod(chi - c0, 360) <= c1 - c0)
        fifth = (q1 - q0) / 5
        lo_q, hi_q = inside & (q < q0 + fifth), inside & (q > q1 - fifth)
        lo_c = inside & (np.mod(chi - c0, 360) < 10) & (np.abs(q - (q0 + q1) / 2) < 0.03)
        hi_c = inside & (np.mod(chi - c0, 360) > c1 - c0 - 10) & (np.abs(q - (q0 + q1) / 2) < 0.03)
        measured_q = (frame[hi_q].mean() - frame[lo_q].mean()) / (frame[hi_q].mean() + frame[lo_q].mean())
        measured_chi = (frame[hi_c].mean() - frame[lo_c].mean()) / (frame[hi_c].mean() + frame[lo_c].mean())
        assert np.sign(measured_q) == sign_q and 0.2 < abs(measured_q) < 0.4, (name, measured_q)
        assert -0.4 < measured_chi < -0.2, (name, measured_chi)


def test_spot_strength_scales_only_the_spots(poni, geometry, truth):
    clean = _renderer(poni, geometry, truth, HKLS).expected_spots(6, 8)
    weak = _renderer(poni, geometry, truth, HKLS, realism=FrameRealism(spot_strength=1 / 3)).expected_spots(6, 8)
    assert sum(lam.sum() for _, lam in weak) == pytest.approx(sum(lam.sum() for _, lam in clean) / 3, rel=1e-3)


def test_second_domain_spots_and_their_truth(poni, geometry, truth, tmp_path):
    two = with_second_domain(truth, (0.0, 1.0, 0.0, 0.5), rotation_deg=10.0, strength=0.7)
    points = two.second_domain.points
    assert points[truth.on_crystal].any() and not points[~truth.on_crystal].any() and not points[:, 8:].any()
    row, col = np.argwhere(points)[len(np.argwhere(points)) // 2]
    renderer = _renderer(poni, geometry, two, [(1, 0, 0)])
    spots = renderer.expected_spots(row, col)
    assert len(spots) == 8
    true = truth.spot((1, 0, 0))
    second_phi0 = two.second_phi0(true["phi0"])
    assert second_phi0[row, col] == pytest.approx(wrap_deg(true["phi0"][row, col] + 10.0))
    assert np.isnan(second_phi0[~points]).all()
    first = _spot_near(geometry, spots[:4], true["phi0"][row, col])
    second = _spot_near(geometry, spots[4:], second_phi0[row, col])
    assert abs(wrap_deg(_centroid(geometry, *second)[1] - second_phi0[row, col])) < 0.3
    assert second[1].sum() == pytest.approx(0.7 * first[1].sum(), rel=0.03)
    assert len(_renderer(poni, geometry, two, [(1, 0, 0)]).expected_spots(*np.argwhere(~points & truth.on_crystal)[0])) == 4
    config = SimpleNamespace(peaks=[PeakConfig("100", (0.95, 1.19), (153.0, 203.0), hkl=(1, 0, 0))])
    save_truth(tmp_path / "t.h5", two, config, renderer)
    with h5py.File(tmp_path / "t.h5", "r") as f:
        np.testing.assert_array_equal(f["truth/second_domain"][()], points)
        np.testing.assert_array_equal(f["truth/spots/100/second_phi0"][()], second_phi0)
        assert f["truth/second_domain"].attrs["rotation_deg"] == 10.0


def test_saxs_spot_is_about_one_pixel_wide(poni, geometry, truth):
    realism = FrameRealism(superlattice_spots=True, saxs_fwhm_px=1.0)
    renderer = _renderer(poni, geometry, truth, [], realism=realism, superlattice=[(1, 0)])
    row, col = 6, 8
    spots = renderer.expected_spots(row, col)
    assert len(spots) == 4  # (10), (01), (−10), (0−1)
    true = truth.superlattice_spot((1, 0), renderer.saxs_dq)
    pixels, lam = _spot_near(geometry, spots, true["phi0"][row, col])
    q, chi = _centroid(geometry, pixels, lam)
    # one pixel in q at the spot, from the geometry itself
    peak = pixels[np.argmax(lam)]
    r, c = divmod(int(peak), geometry.shape[1])
    step = np.hypot(geometry.q_A[r + 1, c] - geometry.q_A[r, c], geometry.q_A[r, c + 1] - geometry.q_A[r, c])
    assert renderer.saxs_dq == pytest.approx(step, rel=0.15)
    assert abs(q - true["q0"][row, col]) < step
    assert (lam > lam.max() / 2).sum() <= 4  # a 1-px FWHM spot covers a few pixels at most
    assert 0.03 < true["q0"][row, col] < 0.06  # ⟨a_SC⟩ ≈ 15 nm: q ≈ 0.04 1/Å


def test_pixel_integration_conserves_intensity(poni, geometry, truth):
    """Integrated over each pixel, the spots keep their total (wide spots: as point sampled; narrow ones:
    converged in the number of sub-samples) and their peaks flatten."""
    point = _renderer(poni, geometry, truth, HKLS).expected_spots(6, 8)
    integrated = _renderer(poni, geometry, truth, HKLS, realism=FrameRealism(pixel_integrated=True)).expected_spots(6, 8)
    for (_, a), (_, b) in zip(point, integrated):
        if a.size:
            assert b.sum() == pytest.approx(a.sum(), rel=5e-3)
            assert b.max() <= a.max() * 1.001
    narrow = {n: _renderer(poni, geometry, truth, [], superlattice=[(1, 0)],
                               realism=FrameRealism(superlattice_spots=True, saxs_fwhm_px=0.6,
                                                    pixel_integrated=True, subpixels=n)).expected_spots(6, 8)
              for n in (4, 8)}
    for (_, a), (_, b) in zip(narrow[4], narrow[8]):
        assert a.sum() == pytest.approx(b.sum(), rel=0.01)


def test_cli_options_build_the_realism(tmp_path):
    parser = simulate_cmd.build_parser()
    args = parser.parse_args(["--out", "x_master.h5", "--messy", "--hot-pixels", "3", "--two-domains", "0.2", "0.5",
                              "0.1", "0.9", "--pixel-integrated"])
    realism = simulate_cmd.realism_from_args(args)
    assert realism == MESSY_BEAMTIME.with_changes(hot_pixels=3, second_domain_patch=(0.2, 0.5, 0.1, 0.9),
                                                  pixel_integrated=True)
    assert simulate_cmd.realism_from_args(parser.parse_args(["--out", "x_master.h5"])).is_clean


def test_cli_bad_option_is_one_line(tmp_path, capsys):
    code = simulate_cmd.main(["--out", str(tmp_path / "x_master.h5"), "--ring-modulation", "1.5"])
    err = capsys.readouterr().err
    assert code == 2 and "ring_modulation" in err and err.count("\n") == 1


def test_the_demo_detector_takes_the_realism_too(tmp_path, rng):
    from monitor.sim.simulated_eiger import FrameSource, SampleModel
    from processors.config import load_config
    from processors.demo_setup import write_demo_config

    config = load_config(write_demo_config(tmp_path, shape=(4, 5)))
    sample = SampleModel(model_supercrystal((8, 10), seed=1), pixel_um=0.25)
    source = FrameSource(config, sample, realism=FrameRealism(hot_pixels=3, second_domain_patch=(0.0, 1.0, 0.0, 1.0)),
                         background_pool=1)
    assert source.sample.truth.second_domain.points.any()
    frame = source.render(0.75, 1.0, rng).reshape(-1)
    assert (frame[source.renderer.hot_pixels] == 2000).all() and source.renderer.hot_pixels.size == 3
    assert not source.metadata.pixel_mask.reshape(-1)[source.renderer.hot_pixels].any()
