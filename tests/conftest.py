"""Shared fixtures: seeded randomness, paths to the project's test data, and a guard against hidden errors."""

from __future__ import annotations

import gc
import logging
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
# the real EIGER captures travel with the project (tests/data/real/README.md: origin, licences,
# facts): a clone alone must pass, with no sibling checkout
REAL_DATA = REPO / "tests" / "data" / "real"
DEMO_DATA = REPO / "processors" / "demo_data"


# Run in an interpreter of its own: this process then loads the kernels from the cache like
# every command and worker the tests start, and keeps no processor (no 1M tables) of its own.
_WARM_UP = """
import pathlib, sys
from processors.config import load_config
from processors.demo_setup import write_demo_config
from processors.process_batch import warm_up
from processors.processing_setup import ProcessingSetup
warm_up(ProcessingSetup.from_config(load_config(write_demo_config(pathlib.Path(sys.argv[1])))), hold_s=0)
"""


@pytest.fixture(scope="session", autouse=True)
def numba_kernels_compiled_once(tmp_path_factory):
    """Fill numba's cache with every kernel a frame needs once, before the first test.

    numba's cache (beside the sources) is empty on a fresh checkout. Without this, the first
    tests that start ``nanomaps`` commands had each of their processes (the command and every
    pool worker, side by side) compile the same kernels: minutes of CPU on a small machine.
    Compiled once here, every later process (this one included) loads the cache, as on a
    user's second run. Tests that need a cold cache use a NUMBA_CACHE_DIR of their own.
    A failure here is only reported: the tests that use the kernels fail on their own.
    """
    folder = tmp_path_factory.mktemp("warm_up_config")
    result = subprocess.run([sys.executable, "-c", _WARM_UP, str(folder)], cwd=REPO, capture_output=True,
                            text=True, timeout=900)
    if result.returncode != 0:
        warnings.warn(f"numba warm-up failed (exit {result.returncode}): {result.stderr[-2000:]}", stacklevel=1)


def pytest_configure(config):
    config.addinivalue_line("markers", "allow_error_log: the test expects ERROR log records")
    # A shell without job control starts a background job (`make test &`, a CI step run in
    # the background) with SIGINT ignored, and an ignored signal stays ignored in every child:
    # the commands the Ctrl-C tests start would then not see their Ctrl-C. A handler, unlike
    # SIG_IGN, is reset to the default at exec, so the children get Python's own again.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator: every random test is reproducible."""
    return np.random.default_rng(20261125)


@pytest.fixture
def demo_poni_text() -> str:
    return (DEMO_DATA / "eiger1m_demo.poni").read_text()


@pytest.fixture(autouse=True)
def fail_on_error_logs(request, caplog):
    """A test that logs at ERROR fails unless marked ``allow_error_log`` (errors must not hide)."""
    caplog.set_level(logging.WARNING)
    yield
    if request.node.get_closest_marker("allow_error_log"):
        return
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    if errors:
        pytest.fail("unexpected ERROR log: " + "; ".join(r.getMessage() for r in errors[:3]))


def real_capture(folder: str) -> list[list[bytes]]:
    """Messages of a real capture: a list of messages, each a list of parts (bytes)."""
    d = REAL_DATA / folder
    if not any(d.glob("*.bin")):
        raise FileNotFoundError(f"{d}: no captured messages (tests/data/real is part of the project)")
    messages: dict[int, dict[int, bytes]] = {}
    for f in sorted(d.glob("*.bin")):
        m, p = (int(x) for x in f.stem.split("-"))
        messages.setdefault(m, {})[p] = f.read_bytes()
    return [[parts[k] for k in sorted(parts)] for _, parts in sorted(messages.items())]


@pytest.fixture(autouse=True)
def collect_garbage_before_strict_warnings(request):
    """A test that turns warnings into errors must not fail on another test's garbage: an object an
    earlier test left unclosed (e.g. a library's asyncio loop) may be collected during it and warn.
    Collected here, before the test, its ResourceWarning is logged (WARNING), not raised."""
    if any("error" in str(m.args) for m in request.node.iter_markers("filterwarnings")):
        def report(unraisable) -> None:  # pytest would turn it into this test's error
            logging.getLogger("tests").warning("collected before %s: %s %r", request.node.name,
                                               unraisable.exc_type.__name__, unraisable.exc_value)

        hook, sys.unraisablehook = sys.unraisablehook, report
        try:
            gc.collect()
        finally:
            sys.unraisablehook = hook
    yield
