"""Stream v1 and stream2 codecs: real detector captures, round trips, and bad input."""

from __future__ import annotations

import json
import struct
import time
from functools import lru_cache

import cbor2
import lz4.block
import numpy as np
import pytest

from stream import stream2_codec
from stream.blob_framing import frame_blob_problem
from stream.chunk_codec import ChunkDecoder, encode_frame
from stream.detector_metadata import DetectorMetadata
from stream.encoded_frame import EncodedFrame
from stream.series_header import SeriesHeader
from stream.stream1_codec import (
    encode_stream1_end,
    encode_stream1_image,
    encode_stream1_start,
    parse_stream1,
)
from stream.stream2_codec import (
    encode_stream2_end,
    encode_stream2_image,
    encode_stream2_start,
    parse_stream2,
)
from stream.stream_messages import BadMessage, ImageMessage, SeriesEnd, SeriesStart

from conftest import real_capture

MAX32 = 0xFFFFFFFF


def decode_typed_array(value) -> np.ndarray:
    """A tag-40 array as parsed by cbor2 → numpy, the way parse_stream2 decodes masks and flatfields."""
    dims, payload = stream2_codec._payload(value, "array")
    return stream2_codec._to_numpy(dims, payload, "array")


@lru_cache(maxsize=None)
def capture(folder: str) -> tuple[tuple[bytes, ...], ...]:
    return tuple(tuple(m) for m in real_capture(folder))


@pytest.fixture(scope="module")
def decoder() -> ChunkDecoder:
    return ChunkDecoder()


def views(parts) -> list[memoryview]:
    """As the receiver passes them: ``zmq.Frame.buffer`` memoryviews."""
    return [memoryview(p) for p in parts]


def decode(decoder: ChunkDecoder, frame: EncodedFrame) -> np.ndarray:
    out = np.empty(frame.nbytes_decoded, dtype=np.uint8)
    return decoder.decode_into(frame, out).copy()


def gap_stats(image: np.ndarray) -> tuple[int, int]:
    """(pixels at the dtype's maximum, sum of the others)."""
    gap = image == np.iinfo(image.dtype).max
    return int(gap.sum()), int(image[~gap].sum(dtype=np.int64))


# --------------------------------------------------------------------------- real: stream v1

def test_stream1_real_header_all():
    parts = capture("eiger1m_stream1_all")[0]
    msg = parse_stream1(views(parts), receive_time=12.5)
    assert isinstance(msg, SeriesStart), msg
    assert (msg.protocol, msg.series, msg.header_detail) == ("stream1", 14, "all")
    assert msg.shape == (1065, 1030) and msg.dtype == "uint32"
    assert msg.config["wavelength"] == pytest.approx(1.5498, abs=1e-4)
    assert msg.config["description"] == "Dectris EIGER1 Si 1M"
    assert msg.problems == ()
    assert msg.receive_time == 12.5
    assert msg.parts == parts and len(msg.parts) == 9  # appendix included, verbatim
    assert all(type(p) is bytes for p in msg.parts)
    mask = msg.pixel_mask
    assert mask.shape == (1065, 1030) and mask.dtype == np.uint32
    assert np.count_nonzero(mask) == msg.config["number_of_excluded_pixels"] == 38129


def test_stream1_real_header_uncopied_is_the_copied_one():
    """The live receiver parses with copy_blob=False: the header's parts and pixel mask are then
    views of the received parts (no copy of a 4M's 36 MB), and say what the copies say."""
    parts = capture("eiger1m_stream1_all")[0]
    received = [np.frombuffer(p, np.uint8).copy() for p in parts]  # stand-ins for zmq frames
    copied = parse_stream1(views(parts))
    viewed = parse_stream1([memoryview(r) for r in received], copy_blob=False)
    assert isinstance(viewed, SeriesStart) and viewed == copied
    assert [bytes(p) for p in viewed.parts] == [bytes(p) for p in copied.parts]
    assert all(type(p) is memoryview for p in viewed.parts)
    np.testing.assert_array_equal(viewed.pixel_mask, copied.pixel_mask)
    assert np.shares_memory(viewed.pixel_mask, received[5])  # the mask's part, not a copy


def test_stream1_real_images_and_mask_relation(decoder):
    messages = capture("eiger1m_stream1_all")
    header = parse_stream1(views(messages[0]))
    masked = header.pixel_mask != 0
    parsed = [parse_stream1(views(m)) for m in messages[1:]]
    assert [type(m) for m in parsed] == [ImageMessage] * 9  # 9 images, no end message
    assert [m.frame.frame for m in parsed] == list(range(9))
    first = parsed[0]
    assert first.protocol == "stream1" and first.appendix is None
    assert (first.start_time_ns, first.stop_time_ns, first.real_time_ns) == (4843213806960, 4844213800980, 994339020)
    f = first.frame
    assert (f.series, f.encoding, f.dtype, f.shape) == (14, "bslz4", "uint32", (1065, 1030))
    assert f.blob == messages[1][2]
    image = decode(decoder, f)
    assert gap_stats(image) == (38310, 9)
    # Relation header mask ↔ image gap pixels, in every image of this capture: every masked
    # pixel reads 0xFFFFFFFF (mask ⊂ gap pixels), and the only other 0xFFFFFFFF pixels are an
    # unmasked defective segment of column 52 (rows 841..1021, sometimes also row 840).
    for m in parsed:
        gap = decode(decoder, m.frame) == MAX32
        assert np.all(gap[masked])
        rows, cols = np.nonzero(gap & ~masked)
        assert set(cols.tolist()) == {52} and 181 <= len(rows) <= 182
        assert rows.min() >= 840 and rows.max() == 1021


def test_stream1_real_truncated_9m():
    messages = capture("eiger2_9m_stream1_truncated")
    header = parse_stream1(views(messages[0]))
    assert isinstance(header, SeriesStart), header
    assert (header.series, header.header_detail, header.shape, header.dtype) == (6, "all", (3262, 3108), "uint32")
    assert header.pixel_mask is None
    assert any("dpixelmask-1.0" in p and "20000" in p and "truncated" in p for p in header.problems)
    assert len(header.parts) == 9 and header.parts[8] == messages[0][8]  # header appendix kept
    for k, m in enumerate(messages[1:4]):
        bad = parse_stream1(views(m))
        assert isinstance(bad, BadMessage), bad
        assert "shorter than the size" in bad.reason and "20000" in bad.reason
        assert (bad.protocol, bad.series, bad.frame) == ("stream1", 6, k)
    end = parse_stream1(views(messages[4]))
    assert isinstance(end, SeriesEnd) and (end.protocol, end.series) == ("stream1", 6)
    assert end.parts == messages[4]


def test_stream1_real_image_with_appendix():
    """The 9M image (blob cut) with its size fixed parses and keeps the appendix part."""
    parts = list(capture("eiger2_9m_stream1_truncated")[1])
    d = json.loads(parts[1])
    d["size"] = len(parts[2])
    parts[1] = json.dumps(d).encode()
    msg = parse_stream1(views(parts))
    # the blob is still truncated: the bitshuffle block walk must notice
    assert isinstance(msg, BadMessage) and "cut short" in msg.reason, msg


def test_stream1_reencode_real_is_byte_identical():
    messages = capture("eiger1m_stream1_all")
    for m in messages[1:4]:
        msg = parse_stream1(views(m))
        again = encode_stream1_image(msg.frame, start_time_ns=msg.start_time_ns, stop_time_ns=msg.stop_time_ns,
                                     real_time_ns=msg.real_time_ns)
        assert again[1:] == list(m[1:])  # descriptor, blob and dconfig byte for byte
        assert json.loads(again[0]) | {"hash": ""} == json.loads(m[0]) | {"hash": ""}
    assert encode_stream1_end(6) == list(capture("eiger2_9m_stream1_truncated")[4])


# --------------------------------------------------------------------------- real: stream2

def test_stream2_real_1m(decoder):
    messages = capture("eiger1m_stream2")
    t0 = time.perf_counter()
    start = parse_stream2(memoryview(messages[0][0]))
    assert time.perf_counter() - t0 < 0.5  # 9 MB start message
    assert isinstance(start, SeriesStart), start
    assert (start.protocol, start.series, start.unique_id) == ("stream2", 16, "01HRCJF83SA63WH8M5X1VBKFJM")
    assert (start.header_detail, start.shape, start.dtype, start.problems) == ("all", (1065, 1030), None, ())
    assert start.parts == (messages[0][0],)
    c = start.config
    assert c["wavelength"] == c["incident_wavelength"] == pytest.approx(1.5498, abs=1e-4)
    assert (c["nimages"], c["ntrigger"], c["x_pixels_in_detector"], c["y_pixels_in_detector"]) == (10, 1, 1030, 1065)
    assert c["description"] == "Dectris EIGER1 Si 1M" and c["x_pixel_size"] == 7.5e-5
    assert start.nimages == 10
    assert "pixel_mask" not in c and "flatfield" not in c and "countrate_correction_lookup_table" not in c
    json.dumps(dict(c))  # config is plain data
    mask = start.pixel_mask
    assert mask.shape == (1065, 1030) and mask.dtype == np.uint32

    images = [parse_stream2(m[0]) for m in messages[1:11]]
    assert all(isinstance(m, ImageMessage) for m in images)
    assert [m.frame.frame for m in images] == list(range(10))
    first = images[0]
    assert (first.protocol, first.unique_id) == ("stream2", "01HRCJF83SA63WH8M5X1VBKFJM")
    assert (first.frame.encoding, first.frame.dtype, first.frame.shape) == ("bslz4", "uint32", (1065, 1030))
    # real_time [49716627, 50000000] s → ns
    assert (first.start_time_ns, first.stop_time_ns, first.real_time_ns) == (0, 999987540, 994332540)
    image = decode(decoder, first.frame)
    assert gap_stats(image) == (38130, 51117)
    # in this capture the mask is exactly the set of 0xFFFFFFFF pixels, in every image
    for m in images:
        assert np.array_equal(decode(decoder, m.frame) == MAX32, mask != 0)

    end = parse_stream2(messages[11][0])
    assert isinstance(end, SeriesEnd)
    assert (end.protocol, end.series, end.unique_id) == ("stream2", 16, "01HRCJF83SA63WH8M5X1VBKFJM")


def test_stream2_wrong_channel_names_the_channels_present():
    messages = capture("eiger1m_stream2")
    for data in (messages[0][0], messages[1][0]):
        bad = parse_stream2(data, channel="threshold_2")
        assert isinstance(bad, BadMessage) and bad.protocol == "stream2"
        assert "threshold_2" in bad.reason and "threshold_1" in bad.reason
        assert bad.series == 16


def test_stream2_real_16m(decoder):
    start, image, end = (m[0] for m in capture("eiger2_16m_stream2"))
    s = parse_stream2(bytearray(start))
    assert isinstance(s, SeriesStart), s
    assert (s.series, s.shape, s.pixel_mask) == (15614, (4362, 4148), None)
    assert any("pixel_mask" in p and "4 bytes" in p for p in s.problems)
    assert s.config["wavelength"] == pytest.approx(0.918381073013)
    assert s.config["goniometer"]["omega"]["increment"] == 0.1
    m = parse_stream2(memoryview(image))
    assert isinstance(m, ImageMessage), m
    assert (m.frame.encoding, m.frame.dtype, m.frame.shape) == ("bslz4", "uint16", (4362, 4148))
    assert gap_stats(decode(decoder, m.frame)) == (1253075, 13712)
    assert isinstance(parse_stream2(end), SeriesEnd)


def test_stream2_reencode_real(decoder):
    for folder in ("eiger1m_stream2", "eiger2_16m_stream2"):
        original = parse_stream2(capture(folder)[1][0])
        data = encode_stream2_image(original.frame, unique_id=original.unique_id,
                                    start_time_ns=original.start_time_ns, stop_time_ns=original.stop_time_ns,
                                    real_time_ns=original.real_time_ns)
        again = parse_stream2(data)
        assert isinstance(again, ImageMessage), again
        assert again.frame == original.frame
        assert (again.start_time_ns, again.stop_time_ns, again.real_time_ns, again.unique_id) == (
            original.start_time_ns, original.stop_time_ns, original.real_time_ns, original.unique_id)
        # same CBOR structure as the DCU writes
        raw = cbor2.loads(data)
        arr = raw["data"]["threshold_1"]
        assert arr.tag == 40 and arr.value[1].value.tag == 56500
        assert arr.value[1].tag == {"uint16": 69, "uint32": 70}[original.frame.dtype]


def test_cross_protocol_reencode_of_real_frames(decoder):
    """A real stream v1 frame sent as stream2 and a real stream2 frame sent as stream v1."""
    v1 = parse_stream1(capture("eiger1m_stream1_all")[1])
    v2 = parse_stream2(capture("eiger1m_stream2")[1][0])
    as2 = parse_stream2(encode_stream2_image(v1.frame))
    as1 = parse_stream1(encode_stream1_image(v2.frame))
    assert np.array_equal(decode(decoder, as2.frame), decode(decoder, v1.frame))
    assert np.array_equal(decode(decoder, as1.frame), decode(decoder, v2.frame))


# --------------------------------------------------------------------------- round trips

def make_metadata(rng, dtype="uint32", rows=40, cols=30, with_mask=True) -> DetectorMetadata:
    mask = (rng.random((rows, cols)) < 0.1).astype(np.uint32) * rng.choice([1, 2, 4, 16], (rows, cols)).astype(np.uint32)
    return DetectorMetadata(
        description="Simulated EIGER2 Si 4M", x_pixels=cols, y_pixels=rows, dtype=dtype,
        detector_distance_m=0.25, beam_center_x_px=15.5, beam_center_y_px=20.25, wavelength_A=0.8266,
        count_time_s=0.001, frame_time_s=0.0011, nimages=7, ntrigger=3,
        pixel_mask=mask if with_mask else None)


def make_image(rng, dtype, rows=40, cols=30) -> np.ndarray:
    image = rng.poisson(2.0, (rows, cols)).astype(dtype)
    image[:, cols // 2] = np.iinfo(dtype).max  # a gap column
    return image


def lz4_multiblock(image: np.ndarray, block_bytes: int) -> bytes:
    """Our 'lz4' framing with several blocks (the HDF5 LZ4 filter with a small block size)."""
    raw = image.tobytes()
    out = [struct.pack(">QI", len(raw), block_bytes)]
    for i in range(0, len(raw), block_bytes):
        block = lz4.block.compress(raw[i:i + block_bytes], store_size=False)
        out += [struct.pack(">I", len(block)), block]
    return b"".join(out)


@pytest.mark.parametrize("protocol", ["stream1", "stream2"])
@pytest.mark.parametrize("encoding", ["bslz4", "lz4", "lz4-multiblock", "raw"])
@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_image_round_trip(rng, decoder, protocol, encoding, dtype):
    image = make_image(rng, dtype)
    if encoding == "lz4-multiblock":
        blob, encoding = lz4_multiblock(image, 1000), "lz4"
    else:
        blob = encode_frame(image, encoding)
    frame = EncodedFrame(3, 5, encoding, dtype, image.shape, blob)
    assert frame_blob_problem(frame) == ""
    times = dict(start_time_ns=1_000_000, stop_time_ns=2_000_001, real_time_ns=999_999)
    if protocol == "stream1":
        msg = parse_stream1(views(encode_stream1_image(frame, appendix=b'{"k": 1}', **times)), receive_time=7.0)
        assert msg.appendix == b'{"k": 1}'
    else:
        msg = parse_stream2(memoryview(encode_stream2_image(frame, unique_id="U1", **times)), receive_time=7.0)
        assert msg.unique_id == "U1"
    assert isinstance(msg, ImageMessage), msg
    assert msg.protocol == protocol
    assert (msg.start_time_ns, msg.stop_time_ns, msg.real_time_ns) == (1_000_000, 2_000_001, 999_999)
    got = msg.frame
    assert (got.series, got.frame, got.encoding, got.dtype, got.shape, got.receive_time) == (
        3, 5, encoding, dtype, image.shape, 7.0)
    if encoding != "lz4" or protocol == "stream2":
        assert got.blob == blob  # no recompression
    assert frame_blob_problem(got) == ""
    assert np.array_equal(decode(decoder, got), image)


@pytest.mark.parametrize("detail", ["none", "basic", "all"])
@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_stream1_start_round_trip(rng, detail, dtype):
    md = make_metadata(rng, dtype)
    parts = encode_stream1_start(9, md, detail, appendix=b"appendix")
    assert len(parts) == {"none": 1, "basic": 2, "all": 8}[detail] + 1
    msg = parse_stream1(views(parts))
    assert isinstance(msg, SeriesStart), msg
    assert (msg.series, msg.header_detail, msg.problems) == (9, detail, ())
    assert msg.parts == tuple(parts)
    if detail == "none":
        assert (msg.shape, msg.dtype, dict(msg.config), msg.pixel_mask) == (None, None, {}, None)
        return
    assert (msg.shape, msg.dtype) == ((40, 30), dtype)
    c = msg.config
    assert (c["wavelength"], c["beam_center_x"], c["beam_center_y"], c["detector_distance"]) == (0.8266, 15.5, 20.25, 0.25)
    assert (c["nimages"], c["ntrigger"], c["count_time"], c["frame_time"]) == (7, 3, 0.001, 0.0011)
    assert (c["description"], c["compression"], c["x_pixel_size"]) == ("Simulated EIGER2 Si 4M", "bslz4", 75e-6)
    assert msg.nimages == 21
    if detail == "all":
        assert msg.pixel_mask.dtype == np.uint32
        assert np.array_equal(msg.pixel_mask, md.pixel_mask)
        assert json.loads(parts[2]) == {"htype": "dflatfield-1.0", "shape": [30, 40], "type": "float32"}
        assert json.loads(parts[6])["htype"] == "dcountrate_table-1.0"
    else:
        assert msg.pixel_mask is None


def test_stream1_start_all_without_mask_sends_zeros(rng):
    md = make_metadata(rng, with_mask=False)
    msg = parse_stream1(encode_stream1_start(1, md, "all"))
    assert msg.pixel_mask.shape == (40, 30) and not msg.pixel_mask.any()


@pytest.mark.parametrize("with_mask", [True, False])
@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_stream2_start_round_trip(rng, with_mask, dtype):
    md = make_metadata(rng, dtype)
    data = encode_stream2_start(4, md, channel="threshold_2", unique_id="01ABC", with_mask=with_mask)
    assert data[:3] == b"\xd9\xd9\xf7"  # self-describe tag 55799
    msg = parse_stream2(memoryview(data), channel="threshold_2")
    assert isinstance(msg, SeriesStart), msg
    assert (msg.series, msg.unique_id, msg.shape, msg.dtype, msg.problems) == (4, "01ABC", (40, 30), dtype, ())
    assert msg.header_detail == ("all" if with_mask else "basic")
    c = msg.config
    assert (c["wavelength"], c["nimages"], c["ntrigger"], c["description"]) == (0.8266, 7, 3, "Simulated EIGER2 Si 4M")
    assert (c["beam_center_x"], c["detector_distance"], c["x_pixel_size"], c["frame_time"]) == (15.5, 0.25, 75e-6, 0.0011)
    if with_mask:
        assert np.array_equal(msg.pixel_mask, md.pixel_mask)
        raw = cbor2.loads(data)
        assert decode_typed_array(raw["flatfield"]["threshold_2"]).dtype == np.float32
        # a compressed mask (allowed by tag 56500 anywhere) decodes too
        blob = encode_frame(md.pixel_mask, "bslz4")
        start = dict(raw) | {"pixel_mask": {"threshold_2": compressed([40, 30], 70, "bslz4", 4, blob)}}
        again = parse_stream2(cbor(start), channel="threshold_2")
        assert np.array_equal(again.pixel_mask, md.pixel_mask)
        start["pixel_mask"] = {"threshold_2": compressed([40, 30], 70, "bslz4", 4, blob[:-5])}
        assert any("does not decode" in p for p in parse_stream2(cbor(start), channel="threshold_2").problems)
        start["pixel_mask"] = {"threshold_2": compressed([40, 31], 70, "bslz4", 4, blob)}
        assert parse_stream2(cbor(start), channel="threshold_2").pixel_mask is None
    else:
        assert msg.pixel_mask is None
    bad = parse_stream2(data)  # default channel threshold_1 is not in this series
    assert isinstance(bad, BadMessage) and "threshold_2" in bad.reason


def test_stream2_generated_unique_id_and_end(rng):
    data = encode_stream2_start(1, make_metadata(rng))
    uid = parse_stream2(data).unique_id
    assert len(uid) == 26
    end = parse_stream2(encode_stream2_end(1, uid))
    assert isinstance(end, SeriesEnd) and (end.series, end.unique_id) == (1, uid)
    assert parse_stream1(encode_stream1_end(3)) == SeriesEnd("stream1", 3)


def test_stream2_typed_arrays():
    """Every little-endian int/float tag and big-endian uint decodes; big-endian raw frames are swapped."""
    for tag, dtype in [(64, "u1"), (69, "<u2"), (70, "<u4"), (71, "<u8"), (72, "i1"), (77, "<i2"), (78, "<i4"),
                       (79, "<i8"), (84, "<f2"), (85, "<f4"), (86, "<f8"), (65, ">u2"), (66, ">u4"), (67, ">u8")]:
        a = (np.arange(6).reshape(2, 3) * 7).astype(dtype)
        got = decode_typed_array(cbor2.CBORTag(40, [[2, 3], cbor2.CBORTag(tag, a.tobytes())]))
        assert got.dtype == np.dtype(dtype) and np.array_equal(got, a), tag
    a = np.arange(12, dtype=">u2").reshape(3, 4)
    msg = {"type": "image", "series_id": 1, "image_id": 0,
           "data": {"threshold_1": cbor2.CBORTag(40, [[3, 4], cbor2.CBORTag(65, a.tobytes())])}}
    m = parse_stream2(cbor2.dumps(cbor2.CBORTag(55799, msg)))
    assert isinstance(m, ImageMessage) and m.frame.encoding == "raw" and m.frame.dtype == "uint16"
    assert np.array_equal(np.frombuffer(m.frame.blob, "<u2").reshape(3, 4), a)
    assert m.start_time_ns is None


def test_stream2_times():
    """Rationals as [num, den], as a tag-30 rational, and unusable ones (None)."""
    from fractions import Fraction
    arr = typed([2, 2], 69, bytes(8))
    m = parse_stream2(image_msg(arr, start_time=[1, 3], stop_time=Fraction(2, 3), real_time=[5, 0]))
    assert (m.start_time_ns, m.stop_time_ns, m.real_time_ns) == (333333333, 666666667, None)


def test_encoders_reject_bad_arguments(rng):
    frame = EncodedFrame(1, 0, "zstd", "uint16", (2, 2), b"")
    with pytest.raises(ValueError):
        encode_stream1_image(frame)
    with pytest.raises(ValueError):
        encode_stream2_image(frame)
    with pytest.raises(ValueError):
        encode_stream1_start(1, make_metadata(rng), "everything")


# --------------------------------------------------------------------------- bad input

def real_v1_image() -> list[bytes]:
    return list(capture("eiger1m_stream1_all")[1])


def with_descriptor(**changes) -> list[bytes]:
    parts = real_v1_image()
    d = json.loads(parts[1]) | changes
    parts[1] = json.dumps(d).encode()
    return parts


def truncated_bitshuffle() -> list[bytes]:
    """size and blob agree, but the blob ends before the blocks its header declares."""
    parts = real_v1_image()
    parts[2] = parts[2][:20000]
    return with_size(parts, 20000)


def with_size(parts, size) -> list[bytes]:
    d = json.loads(parts[1]) | {"size": size}
    parts[1] = json.dumps(d).encode()
    return parts


def extra_bytes_after_blocks() -> list[bytes]:
    parts = real_v1_image()
    parts[2] = parts[2] + b"\0\0\0"
    return with_size(parts, len(parts[2]))


def header_all_missing_part() -> list[bytes]:
    return list(capture("eiger1m_stream1_all")[0][:6])


STREAM1_BAD = {
    "garbage bytes": ([b"\x00\xff\x13garbage\x9c"], "not JSON"),
    "json that does not parse": ([b'{"htype": "dimage-1.0", "series":'], "not JSON"),
    "json array": ([b"[1, 2]"], "not an object"),
    "no htype": ([b'{"series": 1}'], "no htype"),
    "unknown htype": ([b'{"htype": "dflux-1.0", "series": 1}'], "unknown htype 'dflux-1.0'"),
    "empty message": ([], "empty"),
    "empty part": ([b""], "not JSON"),
    "not bytes": (["a str is not a part"], "not contiguous bytes"),
    "too few parts": (real_v1_image()[:3], "needs 4 parts"),
    "too many parts": (real_v1_image() + [b"{}", b"{}"], "needs 4 parts"),
    "size that lies (too big)": (with_descriptor(size=27095), "shorter than the size 27095"),
    "size that lies (too small)": (with_descriptor(size=27000), "longer than the size 27000"),
    "blob shorter than its bitshuffle header says": (truncated_bitshuffle(), "cut short"),
    "bytes after the last block": (extra_bytes_after_blocks(), "after its last block"),
    "bs16 with uint32": (with_descriptor(encoding="bs16-lz4<"), "does not match type uint32"),
    "shape that does not match the bitshuffle header": (with_descriptor(shape=[1065, 1030, 1]), "shape"),
    "wrong shape": (with_descriptor(shape=[1000, 1065]), "needs 4260000"),
    "unknown encoding": (with_descriptor(encoding="bszstd<"), "encoding is 'bszstd<'"),
    "unknown type": (with_descriptor(type="float32"), "type is 'float32'"),
    "negative frame": ([b'{"htype": "dimage-1.0", "series": 1, "frame": -1}'] + real_v1_image()[1:], "frame"),
    "part 1 not a descriptor": ([real_v1_image()[0], real_v1_image()[3]] + real_v1_image()[2:], "has htype 'dconfig-1.0', expected dimage_d-1.0"),
    "lz4< frame too large for one block": (with_descriptor(encoding="lz4<", shape=[100000, 100000]), "larger than"),
    "raw blob of wrong length": (with_descriptor(encoding="<"), "raw blob holds 27094 bytes"),
    "header detail unknown": ([b'{"htype": "dheader-1.0", "series": 1, "header_detail": "most"}'], "header_detail"),
    "header all missing parts": (header_all_missing_part(), "needs 8 parts"),
    "header config not JSON": ([b'{"htype":"dheader-1.0","series":1,"header_detail":"basic"}', b"\x01\x02"],
                               "not JSON"),
    "end with extra part": ([b'{"htype":"dseries_end-1.0","series":1}', b"x"], "needs 1 part"),
    "series not an integer": ([b'{"htype":"dseries_end-1.0","series":"1"}'], "series"),
}


@pytest.mark.parametrize("case", list(STREAM1_BAD))
def test_stream1_bad_input(case):
    parts, expected = STREAM1_BAD[case]
    all_bytes = all(isinstance(p, bytes) for p in parts)
    for given in (parts, views(parts)) if all_bytes else (parts,):
        msg = parse_stream1(given, receive_time=3.0)
        assert isinstance(msg, BadMessage), (case, msg)
        assert expected in msg.reason, (case, msg.reason)
        assert msg.protocol == "stream1" and msg.receive_time == 3.0


def test_stream1_bad_message_keeps_series_and_frame():
    msg = parse_stream1(with_descriptor(encoding="bs16-lz4<"))
    assert (msg.series, msg.frame) == (14, 0)


def cbor(obj) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(55799, obj))


def image_msg(array_value, **extra) -> bytes:
    return cbor({"type": "image", "series_id": 2, "series_unique_id": "U", "image_id": 4,
                 "data": {"threshold_1": array_value}} | extra)


def typed(dims, tag, payload):
    return cbor2.CBORTag(40, [dims, cbor2.CBORTag(tag, payload)])


def compressed(dims, tag, name, elem, blob):
    return cbor2.CBORTag(40, [dims, cbor2.CBORTag(tag, cbor2.CBORTag(56500, [name, elem, blob]))])


_BS = encode_frame(np.zeros((4, 6), np.uint32), "bslz4")

STREAM2_BAD = {
    "garbage bytes": (b"\xff\xfe\xfd\x00garbage", "not valid CBOR"),
    "truncated CBOR": (None, "not valid CBOR"),
    "empty": (b"", "empty"),
    "not a map": (cbor2.dumps([1, 2, 3]), "not a map"),
    "tagged list": (cbor([{"type": "image"}]), "not a map"),
    "unknown type": (cbor({"type": "calibration", "series_id": 1}), "unknown message type 'calibration'"),
    "missing series_id": (cbor({"type": "end"}), "series_id"),
    "missing channel": (image_msg(typed([4, 6], 70, bytes(96))) .replace(b"threshold_1", b"threshold_9"),
                        "channels present: threshold_9"),
    "dims vs raw payload": (image_msg(typed([4, 6], 70, bytes(95))), "raw blob holds 95 bytes"),
    "dims vs bslz4 header": (image_msg(compressed([4, 5], 70, "bslz4", 4, _BS)), "header declares 96"),
    "unknown compression": (image_msg(compressed([4, 6], 70, "zstd", 4, _BS)), "unknown compression 'zstd'"),
    "elem_size mismatch": (image_msg(compressed([4, 6], 69, "bslz4", 4, _BS)), "elem_size 4"),
    "not tag 40": (image_msg(bytes(96)), "not a tag-40"),
    "float pixels": (image_msg(typed([4, 6], 85, bytes(96))), "frames must be one of"),
    "unknown typed-array tag": (image_msg(typed([4, 6], 99, bytes(96))), "not a supported RFC 8746"),
    "bad dims": (image_msg(typed([4, -6], 70, bytes(96))), "dims"),
    "3-d dims": (image_msg(typed([1, 4, 6], 70, bytes(96))), "not [y, x]"),
    "data not a map": (cbor({"type": "image", "series_id": 1, "image_id": 0, "data": [1]}), "not a map of channels"),
    "no image_id": (cbor({"type": "image", "series_id": 1, "data": {}}), "image_id"),
    "truncated bslz4": (image_msg(compressed([4, 6], 70, "bslz4", 4, _BS[:-3])), "cut short"),
}


@pytest.mark.parametrize("case", list(STREAM2_BAD))
def test_stream2_bad_input(case):
    data, expected = STREAM2_BAD[case]
    if data is None:
        data = capture("eiger1m_stream2")[1][0][:5000]
    for given in (data, memoryview(data)):
        msg = parse_stream2(given, receive_time=3.0)
        assert isinstance(msg, BadMessage), (case, msg)
        assert expected in msg.reason, (case, msg.reason)
        assert msg.protocol == "stream2" and msg.receive_time == 3.0


def test_stream2_bad_message_keeps_series_and_frame():
    msg = parse_stream2(image_msg(typed([4, 6], 70, bytes(95))))
    assert (msg.series, msg.frame) == (2, 4)


def test_parsers_never_raise_on_mutated_real_messages(rng):
    """Random truncations and byte flips of real messages: always a Message, never an exception."""
    v1 = [list(m) for m in capture("eiger1m_stream1_all")[:3]] + [list(capture("eiger2_9m_stream1_truncated")[4])]
    v2 = [m[0] for m in capture("eiger1m_stream2")[1:]] + [capture("eiger2_16m_stream2")[0][0]]
    for _ in range(300):
        parts = [bytearray(p) for p in v1[rng.integers(len(v1))]]
        k = rng.integers(len(parts))
        if rng.random() < 0.5:
            parts[k] = parts[k][:rng.integers(len(parts[k]) + 1)]
        elif parts[k]:
            for i in rng.integers(len(parts[k]), size=3):
                parts[k][i] = rng.integers(256)
        msg = parse_stream1([memoryview(p) for p in parts])
        assert isinstance(msg, (SeriesStart, ImageMessage, SeriesEnd, BadMessage))

        data = bytearray(v2[rng.integers(len(v2))])
        if rng.random() < 0.5:
            data = data[:rng.integers(len(data) + 1)]
        else:
            for i in rng.integers(len(data), size=3):
                data[i] = rng.integers(256)
        msg = parse_stream2(memoryview(data))
        assert isinstance(msg, (SeriesStart, ImageMessage, SeriesEnd, BadMessage))


def test_parse_zmq_frame_buffers(decoder):
    """As the receiver does: ``recv_multipart(copy=False)`` and ``zmq.Frame.buffer``."""
    zmq = pytest.importorskip("zmq")
    ctx = zmq.Context()
    try:
        pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
        pull.bind("inproc://codecs")
        push.connect("inproc://codecs")
        push.send_multipart(list(capture("eiger1m_stream1_all")[1]))
        push.send(capture("eiger1m_stream2")[1][0])
        v1 = parse_stream1([f.buffer for f in pull.recv_multipart(copy=False)])
        v2 = parse_stream2(pull.recv_multipart(copy=False)[0].buffer)
        assert gap_stats(decode(decoder, v1.frame)) == (38310, 9)
        assert gap_stats(decode(decoder, v2.frame)) == (38130, 51117)
        push.close(0)
        pull.close(0)
    finally:
        ctx.term()


# --------------------------------------------------------------------------- typed header

@pytest.mark.parametrize("protocol", ["stream1", "stream2"])
def test_series_header_is_typed_alike_for_both_protocols(rng, protocol):
    md = make_metadata(rng, "uint16")
    if protocol == "stream1":
        msg = parse_stream1(views(encode_stream1_start(9, md, "all")))
    else:
        msg = parse_stream2(encode_stream2_start(9, md, unique_id="01ABC"))
    h = msg.header
    assert isinstance(h, SeriesHeader) and msg.header is h  # read once
    assert (h.series, h.shape, h.dtype, h.nimages, h.ntrigger, h.frames_expected) == (9, (40, 30), "uint16", 7, 3, 21)
    assert (h.count_time_s, h.frame_time_s, h.wavelength_A, h.detector_distance_m) == (0.001, 0.0011, 0.8266, 0.25)
    assert (h.beam_center_x_px, h.beam_center_y_px, h.x_pixel_size_m, h.y_pixel_size_m) == (15.5, 20.25, 75e-6, 75e-6)
    assert h.description == "Simulated EIGER2 Si 4M"
    assert h.pixel_mask is msg.pixel_mask and np.array_equal(h.pixel_mask, md.pixel_mask)
    assert msg.nimages == h.frames_expected


def test_series_header_defaults_for_missing_or_unusable_values():
    h = SeriesHeader.from_config({"number_of_images": 5, "ntrigger": 0, "wavelength": "n/a", "count_time": None,
                                  "frame_time": float("nan"), "detector_distance": True, "x_pixel_size": 0},
                                 series=2)
    assert (h.nimages, h.ntrigger, h.frames_expected) == (5, 1, 5)
    assert (h.wavelength_A, h.count_time_s, h.frame_time_s, h.detector_distance_m) == (0.0, 0.0, 0.0, 0.0)
    assert (h.x_pixel_size_m, h.shape, h.dtype, h.pixel_mask, h.description) == (75e-6, None, None, None, "")
    assert SeriesStart("stream1", 3).nimages == 0


def test_stream1_image_json_parts_are_json_dumps_byte_for_byte(rng):
    """The image message's three JSON parts are formatted directly (not json.dumps, for the
    sender's CPU): byte for byte what json.dumps with sorted keys and no spaces writes, for
    every encoding, pixel type, and frame numbers, sizes and times from 0 to 2**63 - 1."""
    import json

    from stream.stream1_codec import encode_stream1_image

    def dumps(obj):
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()

    big = [0, 1, 9, 10, 255, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1]
    cases = [(int(rng.choice(big)), int(rng.choice(big[:8])), int(rng.integers(-2**62, 2**62)))
             for _ in range(40)] + [(0, 0, 0), (2**63 - 1, 2**31, -1)]
    for i, (number, series, t) in enumerate(cases):
        dtype = ("uint8", "uint16", "uint32")[i % 3]
        encoding = ("bslz4", "raw")[i % 2]
        rows, cols = int(rng.integers(1, 5000)), int(rng.integers(1, 5000))
        blob = bytes(int(rng.integers(0, 300)))
        frame = EncodedFrame(series, number, encoding, dtype, (rows, cols), blob)
        parts = encode_stream1_image(frame, start_time_ns=t, stop_time_ns=t + 7, real_time_ns=abs(t) // 3)
        v1 = f"bs{8 * np.dtype(dtype).itemsize}-lz4<" if encoding == "bslz4" else "<"
        assert parts[0] == dumps({"frame": number, "hash": "", "htype": "dimage-1.0", "series": series})
        assert parts[1] == dumps({"encoding": v1, "htype": "dimage_d-1.0", "shape": [cols, rows],
                                  "size": len(blob), "type": dtype})
        assert parts[3] == dumps({"htype": "dconfig-1.0", "real_time": abs(t) // 3, "start_time": t,
                                  "stop_time": t + 7})
        msg = parse_stream1(parts)  # an image, or (a blob that fits no shape) a bad message: same number
        assert (msg.frame.frame if isinstance(msg, ImageMessage) else msg.frame) == number
    with pytest.raises(TypeError):
        encode_stream1_image(EncodedFrame(0, True, "raw", "uint8", (1, 1), b"\0"))
