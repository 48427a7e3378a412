"""Selective decoding of ``bslz4`` frames: the whole-frame valid sum, only the needed pixels.

The ROI pass reads only the pixels of the peak windows and their 8 neighbours (a few % of an
EIGER frame), and the whole frame contributes one number: the sum (and number) of its valid
pixels. :class:`SelectiveDecoder` gets both from one pass over the compressed blocks: every
8 KiB bitshuffle block is LZ4-decompressed into a scratch buffer that stays in cache, its
valid-pixel sum is taken from its bit planes by popcounts (no unshuffle), and only the
8-pixel groups that hold a needed pixel are bit-unshuffled into the caller's buffer. The
rest of the output buffer is never written. See docs/partial_decode.md and the kernels in
``stream/bslz4_partial_kernel.py``.

For ``lz4`` and ``raw`` frames this path does not apply (:meth:`SelectiveDecoder.supports`
is False): the caller decodes them in full with :class:`~stream.chunk_codec.ChunkDecoder`.
"""

from __future__ import annotations

import sys

import numpy as np

from stream import bslz4_partial_kernel as _k
from stream.blob_framing import BSHUF_MULT, HEADER
from stream.chunk_codec import CorruptFrameError
from stream.encoded_frame import ITEMSIZE, EncodedFrame
from stream.neighbour_kernel import count_set_bits, flag_with_neighbours, set_bit_indices

#: Largest bitshuffle block accepted, in bytes (DECTRIS and our encoder use 8192); the scratch
#: buffer is this size, so a blob declaring a larger one is refused rather than allocated for.
MAX_BLOCK_BYTES = 1 << 20

_MESSAGES = {
    _k.ERR_CUT_IN_LENGTH: "blob is cut short: it ends inside the length of block {block} of {n_blocks}",
    _k.ERR_BLOCK_PAST_END: "block {block} of {n_blocks}: its compressed length runs past the end of the blob",
    _k.ERR_LZ4_CORRUPT: "block {block} of {n_blocks}: LZ4 data are truncated or corrupt",
    _k.ERR_BLOCK_SIZE: "block {block} of {n_blocks} decompresses to the wrong number of bytes",
    _k.ERR_TAIL_CUT: "blob is cut short: its last uncompressed elements are missing",
    _k.ERR_TRAILING: "blob holds bytes after its last element",
}


def with_neighbours(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Flat indices of ``pixels`` (flat, into a ``(rows, cols)`` frame) and of their 8 neighbours
    inside the frame (not wrapping across rows), unique and sorted (int64): the pixels the ROI
    pass reads, counting spikes, for the LUT's ``pixel_index``."""
    rows, cols = (int(v) for v in shape)
    pixels = np.ascontiguousarray(np.asarray(pixels).reshape(-1), dtype=np.int64)
    if pixels.size and (pixels.min() < 0 or pixels.max() >= rows * cols):
        raise ValueError(f"pixel indices must lie in [0, {rows * cols}), got [{pixels.min()}, {pixels.max()}]")
    # one bit per pixel, not np.unique over the 9 shifted copies (100 ms for an EIGER 4M's
    # windows, paid at every new detector setup while its frames wait), nor a byte (stream.neighbour_kernel)
    bits = np.zeros(-(-(rows * cols) // 64), dtype=np.uint64)
    flag_with_neighbours(pixels, rows, cols, bits)
    out = np.empty(count_set_bits(bits), dtype=np.int64)
    set_bit_indices(bits, out)
    return out


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)``, without its sort or hash table when ``values`` is sorted already
    (the groups of :func:`with_neighbours`' pixels are)."""
    values = np.asarray(values).reshape(-1)
    if values.size > 1 and not np.all(values[1:] >= values[:-1]):
        return np.unique(values)
    keep = np.empty(values.size, dtype=bool)
    keep[:1] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


class SelectiveDecoder:
    """Decodes the needed pixels of ``bslz4`` frames and sums the valid pixels of the whole frame.

    Built once per detector setup from:

    - ``shape``: ``(rows, cols)`` of the frame;
    - ``dtype``: ``"uint8"``, ``"uint16"`` or ``"uint32"`` (the frames' pixel type);
    - ``needed``: flat pixel indices (any integer array, ``0 <= i < rows * cols``, any order,
      repeats allowed) whose values the caller reads after :meth:`decode_into`, e.g. the LUT's
      pixels and their 8 neighbours;
    - ``masked``: bool ``(rows, cols)``, True for pixels left out of the valid sum;
    - ``whole_blocks``: decode every pixel of each bitshuffle block that holds a needed pixel
      (default False: only the 8-pixel groups that hold one, which is less work for the same
      needed values).

    Reuses every buffer: :meth:`decode_into` allocates nothing per frame. Not thread-safe
    (one instance per worker); holds no handle, so it pickles.
    """

    def __init__(self, shape: tuple[int, int], dtype: str, needed: np.ndarray, masked: np.ndarray,
                 whole_blocks: bool = False) -> None:
        if dtype not in ITEMSIZE:
            raise ValueError(f"unsupported dtype {dtype!r}; expected one of {', '.join(ITEMSIZE)}")
        rows, cols = (int(v) for v in shape)
        n = rows * cols
        if n <= 0:
            raise ValueError(f"empty frame shape {shape}")
        masked = np.asarray(masked)
        if masked.shape != (rows, cols) or masked.dtype != np.bool_:
            raise ValueError(f"masked must be bool {(rows, cols)}, got {masked.dtype} {masked.shape}")
        needed = np.asarray(needed).reshape(-1)
        if needed.size and not np.issubdtype(needed.dtype, np.integer):
            raise ValueError(f"needed must hold integer pixel indices, got {needed.dtype}")
        if needed.size and (needed.min() < 0 or needed.max() >= n):
            raise ValueError(f"needed pixel indices must lie in [0, {n}), got [{needed.min()}, {needed.max()}]")
        self.shape = (rows, cols)
        self.dtype = dtype
        self.itemsize = ITEMSIZE[dtype]
        self.n_pixels = n
        # one bit per pixel, 1 = counts towards the valid sum, in the bit layout of a bit plane
        # (pixel i = bit i % 8 of byte i // 8); padded to whole 64-bit words for word loads
        # (packed, then inverted: no 4 MB inverted copy of a 4M mask at every series setup)
        valid = np.packbits(masked.reshape(-1), bitorder="little")
        np.invert(valid, out=valid)
        if n % 8:
            valid[-1] &= (1 << (n % 8)) - 1  # the bits past the last pixel are 0: never counted
        self._valid8 = np.zeros(-(-valid.size // 8) * 8, dtype=np.uint8)
        self._valid8[:valid.size] = valid
        groups = sorted_unique(needed.astype(np.int64) // BSHUF_MULT)
        self.whole_blocks = whole_blocks
        self._groups_of_pixels = groups
        self._block_elems = -1
        self._needed_groups = groups.astype(np.uint64)
        self._scratch = np.zeros(0, dtype=np.uint8)
        self._rows = np.zeros(64, dtype=np.uint64)

    @property
    def needed_groups(self) -> np.ndarray:
        """Indices ``g`` (uint64, sorted) of the 8-pixel groups ``8g .. 8g+7`` written to ``out``
        (with ``whole_blocks``, expanded to whole blocks at the first :meth:`decode_into`, which
        learns the block size from the blob)."""
        return self._needed_groups

    def supports(self, frame: EncodedFrame) -> bool:
        """True when ``frame`` can go through :meth:`decode_into`: a ``bslz4`` frame of this
        decoder's dtype and shape (on a little-endian machine). Otherwise the caller decodes it
        in full (``ChunkDecoder``), which also reports what is wrong with it."""
        return (frame.encoding == "bslz4" and frame.dtype == self.dtype
                and tuple(frame.shape) == self.shape and sys.byteorder == "little")

    def _prepare(self, block_bytes: int) -> None:
        """Scratch buffer and needed groups for the blob's block size (once, unless it changes)."""
        block_elems = block_bytes // self.itemsize
        if block_elems == self._block_elems:
            return
        self._scratch = np.zeros(block_bytes + _k.SCRATCH_SLACK, dtype=np.uint8)
        groups = self._groups_of_pixels
        if self.whole_blocks and groups.size:
            # every group of every block holding a needed group (the tail group stays as is)
            per_block = block_elems // BSHUF_MULT
            n_groups = -(-self.n_pixels // BSHUF_MULT)
            blocks = np.unique(groups // per_block)
            groups = (blocks[:, None] * per_block + np.arange(per_block)).reshape(-1)
            groups = np.union1d(groups[groups < n_groups], self._groups_of_pixels)
        self._needed_groups = np.ascontiguousarray(groups, dtype=np.uint64)
        self._block_elems = block_elems

    def decode_into(self, frame: EncodedFrame, out: np.ndarray) -> tuple[int, int]:
        """Sum the valid pixels of ``frame`` and decode its needed pixels into ``out``.

        ``frame.blob`` holds the bytes (bytes, or any contiguous buffer such as a memoryview
        into shared memory): a frame whose bytes are still elsewhere (``frame.source``) is
        read first, as ``FrameProcessor.process_into`` does before decoding.

        ``out``: a C-contiguous array of at least ``rows * cols * itemsize`` bytes (any dtype;
        seen as the frame's dtype, flat, like ``ChunkDecoder.decode_into``); only the needed
        groups are written, the rest keeps what it held. Returns ``(valid_sum, n_valid)``:
        the sum in counts and the number of the pixels that are neither masked nor at the
        sentinel (dtype max: gaps, bad pixels), exactly as ``sum_valid_pixels`` on the full
        decode. Raises :class:`CorruptFrameError` naming what is wrong with the blob, and
        ValueError for a frame :meth:`supports` refuses or an unusable ``out``.
        """
        if not self.supports(frame):
            raise ValueError(f"selective decoding does not apply to a {frame.encoding} {frame.dtype} "
                             f"{tuple(frame.shape)} frame (this decoder: bslz4 {self.dtype} {self.shape}); "
                             "decode it in full")
        nbytes = self.n_pixels * self.itemsize
        if not out.flags.c_contiguous or out.nbytes < nbytes:
            raise ValueError(f"output buffer too small or not contiguous: {out.nbytes} < {nbytes} bytes")
        out8 = out.reshape(-1).view(np.uint8)[:nbytes]
        blob = np.frombuffer(frame.blob, dtype=np.uint8)
        # one compiled signature for bytes and writable buffers alike (the kernel only reads it)
        blob.flags.writeable = False
        if blob.size < HEADER.size:
            raise CorruptFrameError(f"bslz4 blob of {blob.size} bytes is shorter than its 12-byte header")
        declared, block_bytes = HEADER.unpack_from(frame.blob)
        if declared != nbytes:
            raise CorruptFrameError(f"bslz4 header declares {declared} decoded bytes, "
                                    f"{self.shape[0]}×{self.shape[1]} {self.dtype} needs {nbytes}")
        if block_bytes == 0 or block_bytes % (self.itemsize * BSHUF_MULT) or block_bytes > MAX_BLOCK_BYTES:
            raise CorruptFrameError(f"bslz4 header block size {block_bytes} is not a positive multiple of "
                                    f"{self.itemsize * BSHUF_MULT} bytes up to {MAX_BLOCK_BYTES}")
        self._prepare(block_bytes)
        status, block, total, count = _k.selective_pass(
            blob, np.uint64(self.n_pixels), np.uint64(self.itemsize), np.uint64(self._block_elems),
            self._valid8, self._needed_groups, self._scratch, self._rows, out8)
        if status != _k.OK:
            n_blocks = -(-(self.n_pixels - self.n_pixels % BSHUF_MULT) // self._block_elems)
            raise CorruptFrameError("bslz4 " + _MESSAGES[status].format(block=block, n_blocks=n_blocks))
        return int(total), int(count)
