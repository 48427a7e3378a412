"""Whether a Qt window can open is decided before PySide6 is imported: one line and exit 2, never
Qt's abort (exit 134) or an ImportError traceback. Library checks load real sonames; the display
checks talk to a real X server (Xvfb) where one is installed.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.gui.qt_prerequisites import (
    ALL_PACKAGES,
    GUI_LIBRARIES,
    XCB_LIBRARIES,
    missing_libraries,
    missing_qt_libraries,
    packages_for,
    qt_platform,
    qt_problem,
    require_qt,
    x_display_problem,
)

REPO = Path(__file__).resolve().parents[1]
ABSENT = "libnanomaps-absent-for-tests.so.7"     # no system has this library


def _can_load(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
        return True
    except OSError:
        return False


def _free_x_display() -> int:
    """A display number with neither a socket nor a lock file: nothing runs there."""
    for n in range(87, 200):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return n
    raise RuntimeError("no free X display number")


def _cli_env(**overrides: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update({k: v for k, v in overrides.items() if v is not None})
    return env


# ---- which platform, which libraries ----------------------------------------------------------
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the xcb/Wayland decision exists on Linux only")
@pytest.mark.parametrize("environ, platform", [
    ({}, ""),                                                          # nothing to draw on
    ({"DISPLAY": ":0"}, "xcb"),
    ({"WAYLAND_DISPLAY": "wayland-0"}, "wayland"),
    ({"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0", "XDG_SESSION_TYPE": "wayland"}, "wayland"),
    ({"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0", "XDG_SESSION_TYPE": "x11"}, "xcb"),
    ({"QT_QPA_PLATFORM": "offscreen"}, "offscreen"),                   # explicit wins, display or not
    ({"QT_QPA_PLATFORM": "offscreen", "DISPLAY": ":0"}, "offscreen"),
    ({"QT_QPA_PLATFORM": "xcb"}, "xcb"),
    ({"QT_QPA_PLATFORM": "wayland;xcb", "DISPLAY": ":0"}, "wayland"),  # Qt's fallback list: its first entry
    ({"QT_QPA_PLATFORM": "vnc:size=800x600"}, "vnc"),                  # plugin options after the colon
])
def test_platform_follows_qt_rules(environ, platform):
    assert qt_platform(environ) == platform


def test_missing_libraries_are_found_by_loading_them():
    assert missing_libraries(["libc.so.6", ABSENT, "libm.so.6"]) == [ABSENT]
    assert missing_libraries([]) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sonames are Linux's")
def test_xcb_libraries_matter_only_when_the_platform_is_xcb():
    table = {"libc.so.6": "libc6", ABSENT: "libnanomaps-absent7"}
    for environ in ({"QT_QPA_PLATFORM": "offscreen"}, {"QT_QPA_PLATFORM": "minimal", "DISPLAY": ":0"},
                    {"WAYLAND_DISPLAY": "wayland-0"}):
        assert missing_qt_libraries(environ, gui_libraries={}, xcb_libraries=table) == [], environ
    assert missing_qt_libraries({"DISPLAY": ":0"}, gui_libraries={}, xcb_libraries=table) == [ABSENT]
    # QtGui's own libraries are needed everywhere, offscreen too
    assert missing_qt_libraries({"QT_QPA_PLATFORM": "offscreen"}, gui_libraries=table, xcb_libraries={}) == [ABSENT]


def test_every_library_has_a_package_and_the_install_line_is_complete():
    assert set(packages_for(XCB_LIBRARIES)) | set(packages_for(GUI_LIBRARIES)) == set(ALL_PACKAGES)
    assert packages_for(["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-cursor.so.0"]) == [
        "libxcb-cursor0", "libxcb-icccm4"]
    assert packages_for([ABSENT]) == [ABSENT]          # unknown: named as it is, not dropped
    for soname in ("libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1"):   # the ones users met
        assert soname in XCB_LIBRARIES


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sonames are Linux's")
def test_problem_names_the_libraries_and_the_install_command_in_one_line():
    problem = qt_problem({"DISPLAY": ":0"}, gui_libraries={},
                         xcb_libraries={"libc.so.6": "libc6", ABSENT: "libnanomaps-absent7"})
    assert problem is not None and "\n" not in problem
    assert ABSENT in problem and "libc.so.6" not in problem
    assert "Fix: sudo apt-get install libnanomaps-absent7" in problem


def test_no_display_is_one_line_with_the_commands_own_way_out(capsys):
    problem = qt_problem({}, headless_hint="--screenshot PNG")
    if not sys.platform.startswith("linux"):
        assert problem is None
        return
    assert problem.startswith("no display:") and "\n" not in problem
    assert "--screenshot PNG" in problem and "QT_QPA_PLATFORM=offscreen" in problem
    assert require_qt("demo", environ={}) == 2
    assert capsys.readouterr().err.startswith("nanomaps demo: no display:")
    assert require_qt("demo", environ={"QT_QPA_PLATFORM": "offscreen"}) is None
    assert capsys.readouterr().err == ""


# ---- a real X display ----------------------------------------------------------------------------
@pytest.mark.skipif(not _can_load("libxcb.so.1"), reason="libxcb is not installed: no X connection to test")
def test_a_display_nobody_serves_is_reported_not_aborted_on():
    display = f":{_free_x_display()}"
    problem = qt_problem({"DISPLAY": display})
    missing = missing_qt_libraries({"DISPLAY": display})
    if missing:       # a machine without the xcb plugin's libraries reports those first
        assert problem is not None and missing[0] in problem
        return
    assert problem is not None and repr(display) in problem and "does not answer" in problem
    assert x_display_problem(display) == problem


@pytest.fixture
def xvfb():
    """A real X server on a free display (Xvfb), stopped afterwards; skips where Xvfb is not installed."""
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    display = f":{_free_x_display()}"
    proc = subprocess.Popen([exe, display, "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while x_display_problem(display) is not None:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Xvfb {display} did not start (exit {proc.poll()})")
            time.sleep(0.05)
        yield display
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
def test_monitor_opens_a_real_x_window_when_the_libraries_are_there(xvfb, tmp_path):
    """Under a real X server the xcb plugin loads: the window is drawn and the command ends with 0."""
    problem = qt_problem({"DISPLAY": xvfb})
    if problem is not None:
        pytest.skip(f"this machine lacks what the real window needs: {problem}")
    shot = tmp_path / "x.png"
    proc = subprocess.run([sys.executable, "-m", "monitor.cli", "monitor", "--connect", "tcp://127.0.0.1:1",
                           "--frames", "tcp://127.0.0.1:2", "--screenshot", str(shot), "--seconds", "1"],
                          cwd=REPO, env=_cli_env(DISPLAY=xvfb), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert shot.stat().st_size > 5000
    assert "Traceback" not in proc.stderr


# ---- the command line ----------------------------------------------------------------------------
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="other platforms always have a screen")
def test_monitor_without_a_display_exits_2_with_one_line():
    proc = subprocess.run([sys.executable, "-m", "monitor.cli", "monitor"], cwd=REPO, env=_cli_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("nanomaps monitor: no display:") and "--screenshot PNG" in lines[0]
    assert proc.stdout == ""


@pytest.mark.skipif(not _can_load("libxcb.so.1"), reason="libxcb is not installed: no X connection to test")
def test_monitor_with_a_dead_display_exits_2_with_one_line():
    display = f":{_free_x_display()}"
    proc = subprocess.run([sys.executable, "-m", "monitor.cli", "monitor"], cwd=REPO, env=_cli_env(DISPLAY=display),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nanomaps monitor: "), proc.stderr
    assert "Traceback" not in proc.stderr
