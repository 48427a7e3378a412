"""numba kernels of the selective bitshuffle-LZ4 decoder (see ``stream/bslz4_partial.py``).

One pass over a ``bslz4`` blob (HDF5 filter framing, ``stream/blob_framing.py``): each
bitshuffle block is LZ4-decompressed into a small scratch buffer that stays in L1/L2; its
contribution to the whole-frame valid-pixel sum is taken from the bit planes as they are
(no unshuffle); only the 8-pixel groups the caller needs are bit-unshuffled into the output.
The high planes that repeat one plane (``lz4_decompress_planes``) are summed from it, and not
even written in a block with no needed group (docs/partial_decode.md).

Block layout (checked against ``bitshuffle.compress_lz4``): a block of ``m`` elements
(``m`` a multiple of 8) of ``8 * itemsize`` bits decompresses to ``8 * itemsize`` bit planes
of ``m / 8`` bytes each; plane ``b`` holds bit ``b`` of every (little-endian) element, element
``i`` of the block in bit ``i % 8`` of byte ``i // 8`` (least significant bit first). Seen as
little-endian uint64 words, element ``i`` is bit ``i % 64`` of word ``i // 64``: the same
layout as ``np.packbits(flags, bitorder="little")`` of per-pixel flags, which is how the
valid-pixel bits and the needed-group list are precomputed.

Indices are ``uint64`` throughout: numba adds a negative-index wrap-around test to every
signed index (about a third of a hot gather loop in this project, docs/polar_roi.md). Every
constant mixed with them is a ``uint64`` too: ``uint64 op int64`` is float64 in numba.

Nothing here allocates; every kernel is ``nogil`` and cached.
"""


from __future__ import annotations

import numba
import numpy as np

from stream.bitplane_kernel import block_valid_sum, unshuffle_needed
from stream.lz4_block_kernel import (  # noqa: F401  (re-exported: tests and the bench use them from here)
    LZ4_BAD_OFFSET,
    LZ4_OVERFLOW,
    LZ4_TRUNCATED,
    SCRATCH_SLACK,
    lz4_decompress_block,
    lz4_decompress_planes,
)
from stream.word_intrinsics import ALL_ONES, U0, U1, U2, U3, U4, U7, U8, U32, U255

# status codes of :func:`selective_pass` (the wrapper turns them into messages)
OK = 0
ERR_CUT_IN_LENGTH = 1      # the blob ends inside a block's 4-byte length
ERR_BLOCK_PAST_END = 2     # a block's length runs past the end of the blob
ERR_LZ4_CORRUPT = 3        # the LZ4 data are corrupt or truncated
ERR_BLOCK_SIZE = 4         # a block decompresses to the wrong number of bytes
ERR_TAIL_CUT = 5           # the uncompressed last n % 8 elements are missing
ERR_TRAILING = 6           # bytes after the last element


@numba.njit(cache=True, nogil=True)
def selective_pass(blob, n_elems, itemsize, block_elems, valid8, needed_groups, scratch8, rows, out8):
    """One pass over a ``bslz4`` blob: the whole frame's valid sum, the needed groups decoded.

    blob: uint8, the whole blob (12-byte header included, already checked by the caller:
        declared size = ``n_elems * itemsize``, block size ``block_elems * itemsize`` bytes).
    n_elems, itemsize, block_elems: uint64; ``block_elems`` a multiple of 8.
    valid8: uint8 packed flags, one bit per element (little bit order), 1 = not masked;
        at least ``ceil(n_elems / 8)`` bytes rounded up to a multiple of 8.
    needed_groups: sorted uint64 indices ``g`` of the 8-element groups ``8g .. 8g+7`` to decode
        into ``out`` (the trailing partial group ``n_elems // 8`` included if listed).
    scratch8: uint8, at least ``block_elems * itemsize + SCRATCH_SLACK`` bytes.
    rows: uint64 scratch of at least ``8 * itemsize`` words (the word transpose).
    out8: uint8, the output frame's ``n_elems * itemsize`` bytes (little-endian elements); only
        the needed groups are written.

    Returns ``(status, block, total, count)``: ``status`` is ``OK`` or an ``ERR_*`` code,
    ``block`` the index of the block at fault, ``total``/``count`` (uint64) the sum and number
    of valid pixels (neither masked nor at the sentinel, the dtype max).
    """
    n_planes = itemsize << U3
    n_full = n_elems // block_elems
    partial = n_elems - n_full * block_elems
    partial -= partial & U7
    n_blocks = n_full + (U1 if partial != U0 else U0)
    end = np.uint64(blob.size)
    pos = np.uint64(12)
    total = U0
    count = U0
    ng = np.uint64(needed_groups.size)
    gi = U0  # next needed group
    for blk in range(n_blocks):
        elems = block_elems if blk < n_full else partial
        nbytes = elems * itemsize
        if end - pos < U4:
            return ERR_CUT_IN_LENGTH, blk, total, count
        clen = ((np.uint64(blob[pos]) << np.uint64(24)) | (np.uint64(blob[pos + U1]) << np.uint64(16))
                | (np.uint64(blob[pos + U2]) << U8) | np.uint64(blob[pos + U3]))
        pos += U4
        if clen > end - pos:
            return ERR_BLOCK_PAST_END, blk, total, count
        plane_bytes = elems >> U3
        first_group = blk * (block_elems >> U3)
        # repeated high planes are summed from their template; they need not even be written
        # when the block has no needed group (word-aligned planes only, as the sum's fast path)
        needs_groups = gi < ng and needed_groups[gi] < first_group + plane_bytes
        repeats = plane_bytes if ((plane_bytes & U7) == U0 and (first_group & U7) == U0
                                  and plane_bytes >= U32) else U0
        got, template, end_plane = lz4_decompress_planes(blob, pos, pos + clen, scratch8, nbytes, repeats,
                                                         needs_groups)
        if got < 0:
            return ERR_LZ4_CORRUPT, blk, total, count
        if np.uint64(got) != nbytes:
            return ERR_BLOCK_SIZE, blk, total, count
        pos += clen
        rep_lo = template + U1 if end_plane != U0 else U0
        s, c = block_valid_sum(scratch8, plane_bytes, n_planes, valid8, first_group, rep_lo, end_plane)
        total += s
        count += c
        # the needed groups of this block, while its planes are in cache
        gi = unshuffle_needed(scratch8, plane_bytes, n_planes, first_group, needed_groups, gi, rows, out8)
    # the last n % 8 elements follow uncompressed, little-endian
    first_tail = n_full * block_elems + partial
    n_tail = n_elems - first_tail
    if end - pos < n_tail * itemsize:
        return ERR_TAIL_CUT, n_blocks, total, count
    if end - pos > n_tail * itemsize:
        return ERR_TRAILING, n_blocks, total, count
    tail_group = first_tail >> U3
    write_tail = False
    while gi < ng:
        if needed_groups[gi] == tail_group:
            write_tail = True
        gi += U1
    sentinel = (U1 << n_planes) - U1 if n_planes < np.uint64(64) else ALL_ONES
    for t in range(n_tail):
        v = U0
        for k in range(itemsize):
            v |= np.uint64(blob[pos + t * itemsize + k]) << (k << U3)
        i = first_tail + t
        if (np.uint64(valid8[i >> U3]) >> (i & U7)) & U1 and v != sentinel:
            total += v
            count += U1
        if write_tail:
            for k in range(itemsize):
                out8[i * itemsize + k] = np.uint8((v >> (k << U3)) & U255)
    return OK, n_blocks, total, count
