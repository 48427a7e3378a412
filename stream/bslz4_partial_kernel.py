"""numba kernels of the selective bitshuffle-LZ4 decoder (see ``stream/bslz4_partial.py``).

One pass over a ``bslz4`` blob (HDF5 filter framing, ``stream/blob_framing.py``): each
bitshuffle block is LZ4-decompressed into a small scratch buffer that stays in L1/L2; its
contribution to the whole-frame valid-pixel sum is taken from the bit planes as they are
(no unshuffle); only the 8-pixel groups the caller needs are bit-unshuffled into the output.

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
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U2 = np.uint64(2)
_U3 = np.uint64(3)
_U4 = np.uint64(4)
_U7 = np.uint64(7)
_U8 = np.uint64(8)
_U15 = np.uint64(15)
_U32 = np.uint64(32)
_U255 = np.uint64(255)
_ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_BYTE_SPREAD = np.uint64(0x0101010101010101)
_SPREAD16 = np.uint64(0x0001000100010001)
_SPREAD32 = np.uint64(0x0000000100000001)
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

#: Bytes the LZ4 scratch buffer needs past the decoded block: literal and match copies go
#: up to 32 bytes at a time and may write up to 31 bytes past the end they checked.
SCRATCH_SLACK = 32

#: A 64-element word with at least this many needed 8-element groups is unshuffled whole
#: (:func:`unshuffle_word`), one with fewer group by group (:func:`unshuffle_group`).
WORD_MIN_GROUPS = np.uint64(3)

# status codes of :func:`selective_pass` (the wrapper turns them into messages)
OK = 0
ERR_CUT_IN_LENGTH = 1      # the blob ends inside a block's 4-byte length
ERR_BLOCK_PAST_END = 2     # a block's length runs past the end of the blob
ERR_LZ4_CORRUPT = 3        # the LZ4 data are corrupt or truncated
ERR_BLOCK_SIZE = 4         # a block decompresses to the wrong number of bytes
ERR_TAIL_CUT = 5           # the uncompressed last n % 8 elements are missing
ERR_TRAILING = 6           # bytes after the last element

# errors of :func:`lz4_decompress_block` (negative, so a byte count is never mistaken for one)
LZ4_TRUNCATED = -1
LZ4_BAD_OFFSET = -2
LZ4_OVERFLOW = -3


# --------------------------------------------------------------------------- intrinsics
@intrinsic
def popcount64(typingctx, x):
    """Number of set bits of a uint64 (LLVM ``ctpop``: one ``popcnt`` instruction on x86-64)."""
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return types.uint64(types.uint64), codegen


@intrinsic
def load_u64(typingctx, arr, byte_index):
    """8 bytes of a uint8 array from ``byte_index`` as one native (little-endian) uint64.

    Unaligned and unchecked: the caller has checked ``byte_index + 8 <= arr.size``.
    """
    if not (isinstance(arr, types.Array) and arr.dtype == types.uint8 and byte_index == types.uint64):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        return builder.load(builder.bitcast(ptr, ir.IntType(64).as_pointer()), align=1)

    return types.uint64(arr, byte_index), codegen


@intrinsic
def store_u64(typingctx, arr, byte_index, value):
    """Write ``value`` as 8 native-order bytes of a uint8 array at ``byte_index``.

    Unaligned and unchecked: the caller has checked ``byte_index + 8 <= arr.size``.
    """
    if not (isinstance(arr, types.Array) and arr.dtype == types.uint8 and byte_index == types.uint64
            and value == types.uint64):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        builder.store(args[2], builder.bitcast(ptr, ir.IntType(64).as_pointer()), align=1)
        return context.get_dummy_value()

    return types.void(arr, byte_index, value), codegen


@intrinsic
def copy32(typingctx, dst, to, src, frm):
    """Copy 32 bytes ``src[frm:frm + 32]`` to ``dst[to:to + 32]`` as one unaligned vector load and
    store (two 16-byte or one 32-byte move on x86-64). Unchecked: the caller has checked both
    ranges; when ``dst is src`` the ranges must not overlap (or the source must lie 32+ bytes
    before the destination)."""
    ok = all(isinstance(a, types.Array) and a.dtype == types.uint8 for a in (dst, src))
    if not (ok and to == types.uint64 and frm == types.uint64):
        return None

    def codegen(context, builder, signature, args):
        vec = ir.VectorType(ir.IntType(64), 4)
        d = context.make_array(signature.args[0])(context, builder, args[0])
        s_ = context.make_array(signature.args[2])(context, builder, args[2])
        v = builder.load(builder.bitcast(builder.gep(s_.data, [args[3]]), vec.as_pointer()), align=1)
        builder.store(v, builder.bitcast(builder.gep(d.data, [args[1]]), vec.as_pointer()), align=1)
        return context.get_dummy_value()

    return types.void(dst, to, src, frm), codegen


@intrinsic
def splat32(typingctx, dst, to, value):
    """Write the uint64 ``value`` 4 times (32 bytes) at ``dst[to]``; unaligned, unchecked."""
    if not (isinstance(dst, types.Array) and dst.dtype == types.uint8 and to == types.uint64
            and value == types.uint64):
        return None

    def codegen(context, builder, signature, args):
        vec = ir.VectorType(ir.IntType(64), 4)
        d = context.make_array(signature.args[0])(context, builder, args[0])
        v = ir.Constant(vec, ir.Undefined)
        for i in range(4):
            v = builder.insert_element(v, args[2], ir.Constant(ir.IntType(32), i))
        builder.store(v, builder.bitcast(builder.gep(d.data, [args[1]]), vec.as_pointer()), align=1)
        return context.get_dummy_value()

    return types.void(dst, to, value), codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _copy_match(dst, op, offset, ml):
    """Copy the ``ml`` bytes from ``offset`` bytes back to ``dst[op:]`` (the ranges may overlap:
    LZ4 repeats the pattern). Writes up to 31 bytes past ``op + ml``; the caller checked
    ``0 < offset <= op`` and room for that in ``dst``."""
    m = op - offset
    if offset >= _U32:
        # most bytes of a frame: a zero plane copied from an earlier zero plane (offset =
        # the plane size); each 32-byte read ends at or before the write position
        k = _U0
        while k < ml:
            copy32(dst, op + k, dst, m + k)
            k += _U32
    elif offset >= _U8:
        k = _U0
        while k < ml:
            store_u64(dst, op + k, load_u64(dst, m + k))
            k += _U8
    elif offset == _U1:
        # a run of one byte value (a zero plane on its own)
        v = np.uint64(dst[m]) * _BYTE_SPREAD
        k = _U0
        while k < ml:
            splat32(dst, op + k, v)
            k += _U32
    elif offset == _U2 or offset == _U4:
        # periods that divide 8: one 64-bit pattern repeated
        if offset == _U2:
            v = (np.uint64(dst[m]) | (np.uint64(dst[m + _U1]) << _U8)) * _SPREAD16
        else:
            v = (np.uint64(dst[m]) | (np.uint64(dst[m + _U1]) << _U8) | (np.uint64(dst[m + _U2]) << np.uint64(16))
                 | (np.uint64(dst[m + _U3]) << np.uint64(24))) * _SPREAD32
        k = _U0
        while k < ml:
            splat32(dst, op + k, v)
            k += _U32
    else:
        # periods 3, 5, 6, 7: bytewise until the pattern is 8+ bytes long, then 8 at a time from
        # one period-multiple back (the output repeats with any multiple). A long match (zero
        # planes after a pattern of 6 bytes: 7 MB of a frame without gaps) goes back a multiple
        # that is also one of 8 (24, 40, 56): each load then reads what one earlier 8-byte store
        # wrote, where a load straddling two recent stores stalls (store-to-load forwarding
        # fails), which made such a frame's LZ4 4× slower.
        if ml > np.uint64(64):
            period = np.uint64(24) if offset == _U3 or offset == np.uint64(6) else offset << _U3
        else:
            period = offset
            while period < _U8:
                period += offset
        head = period if period < ml else ml
        for k in range(head):
            dst[op + k] = dst[m + k]
        k = head
        while k < ml:
            store_u64(dst, op + k, load_u64(dst, op + k - period))
            k += _U8


# --------------------------------------------------------------------------- LZ4
@numba.njit(cache=True, nogil=True)
def lz4_decompress_block(src, start, end, dst, capacity):
    """Decompress the raw LZ4 block ``src[start:end]`` into ``dst[:capacity]``.

    ``src`` and ``dst`` are uint8 arrays; ``start``, ``end``, ``capacity`` uint64 byte
    offsets/counts. ``dst`` must hold ``capacity + SCRATCH_SLACK`` bytes (copies go up to
    32 bytes at a time). Returns the decoded bytes (int64), or a negative ``LZ4_*`` code for a block
    that is truncated, refers before its start, or would decode past ``capacity``; it never
    reads ``src`` outside ``[start, end)`` nor writes ``dst`` past ``capacity + 31``.
    """
    ip = start
    op = _U0
    while True:
        if ip >= end:
            return LZ4_TRUNCATED
        token = np.uint64(src[ip])
        ip += _U1
        # literals: length in the high nibble, 15 means "more length bytes follow"
        lit = token >> _U4
        if lit < _U15 and end - ip >= _U32 and capacity - op >= _U32:
            # the common short sequence (as in the reference decoder's fast loop): up to 14
            # literals copied with one fixed-size move, a match of up to 18 bytes. 32 input bytes are left, so the sequence is not the last
            # (literals only) one and its offset lies inside the block; 32 output bytes are
            # left, so the fixed-size writes stay inside the scratch and its slack.
            copy32(dst, op, src, ip)
            ip += lit
            op += lit
            offset = np.uint64(src[ip]) | (np.uint64(src[ip + _U1]) << _U8)
            ml = token & _U15
            if ml != _U15 and offset != _U0 and offset <= op and ml + _U4 <= capacity - op:
                ip += _U2
                ml += _U4
                _copy_match(dst, op, offset, ml)
                op += ml
                continue
            # anything else: the general match code below (the literals are done)
            lit = _U0
        if lit == _U15:
            while True:
                if ip >= end:
                    return LZ4_TRUNCATED
                b = np.uint64(src[ip])
                ip += _U1
                lit += b
                if b != _U255:
                    break
        if lit > end - ip:
            return LZ4_TRUNCATED
        if lit > capacity - op:
            return LZ4_OVERFLOW
        if lit != _U0:
            if end - ip >= lit + _U32:
                # 32 bytes at a time; may read up to 31 bytes past the literals (still < end) and
                # write up to 31 past them (the scratch's slack, overwritten next)
                k = _U0
                while k < lit:
                    copy32(dst, op + k, src, ip + k)
                    k += _U32
            elif end - ip >= lit + _U8:
                k = _U0
                while k < lit:
                    store_u64(dst, op + k, load_u64(src, ip + k))
                    k += _U8
            else:
                for k in range(lit):
                    dst[op + k] = src[ip + k]
            ip += lit
            op += lit
        if ip == end:
            return np.int64(op)  # the last sequence holds literals only
        # match: 2-byte little-endian offset back into the output, length in the low nibble + 4
        if end - ip < _U2:
            return LZ4_TRUNCATED
        offset = np.uint64(src[ip]) | (np.uint64(src[ip + _U1]) << _U8)
        ip += _U2
        if offset == _U0 or offset > op:
            return LZ4_BAD_OFFSET
        ml = token & _U15
        if ml == _U15:
            while True:
                if ip >= end:
                    return LZ4_TRUNCATED
                b = np.uint64(src[ip])
                ip += _U1
                ml += b
                if b != _U255:
                    break
        ml += _U4
        if ml > capacity - op:
            return LZ4_OVERFLOW
        _copy_match(dst, op, offset, ml)
        op += ml


# --------------------------------------------------------------------------- valid-pixel sum
@numba.njit(cache=True, nogil=True)
def block_valid_sum(planes8, plane_bytes, n_planes, valid8, valid_start):
    """Sum and count of the valid elements of one decompressed block, from its bit planes.

    ``planes8``: uint8, ``n_planes`` planes of ``plane_bytes`` bytes; ``valid8``: uint8 packed
    flags (1 = not masked), the block's first element at byte ``valid_start``. Sentinel elements (dtype max, every
    bit set) are the bits set in the AND of all planes. Returns ``(sum, n)`` as uint64 with
    sum = Σ_b 2^b·popcount(plane_b & valid) − max·n_sentinel, n = popcount(valid) − n_sentinel.
    Words of 64 elements when ``plane_bytes`` and ``valid_start`` are multiples of 8 (every
    block of an 8192-byte-block blob but a short last one), bytes otherwise.
    """
    total = _U0
    count = _U0
    sentinel = (_U1 << n_planes) - _U1 if n_planes < np.uint64(64) else _ALL_ONES
    if (plane_bytes & _U7) == _U0 and (valid_start & _U7) == _U0:
        n_words = plane_bytes >> _U3
        # the planes above the highest one with a bit set for a valid element add nothing: find
        # it with an AND-OR pass (cheaper than the popcount; the high planes of a frame are zero
        # but for the gaps and bad pixels at the sentinel, which the mask leaves out)
        top = n_planes
        while top != _U0:
            base = (top - _U1) * plane_bytes
            acc = _U0
            for w in range(n_words):
                off = w << _U3
                acc |= load_u64(planes8, base + off) & load_u64(valid8, valid_start + off)
            if acc != _U0:
                break
            top -= _U1
        # plane by plane, word by word: the inner loop is a plain reduction that LLVM
        # vectorizes (vector popcount)
        for b in range(top):
            base = b * plane_bytes
            s = _U0
            for w in range(n_words):
                off = w << _U3
                s += popcount64(load_u64(planes8, base + off) & load_u64(valid8, valid_start + off))
            total += s << b
        for w in range(n_words):
            count += popcount64(load_u64(valid8, valid_start + (w << _U3)))
        if top == n_planes:
            # sentinel elements have the top bit set: only words where a valid element has it
            # need the AND of all planes (rare: gaps and known bad pixels are masked)
            last = (n_planes - _U1) * plane_bytes
            for w in range(n_words):
                off = w << _U3
                acc_and = load_u64(planes8, last + off) & load_u64(valid8, valid_start + off)
                if acc_and != _U0:
                    for b in range(n_planes - _U1):
                        acc_and &= load_u64(planes8, b * plane_bytes + off)
                    n_sent = popcount64(acc_and)
                    total -= n_sent * sentinel
                    count -= n_sent
    else:
        for w in range(plane_bytes):
            m = np.uint64(valid8[valid_start + w])
            if m == _U0:
                continue
            acc_and = _U255
            s = _U0
            for b in range(n_planes):
                x = np.uint64(planes8[b * plane_bytes + w])
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
    base = (byte << _U3) * plane_bytes + group_in_block
    x = _U0
    for k in range(_U8):
        x |= np.uint64(planes8[base + k * plane_bytes]) << (k << _U3)
    return _transpose8(x)


@numba.njit(cache=True, nogil=True, inline="always")
def _zip8(a, b):
    """Bytes 0..3 of ``a`` and ``b`` interleaved: a0 b0 a1 b1 a2 b2 a3 b3 (as 16-bit lanes a_i | b_i << 8)."""
    a &= _LO32
    b &= _LO32
    a = (a | (a << np.uint64(16))) & _M16
    a = (a | (a << _U8)) & _M8
    b = (b | (b << np.uint64(16))) & _M16
    b = (b | (b << _U8)) & _M8
    return a | (b << _U8)


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
    y0 = _gather_transpose(planes8, plane_bytes, _U0, group_in_block)
    if itemsize == _U1:
        store_u64(out8, out_byte, y0)
        return
    y1 = _gather_transpose(planes8, plane_bytes, _U1, group_in_block)
    h = np.uint64(32)
    if itemsize == _U2:
        store_u64(out8, out_byte, _zip8(y0, y1))
        store_u64(out8, out_byte + _U8, _zip8(y0 >> h, y1 >> h))
        return
    y2 = _gather_transpose(planes8, plane_bytes, _U2, group_in_block)
    y3 = _gather_transpose(planes8, plane_bytes, _U3, group_in_block)
    ab_lo = _zip8(y0, y1)
    ab_hi = _zip8(y0 >> h, y1 >> h)
    cd_lo = _zip8(y2, y3)
    cd_hi = _zip8(y2 >> h, y3 >> h)
    store_u64(out8, out_byte, _zip16(ab_lo, cd_lo))
    store_u64(out8, out_byte + _U8, _zip16(ab_lo >> h, cd_lo >> h))
    store_u64(out8, out_byte + np.uint64(16), _zip16(ab_hi, cd_hi))
    store_u64(out8, out_byte + np.uint64(24), _zip16(ab_hi >> h, cd_hi >> h))


@numba.njit(cache=True, nogil=True, inline="always")
def _low_half_mask(s):
    """Bits ``c`` with ``c & s == 0`` (s a power of two ≤ 16): 0x5555…, 0x3333…, 0x0F0F…, …"""
    if s == np.uint64(16):
        return _M16
    if s == _U8:
        return _M8
    if s == _U4:
        return np.uint64(0x0F0F0F0F0F0F0F0F)
    if s == _U2:
        return np.uint64(0x3333333333333333)
    return np.uint64(0x5555555555555555)


@numba.njit(cache=True, nogil=True, inline="always")
def _unshuffle_word_n(planes8, plane_bytes, n_planes, word_in_block, group_mask, rows, out8, out_byte):
    off = word_in_block << _U3
    for r in range(n_planes):
        rows[r] = load_u64(planes8, r * plane_bytes + off)
    s = n_planes >> _U1
    while s != _U0:
        mask = _low_half_mask(s)
        base = _U0
        while base < n_planes:
            for r in range(base, base + s):
                a = rows[r]
                b = rows[r + s]
                t = ((a >> s) ^ b) & mask
                rows[r + s] = b ^ t
                rows[r] = a ^ (t << s)
            base += s << _U1
        s >>= _U1
    # row c, lane l (bits l·N .. l·N+N-1) now holds element l·N + c
    itemsize = n_planes >> _U3
    per_store = _U8 // itemsize
    emask = (_U1 << n_planes) - _U1
    lane_mask = n_planes - _U1
    for q in range(_U8):
        if (group_mask >> q) & _U1:
            e0 = q << _U3
            sh = e0 & ~lane_mask  # l·N
            c0 = e0 & lane_mask
            for wi in range(itemsize):
                v = _U0
                for i in range(per_store):
                    c = c0 + wi * per_store + i
                    v |= ((rows[c] >> sh) & emask) << (i * n_planes)
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
    # one inlined copy per plane count: with N a constant LLVM unrolls the rounds and the stores
    if n_planes == _U32:
        _unshuffle_word_n(planes8, plane_bytes, _U32, word_in_block, group_mask, rows, out8, out_byte)
    elif n_planes == np.uint64(16):
        _unshuffle_word_n(planes8, plane_bytes, np.uint64(16), word_in_block, group_mask, rows, out8, out_byte)
    else:
        _unshuffle_word_n(planes8, plane_bytes, _U8, word_in_block, group_mask, rows, out8, out_byte)


@numba.njit(cache=True, nogil=True)
def unshuffle_needed(planes8, plane_bytes, n_planes, first_group, needed_groups, gi, rows, out8):
    """Unshuffle the needed groups of one decompressed block into ``out8``; returns the index of
    the first needed group past the block.

    ``first_group``: index of the block's first 8-element group in the frame; ``needed_groups``:
    sorted group indices, those of this block from ``gi`` on. One 64-element word (8 groups) at
    a time: the whole-word transpose when ``WORD_MIN_GROUPS`` or more of its groups are needed
    (and the word is complete), else group by group.
    """
    itemsize = n_planes >> _U3
    ng = np.uint64(needed_groups.size)
    stop = first_group + plane_bytes
    while gi < ng and needed_groups[gi] < stop:
        word = (needed_groups[gi] - first_group) >> _U3
        group_mask = _U0
        while gi < ng and needed_groups[gi] < stop and (needed_groups[gi] - first_group) >> _U3 == word:
            group_mask |= _U1 << ((needed_groups[gi] - first_group) & _U7)
            gi += _U1
        first_elem = (first_group + (word << _U3)) << _U3
        if popcount64(group_mask) >= WORD_MIN_GROUPS and (word << _U3) + _U8 <= plane_bytes:
            unshuffle_word(planes8, plane_bytes, n_planes, word, group_mask, rows, out8, first_elem * itemsize)
        else:
            for q in range(_U8):
                if (group_mask >> q) & _U1:
                    unshuffle_group(planes8, plane_bytes, itemsize, (word << _U3) + q, out8,
                                    (first_elem + (q << _U3)) * itemsize)
    return gi


# --------------------------------------------------------------------------- driver
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
    n_planes = itemsize << _U3
    n_full = n_elems // block_elems
    partial = n_elems - n_full * block_elems
    partial -= partial & _U7
    n_blocks = n_full + (_U1 if partial != _U0 else _U0)
    end = np.uint64(blob.size)
    pos = np.uint64(12)
    total = _U0
    count = _U0
    ng = np.uint64(needed_groups.size)
    gi = _U0  # next needed group
    for blk in range(n_blocks):
        elems = block_elems if blk < n_full else partial
        nbytes = elems * itemsize
        if end - pos < _U4:
            return ERR_CUT_IN_LENGTH, blk, total, count
        clen = ((np.uint64(blob[pos]) << np.uint64(24)) | (np.uint64(blob[pos + _U1]) << np.uint64(16))
                | (np.uint64(blob[pos + _U2]) << _U8) | np.uint64(blob[pos + _U3]))
        pos += _U4
        if clen > end - pos:
            return ERR_BLOCK_PAST_END, blk, total, count
        got = lz4_decompress_block(blob, pos, pos + clen, scratch8, nbytes)
        if got < 0:
            return ERR_LZ4_CORRUPT, blk, total, count
        if np.uint64(got) != nbytes:
            return ERR_BLOCK_SIZE, blk, total, count
        pos += clen
        plane_bytes = elems >> _U3
        first_group = blk * (block_elems >> _U3)
        s, c = block_valid_sum(scratch8, plane_bytes, n_planes, valid8, first_group)
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
    tail_group = first_tail >> _U3
    write_tail = False
    while gi < ng:
        if needed_groups[gi] == tail_group:
            write_tail = True
        gi += _U1
    sentinel = (_U1 << n_planes) - _U1 if n_planes < np.uint64(64) else _ALL_ONES
    for t in range(n_tail):
        v = _U0
        for k in range(itemsize):
            v |= np.uint64(blob[pos + t * itemsize + k]) << (k << _U3)
        i = first_tail + t
        if (np.uint64(valid8[i >> _U3]) >> (i & _U7)) & _U1 and v != sentinel:
            total += v
            count += _U1
        if write_tail:
            for k in range(itemsize):
                out8[i * itemsize + k] = np.uint8((v >> (k << _U3)) & _U255)
    return OK, n_blocks, total, count
