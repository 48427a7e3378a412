"""The shared-memory ring: exact bound, oldest-first reclaim, readable from another process."""

import hashlib
import multiprocessing
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stream.shared_arena import ArenaReader, SharedArena
from stream.streaming_copy import STREAMING_MIN_BYTES

REPO = Path(__file__).resolve().parents[1]


def test_ring_allocates_wraps_and_reclaims_oldest_first():
    arena = SharedArena(100)
    try:
        a = arena.put(b"a" * 40)
        b = arena.put(b"b" * 40)
        assert (a.offset, b.offset) == (0, 40)
        assert arena.put(b"c" * 30) is None          # 20 left at the end, nothing free at the start
        arena.release(b)                             # b is not the oldest: nothing reclaimed yet
        assert arena.used == 80 and arena.put(b"c" * 30) is None
        arena.release(a)                             # now both go
        assert arena.used == 0
        c = arena.put(b"c" * 70)
        d = arena.put(b"d" * 30)
        assert (c.offset, d.offset) == (0, 70) and arena.put(b"x") is None
        arena.release(c)
        e = arena.put(b"e" * 60)                     # wraps to the start, in front of d
        assert e.offset == 0 and arena.put(b"f" * 11) is None and arena.put(b"f" * 10).offset == 60
        reader = ArenaReader()
        assert bytes(reader.view(d)) == b"d" * 30 and bytes(reader.view(e)) == b"e" * 60
        reader.close()
    finally:
        arena.close()


def test_random_traffic_never_overlaps(rng):
    arena = SharedArena(10_000)
    live = {}
    try:
        for step in range(3000):
            if live and rng.random() < 0.5:
                key = list(live)[int(rng.integers(len(live)))]
                arena.release(live.pop(key)[0])
            else:
                data = bytes([step % 251]) * int(rng.integers(1, 900))
                piece = arena.put(data)
                if piece is not None:
                    live[step] = (piece, data)
            spans = sorted((p.offset, p.offset + p.length) for p, _ in live.values())
            assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:]))
            assert arena.used <= arena.size
        reader = ArenaReader()
        for piece, data in live.values():
            assert bytes(reader.view(piece)) == data
        reader.close()
    finally:
        arena.close()


def _read_in_child(piece):
    reader = ArenaReader()
    try:
        return int(np.frombuffer(reader.view(piece), np.uint8).sum())
    finally:
        reader.close()


def _digest_in_child(piece):
    reader = ArenaReader()
    try:
        return hashlib.sha256(reader.view(piece)).hexdigest()
    finally:
        reader.close()


def test_another_process_reads_without_unlinking(rng):
    arena = SharedArena(4 << 20)
    try:
        data = np.arange(1000, dtype=np.uint8).tobytes()
        piece = arena.put(data)
        # an EIGER 4M-sized blob at an odd offset: copied with non-temporal stores (streaming_copy),
        # which another process must see whole once put returns
        big = rng.integers(0, 256, 1_490_003, dtype=np.uint8).tobytes()
        big_piece = arena.put(big)
        assert big_piece.offset % 32 != 0 and len(big) >= STREAMING_MIN_BYTES
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            assert pool.apply(_read_in_child, (piece,)) == sum(data)
            assert pool.apply(_read_in_child, (piece,)) == sum(data)  # still there after the child read it
            assert pool.apply(_digest_in_child, (big_piece,)) == hashlib.sha256(big).hexdigest()
    finally:
        arena.close()
    with pytest.raises(FileNotFoundError):
        ArenaReader().view(piece)


def _mapped_kib(reader: ArenaReader, name: str) -> int:
    """Resident KiB of ``reader``'s own mapping of segment ``name`` (/proc/self/smaps, found by
    address: the creator's mapping of the same segment is another one)."""
    address = np.frombuffer(reader._segments[name].buf, np.uint8).ctypes.data
    lines = open("/proc/self/smaps").read().splitlines()
    for i, line in enumerate(lines):
        lo, _, hi = line.split(" ", 1)[0].partition("-")
        if hi and all(c in "0123456789abcdef" for c in lo + hi) and int(lo, 16) <= address < int(hi, 16):
            for entry in lines[i + 1:]:
                if entry.startswith("Rss:"):
                    return int(entry.split()[1])
    raise AssertionError(f"{name} is not mapped")


def test_attach_maps_every_page_ahead_of_the_frames():
    """A worker attaches the ring at warm-up: its pages are then in the worker's page tables, so
    reading frames costs no page fault (a lazy attach maps only the pages read so far)."""
    arena = SharedArena(8 << 20)
    lazy, eager = ArenaReader(), ArenaReader()
    try:
        piece = arena.put(b"x" * 1000)
        assert bytes(lazy.view(piece)) == b"x" * 1000
        assert _mapped_kib(lazy, arena.name) < 1024  # the page read, not the 8 MiB
        eager.attach(arena.name)
        assert _mapped_kib(eager, arena.name) >= 8 * 1024
        assert bytes(eager.view(piece)) == b"x" * 1000
    finally:
        lazy.close()
        eager.close()
        arena.close()


def test_warm_up_loads_the_copy_kernel_before_the_first_frame():
    """``warm_up`` (a live session calls it before data flow) leaves the ring empty and zero,
    with the non-temporal copy's kernel loaded: the first frame's put does not load it."""
    code = (
        "import numpy as np\n"
        "from stream.shared_arena import SharedArena\n"
        "from stream.streaming_copy import NON_TEMPORAL, streaming_copy_kernel\n"
        "arena = SharedArena(1 << 20)\n"
        "try:\n"
        "    before = len(streaming_copy_kernel.signatures)\n"
        "    arena.warm_up()\n"
        "    print(NON_TEMPORAL, before, len(streaming_copy_kernel.signatures), arena.used,\n"
        "          int(np.frombuffer(arena._buf, dtype=np.uint8).max()))\n"
        "finally:\n"
        "    arena.close()\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    non_temporal, before, after, used, top = out.stdout.split()
    assert (before, used, top) == ("0", "0", "0")
    assert after == ("1" if non_temporal == "True" else "0")
