"""Error maps and the supercrystal mask in the results file, and `nanomaps report`'s statistics
(monitor/report/statistics*.py, monitor/cli/report.py) end to end on small files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from monitor.cli.report import main, statistics_outputs
from monitor.report.figure_data import read_report_data
from monitor.report.statistics import StatisticsOptions, report_statistics
from monitor.session.map_collector import MapCollector
from monitor.session.results_file import ResultsWriter, open_results
from monitor.session.results_update import take_update
from processors.config import load_config
from processors.correlation import correlate
from processors.demo_setup import write_demo_config
from processors.frame_record import FRAME_OK, PARAM_NAMES
from processors.process_batch import BatchResult
from stream.raster_scan import RasterScan

SCAN = RasterScan((6, 8), step=(0.5, 0.5), motors=("piezo_y", "piezo_x"))
A, B = 5.88, 5.85
Q = {"100": 2 * math.pi / A, "110": 2 * math.pi * math.sqrt(1 / A ** 2 + 1 / B ** 2), "200": 4 * math.pi / A}


def _collector(config) -> MapCollector:
    """Fitted spots in a disc of the map (weaker towards its edge), nothing outside it."""
    names = tuple(p.name for p in config.peaks)
    collector = MapCollector(SCAN, names)
    n = SCAN.n_frames
    rows, cols = SCAN.points_of(np.arange(n))
    r = np.hypot(rows - 2.5, cols - 3.5) / 3.5
    inside = r < 1.0
    recs = collector.records[:n].copy()
    recs["series"], recs["frame"], recs["status"] = 1, np.arange(n), FRAME_OK
    recs["intensity"] = 1000.0
    col = {name: PARAM_NAMES.index(name) for name in ("amplitude", "q0", "dq", "phi0", "dphi", "background")}
    for k, name in enumerate(names):
        dq = math.hypot(0.018 * Q[name], 2 * math.pi * 0.85 / 126.0)
        p = recs["params"][:, k]
        p[:, col["amplitude"]] = 300.0 * (1.0 - 0.5 * r)
        p[:, col["q0"]] = Q[name]
        p[:, col["dq"]] = dq
        p[:, col["phi0"]] = 178.0
        p[:, col["dphi"]] = 6.0
        p[:, col["background"]] = 1.0
        recs["params"][:, k] = p
        e = recs["errors"][:, k]
        e[:] = 0.01
        e[:, col["q0"]] = 2e-4
        e[:, col["dq"]] = 5e-4
        recs["errors"][:, k] = e
    recs["fit_status"] = np.where(inside[:, None], 0, 2)
    recs["receive_time"] = 1000.0 + np.arange(n)
    recs["done_time"] = recs["receive_time"] + 0.01
    collector.add(BatchResult(recs))
    return collector


def test_results_file_holds_error_maps_and_the_mask(tmp_path: Path) -> None:
    config = load_config(write_demo_config(tmp_path / "cfg", shape=SCAN.shape))
    collector = _collector(config)
    path = tmp_path / "R.h5"
    with ResultsWriter(path, config, SCAN) as writer:
        writer.write(take_update(collector, config, full=True, final=True))
    maps = collector.result_maps(config.peaks, config.derived, config.williamson_hall_peaks)
    with open_results(path) as f:
        res = f["entry/results"]
        mask = res["supercrystal_mask"]
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask[()], maps.supercrystal_mask)
        assert 0 < mask[()].sum() < mask.size
        fitted = np.isfinite(res["100/q0"][()])
        np.testing.assert_array_equal(mask[()] == 1, fitted)  # every fitted point, all three spots there
        for key in ("a", "b", "size", "microstrain"):
            err = res[f"derived/{key}_error"]
            assert err.attrs["units"] == res[f"derived/{key}"].attrs["units"]
            assert np.array_equal(np.isfinite(err[()]), np.isfinite(res[f"derived/{key}"][()])), key
        np.testing.assert_allclose(res["derived/a_error"][()][fitted], A * 2e-4 / Q["100"], rtol=1e-9)
        assert res["derived/a_error"].attrs["long_name"] == "lattice parameter a (standard error)"
        for peak in ("100", "110", "200"):
            assert np.isfinite(res[f"{peak}/dphi_do_error"][()][fitted]).all()
        assert res["derived/bragg_intensity"][()][fitted].min() > 0


def _synthetic(tmp_path: Path) -> Path:
    """A results file with a known a–size law, a disc-shaped mask and NaN-filled corners."""
    rng = np.random.default_rng(4)
    rows, cols = 24, 30
    yy, xx = np.mgrid[0:rows, 0:cols].astype(float)
    r = np.hypot(yy - 11.5, xx - 14.5) / 11.0
    inside = r < 1.0
    size = 16.0 - 7.0 * r + rng.normal(0, 0.3, r.shape)
    a = 5.85 + 1.6 * size ** -1.3 + rng.normal(0, 0.002, r.shape)
    b = 5.88 - 0.002 * size + rng.normal(0, 0.002, r.shape)
    eps = 0.015 + 0.006 * r
    dphi_do = 1.5 + 3.5 * r
    nan = np.where(inside, 1.0, np.nan)
    path = tmp_path / "syn.h5"
    with h5py.File(path, "w") as f:
        res = f.create_group("entry/results")
        res.create_dataset("intensity", data=np.where(inside, 1e5, 10.0))
        res.create_dataset("supercrystal_mask", data=inside.astype(np.uint8))
        p = res.create_group("100")
        p.attrs["hkl"] = np.array([1, 0, 0])
        p.create_dataset("phi0", data=178.0 * nan)
        p.create_dataset("dphi_do", data=dphi_do * nan)
        p.create_dataset("dphi_do_error", data=0.1 * nan)
        d = res.create_group("derived")
        for key, values in (("a", a), ("b", b), ("size", size), ("microstrain", eps)):
            d.create_dataset(key, data=values * nan)
            d.create_dataset(f"{key}_error", data=0.001 * values * nan)
        d.create_dataset("bragg_intensity", data=np.where(inside, 100.0, np.nan))
        for name, n in (("x", cols), ("y", rows)):
            ds = f.create_dataset(f"entry/scan/{name}", data=np.arange(n) * 0.5)
            ds.attrs["units"] = "um"
    return path


def test_statistics_of_a_known_map(tmp_path: Path) -> None:
    data = read_report_data(_synthetic(tmp_path))
    stats = report_statistics(data, StatisticsOptions(resamples=300, seed=1))
    assert stats.mask_source == "supercrystal_mask" and stats.distance_units == "µm"
    assert stats.centre_weights == "bragg_intensity"
    assert stats.centre == pytest.approx((14.5 * 0.5, 11.5 * 0.5), abs=0.05)
    s = stats.summary("size")
    assert s["n"] == int(data.supercrystal_mask.sum())
    assert s["median"] == pytest.approx(np.median(data.size[data.supercrystal_mask]))
    assert s["median_error"] == pytest.approx(0.001 * s["median"], rel=0.05)
    c = stats.correlations[("size", "a")]
    m = data.supercrystal_mask
    assert c == correlate(np.where(m, data.size, np.nan), data.a, resamples=300, seed=1)
    assert c.pearson < -0.9 and c.pearson_ci[0] < c.pearson < c.pearson_ci[1]
    assert stats.correlations[("distance", "dphi_do")].spearman > 0.95
    # Δφ_do grows linearly with distance: the profile's medians rise bin by bin
    prof = stats.profiles["dphi_do"]
    med = prof.median[np.isfinite(prof.median)]
    assert med.size >= 5 and np.all(np.diff(med) > 0)
    fit = stats.power_laws["a"]
    assert fit is not None and abs(fit.n - 1.3) < 4 * fit.n_error
    doc = stats.as_json()
    json.dumps(doc, allow_nan=False)
    assert doc["quantities"]["a"]["units"] == "Å" and doc["mask"]["n_points"] == int(m.sum())


def test_report_writes_the_statistics_files(tmp_path: Path, capsys) -> None:
    path = _synthetic(tmp_path)
    out = tmp_path / "fig.png"
    assert main([str(path), "--out", str(out), "--dpi", "30", "--bootstrap", "200", "--seed", "3"]) == 0
    printed = capsys.readouterr().out.split()
    extra = statistics_outputs(out)
    assert printed == [str(out), *map(str, extra.values())]
    for name in ("histograms", "profiles", "correlations"):
        assert extra[name].read_bytes().startswith(b"\x89PNG"), name
    doc = json.loads(extra["statistics"].read_text())
    assert doc["bootstrap"] == {"resamples": 200, "seed": 3, "confidence": 0.95,
                                "method": "percentile, points resampled in pairs"}
    pairs = {(c["x"], c["y"]) for c in doc["correlations"]}
    assert {("size", "a"), ("size", "b"), ("a", "b"), ("size", "dphi_do"), ("distance", "dphi_do")} <= pairs
    assert set(doc["power_law"]) == {"a", "b"} and doc["power_law"]["a"]["n_points"] > 100
    # a file without a mask falls back on every point with a derived value, and says so
    with h5py.File(path, "a") as f:
        del f["entry/results/supercrystal_mask"]
    stats = report_statistics(read_report_data(path), StatisticsOptions(resamples=20))
    assert "no supercrystal_mask" in stats.mask_source
    assert stats.mask.sum() == np.isfinite(read_report_data(path).size).sum()


def test_report_refuses_a_bad_bootstrap(tmp_path: Path, capsys) -> None:
    assert main([str(_synthetic(tmp_path)), "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err
    assert "--bootstrap" in err and len(err.strip().splitlines()) == 1
