"""`nanomaps report`: the paper-style figure of a results file (monitor/report/figure.py, monitor/cli/report.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import h5py
import matplotlib.image
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from monitor.cli.report import main
from monitor.report import figure as report
from monitor.report.figure import draw_report
from monitor.report.figure_data import read_report_data
from processors.angles import fold_orientation

ROWS, COLS = 20, 30
K = 0.85
A0 = 5.87  # Å, pseudocubic CsPbBr3
PEAKS = {"100": (1, 0, 0), "110": (1, 1, 0), "200": (2, 0, 0)}


# ----------------------------------------------------------------------- fixture


def _truth(seed: int = 7) -> dict[str, np.ndarray]:
    """A supercrystal-like map: size 8.5 nm at the edges → 16 nm in the centre,
    a − b = 0.035 Å at 8.5 nm → −0.015 Å at 17 nm, NaN off the crystal and at rejected points."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ROWS, 0:COLS]
    u = (xx - (COLS - 1) / 2) / ((COLS - 1) / 2)
    v = (yy - (ROWS - 1) / 2) / ((ROWS - 1) / 2)
    r = np.clip(np.hypot(u, v) / np.sqrt(2) * 1.25, 0.0, 1.0)  # 0 centre, 1 edge
    size = 16.0 - 7.5 * r + rng.normal(0, 0.3, r.shape)  # nm
    aniso = 0.035 - 0.05 * (size - 8.5) / 8.5  # a − b, Å
    a = A0 + aniso / 2 + rng.normal(0, 0.008, r.shape)
    b = A0 - aniso / 2 + rng.normal(0, 0.008, r.shape)
    eps = 0.018 + 0.004 * r + rng.normal(0, 0.001, r.shape)
    off = np.hypot(u, v) > 1.3  # corners: the beam is off the crystal
    rejected = rng.random(r.shape) < 0.05  # fits rejected here and there
    nan_all = off
    nan_derived = off | rejected
    q = {
        "100": 2 * np.pi / a,
        "110": 2 * np.pi * np.sqrt(1 / a**2 + 1 / b**2),
        "200": 4 * np.pi / a,
    }
    dq0 = 2 * np.pi * K / (10 * size)  # Å⁻¹
    dq = {name: np.sqrt(eps**2 * q0**2 + dq0**2) for name, q0 in q.items()}
    phi0 = 12.0 + 4.0 * np.tanh(3 * u) + rng.normal(0, 0.5, r.shape)
    dphi_do = 1.0 + 2.0 * r + rng.normal(0, 0.1, r.shape)
    intensity = np.where(off, 3e4, 2e6 * (1 - 0.5 * r))
    out = {"size": size, "a": a, "b": b, "microstrain": eps, "phi0": phi0, "dphi_do": dphi_do, "intensity": intensity}
    for name in PEAKS:
        out[f"q0_{name}"] = q[name]
        out[f"dq_{name}"] = dq[name]
    for key, arr in out.items():
        arr = arr.astype(np.float64)
        if key in ("size", "a", "b", "microstrain"):
            arr[nan_derived] = np.nan
        elif key != "intensity":
            arr[nan_all] = np.nan
        out[key] = arr
    out["intensity"][off & (rng.random(r.shape) < 0.5)] = np.nan  # part of the corners not measured
    return out


def _nxdata(group: h5py.Group, signal: str, **attrs: object) -> None:
    group.attrs["NX_class"] = "NXdata"
    group.attrs["signal"] = signal
    group.attrs["axes"] = ["y", "x"]
    for k, v in attrs.items():
        group.attrs[k] = v


def write_results(
    path: Path,
    truth: dict[str, np.ndarray],
    *,
    derived: bool = True,
    peaks: bool = True,
    scan: bool = True,
    bytes_attrs: bool = False,
) -> Path:
    """A results file laid out as design §5 says (plain h5py, no nanomaps code)."""
    x = 100.0 + 0.5 * np.arange(COLS)
    y = -20.0 + 0.5 * np.arange(ROWS)
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["default"] = "results"
        res = entry.create_group("results")
        _nxdata(res, "intensity")
        res.create_dataset("intensity", data=truth["intensity"]).attrs["units"] = "counts"
        for name, vals in (("x", x), ("y", y)):
            ds = res.create_dataset(name, data=vals)
            ds.attrs["units"] = "um"
            ds.attrs["long_name"] = f"sample {name}"
        if peaks:
            for name, hkl in PEAKS.items():
                g = res.create_group(name)
                _nxdata(g, "amplitude", hkl=np.array(hkl, dtype=np.int64))
                q0, dq = truth[f"q0_{name}"], truth[f"dq_{name}"]
                maps = {
                    "amplitude": (np.where(np.isfinite(q0), 300.0, np.nan), "counts"),
                    "q0": (q0, "1/angstrom"),
                    "dq": (dq, "1/angstrom"),
                    "phi0": (truth["phi0"] + (90.0 if name == "110" else 0.0) - (45.0 if name == "110" else 0.0), "degrees"),
                    "dphi": (np.sqrt(truth["dphi_do"] ** 2 + np.rad2deg(dq / q0) ** 2), "degrees"),
                    "background": (np.where(np.isfinite(q0), 1.0, np.nan), "counts"),
                }
                for key, (vals, units) in maps.items():
                    g.create_dataset(key, data=vals).attrs["units"] = units
                    g.create_dataset(f"{key}_error", data=np.abs(vals) * 0.01).attrs["units"] = units
                g.create_dataset("status", data=np.where(np.isfinite(q0), 0, 3).astype(np.int32))
                g.create_dataset("dphi_do", data=truth["dphi_do"]).attrs["units"] = "degrees"
            sl = res.create_group("sl10")  # a SAXS spot: not an hkl peak
            _nxdata(sl, "amplitude", superlattice=np.array([1, 0]))
            sl.create_dataset("q0", data=np.full((ROWS, COLS), 0.042))
        if derived:
            d = res.create_group("derived")
            wh = [b"100", b"110", b"200"] if bytes_attrs else ["100", "110", "200"]
            _nxdata(d, "size", scherrer_k=K, williamson_hall_peaks=np.array(wh, dtype=object if not bytes_attrs else "S3"))
            for key, units in (("a", "angstrom"), ("b", "angstrom"), ("size", "nm"), ("microstrain", "")):
                d.create_dataset(key, data=truth[key]).attrs["units"] = units
        if scan:
            s = entry.create_group("scan")
            for name, vals in (("x", x), ("y", y)):
                ds = s.create_dataset(name, data=vals)
                ds.attrs["units"] = b"um" if bytes_attrs else "um"
                ds.attrs["long_name"] = f"piezo {name}".encode() if bytes_attrs else f"piezo {name}"
        proc = entry.create_group("process")
        proc.attrs["NX_class"] = "NXprocess"
    return path


@pytest.fixture
def truth() -> dict[str, np.ndarray]:
    return _truth()


@pytest.fixture
def results_file(tmp_path: Path, truth: dict[str, np.ndarray]) -> Path:
    return write_results(tmp_path / "scan_0042_results.h5", truth)


def _axes_by_label(fig: Figure) -> dict[str, object]:
    return {ax.get_label(): ax for ax in fig.axes if ax.get_label() and not ax.get_label().startswith("<")}


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.findobj(Text)]


# ----------------------------------------------------------------------- reading


def test_read_report_data_picks_100_and_reads_everything(results_file: Path, truth) -> None:
    data = read_report_data(results_file)
    assert data.peak == "100"
    assert data.shape == (ROWS, COLS)
    assert data.peaks == ("100", "110", "200", "sl10")
    assert [p.name for p in data.wh_peaks] == ["100", "110", "200"]
    assert data.scherrer_k == pytest.approx(K)
    np.testing.assert_array_equal(data.size, truth["size"])
    assert data.n_measured == int(np.isfinite(truth["intensity"]).sum())
    assert data.x.label == "piezo x (µm)" and data.y.label == "piezo y (µm)"
    assert data.x.edges() == pytest.approx((99.75, 114.75))
    with pytest.raises(ValueError):
        data.size[0, 0] = 1.0  # arrays are read-only


def test_default_peak_without_100_is_first_hkl_peak(tmp_path: Path, truth) -> None:
    path = write_results(tmp_path / "r.h5", truth)
    with h5py.File(path, "a") as f:
        del f["entry/results/100"]
    data = read_report_data(path)
    assert data.peak == "110"  # "sl10" has superlattice, not hkl


def test_bytes_attributes_are_understood(tmp_path: Path, truth) -> None:
    data = read_report_data(write_results(tmp_path / "r.h5", truth, bytes_attrs=True))
    assert [p.name for p in data.wh_peaks] == ["100", "110", "200"]
    assert data.x.label == "piezo x (µm)"


def test_orientation_folds_modulo_90() -> None:
    phi = np.array([10.0, 12.0, 14.0, 12.0 + 90.0, 12.0 - 180.0, np.nan])
    folded, median = fold_orientation(phi)
    assert median == pytest.approx(12.0)
    np.testing.assert_allclose(folded[:5], [10.0, 12.0, 14.0, 12.0, 12.0])
    assert np.isnan(folded[5])
    # straddling the fold: 44° and −44° are 2° apart modulo 90
    folded, median = fold_orientation(np.array([44.0, -44.0, 45.0]))
    assert abs(((median - 45.0 + 45) % 90) - 45) < 2.0
    assert np.ptp(folded) < 3.0


# ----------------------------------------------------------------------- figure


@pytest.mark.filterwarnings("error")
def test_figure_has_every_panel(results_file: Path) -> None:
    fig = draw_report(results_file)
    axes = _axes_by_label(fig)
    assert set(axes) == {"intensity", "phi0", "dphi_do", "size", "microstrain", "a", "b", "a_minus_b",
                         "williamson_hall", "ab_vs_size"}
    titles = {k: ax.get_title() for k, ax in axes.items()}
    assert titles["intensity"] == "integrated intensity"
    assert "φ0 (100)" in titles["phi0"] and "mod 90°" in titles["phi0"] and "median" in titles["phi0"]
    assert "Δφ_do (100)" in titles["dphi_do"]
    assert titles["size"].startswith("NC size")
    assert titles["microstrain"].startswith("microstrain")
    assert titles["williamson_hall"].startswith("Williamson–Hall")
    assert titles["ab_vs_size"] == "a, b vs NC size"
    assert all("not available" not in " ".join(_texts(ax)) for ax in axes.values())
    assert "scan_0042_results.h5" in fig.get_suptitle()
    n = int(np.isfinite(read_report_data(results_file).intensity).sum())
    assert f"{n} measured points" in fig.get_suptitle()
    # colour bars carry units
    cbar_labels = {ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"}
    assert {"counts", "φ0 (°)", "Δφ_do (°)", "size (nm)", "ε (%)", "a (Å)", "b (Å)", "a − b (Å)"} <= cbar_labels
    # maps use the scan positions for their extent
    im = axes["size"].get_images()[0]
    assert im.get_extent() == pytest.approx([99.75, 114.75, -20.25, -10.25])
    assert axes["size"].get_xlabel() == "piezo x (µm)"
    # microstrain is shown in %
    assert np.nanmedian(np.ma.filled(axes["microstrain"].get_images()[0].get_array(), np.nan)) == pytest.approx(
        100 * np.nanmedian(read_report_data(results_file).microstrain))


def test_titles_do_not_run_into_other_panels(results_file: Path, tmp_path: Path) -> None:
    """Every map title stays clear of every colour bar and of the other panels (the φ0 title, at its
    longest, once ran into its colour bar)."""
    longest = tmp_path / "long_titles.h5"
    longest.write_bytes(results_file.read_bytes())
    with h5py.File(longest, "r+") as f:  # φ0 near -180° with a wide spread: the longest title there is
        phi0 = f["entry/results/100/phi0"]
        rng = np.random.default_rng(1)
        phi0[...] = np.where(np.isfinite(phi0[()]), -177.3 + rng.uniform(-10, 10, phi0.shape), np.nan)
    fig = draw_report(longest)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    for ax in panels:
        title = ax.title.get_window_extent(renderer)
        for other in colorbars + [p for p in panels if p is not ax]:
            box = other.get_tightbbox(renderer) if other in colorbars else other.get_window_extent(renderer)
            assert not title.overlaps(box), (ax.get_title(), other.get_label())


def test_phi0_panel_is_cyclic_and_centred_on_the_median(results_file: Path) -> None:
    """φ0 is folded modulo 90° and shown on a cyclic map spanning its robust spread."""
    fig = draw_report(results_file, peak="110")  # fixture's 110 φ0 = 100 φ0 + 45°
    ax = _axes_by_label(fig)["phi0"]
    im = ax.get_images()[0]
    assert im.get_cmap().name.startswith("twilight")
    lo, hi = im.norm.vmin, im.norm.vmax
    assert 4.0 <= hi - lo <= 90.0
    shown = np.ma.filled(im.get_array(), np.nan)
    finite = shown[np.isfinite(shown)]
    assert np.mean((finite >= lo) & (finite <= hi)) >= 0.98
    median = (lo + hi) / 2
    assert median == pytest.approx(np.nanmedian(read_report_data(results_file).phi0) + 45.0, abs=0.5)


def test_pearson_in_legend_matches_corrcoef(results_file: Path, truth) -> None:
    fig = draw_report(results_file)
    legend = _axes_by_label(fig)["ab_vs_size"].get_legend()
    labels = {t.get_text()[0]: t.get_text() for t in legend.get_texts()}
    for name, sign in (("a", -1), ("b", +1)):
        ok = np.isfinite(truth[name]) & np.isfinite(truth["size"])
        expected = np.corrcoef(truth["size"][ok], truth[name][ok])[0, 1]
        assert np.sign(expected) == sign
        match = re.fullmatch(rf"{name} \(ρ = ([−-]?\d\.\d\d)\)", labels[name])
        assert match, labels[name]
        shown = float(match.group(1).replace("−", "-"))
        assert shown == pytest.approx(round(expected, 2), abs=1e-9)
        assert np.sign(shown) == sign


def test_williamson_hall_median_fit_line(results_file: Path, truth) -> None:
    fig = draw_report(results_file)
    ax = _axes_by_label(fig)["williamson_hall"]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "median fit"]
    xs, ys = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
    intercept = ys[0] - slope * xs[0]
    eps, size = truth["microstrain"], truth["size"]
    assert slope == pytest.approx(np.median(eps[np.isfinite(eps)] ** 2), rel=1e-9)
    dq0 = 2 * np.pi * K / (10 * size[np.isfinite(size)])
    assert intercept == pytest.approx(np.median(dq0**2), rel=1e-9)
    # fixture's dq obey the WH law: every point of the median-ish pixel lies near the line
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [lab.split()[0] for lab in legend] == ["100", "110", "200", "median"]
    assert len(ax.collections) == 3
    offsets = ax.collections[0].get_offsets()
    assert len(offsets) == int(np.isfinite(truth["q0_100"]).sum())
    text = " ".join(_texts(ax))
    assert f"median size = {np.nanmedian(size):.1f} nm" in text
    assert f"median microstrain = {100 * np.nanmedian(eps):.2f} %" in text


@pytest.mark.filterwarnings("error")
def test_intensity_only_file_renders_not_available_panels(tmp_path: Path, truth) -> None:
    path = write_results(tmp_path / "only_intensity.h5", truth, derived=False, peaks=False, scan=False)
    fig = draw_report(path)
    axes = _axes_by_label(fig)
    assert axes["intensity"].get_images()
    for key in ("phi0", "dphi_do", "size", "microstrain", "a", "b", "a_minus_b", "williamson_hall", "ab_vs_size"):
        assert any("not available" in t for t in _texts(axes[key])), key
    # positions fall back to /entry/results/x, y
    assert axes["intensity"].get_xlabel() == "sample x (µm)"
    out = tmp_path / "only_intensity.png"
    assert main([str(path), "--out", str(out)]) == 0
    assert out.stat().st_size > 0


# ----------------------------------------------------------------------- command


def test_main_writes_png_of_expected_size(results_file: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "fig.png"
    assert main([str(results_file), "--out", str(out), "--dpi", "100", "--no-statistics"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.stat().st_size > 10_000
    img = matplotlib.image.imread(out)
    assert img.shape[:2] == (1000, 1600)  # figsize (16, 10) at 100 dpi


def test_main_default_out_and_vector_formats(results_file: Path, tmp_path: Path) -> None:
    assert main([str(results_file), "--no-statistics"]) == 0
    png = results_file.with_suffix(".png")
    assert matplotlib.image.imread(png).shape[:2] == (1500, 2400)  # default 150 dpi
    for suffix in (".pdf", ".svg"):
        out = tmp_path / f"fig{suffix}"
        assert main([str(results_file), "--out", str(out), "--no-statistics"]) == 0
        assert out.stat().st_size > 0
    assert (tmp_path / "fig.pdf").read_bytes().startswith(b"%PDF")
    assert b"<svg" in (tmp_path / "fig.svg").read_bytes()[:2000]


def _assert_error(capsys, rc: int, *needles: str) -> None:
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


def test_missing_file(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.h5"
    _assert_error(capsys, main([str(missing)]), "nope.h5", "not found")


def test_not_hdf5(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    _assert_error(capsys, main([str(bad)]), "bad.h5", "HDF5")


def test_missing_results_group(tmp_path: Path, capsys) -> None:
    path = tmp_path / "raw_master.h5"
    with h5py.File(path, "w") as f:
        f.create_group("entry/data")
    _assert_error(capsys, main([str(path)]), "raw_master.h5", "/entry/results", "reprocess")


def test_unknown_peak(results_file: Path, capsys) -> None:
    _assert_error(capsys, main([str(results_file), "--peak", "300"]), "/entry/results/300", "100, 110, 200", "--peak")


def test_bad_output_suffix(results_file: Path, tmp_path: Path, capsys) -> None:
    _assert_error(capsys, main([str(results_file), "--out", str(tmp_path / "fig.jpg")]), ".jpg", ".png")


def test_module_leaves_matplotlib_global_state_alone() -> None:
    code = (
        "import sys, matplotlib; get = lambda: dict.__getitem__(matplotlib.rcParams, 'backend');"
        "before = get(); import monitor.report.figure;"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported';"
        "assert get() == before, (before, get())"
    )
    root = Path(report.__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
