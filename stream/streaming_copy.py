"""A byte copy that writes around the cache (non-temporal stores): the receiver's copy of each
frame into the shared arena.

A plain copy (``memmove``) of a 1.5 MB EIGER 4M frame into the 512 MB arena first reads every
destination line into the cache (the ring's lines were last touched hundreds of frames ago),
then writes it, and leaves 1.5 MB of lines in the cache that nobody in this process reads
again (a worker process decodes the frame later). Non-temporal stores skip both: ≈ 0.19 →
0.12 ms per copy measured alone, ≈ 0.07 ms less of the receiver's CPU per live 4M frame
(docs/live_path.md). glibc switches to such stores itself only above a few MB
(``x86_non_temporal_threshold``).

:func:`streaming_copy` checks its arguments and copies small blobs, and every blob on a CPU
other than x86-64, the plain way. The kernel copies a head up to a 32-byte-aligned
destination, then 32 bytes per non-temporal store, then the tail, and ends with a fence so
the bytes are visible to other processes before the caller hands the slice on.
"""

from __future__ import annotations

import platform

import numba
import numpy as np

from stream.word_intrinsics import U1, U32, address_of, store_fence, stream32

#: Below this many bytes the plain copy is used: the fence and the head/tail cost more than
#: the cache lines saved.
STREAMING_MIN_BYTES = 1 << 16

#: The kernel's fence is an x86 instruction (``sfence``): elsewhere every copy is the plain one.
NON_TEMPORAL = platform.machine().lower() in ("x86_64", "amd64")

_U31 = np.uint64(31)


@numba.njit(cache=True, nogil=True)
def streaming_copy_kernel(dst, to, src):
    """Copy all of ``src`` (uint8) to ``dst[to:to + src.size]`` (uint8), the aligned middle with
    non-temporal stores. ``to`` is a uint64; the caller checked the bounds."""
    n = np.uint64(src.size)
    # bytes until dst[to + head] lies on a 32-byte boundary
    head = (U32 - ((address_of(dst) + to) & _U31)) & _U31
    if head > n:
        head = n
    for k in range(head):
        dst[to + k] = src[k]
    k = head
    while k + U32 <= n:
        stream32(dst, to + k, src, k)
        k += U32
    while k < n:
        dst[to + k] = src[k]
        k += U1
    store_fence()


def streaming_copy(dst: np.ndarray, offset: int, data) -> None:
    """Copy the bytes of the contiguous buffer ``data`` into the uint8 array ``dst`` at byte ``offset``.

    Raises ``ValueError`` for a ``dst`` that is not a writable, contiguous 1-D uint8 array, or
    a copy that would not fit.
    """
    if not (isinstance(dst, np.ndarray) and dst.dtype == np.uint8 and dst.ndim == 1
            and dst.flags.c_contiguous and dst.flags.writeable):
        raise ValueError("streaming_copy: the destination must be a writable, contiguous 1-D uint8 array")
    src = np.frombuffer(data, dtype=np.uint8)  # contiguous bytes of any buffer (bytes, memoryview, array)
    if offset < 0 or offset + src.size > dst.size:
        raise ValueError(f"streaming_copy: {src.size} bytes at offset {offset} do not fit in {dst.size}")
    if src.size < STREAMING_MIN_BYTES or not NON_TEMPORAL:
        dst[offset:offset + src.size] = src
        return
    streaming_copy_kernel(dst, np.uint64(offset), src)
