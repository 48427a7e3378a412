"""``nanomaps pattern``: exact per-pixel sums over valid pixels, windows drawn where the config puts them."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest
from matplotlib.patches import Rectangle

from monitor.cli import pattern as pattern_cmd
from monitor.report.pattern_figure import draw_pattern, pattern_figure_data
from monitor.session.scan_pattern import parse_frame_range, read_scan_pattern
from processors.angles import wrap_deg
from processors.config import load_config
from processors.detector_pattern import PatternAccumulator
from processors.frame_processor import cached_pixel_geometry
from processors.geometry import combine_masks
from processors.pattern_kernel import max_per_bin
from processors.pattern_windows import chi_segments
from processors.polar_histogram import build_polar_histogram
from processors.polar_lut import build_polar_lut
from stream.chunk_codec import encode_frame
from stream.dectris_writer import DectrisWriter
from stream.detector_metadata import DetectorMetadata

from conftest import DEMO_DATA
from shared_scans import demo_scan

SPOT_Q, SPOT_CHI = 1.515, -137.0   # inside the demo's "110" window (q 1.39–1.64, χ 198–248 = −162…−112)
N_FRAMES = 7


def _config(folder: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEMO_DATA / "eiger1m_demo.poni", folder / "eiger1m_demo.poni")
    text = (DEMO_DATA / "demo.toml").read_text().replace("shape = [24, 32]", "shape = [3, 4]")
    (folder / "cfg.toml").write_text(text.replace('poni = "eiger1m_demo.poni"',
                                                  'poni = "eiger1m_demo.poni"' + extra))
    return folder / "cfg.toml"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A uint16 scan on the demo EIGER 1M: Poisson background, a spot at (SPOT_Q, SPOT_CHI), saturated
    pixels (at the dtype's maximum) that no mask names, a file pixel_mask and a config mask."""
    d = tmp_path_factory.mktemp("pattern")
    rng = np.random.default_rng(11)
    geometry = cached_pixel_geometry((DEMO_DATA / "eiger1m_demo.poni").read_text(), "demo")
    shape = geometry.shape
    pixel_mask = np.zeros(shape, dtype=np.uint32)
    pixel_mask.reshape(-1)[rng.choice(pixel_mask.size, 300, replace=False)] = 1
    user_mask = np.zeros(shape, dtype=bool)
    user_mask[100:110, 200:260] = True
    np.save(d / "user_mask.npy", user_mask)
    spot = (np.abs(geometry.q_A - SPOT_Q) < 0.008) & (np.abs(wrap_deg(geometry.chi_deg - SPOT_CHI)) < 0.8)
    frames = rng.poisson(2.0, size=(N_FRAMES, *shape)).astype(np.uint16)
    frames[:, spot] += np.uint16(500)
    frames[:, geometry.mask] = 0xFFFF
    for k in range(N_FRAMES):  # saturated in some frames only
        frames[k].reshape(-1)[rng.choice(frames[k].size, 50, replace=False)] = 0xFFFF
    md = DetectorMetadata(description="test", x_pixels=shape[1], y_pixels=shape[0], dtype="uint16",
                          x_pixel_size_m=75e-6, y_pixel_size_m=75e-6, detector_distance_m=0.1,
                          beam_center_x_px=515.0, beam_center_y_px=400.0, wavelength_A=0.9537,
                          count_time_s=0.01, frame_time_s=0.01, nimages=N_FRAMES, ntrigger=1,
                          compression="bslz4", pixel_mask=pixel_mask)
    master = d / "scan_master.h5"
    with DectrisWriter(master, md, encoding="bslz4", frames_per_file=3) as w:
        for k in range(N_FRAMES):
            w.write_chunk(encode_frame(frames[k], "bslz4"), k)
    cfg = _config(d, '\nmask = "user_mask.npy"')
    mask = geometry.mask | (pixel_mask != 0) | user_mask
    return master, cfg, frames, mask, geometry


def _reference(frames: np.ndarray, mask: np.ndarray):
    """Plain numpy: sum, count and max over the frames of the values below the dtype's maximum, masked → 0."""
    valid = frames != np.iinfo(frames.dtype).max
    sums = np.where(valid, frames, 0).astype(np.uint64).sum(axis=0)
    counts = valid.sum(axis=0).astype(np.uint32)
    maxima = np.where(valid, frames, 0).max(axis=0).astype(np.uint32)
    for a in (sums, counts, maxima):
        a[mask] = 0
    return sums, counts, maxima


def test_sum_count_max_equal_numpy_over_valid_pixels(written):
    master, cfg, frames, mask, _ = written
    scan = read_scan_pattern(master, load_config(cfg), progress=False)
    sums, counts, maxima = _reference(frames, mask)
    assert scan.pattern.frames == N_FRAMES and scan.skipped == 0
    np.testing.assert_array_equal(scan.pattern.mask, mask)
    np.testing.assert_array_equal(scan.pattern.sums, sums)
    np.testing.assert_array_equal(scan.pattern.counts, counts)
    np.testing.assert_array_equal(scan.pattern.maxima, maxima)
    mean = scan.pattern.image("mean")
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    np.testing.assert_allclose(mean, expected, rtol=1e-15, equal_nan=True)
    assert np.isnan(mean[mask]).all()


def test_frame_range_reads_only_those_frames(written):
    master, cfg, frames, mask, _ = written
    scan = read_scan_pattern(master, load_config(cfg), start=2, stop=5, progress=False)
    assert scan.frames == (2, 5) and scan.pattern.frames == 3
    np.testing.assert_array_equal(scan.pattern.sums, _reference(frames[2:5], mask)[0])
    assert parse_frame_range(":") == (0, None) and parse_frame_range("3:") == (3, None)
    for bad in ("5", "5:2", "a:b", "-1:4"):
        with pytest.raises(ValueError, match="--frames"):
            parse_frame_range(bad)


def test_accumulator_and_bin_max_against_naive(rng):
    frames = rng.integers(0, 256, size=(5, 13, 17), dtype=np.uint8)
    frames[rng.random(frames.shape) < 0.1] = 255
    mask = rng.random((13, 17)) < 0.05
    acc = PatternAccumulator(mask)
    for f in frames:
        acc.add(f)
    got = acc.result()
    for a, b in zip((got.sums, got.counts, got.maxima), _reference(frames, mask)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="does not match the detector"):
        acc.add(frames[0, :5])
    values = rng.normal(size=1000)
    values[::7] = np.nan
    bins = rng.integers(-1, 20, size=1000)
    out = np.full(20, -np.inf)
    max_per_bin(values, bins, out)
    for b in range(20):
        sel = values[(bins == b) & np.isfinite(values)]
        assert out[b] == (sel.max() if sel.size else -np.inf)


def test_polar_histogram_mean_per_bin_against_histogram2d(rng):
    q = rng.uniform(0.5, 2.5, size=(40, 50))
    chi = rng.uniform(-180, 180, size=(40, 50))
    mask = rng.random((40, 50)) < 0.1
    image = rng.poisson(5.0, size=(40, 50)).astype(float)
    hist = build_polar_histogram(q, chi, mask, nq=12, nchi=18)
    got = hist.apply(image)
    ok = ~mask
    s, qe, ce = np.histogram2d(q[ok], chi[ok], bins=(hist.q_edges, hist.chi_edges), weights=image[ok])
    n, _, _ = np.histogram2d(q[ok], chi[ok], bins=(hist.q_edges, hist.chi_edges))
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(got, s / n, rtol=1e-12, equal_nan=True)
    assert np.isnan(got[n == 0]).all()


def test_chi_segments_across_180():
    assert chi_segments(153.0, 203.0) == [(153.0, 180.0), (-180.0, -157.0)]
    assert chi_segments(198.0, 248.0) == [(-162.0, -112.0)]
    assert chi_segments(-200.0, -160.0) == [(160.0, 180.0), (-180.0, -160.0)]
    assert chi_segments(180.0, 200.0) == [(-180.0, -160.0)]
    assert chi_segments(-10.0, 10.0) == [(-10.0, 10.0)]


def test_windows_drawn_where_the_config_says(written):
    master, cfg, frames, mask, geometry = written
    config = load_config(cfg)
    scan = read_scan_pattern(master, config, progress=False)
    data = pattern_figure_data(scan, config.peaks, "mean", nq=250, nchi=360)
    # the spot is where it was put, in (q, χ), and inside the 110 rectangle
    iq, ic = np.unravel_index(np.nanargmax(data.polar), data.polar.shape)
    q_c = 0.5 * (data.q_edges[iq] + data.q_edges[iq + 1])
    chi_c = 0.5 * (data.chi_edges[ic] + data.chi_edges[ic + 1])
    assert abs(q_c - SPOT_Q) < 0.01 and abs(chi_c - SPOT_CHI) < 1.0
    # window pixels are the polar LUT's (the fit's) pixels
    lut = build_polar_lut(geometry, combine_masks(geometry.shape, mask), config.peaks)
    for k, (peak, w) in enumerate(zip(config.peaks, data.windows)):
        window = lut.windows[k]
        in_lut = np.zeros(geometry.shape, dtype=bool)
        sel = (lut.bin_index >= window.offset) & (lut.bin_index < window.offset + window.n_bins)
        in_lut.reshape(-1)[lut.pixel_index[sel]] = True
        np.testing.assert_array_equal(w.pixels & ~mask, in_lut, err_msg=peak.name)
    fig = draw_pattern(data)
    axes = {ax.get_gid(): ax for ax in fig.axes}
    ax_det, ax_pol = axes["detector"], axes["polar"]
    # right: rectangles at the configured q and χ, the 100 window in two pieces across ±180°
    rects = {p.get_gid(): p for p in ax_pol.patches if isinstance(p, Rectangle)}
    expected = {"window:100:0": (0.95, 153.0, 0.24, 27.0), "window:100:1": (0.95, -180.0, 0.24, 23.0),
                "window:110:0": (1.39, -162.0, 0.25, 50.0), "window:200:0": (2.02, 153.0, 0.24, 27.0),
                "window:200:1": (2.02, -180.0, 0.24, 23.0)}
    assert set(rects) == set(expected)
    for gid, (x, y, wd, ht) in expected.items():
        r = rects[gid]
        np.testing.assert_allclose((r.get_x(), r.get_y(), r.get_width(), r.get_height()), (x, y, wd, ht),
                                   atol=1e-9, err_msg=gid)
    # left: each outline runs between a pixel inside the window and one outside it, and spans its q range
    contours = [c for c in ax_det.collections if hasattr(c, "get_paths") and c.get_paths()]
    assert len(contours) == len(config.peaks)
    rows, cols = geometry.shape
    for peak, w, cs in zip(config.peaks, data.windows, contours):
        xy = np.concatenate([p.vertices for p in cs.get_paths() if len(p.vertices)])
        x, y = xy[:, 0], xy[:, 1]
        r0, r1 = np.clip(np.floor(y).astype(int), 0, rows - 1), np.clip(np.ceil(y).astype(int), 0, rows - 1)
        c0, c1 = np.clip(np.floor(x).astype(int), 0, cols - 1), np.clip(np.ceil(x).astype(int), 0, cols - 1)
        around = np.stack([w.pixels[r0, c0], w.pixels[r0, c1], w.pixels[r1, c0], w.pixels[r1, c1]])
        assert (around.any(axis=0) & ~around.all(axis=0)).all(), peak.name
        q_at = geometry.q_A[np.rint(y).astype(int).clip(0, rows - 1), np.rint(x).astype(int).clip(0, cols - 1)]
        step = 0.01  # > one pixel in q on this detector
        assert abs(q_at.min() - peak.q[0]) < step and abs(q_at.max() - peak.q[1]) < step, peak.name


def _run(argv, capsys):
    code = pattern_cmd.main([str(a) for a in argv])
    return code, capsys.readouterr()


def test_cli_writes_figure_and_arrays_of_a_simulated_scan(tmp_path_factory, tmp_path, capsys):
    config, sim = demo_scan(tmp_path_factory, (3, 4), seed=0)  # also test_overwrite's
    cfg = config.path
    out, h5 = tmp_path / "pattern.png", tmp_path / "pattern.h5"
    code, io = _run([sim.master_path, "--config", cfg, "--out", out, "--h5", h5, "--npy", tmp_path / "p.npy",
                     "--stat", "max", "--no-progress"], capsys)
    assert code == 0, io.err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the decoded frames, read by h5py through the filter plugin: plain numpy reference
    with h5py.File(sim.master_path, "r") as f:
        frames = np.concatenate([f[f"entry/data/{n}"][()] for n in sorted(f["entry/data"])])
        file_mask = f["entry/instrument/detector/detectorSpecific/pixel_mask"][()] != 0
    geometry = cached_pixel_geometry((DEMO_DATA / "eiger1m_demo.poni").read_text(), "demo")
    sums, counts, maxima = _reference(frames, file_mask | geometry.mask)
    with h5py.File(h5, "r") as f:
        np.testing.assert_array_equal(f["pattern/sum"][()], sums)
        np.testing.assert_array_equal(f["pattern/count"][()], counts)
        np.testing.assert_array_equal(f["pattern/max"][()], maxima)
        assert f["pattern"].attrs["frames_read"] == frames.shape[0] == 12
        image = f["pattern/image"][()]
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), image)


def test_cli_refuses_to_overwrite(written, tmp_path, capsys):
    master, cfg, *_ = written
    out = tmp_path / "p.png"
    out.write_bytes(b"keep me")
    code, io = _run([master, "--config", cfg, "--out", out, "--no-progress"], capsys)
    assert code == 2 and out.read_bytes() == b"keep me"
    assert io.err.count("\n") == 1 and "already exists" in io.err and "--overwrite" in io.err
    code, io = _run([master, "--config", cfg, "--out", out, "--overwrite", "--frames", "0:2", "--no-progress"],
                    capsys)
    assert code == 0, io.err
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("case", ["missing", "data_file", "not_hdf5", "bad_config", "bad_frames", "bad_format",
                                  "unwritable", "same_outputs"])
def test_cli_errors_are_one_line_exit_2(written, tmp_path, capsys, case):
    master, cfg, *_ = written
    args = [master, "--config", cfg, "--out", tmp_path / "p.png", "--no-progress"]
    if case == "missing":
        args[0] = tmp_path / "nope_master.h5"
    elif case == "data_file":
        args[0] = master.with_name("scan_data_000001.h5")
    elif case == "not_hdf5":
        (tmp_path / "x_master.h5").write_text("hello")
        args[0] = tmp_path / "x_master.h5"
    elif case == "bad_config":
        (tmp_path / "bad.toml").write_text("[geometry]\nponi = 'missing.poni'\n")
        args[2] = tmp_path / "bad.toml"
    elif case == "bad_frames":
        args += ["--frames", "100:200"]
    elif case == "bad_format":
        args[4] = tmp_path / "p.jpg"
    elif case == "unwritable":
        args += ["--h5", "/proc/p.h5"]
    elif case == "same_outputs":
        args += ["--h5", tmp_path / "p.png"]
    code, io = _run(args, capsys)
    assert code == 2
    assert io.err.count("\n") == 1 and io.err.startswith("nanomaps pattern: "), io.err
    assert "Traceback" not in io.err
    assert not (tmp_path / "p.png").exists()


def test_help_explains_and_nanomaps_lists_pattern(capsys):
    from monitor import cli

    with pytest.raises(SystemExit) as exit_info:
        pattern_cmd.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: nanomaps pattern" in out and "--stat" in out and "exit codes" in out
    assert cli.main(["--help"]) == 0
    assert "pattern" in capsys.readouterr().out
