"""Lazy frames' chunks as views of their data files mapped into memory: decoded where they lie.

A reprocess worker otherwise reads each chunk (``ChunkReader``): a copy of 1.5 MB per EIGER 4M
frame from the page cache, then the decode reads the copy again. Mapped, the decode reads the
page cache itself: ≈ 0.2 ms less per 4M frame and worker (1.82 → 1.60 ms, process_batch over
1200 frames in one process, docs/partial_decode.md).

What mapping risks: a file cut short *while* mapped turns a read of its lost pages into
SIGBUS, which kills the process. In a pool worker that is a dead worker: the batch runner
counts it, retries the batch's frames and marks the frames that kill a worker again
``worker_failed``; the session goes on. ``replay`` sends chunks from mapped files too (the
socket copies the page cache once, instead of a read's copy first: ≈ 0.3 ms of CPU less per
4M frame); there SIGBUS ends the replay, and ``replay --no-map`` reads instead. The live and
reprocess main processes never map. A file already cut short is never mapped past its end:
such a chunk is left to ``ChunkReader``, which reports the frame as unreadable, as before.
"""

from __future__ import annotations

import mmap
import os
from collections import OrderedDict

import h5py

from stream.encoded_frame import ChunkSource, EncodedFrame


class _MappedFile:
    """One data file mapped read-only, and the chunk tables of its datasets."""

    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            self.map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)  # the mapping keeps what it needs
        self.path = path
        self.tables: dict[str, dict[int, tuple[int, int, int]]] = {}

    def table(self, dataset: str) -> dict[int, tuple[int, int, int]]:
        """Frame index → ``(byte offset, size, filter mask)`` of each allocated chunk of ``dataset``."""
        found = self.tables.get(dataset)
        if found is None:
            found = {}
            with h5py.File(self.path, "r") as f:
                ds = f[dataset]
                if ds.chunks is not None and ds.chunks[0] == 1 and ds.ndim == 3:
                    def keep(info) -> None:
                        found[int(info.chunk_offset[0])] = (int(info.byte_offset), int(info.size),
                                                            int(info.filter_mask))
                    ds.id.chunk_iter(keep)
            self.tables[dataset] = found
        return found

    def close(self) -> bool:
        """Unmap; False while a view of it is still in use (try again later)."""
        try:
            self.map.close()
        except BufferError:
            return False
        return True


class MappedChunkReader:
    """Gives lazy frames (a :class:`ChunkSource`, no bytes) their chunk as a view of the
    mapped file. Keeps ``max_open`` files mapped (the most recently used); one per worker
    process (``processors.process_batch.process_chunk_map``)."""

    def __init__(self, max_open: int = 4) -> None:
        self.max_open = max_open
        self._files: OrderedDict[str, _MappedFile] = OrderedDict()
        self._closing: list[_MappedFile] = []  # evicted while a view was alive

    def map(self, frame: EncodedFrame) -> EncodedFrame:
        """``frame`` with its chunk's bytes as a ``memoryview`` of the mapped file, or ``frame``
        itself when there is nothing to map (bytes already there, an error, not a chunk on
        disk) or the chunk cannot be mapped (not allocated, past the file's end, unreadable
        file): whoever reads it then finds the problem and reports it. Views are valid until
        this reader evicts or closes their file: use them before mapping other files."""
        source = frame.source
        if not isinstance(source, ChunkSource) or len(frame.blob) or frame.error:
            return frame
        try:
            mapped = self._file(source.path)
            chunk = mapped.table(source.dataset).get(source.index)
        except (OSError, KeyError, ValueError, RuntimeError):
            return frame
        if chunk is None:
            return frame
        offset, size, filter_mask = chunk
        if offset < 0 or offset + size > len(mapped.map):
            return frame
        encoding = "raw" if (filter_mask & 1 and frame.encoding != "raw") else frame.encoding
        return frame.with_blob(memoryview(mapped.map)[offset:offset + size], encoding)

    def _file(self, path: str) -> _MappedFile:
        mapped = self._files.pop(path, None)
        if mapped is None:
            if len(self._files) >= self.max_open:
                _, oldest = self._files.popitem(last=False)
                if not oldest.close():
                    self._closing.append(oldest)
            self._closing = [m for m in self._closing if not m.close()]
            mapped = _MappedFile(path)
        self._files[path] = mapped  # most recently used last
        return mapped

    def close(self) -> None:
        """Unmap every file whose views are gone (the others when their views go)."""
        pending = list(self._files.values()) + self._closing
        self._files.clear()
        self._closing = [m for m in pending if not m.close()]
