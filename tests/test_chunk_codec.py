"""Frame blob decoding: real EIGER captures, our encoder, HDF5 filters, and broken blobs."""

import json

import h5py
import hdf5plugin
import numpy as np
import pytest

from stream.chunk_codec import ChunkDecoder, CorruptFrameError, encode_frame
from stream.encoded_frame import EncodedFrame

from conftest import real_capture


@pytest.fixture(scope="module")
def decoder():
    return ChunkDecoder()


def test_decoder_writes_into_caller_buffer(decoder):
    # decoding writes straight into the output buffer through the vendor's C entry point
    assert decoder._c_decompress is not None, "the vendor C entry point failed its self-check"


def test_real_eiger1m_stream1_image_facts(decoder):
    """Facts from shared/data/real/README.md: message 0001 of eiger1m_stream1_all."""
    parts = real_capture("eiger1m_stream1_all")[1]
    d = json.loads(parts[1])
    assert d["shape"] == [1030, 1065] and d["type"] == "uint32" and d["encoding"] == "bs32-lz4<"
    frame = EncodedFrame(0, 0, "bslz4", d["type"], (d["shape"][1], d["shape"][0]), parts[2])
    buf = np.empty(1065 * 1030, dtype=np.uint32)
    image = decoder.decode_into(frame, buf)
    assert image.shape == (1065, 1030)
    assert np.shares_memory(image, buf)
    gaps = image == 0xFFFFFFFF
    assert gaps.sum() == 38310
    assert image[~gaps].sum() == 9


def test_truncated_real_blob_is_corrupt_not_a_crash(decoder):
    parts = real_capture("eiger2_9m_stream1_truncated")[1]
    d = json.loads(parts[1])
    assert len(parts[2]) == 20000 < d["size"]
    frame = EncodedFrame(0, 0, "bslz4", d["type"], (d["shape"][1], d["shape"][0]), parts[2])
    with pytest.raises(CorruptFrameError, match="truncated or corrupt"):
        decoder.decode_into(frame, np.empty(frame.nbytes_decoded // 4 + 1, dtype=np.uint32))


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
@pytest.mark.parametrize("encoding", ["bslz4", "lz4", "raw"])
def test_roundtrip_and_hdf5_filter_compatibility(tmp_path, rng, decoder, dtype, encoding):
    image = rng.poisson(3.0, (123, 77)).astype(dtype)
    image[5, :] = np.iinfo(dtype).max
    blob = encode_frame(image, encoding)
    out = decoder.decode_into(EncodedFrame(0, 0, encoding, dtype, image.shape, blob),
                              np.empty(image.size, dtype=np.uint32))
    np.testing.assert_array_equal(out, image)
    # the same bytes are a valid HDF5 chunk for the standard filters (what the file writer stores)
    filters = {"bslz4": hdf5plugin.Bitshuffle(cname="lz4"), "lz4": hdf5plugin.LZ4(), "raw": {}}[encoding]
    with h5py.File(tmp_path / "c.h5", "w") as f:
        ds = f.create_dataset("d", shape=(1, *image.shape), dtype=dtype, chunks=(1, *image.shape), **filters)
        ds.id.write_direct_chunk((0, 0, 0), blob)
    with h5py.File(tmp_path / "c.h5", "r") as f:
        np.testing.assert_array_equal(f["d"][0], image)


@pytest.mark.parametrize("mutate, reason", [
    (lambda b: b[:11], "shorter than its 12-byte header"),
    (lambda b: (10**6).to_bytes(8, "big") + b[8:], "header says 1000000 decoded bytes"),
    (lambda b: b[:len(b) // 2], "truncated or corrupt"),
    (lambda b: b[:12] + bytes(len(b) - 12), "truncated or corrupt"),
])
def test_broken_blobs_raise_with_reason(rng, decoder, mutate, reason):
    image = rng.poisson(3.0, (64, 64)).astype(np.uint32)
    blob = mutate(encode_frame(image, "bslz4"))
    with pytest.raises(CorruptFrameError, match=reason):
        decoder.decode_into(EncodedFrame(0, 0, "bslz4", "uint32", (64, 64), blob), np.empty(4096, np.uint32))


def test_raw_size_that_lies_and_unknown_encoding(decoder):
    with pytest.raises(CorruptFrameError, match="raw blob holds 10 bytes"):
        decoder.decode_into(EncodedFrame(0, 0, "raw", "uint16", (4, 4), bytes(10)), np.empty(16, np.uint32))
    with pytest.raises(CorruptFrameError, match="unknown encoding"):
        decoder.decode_into(EncodedFrame(0, 0, "zstd", "uint16", (4, 4), bytes(40)), np.empty(16, np.uint32))


def test_with_blob_is_replace_for_every_field():
    # EncodedFrame.with_blob and renumbered list the fields by hand (dataclasses.replace is slow in workers):
    # a field added to EncodedFrame and forgotten there would be lost
    from dataclasses import fields, replace

    from stream.encoded_frame import ChunkSource, EncodedFrame

    values = dict(series=7, frame=3, encoding="lz4", dtype="uint16", shape=(4, 5), blob=b"old", receive_time=12.5,
                  error="e", source=ChunkSource("/x.h5", "/entry/data", 2))
    assert set(values) == {f.name for f in fields(EncodedFrame)}
    frame = EncodedFrame(**values)
    assert frame.with_blob(b"new") == replace(frame, blob=b"new")
    assert frame.with_blob(b"new", "raw") == replace(frame, blob=b"new", encoding="raw")
    assert frame.renumbered(1003) == replace(frame, frame=1003)
