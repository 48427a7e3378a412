"""Frames decoded selectively (stream.bslz4_partial: the windows' pixels and their neighbours,
the valid-pixel sum from the compressed bit planes) give records identical to the full decode,
frame by frame: the maps built from them are the same bit for bit (issue 11)."""

import dataclasses
import json

import numpy as np
import pytest

from processors.config import load_config
from processors.diffraction_simulator import FrameRenderer
from processors.frame_processor import FrameProcessor
from processors.frame_realism import MESSY_BEAMTIME
from processors.frame_record import FRAME_CORRUPT, FRAME_OK, frame_record_dtype
from processors.processing_setup import ProcessingSetup
from processors.supercrystal import model_supercrystal
from stream.chunk_codec import encode_frame
from stream.encoded_frame import EncodedFrame
from stream.stream2_codec import parse_stream2

from conftest import DEMO_DATA, real_capture

#: Fields that are times of this run, not results.
TIMING = ("decode_s", "process_s", "done_time")
HKLS = [(1, 0, 0), (1, 1, 0), (2, 0, 0)]


def both_paths(setup: ProcessingSetup, frames: list[EncodedFrame]) -> tuple[np.ndarray, np.ndarray]:
    """Records of ``frames`` through a selective and a full-decode processor (same order, same frames)."""
    out = []
    for selective in (True, False):
        processor = FrameProcessor(setup, selective=selective)
        # the selective processor does decode selectively (no silent fallback to the full decode)
        assert (processor._selective_decoder(frames[0]) is not None) == selective
        recs = np.zeros(len(frames), dtype=frame_record_dtype(processor.n_peaks))
        for k, frame in enumerate(frames):
            processor.process_into(frame, recs[k])
        out.append(recs)
    return out[0], out[1]


def assert_same_records(a: np.ndarray, b: np.ndarray) -> None:
    for name in a.dtype.names:
        if name not in TIMING:
            assert np.array_equal(a[name], b[name], equal_nan=True), name


@pytest.fixture(scope="module")
def demo_config():
    return load_config(DEMO_DATA / "demo.toml")


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_simulated_messy_frames_with_masks_give_the_same_records(dtype, demo_config, tmp_path):
    """The demo EIGER 1M (gaps at the sentinel, windows across ±180°), a messy beamtime's frames
    (sloped ring, hot pixels, zingers), a user mask, stray sentinel pixels outside every mask,
    and a cut blob."""
    rng = np.random.default_rng(7)
    poni_text = (DEMO_DATA / "eiger1m_demo.poni").read_text()
    windows = [(p.q, p.chi) for p in demo_config.peaks]
    renderer = FrameRenderer(poni_text, model_supercrystal((6, 6), seed=3), HKLS, dtype=dtype,
                             realism=MESSY_BEAMTIME, windows=windows, seed=2)
    shape = renderer.shape
    user = np.zeros(shape, dtype=bool)
    user[400:430, 100:700] = True            # a beamstop arm across the windows' rows
    user.flat[rng.choice(user.size, 2000, replace=False)] = True
    np.save(tmp_path / "user_mask.npy", user)
    config = dataclasses.replace(demo_config, geometry=dataclasses.replace(
        demo_config.geometry, mask=tmp_path / "user_mask.npy"))
    setup = ProcessingSetup.from_config(config, pixel_mask=renderer.mask.astype(np.uint32), shape=shape)
    sentinel = np.iinfo(dtype).max
    frames = []
    for k in range(14):
        image = renderer.render(k % 6, (2 * k) % 6, rng)
        if k % 4 == 1:  # pixels the detector flagged in this frame only
            image.flat[rng.choice(image.size, 50, replace=False)] = sentinel
        blob = encode_frame(image, "bslz4")
        if k == 9:
            blob = blob[: len(blob) // 2]
        frames.append(EncodedFrame(0, k, "bslz4", dtype, shape, blob, 1.0))
    fast, full = both_paths(setup, frames)
    assert_same_records(fast, full)
    assert fast["status"][9] == FRAME_CORRUPT and (np.delete(fast["status"], 9) == FRAME_OK).all()
    assert (fast["fit_status"] == 0).sum() >= 10  # the spots were there and fitted


def test_real_captures_give_the_same_records(demo_config):
    """Frames of a real EIGER 1M (stream v1 and stream2 captures, uint32) through the demo's windows."""
    messages = real_capture("eiger1m_stream1_all")
    frames = []
    for parts in messages:
        if len(parts) >= 4 and b"dimage_d" in parts[1][:200]:  # (header, dimage_d, blob, config)
            d = json.loads(parts[1])
            frames.append(EncodedFrame(0, len(frames), "bslz4", d["type"], (d["shape"][1], d["shape"][0]), parts[2]))
    frames += [parse_stream2(memoryview(m[0])).frame for m in real_capture("eiger1m_stream2")[1:4]]
    assert len(frames) >= 6
    setup = ProcessingSetup.from_config(demo_config, shape=frames[0].shape)
    fast, full = both_paths(setup, frames)
    assert_same_records(fast, full)
    assert (fast["status"] == FRAME_OK).all() and (fast["n_valid"] > 0).all()
