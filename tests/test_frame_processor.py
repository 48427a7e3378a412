"""One worker's per-frame path: bad frames become statuses, never exceptions."""

import numpy as np
import pytest

from processors.config import load_config
from processors.frame_processor import FrameProcessor
from processors.frame_record import (
    FIT_FRAME_FAILED,
    FRAME_ALL_MASKED,
    FRAME_CORRUPT,
    FRAME_MISSING,
    FRAME_OK,
    FRAME_WRONG_DTYPE,
    FRAME_WRONG_SHAPE,
    frame_record_dtype,
)
from processors.process_batch import process_batch
from processors.processing_setup import ProcessingSetup, pack_mask, unpack_mask
from stream.chunk_codec import encode_frame
from stream.encoded_frame import EncodedFrame

from conftest import DEMO_DATA


@pytest.fixture(scope="module")
def setup():
    return ProcessingSetup.from_config(load_config(DEMO_DATA / "demo.toml"))


@pytest.fixture(scope="module")
def processor(setup):
    return FrameProcessor(setup)


def frame_of(image, k=0, encoding="bslz4"):
    return EncodedFrame(0, k, encoding, image.dtype.name, image.shape, encode_frame(image, encoding), 1.5)


def test_mask_packing_roundtrip(rng):
    mask = rng.random((37, 41)) < 0.1
    back = unpack_mask(pack_mask(mask), mask.shape)
    assert back.dtype == np.bool_ and back.shape == mask.shape
    np.testing.assert_array_equal(back, mask)
    assert np.array_equal(~back, ~mask)  # a bool view of 0/1 bytes inverts as bools do


def test_setup_is_small_and_hashable(setup):
    import pickle
    assert len(pickle.dumps(setup)) < 20_000
    assert hash(setup) == hash(ProcessingSetup.from_config(load_config(DEMO_DATA / "demo.toml")))


def test_bad_frames_get_statuses(processor, rng):
    shape = processor.shape
    good = rng.poisson(1.0, shape).astype(np.uint32)
    good[processor.mask] = 2**32 - 1
    masked = np.full(shape, 2**32 - 1, dtype=np.uint32)
    cases = [
        (frame_of(good), FRAME_OK),
        (frame_of(masked), FRAME_ALL_MASKED),
        (EncodedFrame(0, 2, "bslz4", "uint32", shape, encode_frame(good)[:5000]), FRAME_CORRUPT),
        (frame_of(good[:100]), FRAME_WRONG_SHAPE),
        (EncodedFrame(0, 4, "raw", "float32", shape, bytes(4 * good.size)), FRAME_WRONG_DTYPE),
        (EncodedFrame(0, 5, "raw", "uint32", shape, b"", error="data file missing"), FRAME_MISSING),
    ]
    rec = np.zeros(len(cases), dtype=frame_record_dtype(processor.n_peaks))
    for i, (frame, status) in enumerate(cases):
        message = processor.process_into(frame, rec[i])
        assert rec[i]["status"] == status, (i, message)
        assert (message == "") == (status == FRAME_OK)
    # background only (beam off the crystal): the frame is fine, every fit says "no peak"
    assert rec[0]["intensity"] == good[~processor.mask].sum()
    assert (rec[0]["fit_status"] == 2).all() and np.isnan(rec[0]["params"]).all()
    for r in rec[1:]:
        assert (r["fit_status"] == FIT_FRAME_FAILED).all() and np.isnan(r["params"]).all()
        assert np.isnan(r["intensity"])


def test_process_batch_keeps_order_and_reports_few_messages(setup, rng, processor):
    shape = processor.shape
    frames = [EncodedFrame(1, k, "bslz4", "uint32", shape, b"\x00" * 20) for k in range(9)]
    result = process_batch(setup, frames)
    assert result.records["frame"].tolist() == list(range(9))
    assert (result.records["status"] == FRAME_CORRUPT).all()
    assert 0 < len(result.messages) <= 5
