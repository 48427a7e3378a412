"""The ``nanomaps`` command as a user runs it (console script, subprocess)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from monitor import cli

NANOMAPS = str(Path(sys.executable).with_name("nanomaps"))


def test_help_lists_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("demo", "reprocess", "report", "simulate"):
        assert name in out
    assert "1/Å" in out


def test_unknown_command_and_no_arguments(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
    assert cli.main([]) == 2


@pytest.mark.parametrize("command", ["demo", "reprocess", "report", "simulate"])
def test_every_command_explains_itself(command):
    result = subprocess.run([NANOMAPS, command, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "usage: nanomaps " + command in result.stdout


@pytest.mark.slow
def test_demo_headless_scans_rescans_and_writes_results_and_pictures(tmp_path):
    """What `make demo` runs without a display, on a small scan: bluesky + simulated EIGER + processing + monitor."""
    out = tmp_path / "demo"
    result = subprocess.run([NANOMAPS, "demo", "--headless", "--out", str(out), "--shape", "8", "10",
                             "--workers", "2"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "recovered vs truth" in result.stdout
    median_q0 = float(re.search(r"100/q0\s+([\d.]+)", result.stdout).group(1))
    assert median_q0 < 1e-3
    with h5py.File(out / "results.h5", "r") as main, h5py.File(out / "results_2.h5", "r") as rescan:
        assert main["entry/results/intensity"].shape == (8, 10)
        assert np.isfinite(main["entry/results/derived/size"][()]).sum() > 20
        assert main["entry/process/geometry"][()] == b"bluesky"
        # the automatic rescan: finer steps inside the first map, its parent named
        assert rescan["entry/process/parent_uid"][()] == main["entry/process/run_uid"][()]
        step_main = np.diff(main["entry/scan/x"][()])[0]
        step_rescan = np.diff(rescan["entry/scan/x"][()])[0]
        assert step_rescan == pytest.approx(step_main / 2)
        assert rescan["entry/scan/x"][0] >= main["entry/scan/x"][0] and \
            rescan["entry/scan/x"][-1] <= main["entry/scan/x"][-1]
    import matplotlib.image
    for picture in ("maps.png", "maps_2.png", "monitor.png", "monitor_2.png"):
        assert (out / picture).stat().st_size > 20_000, picture
        assert matplotlib.image.imread(out / picture).shape[2] in (3, 4)


@pytest.mark.slow
def test_monitor_command_attaches_to_a_running_processor(tmp_path):
    """`nanomaps monitor` started before the processor keeps running, then renders its window (offscreen)."""
    import threading

    from monitor.session.live_processor import LiveOptions, LiveProcessor
    from processors.config import load_config
    from processors.demo_setup import write_demo_config
    from stream.stream_sender import StreamSender

    config = load_config(write_demo_config(tmp_path / "cfg", shape=(2, 3)))
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    publish = f"tcp://127.0.0.1:{port}"
    shot = tmp_path / "monitor.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    viewer = subprocess.Popen([NANOMAPS, "monitor", "--connect", publish, "--screenshot", str(shot),
                               "--seconds", "8"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sender = StreamSender("tcp://127.0.0.1:*")
    lp = LiveProcessor(config, LiveOptions(endpoint=sender.endpoint, out=tmp_path / "r.h5", workers=1,
                                           status=False, series=0, publish=publish, idle_timeout_s=None))
    stop = threading.Event()
    t = threading.Thread(target=lp.run, args=(stop,), daemon=True)
    t.start()
    viewer.communicate(timeout=120)
    stop.set()
    t.join(60)
    sender.close(linger_s=0)
    assert viewer.returncode == 0
    assert shot.stat().st_size > 10_000
