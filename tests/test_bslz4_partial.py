"""Selective bslz4 decoding (stream/bslz4_partial.py) against the full decoder and ``sum_valid_pixels``.

The contract: ``(valid_sum, n_valid)`` equals ``sum_valid_pixels`` on the full decode exactly,
the needed pixels of ``out`` equal the full decode, nothing outside the needed 8-pixel groups
(or needed blocks) is written, and a broken blob raises CorruptFrameError (or, where the
vendor decoder also accepts it, decodes to the same values), never reads or writes out of
bounds.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import pickle
import struct

import bitshuffle
import lz4.block
import numpy as np
import pytest

from processors.polar_roi_kernel import sum_valid_pixels
from stream import bslz4_partial_kernel as kernel
from stream.blob_framing import HEADER
from stream.bslz4_partial import SelectiveDecoder, sorted_unique, with_neighbours
from stream.chunk_codec import ChunkDecoder, CorruptFrameError, encode_frame
from stream.encoded_frame import EncodedFrame
from stream.stream2_codec import parse_stream2

from conftest import real_capture

BLOCK_ELEMS = {"uint8": 8192, "uint16": 4096, "uint32": 2048}
MARKER = 0x5A


@pytest.fixture(scope="module")
def full_decoder():
    return ChunkDecoder()


def frame_of(image: np.ndarray, blob: bytes | None = None) -> EncodedFrame:
    blob = encode_frame(image, "bslz4") if blob is None else blob
    return EncodedFrame(0, 0, "bslz4", image.dtype.name, image.shape, blob)


def reference(full_decoder, frame: EncodedFrame, masked: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Full decode and its valid sum, as FrameProcessor computes them today."""
    image = full_decoder.decode_into(frame, np.empty(frame.nbytes_decoded // 4 + 1, np.uint32)).reshape(-1)
    total, n = sum_valid_pixels(image, np.flatnonzero(masked).astype(np.int64), int(np.iinfo(image.dtype).max))
    return image, (int(total), int(n))


def written_pixels(groups: np.ndarray, n: int) -> np.ndarray:
    """Bool per pixel: inside one of the 8-pixel ``groups``."""
    w = np.zeros(n, dtype=bool)
    idx = (groups.astype(np.int64)[:, None] * 8 + np.arange(8)).reshape(-1)
    w[idx[idx < n]] = True
    return w


def check(full_decoder, image: np.ndarray, masked: np.ndarray, needed: np.ndarray,
          whole_blocks: bool = False, blob: bytes | None = None) -> tuple[int, int]:
    """Selective decode of ``image`` equals the full one on the needed pixels and the valid sum;
    the pixels outside the needed groups keep the marker."""
    frame = frame_of(image, blob)
    sel = SelectiveDecoder(image.shape, image.dtype.name, needed, masked, whole_blocks=whole_blocks)
    assert sel.supports(frame)
    out = np.full(image.size, MARKER, dtype=image.dtype)
    got = sel.decode_into(frame, out)
    full, ref = reference(full_decoder, frame, masked)
    assert got == ref
    assert isinstance(got[0], int) and isinstance(got[1], int)
    np.testing.assert_array_equal(out[needed], full[needed])
    written = written_pixels(sel.needed_groups, image.size)
    assert written[needed].all()
    np.testing.assert_array_equal(out[written], full[written])
    assert (out[~written] == MARKER).all(), "a pixel outside the needed groups was written"
    block = BLOCK_ELEMS[image.dtype.name]
    needed_blocks = np.unique(np.asarray(needed, dtype=np.int64) // block)
    untouched_blocks = np.setdiff1d(np.arange(-(-image.size // block)), needed_blocks)
    for b in untouched_blocks:
        assert (out[b * block:(b + 1) * block] == MARKER).all()
    # the same decoder again, into a buffer of another dtype and shape (seen as the frame dtype)
    out2 = np.zeros(image.size * image.itemsize // 4 + 1, dtype=np.uint32)
    assert sel.decode_into(frame, out2) == ref
    view = out2.view(np.uint8)[:image.nbytes].view(image.dtype)
    np.testing.assert_array_equal(view[needed], full[needed])
    return got


def eiger_like(rng, dtype: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A frame like an EIGER's: low counts, gap rows and columns at the sentinel (masked), a few
    bright pixels up to the top bits, sentinel pixels outside the mask, a pixel mask."""
    top = np.iinfo(dtype).max
    image = rng.poisson(0.5, shape).astype(dtype)
    masked = rng.random(shape) < 0.02
    gap_rows = np.arange(7, shape[0], 41)
    gap_cols = np.arange(11, shape[1], 67)
    image[gap_rows, :] = top
    image[:, gap_cols] = top
    masked[gap_rows, :] = True
    masked[:, gap_cols] = True
    flat = image.reshape(-1)
    flat[rng.integers(0, flat.size, 20)] = top  # bad pixels the mask does not know
    flat[rng.integers(0, flat.size, 20)] = top - 1
    flat[rng.integers(0, flat.size, 20)] = 1 << (8 * image.itemsize - 1)
    flat[rng.integers(0, flat.size, 200)] = rng.integers(0, top, 200, dtype=dtype)
    if top > 255 and flat.size > 300:
        # a bright spot: values that need 9 to 16 bits, the rest of its words below 256
        spot = int(rng.integers(0, flat.size - 300))
        flat[spot:spot + 300:3] = rng.integers(256, min(int(top), 65535), 100, endpoint=True).astype(dtype)
    return image, masked


# sizes: fewer than 8 pixels; exactly 8; one block; leftovers of every kind; a short last block
# whose planes are not whole 64-bit words (40 elements: 5-byte planes) or are (64·k elements)
SHAPES = [(1, 1), (1, 7), (2, 4), (3, 11), (64, 64), (37, 111), (97, 203), (1, 2048 * 4 + 40 + 5),
          (1, 8192 + 64 * 3 + 7)]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
@pytest.mark.parametrize("shape", SHAPES)
def test_equal_to_full_decode_for_every_needed_set(rng, full_decoder, dtype, shape):
    image, masked = eiger_like(rng, dtype, shape)
    n = image.size
    needed_sets = {
        "empty": np.zeros(0, dtype=np.int64),
        "all": np.arange(n),
        "scattered": rng.integers(0, n, max(1, n // 50)),
        "first and last": np.array([0, n - 1]),
        "ends": np.unique(np.r_[np.arange(min(n, 9)), np.arange(max(0, n - 9), n)]),
    }
    for name, needed in needed_sets.items():
        check(full_decoder, image, masked, needed)
    check(full_decoder, image, masked, needed_sets["scattered"], whole_blocks=True)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
def test_extreme_values_and_masks(rng, full_decoder, dtype):
    top = np.iinfo(dtype).max
    shape = (29, 301)
    needed = rng.integers(0, 29 * 301, 300)
    for image in (np.full(shape, top, dtype), np.full(shape, top - 1, dtype), np.zeros(shape, dtype),
                  rng.integers(0, top, shape, dtype=dtype, endpoint=True)):
        for masked in (np.zeros(shape, bool), np.ones(shape, bool), rng.random(shape) < 0.5):
            check(full_decoder, image, masked, needed)
    # all sentinel → nothing valid; all max-1 → every pixel counts, the largest sums
    none = np.zeros(shape, bool)
    assert SelectiveDecoder(shape, dtype, needed, none).decode_into(
        frame_of(np.full(shape, top, dtype)), np.empty(29 * 301, dtype)) == (0, 0)
    assert SelectiveDecoder(shape, dtype, needed, none).decode_into(
        frame_of(np.full(shape, top - 1, dtype)), np.empty(29 * 301, dtype)) == ((top - 1) * 29 * 301, 29 * 301)


def test_eiger_4m_sized_frame(rng, full_decoder):
    """One frame of an EIGER 4M's size, with windows of needed pixels like the ROI pass's."""
    shape = (2167, 2070)
    image, masked = eiger_like(rng, "uint32", shape)
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    radius = np.hypot(rows - 1083.0, cols - 1035.0)
    angle = np.degrees(np.arctan2(rows - 1083.0, cols - 1035.0))
    window = (radius > 400) & (radius < 420) & (angle > -5) & (angle < 45)
    window[1:, :] |= window[:-1, :].copy()  # and the neighbours (a rough dilation is enough here)
    window[:-1, :] |= window[1:, :].copy()
    window[:, 1:] |= window[:, :-1].copy()
    window[:, :-1] |= window[:, 1:].copy()
    needed = np.flatnonzero(window)
    check(full_decoder, image, masked, needed)


def test_real_captures(full_decoder, rng):
    """Real detector frames: the README's facts, and the full decode's values with a mask."""
    # stream v1, EIGER1 1M uint32: 38 310 pixels at 0xFFFFFFFF, the rest sums to 9 counts
    parts = real_capture("eiger1m_stream1_all")[1]
    d = json.loads(parts[1])
    shape = (d["shape"][1], d["shape"][0])
    frame = EncodedFrame(0, 0, "bslz4", d["type"], shape, parts[2])
    n = shape[0] * shape[1]
    sel = SelectiveDecoder(shape, "uint32", np.arange(0, n, 97), np.zeros(shape, bool))
    assert sel.decode_into(frame, np.empty(n, np.uint32)) == (9, n - 38310)
    # stream2, EIGER1 1M uint32 (first image: 38 130 at the sentinel, sum 51 117) and EIGER2 16M uint16
    frames = [parse_stream2(memoryview(m[0])).frame for m in real_capture("eiger1m_stream2")[1:4]]
    frames.append(parse_stream2(memoryview(real_capture("eiger2_16m_stream2")[1][0])).frame)
    first = SelectiveDecoder(frames[0].shape, "uint32", [], np.zeros(frames[0].shape, bool))
    assert first.decode_into(frames[0], np.empty(n, np.uint32)) == (51117, n - 38130)
    for frame in frames:
        shape = frame.shape
        n = shape[0] * shape[1]
        masked = rng.random(shape) < 0.01
        needed = np.unique(np.r_[rng.integers(0, n, 5000), np.arange(n // 2, n // 2 + 3000)])
        sel = SelectiveDecoder(shape, frame.dtype, needed, masked)
        out = np.full(n, MARKER, dtype=frame.dtype)
        got = sel.decode_into(frame, out)
        full, ref = reference(full_decoder, frame, masked)
        assert got == ref
        np.testing.assert_array_equal(out[needed], full[needed])
    n16 = frames[-1].shape[0] * frames[-1].shape[1]
    sel = SelectiveDecoder(frames[-1].shape, "uint16", [], np.zeros(frames[-1].shape, bool))
    assert sel.decode_into(frames[-1], np.empty(n16, np.uint16)) == (13712, n16 - 1253075)


def test_roi_pass_on_selective_output_equals_full_decode(rng, full_decoder):
    """What FrameProcessor will do: LUT pixels + 8 neighbours needed, its mask; the valid sum and
    the ROI pass (counting spikes) give the same numbers from the selective output."""
    from processors.config import load_config
    from processors.frame_processor import FrameProcessor
    from processors.processing_setup import ProcessingSetup

    from conftest import DEMO_DATA

    setup = ProcessingSetup.from_config(load_config(DEMO_DATA / "demo.toml"))
    proc, twin = FrameProcessor(setup), FrameProcessor(setup)  # same state: one for each decode
    shape = proc.shape
    needed = with_neighbours(proc.lut.pixel_index, shape)
    # the neighbours stay inside the frame and on their side of it (no wrap to the next row)
    assert np.array_equal(with_neighbours(np.array([0, 9]), (2, 10)), [0, 1, 8, 9, 10, 11, 18, 19])
    sel = SelectiveDecoder(shape, "uint32", needed, proc.mask)
    for _ in range(3):
        image = rng.poisson(2.0, shape).astype(np.uint32)
        image[proc.mask] = 0xFFFFFFFF
        image.reshape(-1)[rng.choice(proc.lut.pixel_index, 300)] = 40000  # bright pixels: spike candidates
        frame = frame_of(image)
        full = proc.decode(frame)
        out = np.full(image.size, 7, np.uint32)
        assert sel.decode_into(frame, out) == proc.roi.valid_sum(full)
        found_full = proc.hot_pixels.accumulate(full)
        found_sel = twin.hot_pixels.accumulate(out.reshape(shape))
        np.testing.assert_array_equal(found_sel, found_full)
        np.testing.assert_array_equal(twin.roi.sums, proc.roi.sums)
        np.testing.assert_array_equal(twin.roi.counts, proc.roi.counts)
        np.testing.assert_array_equal(twin.hot_pixels.spikes, proc.hot_pixels.spikes)


# --------------------------------------------------------------------------- bad input
def guarded(blob: bytes):
    """``blob`` as a uint8 array that ends exactly at a page the process may not read: a kernel that
    read past the end of the blob would crash the test run instead of passing silently."""
    page = mmap.PAGESIZE
    size = -(-len(blob) // page) * page + page
    buf = mmap.mmap(-1, size)
    start = size - page - len(blob)
    buf[start:start + len(blob)] = blob
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mprotect(ctypes.c_void_p(addr + size - page), ctypes.c_size_t(page), 0) == 0
    return buf, memoryview(buf)[start:start + len(blob)]


def decode_or_error(sel: SelectiveDecoder, full_decoder, image, blob, masked) -> str:
    """Decode a possibly broken blob both ways; the selective decoder must raise CorruptFrameError
    or agree with the vendor decoder. Returns "error" or "ok"."""
    frame = frame_of(image, blob)
    out = np.full(image.size, MARKER, dtype=image.dtype)
    try:
        got = sel.decode_into(frame, out)
    except CorruptFrameError:
        return "error"
    full, ref = reference(full_decoder, frame, masked)  # raises if the vendor refuses it
    assert got == ref
    needed = written_pixels(sel.needed_groups, image.size)
    np.testing.assert_array_equal(out[needed], full[needed])
    return "ok"


@pytest.mark.parametrize("dtype", ["uint8", "uint32"])
def test_truncated_and_corrupt_blobs(rng, full_decoder, dtype):
    shape = (17, 1001)  # 2 blocks (uint32: 8 blocks), a short last block and leftover elements
    image, masked = eiger_like(rng, dtype, shape)
    needed = rng.integers(0, image.size, 400)
    sel = SelectiveDecoder(shape, dtype, needed, masked)
    blob = encode_frame(image, "bslz4")
    # cut at many points, each in a guarded buffer
    for cut in sorted(set(np.linspace(12, len(blob) - 1, 120).astype(int)) | {12, 13, 15, 16, 17, len(blob) - 1}):
        buf, view = guarded(blob[:cut])
        with pytest.raises(CorruptFrameError):
            sel.decode_into(EncodedFrame(0, 0, "bslz4", dtype, shape, view), np.empty(image.size, dtype))
        view.release()
        buf.close()
    # bytes after the end
    with pytest.raises(CorruptFrameError, match="after its last element"):
        sel.decode_into(frame_of(image, blob + b"\0"), np.empty(image.size, dtype))
    # flipped bytes in the block lengths and anywhere in the LZ4 data
    starts, pos = [], 12
    while pos + 4 <= len(blob) and len(starts) < -(-image.size // BLOCK_ELEMS[dtype]):
        starts.append(pos)
        pos += 4 + struct.unpack_from(">I", blob, pos)[0]
    outcomes = []
    positions = [s + k for s in starts for k in range(4)] + list(rng.integers(12, len(blob), 300))
    for p in positions:
        bad = bytearray(blob)
        bad[p] ^= 1 << int(rng.integers(0, 8))
        buf, view = guarded(bytes(bad))
        outcomes.append(decode_or_error(sel, full_decoder, image, view, masked))
        view.release()
        buf.close()
    assert outcomes.count("error") > len(positions) // 3  # most flips are caught


def test_wrong_frames_are_refused_with_a_reason(rng):
    image = rng.poisson(2.0, (40, 50)).astype(np.uint16)
    sel = SelectiveDecoder(image.shape, "uint16", [0, 5], np.zeros(image.shape, bool))
    out = np.empty(image.size, np.uint16)
    for encoding in ("lz4", "raw"):
        frame = EncodedFrame(0, 0, encoding, "uint16", image.shape, encode_frame(image, encoding))
        assert not sel.supports(frame)
        with pytest.raises(ValueError, match="does not apply"):
            sel.decode_into(frame, out)
    assert not sel.supports(EncodedFrame(0, 0, "bslz4", "uint32", image.shape, b""))
    assert not sel.supports(EncodedFrame(0, 0, "bslz4", "uint16", (50, 40), b""))
    blob = encode_frame(image, "bslz4")
    cases = [
        (blob[:11], "shorter than its 12-byte header"),
        ((10**6).to_bytes(8, "big") + blob[8:], "declares 1000000 decoded bytes"),
        (blob[:8] + (100).to_bytes(4, "big") + blob[12:], "block size 100"),
        (blob[:8] + (0).to_bytes(4, "big") + blob[12:], "block size 0"),
        (blob[:12] + (10**6).to_bytes(4, "big") + blob[16:], "runs past the end of the blob"),
        (blob[:12] + bytes(len(blob) - 12), "LZ4 data are truncated or corrupt"),
        (blob[:14], "ends inside the length of block 0"),
    ]
    for bad, reason in cases:
        with pytest.raises(CorruptFrameError, match=reason):
            sel.decode_into(EncodedFrame(0, 0, "bslz4", "uint16", image.shape, bad), out)
    # a decoder travels to worker processes: it pickles, and the copy decodes the same
    again = pickle.loads(pickle.dumps(sel))
    assert again.decode_into(frame_of(image), out) == sel.decode_into(frame_of(image), np.empty_like(out))
    with pytest.raises(ValueError, match="too small"):
        sel.decode_into(frame_of(image), np.empty(10, np.uint16))
    with pytest.raises(ValueError, match="must lie in"):
        SelectiveDecoder(image.shape, "uint16", [image.size], np.zeros(image.shape, bool))
    with pytest.raises(ValueError, match="masked must be bool"):
        SelectiveDecoder(image.shape, "uint16", [], np.zeros((3, 3), bool))


# --------------------------------------------------------------------------- LZ4 kernel alone
def lz4_inputs(rng) -> list[bytes]:
    """Data that exercise every kind of LZ4 sequence: runs (offset 1), short periods (2..7),
    medium and long offsets, long literals, and the tiny blocks."""
    out = [b"", b"a", b"abcd" * 3, bytes(9000), bytes(rng.integers(0, 256, 5000, dtype=np.uint8))]
    for period in range(1, 40):
        pattern = bytes(rng.integers(0, 256, period, dtype=np.uint8))
        out.append(bytes(rng.integers(0, 256, 13, dtype=np.uint8)) + pattern * (3000 // period))
    mixed = bytearray()
    while len(mixed) < 8192:
        kind = rng.integers(0, 4)
        if kind == 0:
            mixed += bytes(rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8))
        elif kind == 1:
            mixed += bytes([int(rng.integers(0, 256))]) * int(rng.integers(1, 600))
        else:
            back = int(rng.integers(1, min(len(mixed), 4000) + 1)) if mixed else 0
            length = int(rng.integers(4, 300))
            for _ in range(length):
                mixed.append(mixed[-back] if back else 0)
    out.append(bytes(mixed[:8192]))
    return out


def test_lz4_kernel_matches_reference_and_stays_in_bounds(rng):
    for raw in lz4_inputs(rng):
        for compressed in (lz4.block.compress(raw, store_size=False),
                           lz4.block.compress(raw, store_size=False, mode="high_compression")):
            src = np.frombuffer(compressed, np.uint8)
            cap = len(raw)
            dst = np.full(cap + kernel.SCRATCH_SLACK + 64, 0xEE, np.uint8)
            n = kernel.lz4_decompress_block(src, np.uint64(0), np.uint64(src.size), dst, np.uint64(cap))
            if not raw:
                assert n in (0, kernel.LZ4_TRUNCATED)
                continue
            assert n == cap
            assert dst[:cap].tobytes() == raw
            assert (dst[cap + kernel.SCRATCH_SLACK:] == 0xEE).all()
            # a capacity one byte short is an overflow, never a write past capacity + slack
            dst[:] = 0xEE
            n = kernel.lz4_decompress_block(src, np.uint64(0), np.uint64(src.size), dst, np.uint64(cap - 1))
            assert n == kernel.LZ4_OVERFLOW
            assert (dst[cap - 1 + kernel.SCRATCH_SLACK:] == 0xEE).all()
            # random corruption: an error code or some output, always inside dst, also when
            # repeated planes (of 32 or 256 bytes) may be reported and left unwritten
            for _ in range(20):
                bad = bytearray(compressed)
                bad[int(rng.integers(0, len(bad)))] = int(rng.integers(0, 256))
                src_bad = np.frombuffer(bytes(bad), np.uint8)
                dst[:] = 0xEE
                n = kernel.lz4_decompress_block(src_bad, np.uint64(0), np.uint64(len(bad)), dst, np.uint64(cap))
                assert n <= cap
                assert (dst[cap + kernel.SCRATCH_SLACK:] == 0xEE).all()
                for pb in (32, 256):
                    dst[:] = 0xEE
                    n2, t, e = kernel.lz4_decompress_planes(src_bad, np.uint64(0), np.uint64(len(bad)), dst,
                                                            np.uint64(cap), np.uint64(pb), False)
                    assert n2 == n
                    assert (dst[cap + kernel.SCRATCH_SLACK:] == 0xEE).all()
                    assert e == 0 or (n2 >= 0 and t + 2 <= e and e * pb <= n2)



def test_lz4_short_matches_of_every_short_period(rng):
    """Every match of period (offset) 1..7 and length 4..18 after 0..14 literals, each decoded
    by the kernel's fast path (32 input and output bytes to spare) and, near the end of a block,
    by the general one: the same bytes as the reference decoder, nothing written past the
    capacity's slack, and a capacity one byte short refused."""
    sequences = []
    for offset in range(1, 8):
        for ml in range(4, 19):
            for n_lit in (0, 1, 3, 7, 14):
                sequences.append((bytes(rng.integers(0, 256, n_lit, dtype=np.uint8)), offset, ml))
    order = rng.permutation(len(sequences))
    head = (bytes(rng.integers(0, 256, 8, dtype=np.uint8)), 8, 4)  # the first match needs bytes behind it
    # room for the fast path to the end, or the last sequences on the general path (an LZ4 block
    # ends in at least 5 literals, its last match 12 bytes or more before the end)
    for tail_len in (40, 12):
        for chunk in range(0, len(order), 150):
            seqs = [head] + [sequences[i] for i in order[chunk:chunk + 150]]
            block = lz4_block(seqs, bytes(rng.integers(0, 256, tail_len, dtype=np.uint8)))
            raw_size = 8 + 4 + sum(len(lit) + ml for lit, _, ml in seqs[1:]) + tail_len
            ref = lz4.block.decompress(block, uncompressed_size=raw_size)
            assert len(ref) == raw_size
            src = np.frombuffer(block, np.uint8)
            for cap, expected in ((raw_size, raw_size), (raw_size - 1, kernel.LZ4_OVERFLOW)):
                dst = np.full(raw_size + kernel.SCRATCH_SLACK + 64, 0xEE, np.uint8)
                n = kernel.lz4_decompress_block(src, np.uint64(0), np.uint64(src.size), dst, np.uint64(cap))
                assert n == expected
                if n == raw_size:
                    assert dst[:raw_size].tobytes() == ref
                assert (dst[cap + kernel.SCRATCH_SLACK:] == 0xEE).all()


@pytest.mark.parametrize("dtype, block_elems", [("uint8", 8), ("uint16", 24), ("uint32", 64), ("uint32", 1000),
                                                ("uint16", 8200)])
def test_other_block_sizes(rng, full_decoder, dtype, block_elems):
    """The header's block size is followed (planes of 1, 3, 8, 125, 1025 bytes), not assumed."""
    image, masked = eiger_like(rng, dtype, (23, 457))
    blob = HEADER.pack(image.nbytes, block_elems * image.itemsize) + \
        bitshuffle.compress_lz4(image.reshape(-1), block_elems).tobytes()
    needed = np.unique(np.r_[rng.integers(0, image.size, 300), 0, image.size - 1])
    check(full_decoder, image, masked, needed, blob=blob)


# --------------------------------------------------------------------------- repeated bit planes
def lz4_block(sequences: list[tuple[bytes, int, int]], last: bytes) -> bytes:
    """A raw LZ4 block written by hand: ``(literals, offset, match length)`` sequences, then the
    last literals."""
    def length_bytes(n: int) -> bytes:
        return bytes([255] * (n // 255) + [n % 255])

    out = bytearray()
    for lit, offset, ml in [*sequences, (last, 0, 0)]:
        is_last = offset == 0
        m = 0 if is_last else ml - 4
        out.append((min(len(lit), 15) << 4) | (0 if is_last else min(m, 15)))
        if len(lit) >= 15:
            out += length_bytes(len(lit) - 15)
        out += lit
        if not is_last:
            out += offset.to_bytes(2, "little")
            if m >= 15:
                out += length_bytes(m - 15)
    return bytes(out)


def decode_planes(block: bytes, capacity: int, plane_bytes: int, write: bool) -> tuple[int, int, int, np.ndarray]:
    src = np.frombuffer(block, np.uint8)
    dst = np.full(capacity + kernel.SCRATCH_SLACK, 0xEE, np.uint8)
    n, t, e = kernel.lz4_decompress_planes(src, np.uint64(0), np.uint64(src.size), dst, np.uint64(capacity),
                                           np.uint64(plane_bytes), write)
    return int(n), int(t), int(e), dst


def check_planes(block: bytes, raw: bytes, plane_bytes: int) -> tuple[int, int]:
    """Decoding ``block`` with repeated planes of ``plane_bytes`` reported gives ``raw``: written
    (``write_repeats``) byte for byte, or not written and equal to the template plane; nothing
    written past the slack. Returns the reported ``(template, end_plane)``."""
    cap = len(raw)
    ref = np.frombuffer(raw, np.uint8)
    n, t, e, written = decode_planes(block, cap, plane_bytes, True)
    assert n == cap
    np.testing.assert_array_equal(written[:cap], ref)
    n2, t2, e2, left = decode_planes(block, cap, plane_bytes, False)
    assert (n2, t2, e2) == (n, t, e)
    if e:
        assert e >= t + 2
        planes = ref[: (cap // plane_bytes) * plane_bytes].reshape(-1, plane_bytes)
        assert (planes[t + 1:e] == planes[t]).all(), "reported planes differ from their template"
        unwritten = np.zeros(cap, bool)
        unwritten[(t + 1) * plane_bytes:e * plane_bytes] = True
        # the first one may hold the template copy's overrun; the others are not written at all
        assert (left[(t + 1) * plane_bytes + kernel.SCRATCH_SLACK:e * plane_bytes] == 0xEE).all()
        np.testing.assert_array_equal(left[:cap][~unwritten], ref[~unwritten])
    else:
        np.testing.assert_array_equal(left[:cap], ref)
    assert (left[cap + kernel.SCRATCH_SLACK:] == 0xEE).all()
    return t, e


def test_repeated_planes_hand_made_blocks(rng):
    pb = 64
    lit = bytes(rng.integers(1, 256, 100, dtype=np.uint8))
    period2 = bytes(rng.integers(0, 256, 2, dtype=np.uint8))

    def expand(seqs, last):
        out = bytearray()
        for literals, offset, ml in seqs:
            out += literals
            for _ in range(ml):
                out.append(out[-offset])
        return bytes(out + last)

    cases = {
        # a run of one plane back from byte 100 to 5 bytes before the end: plane 2 is the first
        # inside it (the template), planes 3..8 repeat it, plane 9 is partly the match
        "plane back, then 5 literals": ([(lit, pb, 10 * pb - 100 - 5)], b"\x01\x02\x03\x04\x05", (2, 9)),
        # period 2 divides the plane: a template inside the match, planes after it repeat it
        "period 2": ([(lit[:30] + period2, 2, 8 * pb)], b"\x00" * 7, (1, 8)),
        # 20 last literals (an extended literal length) after the match
        "long last literals": ([(lit, pb, 6 * pb)], bytes(range(20)), (2, 7)),
        # the match ends exactly at a plane boundary before the last literals
        "ends on a plane": ([(lit[:64], pb, 4 * pb)], bytes(range(64)), (1, 5)),
        # other periods that divide the plane: 4, 8, 32
        "period 4": ([(lit[:70], 4, 5 * pb)], b"\x09" * 5, (2, 6)),
        "period 8": ([(lit[:70], 8, 5 * pb)], b"\x09" * 5, (2, 6)),
        "period 32": ([(lit[:70], 32, 5 * pb)], b"\x09" * 5, (2, 6)),
        # no last literals at all: the match runs to the end of the block's last plane
        "no last literals": ([(lit[:64], pb, 7 * pb)], b"", (1, 8)),
        # another match follows: it could copy from the repeated planes, so none are reported
        "a match follows": ([(lit, pb, 6 * pb), (b"\x07", 3 * pb, 40)], b"\x01" * 5, None),
        # periods that do not divide the plane size
        "period 3": ([(lit[:3], 3, 8 * pb)], b"\x01" * 5, None),
        "period 96": ([(lit[:96], 96, 8 * pb)], b"\x01" * 5, None),
        # covers less than two whole planes
        "short": ([(lit, pb, 2 * pb - 2)], b"\x01" * 5, None),
    }
    for name, (seqs, last, expect) in cases.items():
        raw = expand(seqs, last)
        got = check_planes(lz4_block(seqs, last), raw, pb)
        if expect is None:
            assert got[1] == 0, name
        else:
            assert got == expect, name
    # plane size 0: nothing is looked for, everything is written; the plain decoder is that
    seqs, last, _ = cases["plane back, then 5 literals"]
    block = lz4_block(seqs, last)
    raw = expand(seqs, last)
    n, t, e, dst = decode_planes(block, len(raw), 0, False)
    assert (n, t, e) == (len(raw), 0, 0)
    assert dst[:n].tobytes() == raw
    src = np.frombuffer(block, np.uint8)
    plain = np.full(len(raw) + kernel.SCRATCH_SLACK, 0xEE, np.uint8)
    assert kernel.lz4_decompress_block(src, np.uint64(0), np.uint64(src.size), plain, np.uint64(len(raw))) == n
    assert plain[:n].tobytes() == raw


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
def test_repeated_planes_of_eiger_like_blocks(rng, dtype):
    """Every block of EIGER-like frames: the repeated planes reported are really there, the rest
    decodes as the reference. In a frame of low counts, gaps at the sentinel and a bright spot
    most blocks have some (the high planes are the gap pattern); ``eiger_like``'s random values
    at every bit depth break them in many blocks."""
    block = BLOCK_ELEMS[dtype]
    pb = block // 8
    shape = (97, 2070)
    plain = rng.poisson(0.5, shape).astype(dtype)
    plain[7::41, :] = np.iinfo(dtype).max
    plain[:, 11::67] = np.iinfo(dtype).max
    plain[40:46, 300:306] = 100 if dtype == "uint8" else 2000
    for image, most in ((plain, True), (eiger_like(rng, dtype, shape)[0], False)):
        flat = image.reshape(-1)
        n_full = flat.size // block
        reported = 0
        for b in range(n_full):
            part = flat[b * block:(b + 1) * block]
            compressed = bitshuffle.compress_lz4(part, block).tobytes()[4:]  # drop the block's length
            raw = bitshuffle.bitshuffle(part, block).view(np.uint8).tobytes()
            _, e = check_planes(compressed, raw, pb)
            reported += e != 0
        if most:
            assert reported > n_full * 3 // 4, (reported, n_full)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
def test_block_sum_from_a_template_plane(rng, dtype):
    """block_valid_sum with planes rep_lo .. rep_hi - 1 read as plane rep_lo - 1 equals the sum of
    the block with those planes written, whatever garbage they hold, sentinels included."""
    itemsize = np.dtype(dtype).itemsize
    n_planes = 8 * itemsize
    pb = 64
    for trial in range(40):
        planes = rng.integers(0, 256, (n_planes, pb), dtype=np.uint8)
        planes[rng.random(n_planes) < 0.5] = 0
        lo = int(rng.integers(1, n_planes - 1))
        hi = int(rng.integers(lo + 1, n_planes + 1))
        if trial % 4 == 0:
            planes[lo - 1] = 0  # repeats of an empty plane
        if trial % 4 == 1:
            planes[:, :3] = 255  # sentinel elements in the valid area, the top planes set
            planes[lo - 1, :3] = 255
        planes[lo:hi] = planes[lo - 1]
        valid = rng.integers(0, 256, pb, dtype=np.uint8)
        valid[:3] |= 0x0F
        full = planes.reshape(-1).copy()
        args = (np.uint64(pb), np.uint64(n_planes), valid, np.uint64(0))
        want = kernel.block_valid_sum(full, *args, np.uint64(0), np.uint64(0))
        # what the unwritten planes hold (the last block's bytes) must not matter
        for fill in (rng.integers(0, 256, (hi - lo, pb), dtype=np.uint8), 0, 255):
            garbage = planes.copy()
            garbage[lo:hi] = fill
            got = kernel.block_valid_sum(garbage.reshape(-1).copy(), *args, np.uint64(lo), np.uint64(hi))
            assert got == want, (trial, lo, hi)
        # and the reference: unshuffle, mask, drop sentinels
        values = bitshuffle.bitunshuffle(full.view(dtype), 8 * pb).astype(np.uint64)
        mask = np.unpackbits(valid, bitorder="little").astype(bool)
        keep = mask & (values != np.iinfo(dtype).max)
        assert (int(want[0]), int(want[1])) == (int(values[keep].sum()), int(keep.sum()))


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_repeated_planes_in_a_short_last_block(rng, full_decoder, dtype):
    """A frame whose short last block has whole-word planes of 64 bytes and starts at a group
    past the first: its repeated planes are reported (and, with no pixel needed there, not
    written), and the selective decode still equals the full one."""
    block = BLOCK_ELEMS[dtype]
    shape = (1, 2 * block + 512)  # two full blocks, then 512 elements: planes of 64 bytes
    image = rng.poisson(0.5, shape).astype(dtype)
    image[0, 5::67] = np.iinfo(dtype).max
    image[0, 2 * block + 100:2 * block + 106] = 300  # 9 bits: planes 9 and up hold only the gaps
    masked = image == np.iinfo(dtype).max
    tail = image.reshape(-1)[2 * block:]
    compressed = bitshuffle.compress_lz4(tail, tail.size).tobytes()[4:]
    raw = bitshuffle.bitshuffle(tail, tail.size).view(np.uint8).tobytes()
    assert check_planes(compressed, raw, tail.size // 8)[1] != 0
    n = image.size
    for needed in (np.zeros(0, np.int64), np.arange(0, 2 * block, 97), np.array([n - 1]), np.arange(n)):
        check(full_decoder, image, masked, needed)


def _neighbours_by_unique(pixels, shape):
    """The obvious reference for with_neighbours: all 9 shifted copies inside the frame, np.unique."""
    rows, cols = shape
    r, c = np.divmod(np.asarray(pixels, dtype=np.int64), cols)
    parts = []
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            inside = (r + dr >= 0) & (r + dr < rows) & (c + dc >= 0) & (c + dc < cols)
            parts.append(((r + dr) * cols + (c + dc))[inside])
    return np.unique(np.concatenate(parts))


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (3, 4), (37, 53), (8, 8), (3, 64), (9, 71)])
def test_with_neighbours_matches_unique_of_shifted_copies(shape):
    rng = np.random.default_rng(sum(shape))
    n = shape[0] * shape[1]
    corners = [0, shape[1] - 1, n - shape[1], n - 1]
    for pixels in (np.array(corners), rng.integers(0, n, 2 * n), np.arange(n), np.array([], np.int64)):
        got = with_neighbours(pixels, shape)
        assert got.dtype == np.int64
        assert np.array_equal(got, _neighbours_by_unique(pixels, shape))


def test_set_bits_are_found_in_order_as_flatnonzero_finds_them():
    """The bitmap scan behind with_neighbours against flatnonzero of the unpacked bits: empty,
    full and sparse words, bit 0 and bit 63."""
    from stream.neighbour_kernel import count_set_bits, set_bit_indices

    rng = np.random.default_rng(11)
    words = [np.zeros(3, np.uint64), np.full(2, 2**64 - 1, np.uint64), np.array([1, 2**63, 0, 2**63 + 1], np.uint64),
             rng.integers(0, 2**63, 50, dtype=np.uint64) & rng.integers(0, 2**63, 50, dtype=np.uint64) << np.uint64(1)]
    for bits in words:
        expected = np.flatnonzero(np.unpackbits(bits.view(np.uint8), bitorder="little"))
        assert count_set_bits(bits) == expected.size
        out = np.full(expected.size + 1, -7, np.int64)
        assert set_bit_indices(bits, out) == expected.size
        assert np.array_equal(out[:-1], expected) and out[-1] == -7


def test_with_neighbours_refuses_pixels_outside_the_frame():
    for pixels in ([-1], [12], [0, 3, 12]):
        with pytest.raises(ValueError, match=r"pixel indices must lie in \[0, 12\)"):
            with_neighbours(np.array(pixels), (3, 4))


def test_sorted_unique_is_np_unique():
    rng = np.random.default_rng(3)
    cases = [np.array([], np.int64), np.array([5]), np.array([2, 2, 2]), np.arange(10) // 3,
             np.sort(rng.integers(0, 50, 200)), rng.integers(0, 50, 200), np.array([3, 1, 2, 1]),
             with_neighbours(rng.integers(0, 37 * 53, 40), (37, 53)) // 8]
    for values in cases:
        got = sorted_unique(values)
        assert got.dtype == np.asarray(values).dtype
        assert np.array_equal(got, np.unique(values)), values


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (29, 301), (16, 64)])
def test_the_valid_bitmap_is_the_packed_inverse_of_the_mask(shape, rng):
    """The decoder packs the mask, then inverts it in place (no inverted copy of a 4M mask): the
    bitmap is the obvious ``packbits(~mask)``, with the bits past the last pixel 0 and the
    padding to whole words 0, whatever the number of pixels modulo 8."""
    mask = rng.random(shape) < 0.3
    dec = SelectiveDecoder(shape, "uint32", np.arange(0, shape[0] * shape[1], 7), mask)
    expected = np.packbits(~mask.reshape(-1), bitorder="little")
    valid8 = dec._valid8
    assert valid8.size % 8 == 0 and valid8.size >= expected.size
    np.testing.assert_array_equal(valid8[:expected.size], expected)
    assert not valid8[expected.size:].any()
