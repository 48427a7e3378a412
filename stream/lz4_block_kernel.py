"""numba LZ4 block decompressor of the selective bslz4 decoder (see ``stream/bslz4_partial_kernel.py``).

Raw LZ4 block format (tokens, literals, 2-byte offsets, overlapping matches), bounds-checked:
a truncated or corrupt block returns a negative error code and never reads or writes out of
bounds. Copies go 8 or 32 bytes at a time where the offset allows; long short-period matches
(the runs that zero high bit planes compress to) are splatted, short ones go through the
reference decoder's offset tables. Indices are ``uint64``.

Repeated bit planes (:func:`lz4_decompress_planes`): in an EIGER frame's bitshuffle block the
high bit planes are all alike (zero, or the gap pixels at the sentinel), and LZ4 codes them as
one long match a plane back (8 of every 10 decoded bytes of a 4M frame). When the caller will
only read whole planes (the valid-pixel sum of a block with no needed pixel), such a match is
not copied: its first whole plane is written (the template), the planes after it are left
unwritten and reported, and the caller reads the template in their place. Every byte they
would hold equals the template's (the match's period divides the plane size). Only a match
that only literals follow is treated so (the usual case: LZ4 ends a block with 5 literals), so
that no later match can copy from the planes left unwritten.
"""

from __future__ import annotations

import numba
import numpy as np

from stream.word_intrinsics import U0, U1, U2, U3, U4, U7, U8, U15, U32, U255, copy32, load_u64, splat32, store_u64

_BYTE_SPREAD = np.uint64(0x0101010101010101)
_U5 = np.uint64(5)
_U6 = np.uint64(6)
_U16 = np.uint64(16)
# lz4.c's inc32table and dec64table, by period 0..7 (0 unused): where bytes 4..7 of a match of
# that period are read, and how far the 8-byte copies' start then moves back (negative values
# as uint64: subtracting them adds)
_INC32 = np.array([0, 1, 2, 1, 0, 4, 4, 4], dtype=np.uint64)
_DEC64 = np.array([0, 0, 0, -1, -4, 1, 2, 3], dtype=np.int64).astype(np.uint64)
_SPREAD16 = np.uint64(0x0001000100010001)
_SPREAD32 = np.uint64(0x0000000100000001)

#: Bytes the LZ4 scratch buffer needs past the decoded block: literal and match copies go
#: up to 32 bytes at a time and may write up to 31 bytes past the end they checked.
SCRATCH_SLACK = 32

# errors of :func:`lz4_decompress_block` (negative, so a byte count is never mistaken for one)
LZ4_TRUNCATED = -1
LZ4_BAD_OFFSET = -2
LZ4_OVERFLOW = -3


@numba.njit(cache=True, nogil=True, inline="always")
def _copy_far(dst, to, frm, n):
    """Copy ``n`` bytes from ``dst[frm:]`` to ``dst[to:]``, 32 at a time (``to - frm >= 32``:
    each 32-byte read ends at or before the write position); writes up to 31 bytes past
    ``to + n``."""
    k = U0
    while k < n:
        copy32(dst, to + k, dst, frm + k)
        k += U32


@numba.njit(cache=True, nogil=True, inline="always")
def _copy_match(dst, op, offset, ml):
    """Copy the ``ml`` bytes from ``offset`` bytes back to ``dst[op:]`` (the ranges may overlap:
    LZ4 repeats the pattern). Writes up to 31 bytes past ``op + ml``; the caller checked
    ``0 < offset <= op`` and room for that in ``dst``."""
    m = op - offset
    if offset >= U32:
        # most bytes of a frame: a zero plane copied from an earlier zero plane (offset =
        # the plane size)
        _copy_far(dst, op, m, ml)
    elif offset >= U8:
        k = U0
        while k < ml:
            store_u64(dst, op + k, load_u64(dst, m + k))
            k += U8
    elif offset == U1:
        # a run of one byte value (a zero plane on its own)
        v = np.uint64(dst[m]) * _BYTE_SPREAD
        k = U0
        while k < ml:
            splat32(dst, op + k, v)
            k += U32
    elif offset == U2 or offset == U4:
        # periods that divide 8: one 64-bit pattern repeated
        if offset == U2:
            v = (np.uint64(dst[m]) | (np.uint64(dst[m + U1]) << U8)) * _SPREAD16
        else:
            v = (np.uint64(dst[m]) | (np.uint64(dst[m + U1]) << U8) | (np.uint64(dst[m + U2]) << np.uint64(16))
                 | (np.uint64(dst[m + U3]) << np.uint64(24))) * _SPREAD32
        k = U0
        while k < ml:
            splat32(dst, op + k, v)
            k += U32
    else:
        # periods 3, 5, 6, 7: bytewise until the pattern is 8+ bytes long, then 8 at a time from
        # one period-multiple back (the output repeats with any multiple). A long match (zero
        # planes after a pattern of 6 bytes: 7 MB of a frame without gaps) goes back a multiple
        # that is also one of 8 (24, 40, 56): each load then reads what one earlier 8-byte store
        # wrote, where a load straddling two recent stores stalls (store-to-load forwarding
        # fails), which made such a frame's LZ4 4× slower.
        if ml > np.uint64(64):
            period = np.uint64(24) if offset == U3 or offset == np.uint64(6) else offset << U3
        else:
            period = offset
            while period < U8:
                period += offset
        head = period if period < ml else ml
        for k in range(head):
            dst[op + k] = dst[m + k]
        k = head
        while k < ml:
            store_u64(dst, op + k, load_u64(dst, op + k - period))
            k += U8


# --------------------------------------------------------------------------- LZ4
@numba.njit(cache=True, nogil=True, inline="always")
def _extended_length(src, ip, end, n):
    """A literal or match length of 15 goes on in bytes ``src[ip:]`` until one below 255: returns
    ``(n + those bytes, the index after them)``, or an index past ``end`` when the block ends first."""
    while True:
        if ip >= end:
            return n, end + U1
        b = np.uint64(src[ip])
        ip += U1
        n += b
        if b != U255:
            return n, ip


@numba.njit(cache=True, nogil=True)
def _last_literals_follow(src, ip, end):
    """Whether the sequence at ``src[ip:end]`` is the block's last: literals only, up to ``end``."""
    if ip >= end:
        return False
    lit = np.uint64(src[ip]) >> U4
    ip += U1
    if lit == U15:
        lit, ip = _extended_length(src, ip, end, lit)
        if ip > end:
            return False
    return end - ip == lit


@numba.njit(cache=True, nogil=True)
def _copy_plane_part(dst, to, frm, n):
    """:func:`_copy_far` as a call of its own: the plane-skipping path runs once per block at
    most, and inlining its copies into the decoder's main loop made every block slower
    (measured on an earlier form of the decoder: 1.16 ms per 4M frame with them inlined,
    1.08 with this call)."""
    _copy_far(dst, to, frm, n)


@numba.njit(cache=True, nogil=True)
def lz4_decompress_block(src, start, end, dst, capacity):
    """Decompress the raw LZ4 block ``src[start:end]`` into ``dst[:capacity]``.

    ``src`` and ``dst`` are uint8 arrays; ``start``, ``end``, ``capacity`` uint64 byte
    offsets/counts. ``dst`` must hold ``capacity + SCRATCH_SLACK`` bytes (copies go up to
    32 bytes at a time). Returns the decoded bytes (int64), or a negative ``LZ4_*`` code for a block
    that is truncated, refers before its start, or would decode past ``capacity``; it never
    reads ``src`` outside ``[start, end)`` nor writes ``dst`` past ``capacity + 31``.
    """
    return lz4_decompress_planes(src, start, end, dst, capacity, U0, True)[0]


@numba.njit(cache=True, nogil=True)
def lz4_decompress_planes(src, start, end, dst, capacity, plane_bytes, write_repeats):
    """:func:`lz4_decompress_block` that reports repeated bit planes of ``plane_bytes``, and
    leaves them unwritten unless ``write_repeats``.

    ``plane_bytes``: 0 (look for none), or the block's plane size, a multiple of 8 and at
    least 32. Returns ``(n, template, end_plane)``: ``n`` as :func:`lz4_decompress_block`; when
    ``end_plane`` is not 0, planes ``template + 1 .. end_plane - 1`` equal plane ``template``
    byte for byte, and were not written unless ``write_repeats`` (every other byte of
    ``dst[:n]`` is). Such planes come from a match whose period (offset) divides
    ``plane_bytes``, that covers at least two whole planes, and that the block's last sequence
    (literals only) follows. The same bounds and errors as :func:`lz4_decompress_block`.
    """
    ip = start
    op = U0
    d_t = U0  # template plane of the planes left unwritten
    d_e = U0  # their end (exclusive); 0: none. Set by the block's last match only: no later
    # match can copy from them, and the loop's fast path needs no test for it
    while True:
        if ip >= end:
            return LZ4_TRUNCATED, U0, U0
        token = np.uint64(src[ip])
        ip += U1
        # literals: length in the high nibble, 15 means "more length bytes follow"
        lit = token >> U4
        if lit < U15 and end - ip >= U32 and capacity - op >= U32:
            # the common short sequence (as in the reference decoder's fast loop): up to 14
            # literals copied with one fixed-size move, a match of up to 18 bytes. 32 input bytes are left, so the sequence is not the last
            # (literals only) one and its offset lies inside the block; 32 output bytes are
            # left, so the fixed-size writes stay inside the scratch and its slack.
            copy32(dst, op, src, ip)
            ip += lit
            op += lit
            offset = np.uint64(src[ip]) | (np.uint64(src[ip + U1]) << U8)
            ml = token & U15
            if ml != U15 and offset != U0 and offset <= op and ml + U4 <= capacity - op:
                ip += U2
                ml += U4
                if offset >= U8:
                    # at most 18 bytes from 8 or more back: three fixed 8-byte moves, each
                    # reading only bytes written before it; the loop in _copy_match
                    # mispredicted its exit here (LZ4 over a 4M frame 0.87 → 0.70 ms)
                    m = op - offset
                    store_u64(dst, op, load_u64(dst, m))
                    store_u64(dst, op + U8, load_u64(dst, m + U8))
                    store_u64(dst, op + np.uint64(16), load_u64(dst, m + np.uint64(16)))
                else:
                    # a period under 8 (a third of the matches of a 4M frame's low planes), as the
                    # reference decoder does it (LZ4_memcpy_using_offset_base): 4 bytes one by one,
                    # 4 more from a start the table moves, then 8 at a time from a multiple of the
                    # period at least 8 back; no branch on the period (LZ4 over a 4M frame 0.87 →
                    # 0.79 ms, against _copy_match's cases)
                    m = op - offset
                    dst[op] = dst[m]
                    dst[op + U1] = dst[m + U1]
                    dst[op + U2] = dst[m + U2]
                    dst[op + U3] = dst[m + U3]
                    m += _INC32[offset]
                    dst[op + U4] = dst[m]
                    dst[op + _U5] = dst[m + U1]
                    dst[op + _U6] = dst[m + U2]
                    dst[op + U7] = dst[m + U3]
                    m -= _DEC64[offset]  # a uint64 table: "minus -1" wraps to plus 1
                    store_u64(dst, op + U8, load_u64(dst, m))
                    if ml > _U16:
                        store_u64(dst, op + _U16, load_u64(dst, m + U8))
                op += ml
                continue
            # anything else: the general match code below (the literals are done)
            lit = U0
        if lit == U15:
            lit, ip = _extended_length(src, ip, end, lit)
            if ip > end:
                return LZ4_TRUNCATED, U0, U0
        if lit > end - ip:
            return LZ4_TRUNCATED, U0, U0
        if lit > capacity - op:
            return LZ4_OVERFLOW, U0, U0
        if lit != U0:
            if end - ip >= lit + U32:
                # 32 bytes at a time; may read up to 31 bytes past the literals (still < end) and
                # write up to 31 past them (the scratch's slack, overwritten next)
                k = U0
                while k < lit:
                    copy32(dst, op + k, src, ip + k)
                    k += U32
            elif end - ip >= lit + U8:
                k = U0
                while k < lit:
                    store_u64(dst, op + k, load_u64(src, ip + k))
                    k += U8
            else:
                for k in range(lit):
                    dst[op + k] = src[ip + k]
            ip += lit
            op += lit
        if ip == end:
            return np.int64(op), d_t, d_e  # the last sequence holds literals only
        # match: 2-byte little-endian offset back into the output, length in the low nibble + 4
        if end - ip < U2:
            return LZ4_TRUNCATED, U0, U0
        offset = np.uint64(src[ip]) | (np.uint64(src[ip + U1]) << U8)
        ip += U2
        if offset == U0 or offset > op:
            return LZ4_BAD_OFFSET, U0, U0
        ml = token & U15
        if ml == U15:
            ml, ip = _extended_length(src, ip, end, ml)
            if ip > end:
                return LZ4_TRUNCATED, U0, U0
        ml += U4
        if ml > capacity - op:
            return LZ4_OVERFLOW, U0, U0
        n_copy = ml
        if plane_bytes != U0 and ml >= plane_bytes << U1 and plane_bytes % offset == U0:
            t = (op + plane_bytes - U1) // plane_bytes  # the first plane that starts inside the match
            e = (op + ml) // plane_bytes  # the plane where it ends
            if e >= t + U2 and _last_literals_follow(src, ip, end):
                d_t = t
                d_e = e
                if not write_repeats:
                    # copy up to the end of plane t (the template; the overrun lands in plane
                    # t + 1, unwritten anyway), then the part of plane e the match covers
                    n_copy = (t + U1) * plane_bytes - op
        _copy_match(dst, op, offset, n_copy)
        op += ml
        if n_copy != ml:
            # the part of plane e the match covers, from the template; the overrun past
            # the match is written again by the block's last literals
            _copy_plane_part(dst, d_e * plane_bytes, d_t * plane_bytes, op - d_e * plane_bytes)
