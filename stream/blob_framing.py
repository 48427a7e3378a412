"""The HDF5 filter framing of ``bslz4`` / ``lz4`` frame blobs, in one place.

A compressed blob starts with a 12-byte big-endian header: uint64 decoded bytes, uint32
block bytes; then length-prefixed blocks (uint32 big-endian compressed bytes, then the
block). bitshuffle compresses whole blocks of a multiple of 8 elements and appends the
last ``n % 8`` elements uncompressed. This is how the DECTRIS file writer stores chunks,
how stream v1 sends ``bs*-lz4<`` and what stream2's tag 56500 carries: the chunk codec,
both stream codecs and the checks before decoding all use this module.
"""

from __future__ import annotations

import struct

import lz4.block

from stream.encoded_frame import DTYPES, ENCODINGS, ITEMSIZE, EncodedFrame

#: uint64 BE decoded bytes, uint32 BE block bytes.
HEADER = struct.Struct(">QI")
#: uint32 BE compressed bytes of the block that follows.
BLOCK_LEN = struct.Struct(">I")
#: bitshuffle compresses whole blocks of a multiple of 8 elements.
BSHUF_MULT = 8


def declared_size(blob) -> int | None:
    """Decoded bytes the blob's header declares; None when the blob is shorter than the header."""
    if len(blob) < HEADER.size:
        return None
    return HEADER.unpack_from(blob)[0]


def frame_blob_problem(frame: EncodedFrame, walk: bool = True) -> str:
    """What is wrong with ``frame.blob`` for its encoding, dtype and shape; ``""`` if nothing.

    Checks the framing without decompressing: raw length; for ``bslz4``/``lz4`` the
    12-byte header (declared decoded size = rows × cols × itemsize, a sane block size)
    and a walk over the length-prefixed blocks, which must end exactly at the end of the
    blob (a blob cut short, or with bytes after its last block, is caught here). The walk
    costs ~0.2 ms for an EIGER 4M frame (≈2000 blocks); ``walk=False`` skips it when the
    frame is decoded soon anyway (the decoder reports a truncated stream as corrupt).
    """
    itemsize = ITEMSIZE.get(frame.dtype, 0)
    if itemsize == 0:
        return f"unsupported dtype {frame.dtype!r}; expected one of {', '.join(DTYPES)}"
    rows, cols = frame.shape
    nbytes = rows * cols * itemsize
    blob = frame.blob
    if frame.encoding == "raw":
        if len(blob) != nbytes:
            return f"raw blob holds {len(blob)} bytes, {rows}×{cols} {frame.dtype} needs {nbytes}"
        return ""
    if frame.encoding not in ("bslz4", "lz4"):
        return f"unknown encoding {frame.encoding!r}; expected one of {', '.join(ENCODINGS)}"
    if len(blob) < HEADER.size:
        return f"{frame.encoding} blob of {len(blob)} bytes is shorter than its 12-byte header"
    declared, block_bytes = HEADER.unpack_from(blob)
    if declared != nbytes:
        return (f"{frame.encoding} header declares {declared} decoded bytes, "
                f"{rows}×{cols} {frame.dtype} needs {nbytes}")
    if frame.encoding == "bslz4":
        if block_bytes == 0 or block_bytes % (itemsize * BSHUF_MULT):
            return f"bslz4 header block size {block_bytes} is not a positive multiple of {itemsize * BSHUF_MULT} bytes"
        n = nbytes // itemsize
        block_elems = block_bytes // itemsize
        partial = n % block_elems
        partial -= partial % BSHUF_MULT
        nblocks = n // block_elems + (1 if partial else 0)
        tail = (n % BSHUF_MULT) * itemsize
    else:
        if block_bytes == 0:
            return "lz4 header block size is 0"
        nblocks = -(-nbytes // block_bytes)
        tail = 0
    return _walk_blocks(blob, nblocks, tail, frame.encoding, declared) if walk else ""


def _walk_blocks(blob, nblocks: int, tail: int, encoding: str, declared: int) -> str:
    pos = HEADER.size
    end = len(blob)
    unpack = BLOCK_LEN.unpack_from
    for i in range(nblocks):
        if pos + 4 > end:
            return (f"{encoding} blob is cut short: {end} bytes end inside block {i} of {nblocks} "
                    f"that its header ({declared} decoded bytes) declares")
        pos += 4 + unpack(blob, pos)[0]
    if pos + tail > end:
        return (f"{encoding} blob is cut short: its {nblocks} blocks need at least {pos + tail} bytes, "
                f"blob holds {end}")
    if pos + tail < end:
        return f"{encoding} blob holds {end - pos - tail} bytes after its last block"
    return ""


def frame_lz4_block(block, nbytes: int) -> bytes:
    """One raw LZ4 block of ``nbytes`` decoded bytes → the ``lz4`` framing (one block)."""
    return b"".join((HEADER.pack(nbytes, nbytes), BLOCK_LEN.pack(len(block)), block))


def unframe_lz4(blob: bytes) -> bytes:
    """The ``lz4`` framing → one raw LZ4 block (a multi-block blob is decoded and recompressed)."""
    if len(blob) < HEADER.size:
        raise ValueError("lz4 blob shorter than its 12-byte header")
    nbytes, block_bytes = HEADER.unpack_from(blob)
    if block_bytes == 0:
        raise ValueError("lz4 blob header has block size 0")
    nblocks = -(-nbytes // block_bytes)
    pos = HEADER.size
    if nblocks == 1:
        (n,) = BLOCK_LEN.unpack_from(blob, pos)
        block = blob[pos + 4:pos + 4 + n]
        if len(block) != n or pos + 4 + n != len(blob):
            raise ValueError("lz4 blob does not hold exactly one block")
        return bytes(block)
    raw = bytearray()
    for i in range(nblocks):
        (n,) = BLOCK_LEN.unpack_from(blob, pos)
        size = min(block_bytes, nbytes - i * block_bytes)
        raw += lz4.block.decompress(blob[pos + 4:pos + 4 + n], uncompressed_size=size)
        pos += 4 + n
    return lz4.block.compress(bytes(raw), store_size=False)
