"""Decode and encode EIGER frame blobs (bitshuffle-LZ4 and LZ4, HDF5 framing).

Decoding uses the vendor's ``dectris-compression`` library. Its Python function returns
a new ``bytes`` per call (17 MB for an EIGER 4M uint32 frame, i.e. an ``mmap`` and ~4000
page faults per frame), so :class:`ChunkDecoder` calls the library's exported C entry
point ``compression_decompress_buffer`` through ``ctypes`` into a buffer it reuses. That
entry point is checked against the Python function on a known blob when the decoder is
built; if the check fails (a future ABI change) the decoder falls back to the Python
function, which is correct but allocates.
"""

from __future__ import annotations

import ctypes

import bitshuffle
import dectris.compression as _dectris
import lz4.block
import numpy as np

from stream.blob_framing import BLOCK_LEN, HEADER, declared_size
from stream.encoded_frame import EncodedFrame

#: bitshuffle's default target block size in bytes (BSHUF_TARGET_BLOCK_SIZE_B).
_BSHUF_BLOCK_BYTES = 8192
#: LZ4 filter (32004) default block size in bytes.
_LZ4_BLOCK_BYTES = 1 << 30

_ALGORITHM_ID = {"bslz4": 0, "lz4": 1}  # enum CompressionAlgorithm in compression.h
_COMPRESSION_ERROR = (1 << 64) - 1


class CorruptFrameError(ValueError):
    """A frame blob that cannot be decoded into the frame it claims to be."""


def _load_c_decompress():
    """The library's C ``compression_decompress_buffer`` or ``None`` if unusable."""
    try:
        lib = ctypes.CDLL(_dectris.__file__)
        fn = lib.compression_decompress_buffer
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_size_t
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t,
                   ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    probe = (np.arange(5000, dtype=np.uint32) * 2654435761 % 977).astype(np.uint32)
    for encoding in ("bslz4", "lz4"):
        blob = encode_frame(probe, encoding)
        out = np.zeros_like(probe)
        src = np.frombuffer(blob, dtype=np.uint8)
        n = fn(_ALGORITHM_ID[encoding], out.ctypes.data, out.nbytes, src.ctypes.data, src.size, 4)
        if n != out.nbytes or not np.array_equal(out, probe):
            return None
    return fn


class ChunkDecoder:
    """Decodes frame blobs into caller-owned arrays, without allocating per frame.

    One decoder per process (it holds a ctypes handle, which does not pickle).
    """

    def __init__(self) -> None:
        self._c_decompress = _load_c_decompress()

    def decode_into(self, frame: EncodedFrame, out: np.ndarray) -> np.ndarray:
        """Decode ``frame`` into ``out`` (any contiguous array with enough bytes).

        Returns a view of ``out`` with the frame's dtype and shape ``(rows, cols)``.
        Raises :class:`CorruptFrameError` naming what is wrong.
        """
        dtype = np.dtype(frame.dtype)
        rows, cols = frame.shape
        nbytes = rows * cols * dtype.itemsize
        if nbytes == 0:
            raise CorruptFrameError(f"empty frame shape {frame.shape}")
        if not out.flags.c_contiguous or out.nbytes < nbytes:
            raise ValueError(f"output buffer too small or not contiguous: {out.nbytes} < {nbytes} bytes")
        view = out.reshape(-1).view(np.uint8)[:nbytes].view(dtype).reshape(rows, cols)
        blob = frame.blob
        if frame.encoding == "raw":
            if len(blob) != nbytes:
                raise CorruptFrameError(f"raw blob holds {len(blob)} bytes, frame needs {nbytes}")
            view.reshape(-1)[:] = np.frombuffer(blob, dtype=dtype.newbyteorder("<"))
            return view
        if frame.encoding not in _ALGORITHM_ID:
            raise CorruptFrameError(f"unknown encoding {frame.encoding!r}")
        declared = declared_size(blob)
        if declared is None:
            raise CorruptFrameError(f"blob of {len(blob)} bytes is shorter than its 12-byte header")
        if declared != nbytes:
            raise CorruptFrameError(
                f"blob header says {declared} decoded bytes, frame {frame.shape} {frame.dtype} needs {nbytes}")
        if self._c_decompress is not None:
            # any buffer (bytes, or a memoryview into shared memory) is passed by address
            src = np.frombuffer(blob, dtype=np.uint8)
            n = self._c_decompress(_ALGORITHM_ID[frame.encoding], view.ctypes.data, nbytes,
                                   src.ctypes.data, src.size, dtype.itemsize)
            if n != nbytes:
                raise CorruptFrameError(f"{frame.encoding} stream is truncated or corrupt")
            return view
        try:
            raw = _dectris.decompress(bytes(blob), frame.encoding, elem_size=dtype.itemsize)
        except (RuntimeError, ValueError) as exc:
            raise CorruptFrameError(f"{frame.encoding} stream is truncated or corrupt ({exc})") from exc
        if len(raw) != nbytes:
            raise CorruptFrameError(f"decoded {len(raw)} bytes, frame needs {nbytes}")
        view.reshape(-1)[:] = np.frombuffer(raw, dtype=dtype)
        return view


def encode_frame(array: np.ndarray, encoding: str = "bslz4") -> bytes:
    """Encode a 2-D array as the DECTRIS file writer stores a chunk (HDF5 filter framing).

    ``bslz4`` matches the bitshuffle filter 32008 with LZ4, ``lz4`` the LZ4 filter 32004,
    ``raw`` is the little-endian bytes.
    """
    array = np.ascontiguousarray(array)
    if encoding == "raw":
        return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    if encoding == "bslz4":
        block_elems = _BSHUF_BLOCK_BYTES // array.itemsize
        body = bitshuffle.compress_lz4(array.reshape(-1), block_elems)
        return HEADER.pack(array.nbytes, block_elems * array.itemsize) + body.tobytes()
    if encoding == "lz4":
        raw = array.tobytes()
        parts = [HEADER.pack(len(raw), _LZ4_BLOCK_BYTES)]
        for start in range(0, len(raw), _LZ4_BLOCK_BYTES):
            block = lz4.block.compress(raw[start:start + _LZ4_BLOCK_BYTES], store_size=False)
            parts += [BLOCK_LEN.pack(len(block)), block]
        return b"".join(parts)
    raise ValueError(f"unknown encoding {encoding!r}; expected one of bslz4, lz4, raw")
