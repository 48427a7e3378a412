"""Issue 9: no command overwrites an existing output unless asked (``--overwrite``).

Through the real command line: a refusal is one line on stderr naming the file and the
flag, exit 2, at start (before any socket or worker), and every existing file is left
byte for byte; with ``--overwrite`` the command proceeds.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import h5py
import pytest

from stream.dectris_replay import replay_file
from stream.output_path import OutputPathError, recording_globs, refuse_existing, results_series_globs
from stream.stream_sender import StreamSender

from cli_run import assert_one_line_error, closed_port, run_nanomaps
from shared_scans import demo_scan


@pytest.fixture(scope="module")
def small_scan(tmp_path_factory):
    config, sim = demo_scan(tmp_path_factory, (3, 4), seed=0)  # also test_pattern's
    return config, Path(sim.master_path)


def _plant(*paths: Path) -> dict[Path, bytes]:
    """Existing files with known content; returns their bytes to compare after the command."""
    contents = {}
    for i, path in enumerate(paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"precious {i} {path.name}".encode())
        contents[path] = path.read_bytes()
    return contents


def _unchanged(contents: dict[Path, bytes]) -> None:
    for path, data in contents.items():
        assert path.read_bytes() == data, path


# ------------------------------------------------------------------------------ the check itself
def test_refuse_existing_names_the_file_and_the_flag(tmp_path):
    refuse_existing(results_series_globs(tmp_path / "R.h5"), "results file")  # nothing there: fine
    (tmp_path / "R_3.h5").write_bytes(b"x")
    (tmp_path / "Rx.h5").write_bytes(b"x")  # not one of R.h5's runs
    with pytest.raises(OutputPathError, match=r"results file .*R_3\.h5 already exists.*--overwrite"):
        refuse_existing(results_series_globs(tmp_path / "R.h5"), "results file")
    refuse_existing(results_series_globs(tmp_path / "S.h5"), "results file")
    (tmp_path / "RAW_2_data_000001.h5").write_bytes(b"x")
    with pytest.raises(OutputPathError, match="RAW_2_data_000001.h5"):
        refuse_existing(recording_globs(tmp_path / "RAW_master.h5"), "recording")
    refuse_existing(recording_globs(tmp_path / "OTHER_master.h5"), "recording")


# ------------------------------------------------------------------------------ refusals
def test_reprocess_refuses_an_existing_results_file(small_scan, tmp_path):
    config, master = small_scan
    kept = _plant(tmp_path / "r.h5")
    result = run_nanomaps("reprocess", str(master), "--config", str(config.path), "--out", str(tmp_path / "r.h5"))
    assert_one_line_error(result, str(tmp_path / "r.h5"), "already exists", "--overwrite")
    _unchanged(kept)


@pytest.mark.parametrize("existing", ["R.h5", "R_2.h5", "R_11.h5"])
def test_process_refuses_any_results_file_of_the_session(small_scan, tmp_path, existing):
    config, _ = small_scan
    kept = _plant(tmp_path / existing)
    t0 = time.monotonic()
    result = run_nanomaps("process", "--config", str(config.path), "--connect", f"tcp://127.0.0.1:{closed_port()}",
                          "--out", str(tmp_path / "R.h5"), "--publish", "none", "--no-status")
    assert_one_line_error(result, existing, "already exists", "--overwrite")
    assert time.monotonic() - t0 < 60
    _unchanged(kept)


@pytest.mark.parametrize("existing", ["RAW_master.h5", "RAW_data_000001.h5", "RAW_2_master.h5",
                                      "RAW_3_data_000002.h5"])
def test_process_record_refuses_any_file_of_the_recording(small_scan, tmp_path, existing):
    config, _ = small_scan
    kept = _plant(tmp_path / "raw" / existing)
    result = run_nanomaps("process", "--config", str(config.path), "--connect", f"tcp://127.0.0.1:{closed_port()}",
                          "--out", str(tmp_path / "R.h5"), "--record", str(tmp_path / "raw" / "RAW_master.h5"),
                          "--publish", "none", "--no-status")
    assert_one_line_error(result, existing, "recording", "--overwrite")
    _unchanged(kept)
    assert not (tmp_path / "R.h5").exists()


@pytest.mark.parametrize("existing", ["RAW_master.h5", "RAW_data_000001.h5", "RAW_2_master.h5"])
def test_record_refuses_an_existing_recording(tmp_path, existing):
    kept = _plant(tmp_path / existing)
    result = run_nanomaps("record", "--connect", f"tcp://127.0.0.1:{closed_port()}",
                          "--out", str(tmp_path / "RAW_master.h5"))
    assert_one_line_error(result, existing, "already exists", "--overwrite")
    _unchanged(kept)


# ------------------------------------------------------------------------------ --overwrite proceeds
@pytest.mark.slow
def test_reprocess_overwrite_replaces_the_file(small_scan, tmp_path):
    config, master = small_scan
    _plant(tmp_path / "r.h5")
    result = run_nanomaps("reprocess", str(master), "--config", str(config.path), "--out", str(tmp_path / "r.h5"),
                          "--workers", "1", "--no-progress", "--overwrite")
    assert result.returncode == 0, result.stderr[-3000:]
    with h5py.File(tmp_path / "r.h5", "r") as f:
        assert f["entry/process/processed"][()] == 12


def _streamed(master: Path, *args: str):
    sender = StreamSender("tcp://127.0.0.1:*")
    replayer = threading.Thread(target=replay_file, args=(master, sender), kwargs={"rate": "max"}, daemon=True)
    replayer.start()
    result = run_nanomaps(*[a.replace("ENDPOINT", sender.endpoint) for a in args])
    replayer.join(30)
    sender.close(linger_s=0)
    return result


@pytest.mark.slow
def test_record_overwrite_replaces_the_recording(small_scan, tmp_path):
    _, master = small_scan
    _plant(tmp_path / "RAW_master.h5", tmp_path / "RAW_2_master.h5")
    result = _streamed(master, "record", "--connect", "ENDPOINT", "--out", str(tmp_path / "RAW_master.h5"),
                       "--overwrite")
    assert result.returncode == 0, result.stderr[-3000:]
    with h5py.File(tmp_path / "RAW_master.h5", "r") as f:
        assert len(f["entry/stream/frames"]) == 12


@pytest.mark.slow
def test_process_overwrite_replaces_results_and_recording(small_scan, tmp_path):
    config, master = small_scan
    _plant(tmp_path / "R.h5", tmp_path / "R_2.h5", tmp_path / "RAW_master.h5")
    result = _streamed(master, "process", "--config", str(config.path), "--connect", "ENDPOINT",
                       "--out", str(tmp_path / "R.h5"), "--record", str(tmp_path / "RAW_master.h5"),
                       "--workers", "1", "--publish", "none", "--no-status", "--overwrite")
    assert result.returncode == 0, result.stderr[-3000:]
    with h5py.File(tmp_path / "R.h5", "r") as f:
        assert f["entry/process/processed"][()] == 12
    with h5py.File(tmp_path / "RAW_master.h5", "r") as f:
        assert len(f["entry/stream/frames"]) == 12
