"""``process_batch``: the one function every executor runs, live or offline.

It is a plain module-level function of picklable arguments, so a
``concurrent.futures`` process pool and a Dask cluster run it alike. Each worker
process builds its :class:`FrameProcessor` once per setup and keeps it (a small LRU
cache keyed by the frozen setup): tables and buffers are never rebuilt per batch.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from processors.frame_processor import FrameProcessor
from processors.frame_record import FRAME_STATUS_NAMES, frame_record_dtype
from processors.processing_setup import ProcessingSetup
from processors.warm_frame import warm_frame
from stream.encoded_frame import EncodedFrame
from stream.heap_freeze import freeze_long_lived
from stream.mapped_chunks import MappedChunkReader
from stream.shared_arena import ArenaReader

#: Problems reported back per batch; the rest are only counted (the status says what).
MAX_MESSAGES_PER_BATCH = 5


@dataclass(frozen=True)
class BatchResult:
    """Records for the frames of one batch (same order) and a few problem messages.

    ``messages`` are ``(kind, text)`` pairs, ``kind`` the frame status name
    (``corrupt``, ``missing``, ...), so the caller can rate-limit each kind apart.
    """

    records: np.ndarray
    messages: tuple[tuple[str, str], ...] = ()
    worker: str = ""


@functools.cache
def process_arena() -> ArenaReader:
    """This process's reader of shared-memory frames, shared by its processors: a worker maps
    the arena (and faults its pages in, ≈ 0.2 s for 512 MB) once, at warm-up, not again for
    each new series setup while that series' frames wait."""
    return ArenaReader()


@functools.cache
def process_chunk_map() -> MappedChunkReader:
    """This process's mapped data files: a worker given lazy frames (reprocess) decodes their
    chunks where they lie in the page cache instead of reading a copy (stream.mapped_chunks)."""
    return MappedChunkReader(max_open=2)


@functools.lru_cache(maxsize=2)
def processor_for(setup: ProcessingSetup) -> FrameProcessor:
    """This process's processor for ``setup``, built on first use."""
    return FrameProcessor(setup, arena=process_arena())


def warm_up(setup: ProcessingSetup, hold_s: float = 0.5, arena: str | None = None) -> str:
    """Build this worker's processor ahead of the data (geometry, tables) and process one
    synthetic frame with a spot per window, so every kernel is compiled (or loaded from
    numba's cache) before the first real frame. ``arena``: the name of the shared-memory
    ring live frames will come in, attached and mapped now (``ArenaReader.attach``).

    Holding the worker a little after building lets the executor hand the next warm-up
    task to another worker, so every worker gets one.
    """
    processor = processor_for(setup)
    if arena is not None:
        processor.arena.attach(arena)
    records = np.zeros(1, dtype=frame_record_dtype(processor.n_peaks))
    processor.process_into(warm_frame(processor.lut), records[0])
    freeze_long_lived()  # the processor and the modules behind it live as long as the worker
    time.sleep(hold_s)
    return f"pid {os.getpid()}"


def prepare(setup: ProcessingSetup, dtype: str | None = None) -> str:
    """Build this worker's processor for ``setup`` now, and its selective decoder for frames
    of ``dtype`` (the header's pixel type, when it says): a series header brought a new mask,
    and the tables are built while the main process opens the run, not while the series'
    first batch waits. A worker that has them already returns at once."""
    processor = processor_for(setup)
    if dtype is not None:
        processor.selective_decoder_for(dtype)
    return f"pid {os.getpid()}"


def process_batch(setup: ProcessingSetup, frames: Sequence[EncodedFrame]) -> BatchResult:
    """Decode, integrate and fit each frame; never raises for a bad frame."""
    built = processor_for.cache_info().misses
    processor = processor_for(setup)
    if processor_for.cache_info().misses != built:  # reprocess has no warm-up: freeze after the first build
        freeze_long_lived()
    chunks = process_chunk_map()
    frames = [chunks.map(frame) for frame in frames]  # views, valid while this batch is processed
    records = np.zeros(len(frames), dtype=frame_record_dtype(processor.n_peaks))
    messages = []
    for i, msg in enumerate(processor.process_many_into(frames, records)):
        if msg and len(messages) < MAX_MESSAGES_PER_BATCH:
            messages.append((FRAME_STATUS_NAMES.get(int(records[i]["status"]), "frame"), msg))
    return BatchResult(records=records, messages=tuple(messages), worker=f"pid {os.getpid()}")
