"""End to end: simulated DECTRIS files → reprocess → results.h5, checked against the truth."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

from monitor.cli import reprocess as reprocess_cmd
from monitor.session.reprocess import reprocess
from processors.angles import wrap_deg
from processors.config import load_config

from conftest import DEMO_DATA
from shared_scans import demo_scan

pytestmark = pytest.mark.slow

SHAPE = (10, 12)


def make_config(folder: Path, shape=SHAPE, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEMO_DATA / "eiger1m_demo.poni", folder / "eiger1m_demo.poni")
    text = (DEMO_DATA / "demo.toml").read_text().replace("shape = [24, 32]", f"shape = [{shape[0]}, {shape[1]}]")
    (folder / "cfg.toml").write_text(text + extra)
    return folder / "cfg.toml"


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """One simulated scan (uint32, bslz4) shared by the tests of this module."""
    d = tmp_path_factory.mktemp("sim")
    config, sim = demo_scan(tmp_path_factory, SHAPE, seed=3, frames_per_file=40)  # also test_reproducible_fits'
    results = d / "results.h5"
    summary = reprocess([sim.master_path], config, results, workers=2, progress=False)
    return config, sim, results, summary


def test_maps_recover_the_truth(simulated):
    """Median errors as the issue demands: q0 < 1e-3 1/Å, widths < 3 %, φ0 < 0.1°, size < 5 %."""
    config, sim, results, summary = simulated
    assert summary.counters.processed == SHAPE[0] * SHAPE[1]
    with h5py.File(results, "r") as r, h5py.File(sim.truth_path, "r") as t:
        on = t["truth/on_crystal"][()]
        for peak in ("100", "110", "200"):
            fit = {k: r[f"entry/results/{peak}/{k}"][()] for k in ("q0", "dq", "phi0", "dphi")}
            true = {k: t[f"truth/spots/{peak}/{k}"][()] for k in ("q0", "dq", "phi0", "dphi")}
            assert np.isfinite(fit["q0"][on]).mean() > 0.95, peak     # almost every on-crystal point fitted
            assert np.isnan(fit["q0"][~on]).all(), peak                 # beam off the crystal: rejected, NaN
            assert np.nanmedian(np.abs(fit["q0"] - true["q0"])) < 1e-3
            assert np.nanmedian(np.abs(fit["dq"] / true["dq"] - 1)) < 0.03
            assert np.nanmedian(np.abs(fit["dphi"] / true["dphi"] - 1)) < 0.03
            assert np.nanmedian(np.abs(wrap_deg(fit["phi0"] - true["phi0"]))) < 0.1
        size = r["entry/results/derived/size"][()]
        assert np.nanmedian(np.abs(size / t["truth/size_nm"][()] - 1)) < 0.05
        assert np.nanmedian(np.abs(r["entry/results/derived/a"][()] - t["truth/a_A"][()])) < 0.01
        assert np.nanmedian(np.abs(r["entry/results/derived/b"][()] - t["truth/b_A"][()])) < 0.015


def test_results_layout_opens_in_plain_h5py(simulated):
    config, sim, results, summary = simulated
    with h5py.File(results, "r") as f:
        assert f["entry"].attrs["default"] == "results"
        res = f["entry/results"]
        assert res.attrs["NX_class"] == "NXdata" and res.attrs["signal"] == "intensity"
        assert list(res.attrs["axes"]) == ["y", "x"]
        assert res["intensity"].shape == SHAPE and res["intensity"].attrs["units"] == "counts"
        for peak in ("100", "110", "200"):
            g = res[peak]
            assert g.attrs["NX_class"] == "NXdata" and g.attrs["signal"] == "amplitude"
            for name, unit in (("amplitude", "counts"), ("q0", "1/angstrom"), ("dq", "1/angstrom"),
                               ("phi0", "degrees"), ("dphi", "degrees"), ("background", "counts"),
                               ("dphi_do", "degrees")):
                assert g[name].shape == SHAPE and g[name].attrs["units"] == unit, (peak, name)
            for name in ("q0", "dq", "phi0", "dphi", "amplitude"):
                assert g[f"{name}_error"].shape == SHAPE
            assert g["status"].dtype == np.int32
            phi0 = g["phi0"][()]
            assert np.nanmax(phi0) <= 180 and np.nanmin(phi0) > -180
        d = res["derived"]
        assert d.attrs["NX_class"] == "NXdata"
        for name, unit in (("a", "angstrom"), ("b", "angstrom"), ("size", "nm"), ("microstrain", "1")):
            assert d[name].attrs["units"] == unit
        assert "c" not in d  # no 001 peak configured
        frames = res["frames"][()]
        assert len(frames) == SHAPE[0] * SHAPE[1]
        assert set(frames.dtype.names) == {"series", "frame", "row", "col", "receive_time", "done_time", "status"}
        # snake scan: frame 12 is the last column of row 1
        row1 = frames[frames["frame"] == SHAPE[1]][0]
        assert (row1["row"], row1["col"]) == (1, SHAPE[1] - 1)
        np.testing.assert_allclose(f["entry/scan/x"][()], 0.5 * np.arange(SHAPE[1]))
        p = f["entry/process"]
        assert p["program"][()] == b"nanomaps" and p["version"][()]
        assert b"[[peak]]" in p["config"][()] and b"Distance" in p["poni"][()]
        assert p["received"][()] == p["processed"][()] == SHAPE[0] * SHAPE[1]
        assert p["corrupt"][()] == 0 and p["dropped"][()] == 0
        assert p["end_time"][()]


def test_identical_maps_whatever_the_executor(simulated, tmp_path):
    """One worker, two workers and a Dask LocalCluster give bit-identical maps."""
    from distributed import LocalCluster

    config, sim, results, _ = simulated
    one = tmp_path / "one.h5"
    reprocess([sim.master_path], config, one, workers=1, batch_size=7, progress=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dask = tmp_path / "dask.h5"
        reprocess([sim.master_path], config, dask, scheduler=cluster.scheduler_address, progress=False)
    with h5py.File(results, "r") as a, h5py.File(one, "r") as b, h5py.File(dask, "r") as c:
        for key in ("intensity", "100/q0", "110/dphi", "200/dq_error", "derived/size", "derived/a", "100/status"):
            ref = a[f"entry/results/{key}"][()]
            np.testing.assert_array_equal(b[f"entry/results/{key}"][()], ref, err_msg=key)
            np.testing.assert_array_equal(c[f"entry/results/{key}"][()], ref, err_msg=key)


@pytest.mark.allow_error_log
def test_bad_input_marks_points_and_carries_on(simulated, tmp_path):
    """A corrupt chunk, a wrong-shape frame, a missing data file and an all-masked frame."""
    config, sim, _, _ = simulated
    raw = tmp_path / "raw"
    shutil.copytree(sim.master_path.parent, raw)
    master = raw / sim.master_path.name
    with h5py.File(raw / "scan_data_000001.h5", "r+") as f:
        ds = f["entry/data/data"]
        _, blob = ds.id.read_direct_chunk((5, 0, 0))
        ds.id.write_direct_chunk((5, 0, 0), blob[: len(blob) // 3])        # truncated chunk
        _, blob = ds.id.read_direct_chunk((6, 0, 0))
        ds.id.write_direct_chunk((6, 0, 0), blob[:12] + bytes(len(blob) - 12))  # garbage body
    os.remove(raw / "scan_data_000002.h5")                                 # frames 40–79 gone
    # frame 80..: a data file whose frames have the wrong shape
    with h5py.File(raw / "scan_data_000003.h5", "r+") as f:
        del f["entry/data/data"]
        f.create_dataset("entry/data/data", data=np.zeros((40, 8, 8), np.uint32), chunks=(1, 8, 8))
        f["entry/data/data"].attrs["image_nr_low"] = 81
    out = tmp_path / "bad.h5"
    rc = reprocess_cmd.main([str(master), "--config", str(config.path), "--out", str(out), "--workers", "2",
                             "--no-progress"])
    assert rc == 0
    with h5py.File(out, "r") as f:
        p = f["entry/process"]
        assert p["corrupt"][()] == 2
        assert p["missing"][()] == 40
        assert p["wrong_shape"][()] == 40
        assert p["processed"][()] == SHAPE[0] * SHAPE[1] - 82
        status = f["entry/results/frame_status"][()]
        rows, cols = np.nonzero(status == 1)
        assert len(rows) == 2
        assert np.isnan(f["entry/results/intensity"][()][status != 0]).all()
        assert np.isnan(f["entry/results/100/q0"][()][status != 0]).all()
        frames = f["entry/results/frames"][()]
        assert sorted(frames["frame"][frames["status"] == 1].tolist()) == [5, 6]


@pytest.mark.allow_error_log
def test_nothing_processable_exits_nonzero(simulated, tmp_path, capsys):
    """Every chunk corrupt: the results file is still written, the exit code says it failed."""
    from stream.dectris_file import DectrisFile
    from stream.dectris_writer import DectrisWriter

    config, sim, _, _ = simulated
    with DectrisFile(sim.master_path) as f:
        md = f.metadata
    with DectrisWriter(tmp_path / "x_master.h5", md) as w:
        for k in range(3):
            w.write_chunk((md.y_pixels * md.x_pixels * 4).to_bytes(8, "big") + bytes(40 + k))
    rc = reprocess_cmd.main([str(tmp_path / "x_master.h5"), "--config", str(config.path), "--out",
                             str(tmp_path / "r.h5"), "--workers", "1", "--no-progress"])
    assert rc == 1
    assert "no frame could be processed" in capsys.readouterr().err
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f["entry/process/corrupt"][()] == 3


@pytest.mark.parametrize("args, words", [
    (["--config", "missing.toml"], ["config file not found"]),
    (["--config", "{cfg}", "nope_master.h5"], ["nope_master.h5", "no such file"]),
])
def test_wrong_paths_fail_before_work_with_one_line(simulated, tmp_path, capsys, args, words):
    config, sim, _, _ = simulated
    args = [a.replace("{cfg}", str(config.path)) for a in args]
    if "nope_master.h5" not in args:
        args = [str(sim.master_path)] + args
    rc = reprocess_cmd.main(args + ["--out", str(tmp_path / "r.h5")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    for w in words:
        assert w in err
    assert not (tmp_path / "r.h5").exists()


def test_wrong_poni_detector_fails_before_work(simulated, tmp_path, capsys):
    config, sim, _, _ = simulated
    cfg = make_config(tmp_path / "c")
    (tmp_path / "c" / "eiger1m_demo.poni").write_text(
        (DEMO_DATA / "eiger1m_demo.poni").read_text().replace("Eiger1M", "Eiger4M"))
    rc = reprocess_cmd.main([str(sim.master_path), "--config", str(cfg), "--out", str(tmp_path / "r.h5")])
    err = capsys.readouterr().err
    assert rc == 2 and "PONI detector is (2167, 2070)" in err and "(1065, 1030)" in err


def test_frame_count_mismatch_warns(simulated, tmp_path, caplog):
    config, sim, _, _ = simulated
    cfg = load_config(make_config(tmp_path / "c", shape=(12, 12)))
    reprocess([sim.master_path], cfg, tmp_path / "r.h5", workers=1, progress=False)
    assert any("24 map points stay unmeasured" in r.getMessage() for r in caplog.records)


@pytest.mark.allow_error_log
def test_dead_worker_is_replaced_and_nothing_is_lost(simulated, tmp_path):
    """SIGKILL a real pool worker before it runs anything: its batches are retried in a new pool."""
    import logging
    import signal
    import time as _time

    from monitor.session.batch_runner import BatchRunner
    from monitor.session.map_collector import MapCollector
    from processors.processing_setup import ProcessingSetup
    from stream.dectris_file import DectrisFile
    from stream.rate_limited_log import RateLimitedLog

    config, sim, results, _ = simulated
    with DectrisFile(sim.master_path) as f:
        setup = ProcessingSetup.from_config(config, pixel_mask=f.metadata.pixel_mask, shape=f.metadata.shape)
        frames = list(f.iter_frames(lazy=True))
    collector = MapCollector(config.scan, tuple(p.name for p in config.peaks))
    runner = BatchRunner(2, None, lambda batch, result: collector.add(result), collector.counters,
                         RateLimitedLog(logging.getLogger("test")))
    runner.handle.executor.submit(int, 1).result()  # the pool's processes exist now
    children = [int(c) for t in os.listdir("/proc/self/task")
                for c in open(f"/proc/self/task/{t}/children").read().split()]
    victims = [pid for pid in children if b"spawn_main" in open(f"/proc/{pid}/cmdline", "rb").read()]
    assert victims
    os.kill(victims[0], signal.SIGKILL)
    _time.sleep(0.2)
    for start in range(0, len(frames), 8):
        while not runner.can_submit():
            runner.poll()
        runner.submit(setup, frames[start:start + 8])
    assert runner.drain(timeout=300)
    runner.close()
    c = collector.counters
    assert c.worker_failures >= 1
    assert c.processed == len(frames) and c.worker_failed == 0
    maps = collector.result_maps(config.peaks, config.derived, config.williamson_hall_peaks)
    with h5py.File(results, "r") as r:
        np.testing.assert_array_equal(maps.spots["100"]["q0"], r["entry/results/100/q0"][()])


def test_user_mask_joins_the_detector_masks(simulated, tmp_path):
    from processors.frame_processor import FrameProcessor
    from processors.processing_setup import ProcessingSetup
    from stream.dectris_file import DectrisFile

    config, sim, _, _ = simulated
    cfg_path = make_config(tmp_path / "c")
    user = np.zeros((1065, 1030), bool)
    user[100:110, 200:300] = True
    np.save(tmp_path / "c" / "mask.npy", user)
    text = cfg_path.read_text().replace('poni = "eiger1m_demo.poni"', 'poni = "eiger1m_demo.poni"\nmask = "mask.npy"')
    cfg_path.write_text(text)
    cfg = load_config(cfg_path)
    with DectrisFile(sim.master_path) as f:
        pixel_mask = f.metadata.pixel_mask
        setup = ProcessingSetup.from_config(cfg, pixel_mask=pixel_mask, shape=f.metadata.shape)
    processor = FrameProcessor(setup)
    assert processor.mask[user].all()
    assert processor.mask[pixel_mask != 0].all()
    plain = FrameProcessor(ProcessingSetup.from_config(config, pixel_mask=pixel_mask))
    assert processor.mask.sum() == (plain.mask | user).sum() > plain.mask.sum()


def test_a_series_cut_short_keeps_the_next_series_at_its_points(simulated, tmp_path):
    """Two series of one scan, the first cut short (detector stopped after 40 of its 120 frames):
    the second starts at the point after all 120 the first announced, not after the 40 that came."""
    config, sim, _, _ = simulated
    short = tmp_path / "short"
    shutil.copytree(sim.master_path.parent, short)
    master = short / sim.master_path.name
    with h5py.File(master, "r+") as f:
        names = sorted(f["entry/data"])
        for name in names[1:]:                   # the data files the detector never wrote
            del f[f"entry/data/{name}"]
        assert int(f["entry/instrument/detector/detectorSpecific/nimages"][()]) == 120
    cfg = load_config(make_config(tmp_path / "c", shape=(20, 12)))
    out = tmp_path / "r.h5"
    summary = reprocess([master, sim.master_path], cfg, out, workers=1, progress=False)
    assert summary.counters.processed == 40 + 120
    with h5py.File(out, "r") as r:
        table = r["entry/results/frames"][()]
        status = r["entry/results/frame_status"][()]
    first, second = table[table["series"] == 0], table[table["series"] == 1]
    assert sorted(first["frame"]) == list(range(40)) and sorted(second["frame"]) == list(range(120))
    rows, cols = cfg.scan.points_of(second["frame"] + 120)
    assert (second["row"] == rows).all() and (second["col"] == cols).all()   # frame k: point 120 + k
    rows, cols = cfg.scan.points_of(np.arange(40, 120))
    assert (status[rows, cols] == -1).all()      # the points the first series never measured
