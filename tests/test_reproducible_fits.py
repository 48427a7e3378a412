"""A frame's results must not depend on which worker processed it, what that worker did
before, or how the frames were batched: maps from 1, 2 or N workers are compared bit for bit
(test_reprocess.py::test_identical_maps_whatever_the_executor)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from processors.frame_processor import FrameProcessor
from processors.frame_record import frame_record_dtype
from processors.process_batch import process_batch
from processors.processing_setup import ProcessingSetup
from stream.dectris_file import DectrisFile

from conftest import REPO
from shared_scans import demo_scan

pytestmark = pytest.mark.slow

SHAPE = (10, 12)  # scan points: 120 frames, most with fitted spots, some off the crystal
RESULT_FIELDS = ("status", "n_valid", "intensity", "params", "errors", "fit_status")


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """(setup, frames): a small simulated scan, frames still encoded (uint32, bslz4)."""
    config, sim = demo_scan(tmp_path_factory, SHAPE, seed=3, frames_per_file=40)  # also test_reprocess'
    f = DectrisFile(sim.master_path)
    setup = ProcessingSetup.from_config(config, pixel_mask=f.metadata.pixel_mask, shape=f.metadata.shape)
    return setup, list(f.iter_frames())


def _bits(records: np.ndarray, field: str) -> np.ndarray:
    """``records[field]`` as raw bytes per frame ([n_frames, bytes]): NaN == NaN, 0.0 != -0.0."""
    a = np.ascontiguousarray(records[field])
    return a.view(np.uint8).reshape(len(a), -1)


def _assert_bit_identical(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    for field in RESULT_FIELDS:
        differ = np.flatnonzero((_bits(got, field) != _bits(ref, field)).any(axis=1))
        assert differ.size == 0, f"{what}: {field} differs in frames {differ[:10].tolist()}"


def test_results_do_not_depend_on_order_or_batch(scan):
    setup, frames = scan
    n = len(frames)
    processor = FrameProcessor(setup)
    dtype = frame_record_dtype(processor.n_peaks)

    def in_order(order) -> np.ndarray:
        out = np.zeros(n, dtype=dtype)
        for k in order:
            processor.process_into(frames[k], out[k])
        return out

    ref = in_order(range(n))
    assert (ref["fit_status"] == 0).sum() > 100  # the comparison covers many real fits
    _assert_bit_identical(in_order(range(n - 1, -1, -1)), ref, "reverse order")
    _assert_bit_identical(in_order(np.random.default_rng(1).permutation(n)), ref, "shuffled")
    for size in (1, 7, 50):
        batches = [process_batch(setup, frames[i:i + size]).records for i in range(0, n, size)]
        _assert_bit_identical(np.concatenate(batches), ref, f"batches of {size}")


_FIT_WINDOWS = """
import sys
import numpy as np
from processors.fit_gaussian2d import fit_gaussian2d_into, make_fit_work
data = np.load(sys.argv[1])
out = np.empty((data["sums"].shape[0], 17))
for n in range(out.shape[0]):
    s, c = data["sums"][n], data["counts"][n]
    p, e = np.empty(8), np.empty(8)
    q, chi = data["q"], data["chi"]
    status = fit_gaussian2d_into(s, c, q, chi, p, e, make_fit_work(*s.shape), 30, 5.0, 60,
                                 0.5 * (q[1] - q[0]), 0.5 * (chi[1] - chi[0]), 7.0, True)
    out[n] = np.r_[p, e, status]
np.save(sys.argv[2], out)
"""


def test_fits_identical_compiled_or_loaded_from_numba_cache(scan, tmp_path):
    """The process that compiles the kernel and one that loads numba's cache fit alike.

    Workers of one run do both: fast-math let the two differ by a few ulp.
    """
    setup, frames = scan
    processor = FrameProcessor(setup)
    window = processor.lut.windows[0]
    sums, counts = [], []
    for frame in frames:
        processor.roi.accumulate(processor.decode(frame))
        s, c = processor.roi.window_sums(0)
        sums.append(s.copy())
        counts.append(c.copy())
    np.savez(tmp_path / "windows.npz", sums=np.array(sums), counts=np.array(counts),
             q=window.q_centers, chi=window.chi_centers)
    script = tmp_path / "fit_windows.py"
    script.write_text(_FIT_WINDOWS)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba_cache"))
    results = []
    for run in ("compiles", "loads the cache"):
        out = tmp_path / f"{len(results)}.npy"
        subprocess.run([sys.executable, str(script), str(tmp_path / "windows.npz"), str(out)],
                       cwd=REPO, env=env, check=True, timeout=600)
        results.append(np.load(out))
    assert any(Path(tmp_path / "numba_cache").rglob("*.nbi")), "the first run wrote no cache"
    compiled, cached = results
    assert (compiled[:, 16] == 0).sum() > 30  # many real fits compared
    differ = np.flatnonzero((compiled.view(np.int64) != cached.view(np.int64)).any(axis=1))
    assert differ.size == 0, f"windows of frames {differ[:10].tolist()} fit differently"
