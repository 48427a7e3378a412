"""The three import packages come from one distribution, nanomaps, and respect their layers."""

import importlib
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from conftest import REPO


@pytest.mark.parametrize("package", ["stream", "processors", "monitor"])
def test_package_belongs_to_nanomaps(package):
    assert set(metadata.packages_distributions().get(package, [])) == {"nanomaps"}
    module = importlib.import_module(package)
    assert Path(module.__file__).resolve().parent == REPO / package


def test_console_script_and_explicit_packages():
    dist = metadata.distribution("nanomaps")
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts == {"nanomaps": "monitor.cli:main"}
    top_level = set(dist.read_text("top_level.txt").split()) if dist.read_text("top_level.txt") else None
    if top_level is not None:  # editable installs may not list it; the wheel does
        assert top_level <= {"stream", "processors", "monitor"}


def test_layers_are_respected():
    """import-linter: monitor -> processors -> stream, never upward."""
    exe = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(exe)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "KEPT" in result.stdout


def test_no_side_effects_at_import():
    """Importing every module configures no logging and starts nothing."""
    code = ("import logging, pkgutil, importlib\n"
            "import stream, processors, monitor\n"
            "for pkg in (stream, processors, monitor):\n"
            "    for m in pkgutil.iter_modules(pkg.__path__):\n"
            "        importlib.import_module(pkg.__name__ + '.' + m.name)\n"
            "assert not logging.getLogger().handlers, logging.getLogger().handlers\n"
            "import threading; assert threading.active_count() == 1, threading.enumerate()\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
