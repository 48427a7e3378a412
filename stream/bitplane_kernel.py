"""numba kernels on the bit planes of one bitshuffle block: valid-pixel sum and selective unshuffle.

A block of ``m`` elements of ``8 * itemsize`` bits is ``8 * itemsize`` planes of ``m / 8``
bytes; plane ``b`` holds bit ``b`` of every element, element ``i`` in bit ``i % 8`` of byte
``i // 8`` (see ``stream/bslz4_partial_kernel.py``). The sum of the valid elements comes from
popcounts of the planes, without unshuffling; only the needed 8-element groups (or whole
64-element words holding several) are transposed back into elements. Indices are ``uint64``.
"""

from __future__ import annotations

import numba
import numpy as np

from stream.word_intrinsics import ALL_ONES, U0, U1, U2, U3, U4, U7, U8, U32, U255, load_u64, popcount64, store_u64

_LO32 = np.uint64(0xFFFFFFFF)
_M16 = np.uint64(0x0000FFFF0000FFFF)
_M8 = np.uint64(0x00FF00FF00FF00FF)
# masks of the 8×8 bit transpose (Hacker's Delight, transpose8 on one 64-bit word)
_T7 = np.uint64(0x00AA00AA00AA00AA)
_T14 = np.uint64(0x0000CCCC0000CCCC)
_T28 = np.uint64(0x00000000F0F0F0F0)
_S7 = np.uint64(7)
_S14 = np.uint64(14)
_S28 = np.uint64(28)

#: A 64-element word with at least this many needed 8-element groups is unshuffled whole
#: (:func:`unshuffle_word`), one with fewer group by group (:func:`unshuffle_group`).
WORD_MIN_GROUPS = np.uint64(3)


@numba.njit(cache=True, nogil=True, inline="always")
def _plane_start(b, plane_bytes, rep_lo, rep_hi):
    """Byte offset of plane ``b``: planes ``rep_lo .. rep_hi - 1`` are read from plane ``rep_lo - 1``."""
    if b >= rep_lo and b < rep_hi:
        return (rep_lo - U1) * plane_bytes
    return b * plane_bytes


@numba.njit(cache=True, nogil=True)
def block_valid_sum(planes8, plane_bytes, n_planes, valid8, valid_start, rep_lo, rep_hi):
    """Sum and count of the valid elements of one decompressed block, from its bit planes.

    ``planes8``: uint8, ``n_planes`` planes of ``plane_bytes`` bytes; ``valid8``: uint8 packed
    flags (1 = not masked), the block's first element at byte ``valid_start``. Planes
    ``rep_lo .. rep_hi - 1`` (uint64; none when ``rep_hi <= rep_lo``) are copies of plane
    ``rep_lo - 1``, written or not (``lz4_decompress_planes``): that plane is read in their
    place, and its popcount is counted for each without reading it again. Sentinel elements
    (dtype max, every bit set) are the bits set in the AND of all planes. Returns ``(sum, n)`` as uint64 with
    sum = Σ_b 2^b·popcount(plane_b & valid) − max·n_sentinel, n = popcount(valid) − n_sentinel.
    Words of 64 elements when ``plane_bytes`` and ``valid_start`` are multiples of 8 (every
    block of an 8192-byte-block blob but a short last one), bytes otherwise.
    """
    total = U0
    count = U0
    sentinel = (U1 << n_planes) - U1 if n_planes < np.uint64(64) else ALL_ONES
    if (plane_bytes & U7) == U0 and (valid_start & U7) == U0:
        n_words = plane_bytes >> U3
        # the planes above the highest one with a bit set for a valid element add nothing: find
        # it with an AND-OR pass (cheaper than the popcount; the high planes of a frame are zero
        # but for the gaps and bad pixels at the sentinel, which the mask leaves out)
        top = n_planes
        while top != U0:
            b = top - U1
            if b >= rep_lo and b < rep_hi:
                # a repeated plane is empty if and only if its template is: look at the
                # template; if it is empty, so are the planes from it to this one
                b = rep_lo - U1
            base = b * plane_bytes
            acc = U0
            for w in range(n_words):
                off = w << U3
                acc |= load_u64(planes8, base + off) & load_u64(valid8, valid_start + off)
            if acc != U0:
                break
            top = b
        # plane by plane, word by word: the inner loop is a plain reduction that LLVM
        # vectorizes (vector popcount)
        s_template = U0
        for b in range(top):
            if b >= rep_lo and b < rep_hi:
                total += s_template << b
                continue
            base = b * plane_bytes
            s = U0
            for w in range(n_words):
                off = w << U3
                s += popcount64(load_u64(planes8, base + off) & load_u64(valid8, valid_start + off))
            total += s << b
            s_template = s
        for w in range(n_words):
            count += popcount64(load_u64(valid8, valid_start + (w << U3)))
        if top == n_planes:
            # sentinel elements have the top bit set: only words where a valid element has it
            # need the AND of all planes (rare: gaps and known bad pixels are masked)
            last = _plane_start(n_planes - U1, plane_bytes, rep_lo, rep_hi)
            for w in range(n_words):
                off = w << U3
                acc_and = load_u64(planes8, last + off) & load_u64(valid8, valid_start + off)
                if acc_and != U0:
                    for b in range(n_planes - U1):
                        acc_and &= load_u64(planes8, _plane_start(b, plane_bytes, rep_lo, rep_hi) + off)
                    n_sent = popcount64(acc_and)
                    total -= n_sent * sentinel
                    count -= n_sent
    else:
        for w in range(plane_bytes):
            m = np.uint64(valid8[valid_start + w])
            if m == U0:
                continue
            acc_and = U255
            s = U0
            for b in range(n_planes):
                x = np.uint64(planes8[_plane_start(b, plane_bytes, rep_lo, rep_hi) + w])
                acc_and &= x
                s += popcount64(x & m) << b
            n_sent = popcount64(acc_and & m)
            total += s - n_sent * sentinel
            count += popcount64(m) - n_sent
    return total, count


# --------------------------------------------------------------------------- unshuffle
@numba.njit(cache=True, nogil=True, inline="always")
def _transpose8(x):
    """8×8 bit transpose of a uint64 seen as 8 rows (bytes) of 8 bits: bit (r, c) ↔ bit (c, r)."""
    t = (x ^ (x >> _S7)) & _T7
    x = x ^ t ^ (t << _S7)
    t = (x ^ (x >> _S14)) & _T14
    x = x ^ t ^ (t << _S14)
    t = (x ^ (x >> _S28)) & _T28
    return x ^ t ^ (t << _S28)


@numba.njit(cache=True, nogil=True, inline="always")
def _gather_transpose(planes8, plane_bytes, byte, group_in_block):
    """Row ``e`` (byte ``e``) of the result: byte ``byte`` of element ``e`` of the group, from the
    group's byte in planes ``8·byte .. 8·byte+7`` (an 8×8 bit matrix, row = plane, column =
    element, transposed)."""
    base = (byte << U3) * plane_bytes + group_in_block
    x = U0
    for k in range(U8):
        x |= np.uint64(planes8[base + k * plane_bytes]) << (k << U3)
    return _transpose8(x)


@numba.njit(cache=True, nogil=True, inline="always")
def _zip8(a, b):
    """Bytes 0..3 of ``a`` and ``b`` interleaved: a0 b0 a1 b1 a2 b2 a3 b3 (as 16-bit lanes a_i | b_i << 8)."""
    a &= _LO32
    b &= _LO32
    a = (a | (a << np.uint64(16))) & _M16
    a = (a | (a << U8)) & _M8
    b = (b | (b << np.uint64(16))) & _M16
    b = (b | (b << U8)) & _M8
    return a | (b << U8)


@numba.njit(cache=True, nogil=True, inline="always")
def _zip16(a, b):
    """16-bit lanes 0..1 of ``a`` and ``b`` interleaved: as 32-bit lanes a_i | b_i << 16."""
    a &= _LO32
    b &= _LO32
    a = (a | (a << np.uint64(16))) & _M16
    b = (b | (b << np.uint64(16))) & _M16
    return a | (b << np.uint64(16))


@numba.njit(cache=True, nogil=True)
def unshuffle_group(planes8, plane_bytes, itemsize, group_in_block, out8, out_byte):
    """Bit-unshuffle the 8 elements of byte ``group_in_block`` of every plane into
    ``out8[out_byte:out_byte + 8 * itemsize]`` (uint8 view of the output, little-endian).

    One 8×8 bit transpose per byte of the element gives each element's bytes (one row each);
    the rows are then interleaved into whole elements with shifts and masks and written as
    64-bit words (2 uint32 / 4 uint16 / 8 uint8 elements per store).
    """
    y0 = _gather_transpose(planes8, plane_bytes, U0, group_in_block)
    if itemsize == U1:
        store_u64(out8, out_byte, y0)
        return
    y1 = _gather_transpose(planes8, plane_bytes, U1, group_in_block)
    h = np.uint64(32)
    if itemsize == U2:
        store_u64(out8, out_byte, _zip8(y0, y1))
        store_u64(out8, out_byte + U8, _zip8(y0 >> h, y1 >> h))
        return
    y2 = _gather_transpose(planes8, plane_bytes, U2, group_in_block)
    y3 = _gather_transpose(planes8, plane_bytes, U3, group_in_block)
    ab_lo = _zip8(y0, y1)
    ab_hi = _zip8(y0 >> h, y1 >> h)
    cd_lo = _zip8(y2, y3)
    cd_hi = _zip8(y2 >> h, y3 >> h)
    store_u64(out8, out_byte, _zip16(ab_lo, cd_lo))
    store_u64(out8, out_byte + U8, _zip16(ab_lo >> h, cd_lo >> h))
    store_u64(out8, out_byte + np.uint64(16), _zip16(ab_hi, cd_hi))
    store_u64(out8, out_byte + np.uint64(24), _zip16(ab_hi >> h, cd_hi >> h))


@numba.njit(cache=True, nogil=True, inline="always")
def _low_half_mask(s):
    """Bits ``c`` with ``c & s == 0`` (s a power of two ≤ 16): 0x5555…, 0x3333…, 0x0F0F…, …"""
    if s == np.uint64(16):
        return _M16
    if s == U8:
        return _M8
    if s == U4:
        return np.uint64(0x0F0F0F0F0F0F0F0F)
    if s == U2:
        return np.uint64(0x3333333333333333)
    return np.uint64(0x5555555555555555)


@numba.njit(cache=True, nogil=True, inline="always")
def _unshuffle_word_n(planes8, plane_bytes, n_planes, word_in_block, group_mask, rows, out8, out_byte,
                      itemsize):
    """The low ``n_planes`` planes transposed, written as elements of ``itemsize`` bytes (the
    planes above, if any, are zero in this word)."""
    off = word_in_block << U3
    for r in range(n_planes):
        rows[r] = load_u64(planes8, r * plane_bytes + off)
    s = n_planes >> U1
    while s != U0:
        mask = _low_half_mask(s)
        base = U0
        while base < n_planes:
            for r in range(base, base + s):
                a = rows[r]
                b = rows[r + s]
                t = ((a >> s) ^ b) & mask
                rows[r + s] = b ^ t
                rows[r] = a ^ (t << s)
            base += s << U1
        s >>= U1
    # row c, lane l (bits l·N .. l·N+N-1) now holds element l·N + c
    per_store = U8 // itemsize
    item_bits = itemsize << U3
    emask = (U1 << n_planes) - U1
    lane_mask = n_planes - U1
    for q in range(U8):
        if (group_mask >> q) & U1:
            e0 = q << U3
            sh = e0 & ~lane_mask  # l·N
            c0 = e0 & lane_mask
            for wi in range(itemsize):
                v = U0
                for i in range(per_store):
                    c = c0 + wi * per_store + i
                    v |= ((rows[c] >> sh) & emask) << (i * item_bits)
                store_u64(out8, out_byte + (e0 + wi * per_store) * itemsize, v)


@numba.njit(cache=True, nogil=True)
def unshuffle_word(planes8, plane_bytes, n_planes, word_in_block, group_mask, rows, out8, out_byte):
    """Bit-unshuffle the 64 elements of 64-bit word ``word_in_block`` of every plane and write the
    8-element groups ``q`` whose bit is set in ``group_mask`` (bit q = elements 8q .. 8q+7) to
    ``out8`` from byte ``out_byte`` (the word's first element; uint8 view, little-endian).

    The ``N = n_planes`` plane words form ``64 / N`` side-by-side N×N bit matrices (row = plane,
    column = element, one matrix per N-bit lane); log2(N) rounds of block swaps (Hacker's
    Delight's recursive transpose, every lane at once) turn row ``c`` into element ``c`` of each
    lane. About 8 operations per element for uint32 where :func:`unshuffle_group` needs ~25, so
    it pays when several groups of the word are needed. ``rows``: uint64 scratch of N words.
    Needs ``plane_bytes >= 8 * (word_in_block + 1)``.
    """
    # one inlined copy per plane count: with N a constant LLVM unrolls the rounds and the stores.
    # Only the planes up to the highest one set in this word are transposed, 8 or 16 of them
    # (3 rounds on 8 words, 4 on 16, instead of 5 on 32), and the elements written
    # zero-extended: window pixels below 256 counts are 96 % of the needed words of the
    # bench's uint32 frames; a bright spot's pixels take 16 planes, gaps and hot pixels 32.
    off = word_in_block << U3
    high8 = U0
    for r in range(U8, n_planes if n_planes < np.uint64(16) else np.uint64(16)):
        high8 |= load_u64(planes8, r * plane_bytes + off)
    high16 = U0
    for r in range(np.uint64(16), n_planes):
        high16 |= load_u64(planes8, r * plane_bytes + off)
    if high16 != U0:
        _unshuffle_word_n(planes8, plane_bytes, U32, word_in_block, group_mask, rows, out8, out_byte, U4)
    elif high8 != U0:
        if n_planes == U32:
            _unshuffle_word_n(planes8, plane_bytes, np.uint64(16), word_in_block, group_mask, rows, out8, out_byte,
                              U4)
        else:
            _unshuffle_word_n(planes8, plane_bytes, np.uint64(16), word_in_block, group_mask, rows, out8, out_byte,
                              U2)
    elif n_planes == U32:
        _unshuffle_word_n(planes8, plane_bytes, U8, word_in_block, group_mask, rows, out8, out_byte, U4)
    elif n_planes == np.uint64(16):
        _unshuffle_word_n(planes8, plane_bytes, U8, word_in_block, group_mask, rows, out8, out_byte, U2)
    else:
        _unshuffle_word_n(planes8, plane_bytes, U8, word_in_block, group_mask, rows, out8, out_byte, U1)


@numba.njit(cache=True, nogil=True)
def unshuffle_needed(planes8, plane_bytes, n_planes, first_group, needed_groups, gi, rows, out8):
    """Unshuffle the needed groups of one decompressed block into ``out8``; returns the index of
    the first needed group past the block.

    ``first_group``: index of the block's first 8-element group in the frame; ``needed_groups``:
    sorted group indices, those of this block from ``gi`` on. One 64-element word (8 groups) at
    a time: the whole-word transpose when ``WORD_MIN_GROUPS`` or more of its groups are needed
    (and the word is complete), else group by group.
    """
    itemsize = n_planes >> U3
    ng = np.uint64(needed_groups.size)
    stop = first_group + plane_bytes
    while gi < ng and needed_groups[gi] < stop:
        word = (needed_groups[gi] - first_group) >> U3
        group_mask = U0
        while gi < ng and needed_groups[gi] < stop and (needed_groups[gi] - first_group) >> U3 == word:
            group_mask |= U1 << ((needed_groups[gi] - first_group) & U7)
            gi += U1
        first_elem = (first_group + (word << U3)) << U3
        if popcount64(group_mask) >= WORD_MIN_GROUPS and (word << U3) + U8 <= plane_bytes:
            unshuffle_word(planes8, plane_bytes, n_planes, word, group_mask, rows, out8, first_elem * itemsize)
        else:
            for q in range(U8):
                if (group_mask >> q) & U1:
                    unshuffle_group(planes8, plane_bytes, itemsize, (word << U3) + q, out8,
                                    (first_elem + (q << U3)) * itemsize)
    return gi
