"""The ``nanomaps`` command as a user runs it (console script, subprocess)."""

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
def test_demo_headless_writes_results_and_pictures(tmp_path):
    """What `make demo` runs, on a small scan."""
    out = tmp_path / "demo"
    result = subprocess.run([NANOMAPS, "demo", "--headless", "--out", str(out), "--shape", "8", "10",
                             "--workers", "2"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "recovered vs truth" in result.stdout
    assert (out / "maps.png").stat().st_size > 50_000
    with h5py.File(out / "results.h5", "r") as f:
        assert f["entry/results/intensity"].shape == (8, 10)
        assert np.isfinite(f["entry/results/derived/size"][()]).sum() > 20
    import matplotlib.image
    assert matplotlib.image.imread(out / "maps.png").shape[2] in (3, 4)
