"""A shared-memory ring for compressed frames on their way to local worker processes.

Sending a 1.5 MB frame through a process pool costs a pickle copy, a pipe transfer
(hundreds of 64 KiB writes) and an unpickle copy; here the receiver copies each blob
once into shared memory and the worker decodes it in place. The ring is also the
bound on live backlog: when it is full, a frame is skipped for live processing (and
counted) instead of growing memory. Space is reclaimed oldest first, so one slow
batch holds back what was allocated after it (the bound stays exact).
"""

from __future__ import annotations

import mmap
import os
import threading
from collections import deque
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

from stream.streaming_copy import STREAMING_MIN_BYTES, streaming_copy


@dataclass(frozen=True, slots=True)
class ArenaSlice:
    """Where one blob lies in a shared arena: segment name, byte offset and length."""

    name: str
    offset: int
    length: int
    seq: int


class ArenaSpaceError(OSError):
    """Not enough shared memory (``/dev/shm``) for the arena."""

    def __str__(self) -> str:
        return self.args[0] if self.args else ""


def check_shared_memory(size_bytes: int, folder: str = "/dev/shm") -> None:
    """Raise :class:`ArenaSpaceError` when ``folder`` has less than ``size_bytes`` free.

    Writing past the end of a tmpfs kills the process with SIGBUS, no message: a container
    with Docker's 64 MB default ``/dev/shm`` must learn it in one line instead.
    """
    try:
        st = os.statvfs(folder)
    except OSError:
        return  # no such tmpfs (not Linux): nothing to check against
    free = st.f_bavail * st.f_frsize
    if free < size_bytes:
        raise ArenaSpaceError(f"{folder} has {free / 1e6:.0f} MB free but the frame backlog needs "
                              f"{size_bytes / 1e6:.0f} MB. Fix: lower [stream] max_backlog_mb in the config, "
                              "or give the machine more shared memory (docker run --shm-size=1g)")


class SharedArena:
    """Producer side: :meth:`put` copies a blob in (None when full), :meth:`release` frees it.

    Thread-safe (one thread puts, another releases). ``close`` unlinks the segment.
    """

    def __init__(self, size_bytes: int) -> None:
        if size_bytes < 1:
            raise ValueError("arena size must be positive")
        check_shared_memory(size_bytes)
        self._shm = shared_memory.SharedMemory(create=True, size=size_bytes)
        self.name = self._shm.name
        self.size = size_bytes
        self._buf = self._shm.buf
        # touch every page now: a first write into fresh shared memory page-faults at
        # ~1.5 GB/s, thirty times slower than a copy into mapped pages
        self._bytes = np.frombuffer(self._buf, dtype=np.uint8)
        self._bytes[:] = 0
        self._lock = threading.Lock()
        self._live: deque[list] = deque()  # [seq, offset, end, released] oldest first
        self._head = 0
        self._seq = 0
        self.used = 0

    def put(self, data) -> ArenaSlice | None:
        """Copy ``data`` (bytes-like, contiguous) into the ring; None when there is no room.

        The space is taken under the lock, the bytes are copied after it: the slice is not
        released before :meth:`put` returns it, so nobody else can use that space meanwhile,
        and :meth:`release` from another thread need not wait for a 1.5 MB copy. The copy
        (:func:`~stream.streaming_copy.streaming_copy`, non-temporal stores for large blobs)
        runs without the GIL, so the other Python threads run during it too.
        """
        src = np.frombuffer(data, dtype=np.uint8)
        n = src.size
        with self._lock:
            offset = self._allocate(n)
            if offset is None:
                return None
            self._seq += 1
            self._live.append([self._seq, offset, offset + n, False])
            self._head = offset + n
            self.used += n
            piece = ArenaSlice(self.name, offset, n, self._seq)
        streaming_copy(self._bytes, offset, src)  # around the cache: a worker reads it, not this process
        return piece

    def warm_up(self) -> None:
        """Load the copy's kernel now, not at the first frame: numba's cache takes ≈ 5 ms (≈ 0.2 s
        as a process's first numba function) while the series' first frames wait behind it.
        Copies the ring's zero bytes onto themselves; only while nothing is in it."""
        with self._lock:
            if self._live:
                return
            n = min(STREAMING_MIN_BYTES, self.size // 2)
            streaming_copy(self._bytes, 0, self._bytes[n:2 * n])

    def _allocate(self, n: int) -> int | None:
        n = max(n, 1)
        if n > self.size:
            return None
        if not self._live:
            self._head = 0
            return 0
        oldest = self._live[0][1]
        if self._head > oldest:
            # live blobs fill [oldest, head): room after head, or wrap to [0, oldest)
            if self.size - self._head >= n:
                return self._head
            return 0 if n <= oldest else None
        # wrapped: live blobs fill [oldest, size) and [0, head); room only in [head, oldest)
        return self._head if oldest - self._head >= n else None

    def release(self, piece: ArenaSlice) -> None:
        """The blob is no longer needed; space is reclaimed once all older ones are too."""
        with self._lock:
            # sequence numbers of live slices are consecutive: the entry is found by its index
            k = piece.seq - self._live[0][0] if self._live else -1
            if 0 <= k < len(self._live) and self._live[k][0] == piece.seq:
                self._live[k][3] = True
            while self._live and self._live[0][3]:
                seq, start, end, _ = self._live.popleft()
                self.used -= end - start
            if not self._live:
                self._head = 0

    def close(self) -> None:
        self._buf = self._bytes = None  # no view may outlive the mapping
        self._shm.close()
        try:
            self._shm.unlink()
        except FileNotFoundError:
            pass


class ArenaReader:
    """Worker side: views of blobs in arenas created by another process (attached once)."""

    def __init__(self) -> None:
        self._segments: dict[str, shared_memory.SharedMemory] = {}

    def _segment(self, name: str) -> shared_memory.SharedMemory:
        shm = self._segments.get(name)
        if shm is None:
            # Workers are children of the creating process and share its resource
            # tracker: attaching registers the name again (a no-op there), and the
            # creator's unlink() unregisters it once. Never unregister here.
            shm = shared_memory.SharedMemory(name=name, create=False)
            self._segments[name] = shm
        return shm

    def view(self, piece: ArenaSlice) -> memoryview:
        return self._segment(piece.name).buf[piece.offset:piece.offset + piece.length]

    def attach(self, name: str) -> None:
        """Attach arena ``name`` now and map all its pages (a read of one byte per page), so
        that frames read later cost no page fault. Attaching lazily, each 4 KiB page faults
        the first time this process reads it: ≈ 0.3 ms more per EIGER 4M frame until the ring
        has gone round once (measured, docs/live_path.md). For warm-up, before data arrive."""
        pages = np.frombuffer(self._segment(name).buf, dtype=np.uint8)[::mmap.PAGESIZE]
        int(pages.max(initial=0))

    def close(self) -> None:
        for shm in self._segments.values():
            shm.close()
        self._segments.clear()
