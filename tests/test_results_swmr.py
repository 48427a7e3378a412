"""results.h5 is readable at any time during a live run (HDF5 SWMR), by another process with
default file locking, and after the run holds exactly the run's maps and frames table."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import h5py
import numpy as np
import pytest

from monitor.session.live_processor import LiveOptions, LiveProcessor
from processors.config import load_config
from processors.demo_setup import write_demo_config
from stream.dectris_replay import replay_file
from stream.stream_sender import StreamSender

from shared_scans import demo_scan

pytestmark = pytest.mark.slow

SHAPE = (8, 10)
N = SHAPE[0] * SHAPE[1]

# A reader in its own process (in-process opens would share HDF5's handle and never meet the
# lock): opens the file again and again, both ways, until told to stop; prints what it saw.
READER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import h5py, numpy as np
    import silx.io
    import silx.io.h5py_utils

    path, stop = Path(sys.argv[1]), Path(sys.argv[2])
    seen, failures = [], []
    while not path.exists() and not stop.exists():
        time.sleep(0.01)
    while True:
        last = stop.exists()  # the run has ended: one more read, of the closed file
        for how, opener in (("h5py swmr", lambda: h5py.File(path, "r", swmr=True)),
                            ("silx", lambda: silx.io.h5py_utils.File(path)),
                            ("silx view", lambda: silx.io.open(str(path)))):  # what `silx view` opens with
            try:
                with opener() as f:
                    measured = int(np.isfinite(f["entry/results/intensity"][()]).sum())
                    seen.append((how, measured, len(f["entry/results/frames"]), int(f["entry/process/received"][()])))
            except Exception as exc:
                failures.append(f"{how}: {type(exc).__name__}: {exc}")
        if last:
            break
        time.sleep(0.05)
    print(json.dumps({"seen": seen, "failures": failures}))
""")


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    d = tmp_path_factory.mktemp("swmr")
    cfg = write_demo_config(d / "cfg", shape=SHAPE)
    # the file is written 5 times a second: many writes for the readers to meet
    cfg.write_text(cfg.read_text().replace("[monitor]\n", "[monitor]\nflush_interval_s = 0.2\n"))
    config = load_config(cfg)
    _, sim = demo_scan(tmp_path_factory, SHAPE, seed=3)  # the same frames as other modules': rendered once
    return config, sim.master_path


def test_results_open_in_another_process_all_through_a_live_run(scan, tmp_path):
    config, master = scan
    out, stop = tmp_path / "live.h5", tmp_path / "stop-reading"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(out), str(stop)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    sender = StreamSender("tcp://127.0.0.1:*")
    processor = LiveProcessor(config, LiveOptions(endpoint=sender.endpoint, out=out, workers=1, status=False))
    summaries = []
    live = threading.Thread(target=lambda: summaries.append(processor.run(threading.Event())), daemon=True)
    live.start()
    # frames flow once the worker is ready, 16 a second: a 5 s scan, not a burst after warm-up
    assert processor.ready.wait(120)
    replayer = threading.Thread(target=replay_file, args=(master, sender), kwargs={"rate": 16.0}, daemon=True)
    replayer.start()
    try:
        live.join(120)
    finally:
        stop.touch()
        replayer.join(30)
        sender.close(linger_s=0)
    (summary,) = summaries
    report, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err[-2000:]
    result = json.loads(report)
    assert result["failures"] == []
    assert summary.counters.processed == N and summary.stopped_by == "series"
    for how in ("h5py swmr", "silx", "silx view"):
        during = [m for h, m, _, _ in result["seen"] if h == how and m < N]
        assert len(during) >= 10, (how, during)     # opened at least 10 times while the scan ran
        assert during == sorted(during) and len(set(during)) >= 5, (how, during)  # and the map grew
    # the frames table only grows, and the last read (after the run) sees every frame
    tables = [n for h, _, n, _ in result["seen"] if h == "h5py swmr"]
    assert tables == sorted(tables) and tables[-1] == N and result["seen"][-1][1] == N

    # after the run: a plain open (default locking, no SWMR) and exactly the run's maps and table
    (run,) = processor.runs.values()
    collector = run.collector
    maps = collector.result_maps(config.peaks, config.derived, config.williamson_hall_peaks)
    with h5py.File(out, "r") as f:
        results = f["entry/results"]
        np.testing.assert_array_equal(results["intensity"][()], maps.intensity)
        np.testing.assert_array_equal(results["frame_status"][()], maps.frame_status)
        for peak, values in maps.spots.items():
            for key, m in values.items():
                np.testing.assert_array_equal(results[peak][key][()], m, err_msg=f"{peak}/{key}")
                assert results[peak][key].dtype == m.dtype
        for key, m in maps.derived.items():
            np.testing.assert_array_equal(results["derived"][key][()], m, err_msg=key)
        np.testing.assert_array_equal(results["frames"][()], collector.frames_table())
        process = f["entry/process"]
        for key, value in collector.counters.as_dict().items():
            assert process[key][()] == value, key
        assert process["stopped_by"][()] == b"series" and process["end_time"][()].decode().endswith("+00:00")
        assert process["timing/latency_median_ms"][()] > 0


# A writer in its own process: a results file written by ResultsWriter and held open (SWMR)
# until a line comes on stdin.
WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from monitor.session.map_collector import MapCollector
    from monitor.session.results_file import ResultsWriter
    from monitor.session.results_update import take_update
    from processors.config import load_config
    from processors.frame_record import empty_records
    from processors.process_batch import BatchResult

    config = load_config(sys.argv[1])
    collector = MapCollector(config.scan, tuple(p.name for p in config.peaks))
    n = config.scan.n_frames // 2
    recs = empty_records(n, len(config.peaks))
    recs["series"], recs["frame"], recs["status"], recs["fit_status"] = 1, np.arange(n), 0, 0
    recs["intensity"] = 100.0 + np.arange(n)
    recs["params"] = [1.0, 1.07, 0.02, 178.0, 9.0, 0.5, 1.0, 0.01]
    recs["params"][:, 1, 1] = 1.51   # 110 sits at sqrt(2) x 100
    recs["params"][:, 2, 1] = 2.14
    recs["errors"] = 0.01
    recs["receive_time"] = 1000.0 + np.arange(n)
    recs["done_time"] = recs["receive_time"] + 0.01
    collector.add(BatchResult(recs))
    with ResultsWriter(sys.argv[2], config, config.scan) as writer:
        writer.write(take_update(collector, config))
        print("written", flush=True)
        sys.stdin.readline()
""")


def test_report_reads_a_results_file_while_another_process_writes_it(scan, tmp_path):
    from monitor.report.figure_data import read_report_data

    config, _ = scan
    out = tmp_path / "R.h5"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(config.path), str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "written", writer.stderr.read()[-2000:]
        with pytest.raises(OSError, match="already open for write"):  # what a plain reader meets
            h5py.File(out, "r")
        data = read_report_data(out)
        assert np.isfinite(data.intensity).sum() == N // 2
    finally:
        writer.communicate("\n", timeout=60)
    assert writer.returncode == 0
    with h5py.File(out, "r") as f:  # closed: a plain open works again
        assert np.isfinite(f["entry/results/intensity"][()]).sum() == N // 2
