"""A warmed worker has compiled every kernel a real frame needs (latency from the first frame)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from processors.angles import wrap_deg
from processors.config import load_config
from processors.demo_setup import write_demo_config
from processors.frame_record import frame_record_dtype
from processors.process_batch import processor_for
from processors.processing_setup import ProcessingSetup
from processors.warm_frame import warm_frame, warm_frame_pixels

COMPILED_AFTER = textwrap.dedent("""
    import json, pathlib, sys, tempfile
    import numpy as np
    from processors.config import load_config
    from processors.demo_setup import write_demo_config
    from processors.processing_setup import ProcessingSetup
    from processors.process_batch import process_batch, warm_up
    cfg = load_config(write_demo_config(pathlib.Path(tempfile.mkdtemp()) / "c"))
    setup = ProcessingSetup.from_config(cfg)
    if sys.argv[1] == "warm-up":
        warm_up(setup, hold_s=0)
    else:  # one real frame of the simulated EIGER, on the crystal
        from monitor.sim.simulated_eiger import FrameSource
        from stream.encoded_frame import EncodedFrame
        src = FrameSource(cfg, seed=1)
        md = src.metadata
        blob = src.encoded(5.0, 7.0, np.random.default_rng(0))
        result = process_batch(setup, [EncodedFrame(1, 0, src.encoding, md.dtype, md.shape, blob)])
        assert (result.records["fit_status"] == 0).all(), result.records["fit_status"]
    compiled = sorted(
        f"{m.__name__}.{k}" for m in list(sys.modules.values())
        if getattr(m, "__name__", "").startswith(("processors", "stream"))
        for k, v in vars(m).items() if hasattr(v, "py_func") and getattr(v, "signatures", None))
    print(json.dumps(compiled))
""")


def compiled_after(*whats: str) -> list[set[str]]:
    """The kernels compiled in a fresh interpreter after each of ``whats``; the interpreters run side by side."""
    procs = [subprocess.Popen([sys.executable, "-c", COMPILED_AFTER, what], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for what in whats]
    compiled = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-2000:]
            compiled.append(set(json.loads(out.strip().splitlines()[-1])))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return compiled


@pytest.mark.slow
def test_warm_up_compiles_every_kernel_a_real_frame_needs():
    """Before: warm-up built the tables only, and numba compiled the kernels on the first real frame
    (≈ 28 s after an install, while frames piled up). Now the warm-up runs them all."""
    real, warmed = compiled_after("real-frame", "warm-up")
    # the ROI pass counts hot-pixel spikes on the way (processors.hot_pixels_kernel)
    # every window's fit and second-spot residual test run in one kernel (processors.window_fits_kernel),
    # which calls the fit and residual kernels inside: a cached caller does not load them on its own
    assert any("fit_windows_kernel" in k for k in real) and any("accumulate_counting_spikes" in k for k in real)
    assert real <= warmed


def test_the_warm_frame_has_a_spot_the_fit_finds_in_every_window(tmp_path):
    setup = ProcessingSetup.from_config(load_config(write_demo_config(tmp_path / "c")))
    processor = processor_for(setup)
    pixels = warm_frame_pixels(processor.lut)
    assert pixels.shape == processor.lut.shape and pixels.min() == 2 and pixels.max() > 250
    rec = np.zeros(1, dtype=frame_record_dtype(processor.n_peaks))
    assert processor.process_into(warm_frame(processor.lut), rec[0]) == ""
    assert (rec["fit_status"] == 0).all() and rec["status"][0] == 0
    for k, window in enumerate(processor.lut.windows):  # each spot sits at its window's centre
        q0, phi0 = rec["params"][0, k, 1], rec["params"][0, k, 3]
        assert abs(q0 - np.mean(window.q_range)) < (window.q_range[1] - window.q_range[0]) / window.nq
        off = wrap_deg(phi0 - np.mean(window.chi_range))  # φ0 is reported in (−180, 180]
        assert abs(off) < 2 * (window.chi_range[1] - window.chi_range[0]) / window.nchi
