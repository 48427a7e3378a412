"""Play a DECTRIS-layout file (ours or the real file writer's) back as a detector stream.

Headers are built from the master file (detector config; the pixel mask with
``header_detail = "all"``, or in the stream2 start message); chunks are sent exactly
as stored, at the recorded pace, a fixed rate or as fast as the receiver takes them.

Chunks are sent from the data files mapped read-only (``stream.mapped_chunks``): a stream v1
image part is then a view of the page cache, which the socket copies once, where a chunk
read (``read_direct_chunk``) is a copy of its own first (≈ 0.35 ms of CPU less per EIGER 4M
frame, docs/live_path.md). The cost: a data file cut short *while* it is replayed ends the
replay with SIGBUS (nanomaps never cuts a file; another program might): ``mapped=False``
(``replay --no-map``) reads every chunk instead. A chunk that cannot be mapped (not
allocated, past the file's end) is read, and reported, as before.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from stream.dectris_file import ChunkReader, DectrisFile
from stream.encoded_frame import EncodedFrame
from stream.mapped_chunks import MappedChunkReader
from stream.stream_sender import Pacer, StreamSender
from stream.wire_encoder import WireEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayStats:
    frames: int
    skipped: int
    seconds: float
    bytes: int

    @property
    def rate_hz(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


def parse_rate(text: str) -> float | str:
    """``original``, ``max`` or a positive rate in Hz."""
    if text in ("original", "max"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"rate {text!r}: use original, max or a number of frames per second") from None
    if not value > 0:
        raise ValueError(f"rate {text!r} must be positive")
    return value


def _recorded_table(path: Path) -> np.ndarray | None:
    with h5py.File(path, "r") as f:
        if "entry/stream/frames" in f:
            return f["entry/stream/frames"][()]
    return None


def frame_times(n: int, rate: float | str, frame_time_s: float, table: np.ndarray | None) -> np.ndarray:
    """Send time (s after the start) of each of ``n`` frames."""
    if rate == "max" or n == 0:
        return np.zeros(n)
    if isinstance(rate, float):
        return np.arange(n) / rate
    if table is not None and len(table) > 0:
        recv = np.asarray(table["receive_time"], dtype=np.float64)
        times = np.full(n, np.nan)
        frames = np.asarray(table["frame"])
        ok = (frames >= 0) & (frames < n)
        times[frames[ok]] = recv[ok] - recv[ok].min()
        # frames without a recorded time go out right after their predecessor
        return np.fmax.accumulate(np.nan_to_num(times, nan=0.0))
    if frame_time_s > 0:
        return np.arange(n) * frame_time_s
    log.warning("no recorded pace and no frame_time in the master file: replaying as fast as possible")
    return np.zeros(n)


class _ChunkSupply:
    """Lazy frames' chunks: views of their mapped files, or read where they cannot be mapped."""

    def __init__(self) -> None:
        self.mapped = MappedChunkReader(max_open=2)
        self.reader = ChunkReader(max_open=2)

    def fill(self, frame: EncodedFrame) -> EncodedFrame:
        """``frame`` with its chunk's bytes (a view), or with ``error`` set when they cannot be read."""
        filled = self.mapped.map(frame)
        if filled is frame and frame.source is not None and not len(frame.blob) and not frame.error:
            return self.reader.read(frame)
        return filled

    def close(self) -> None:
        """Files whose views are still queued in the socket are unmapped when those go."""
        self.mapped.close()
        self.reader.close()


def replay_file(master_path: str | Path, sender: StreamSender, *, protocol: str = "stream1",
                rate: float | str = "original", header_detail: str = "all", series: int | None = None,
                channel: str = "threshold_1", progress: Callable[[int], None] | None = None,
                stop: threading.Event | None = None, repeat: int = 1, mapped: bool = True) -> ReplayStats:
    """Send the whole series of ``master_path`` through ``sender``; returns what was achieved.

    ``repeat`` > 1 sends the frames that many times as one longer series (frame numbers
    continue), for soak tests and benchmarks. Setting ``stop`` ends the replay early
    (the end message is still sent). ``mapped``: send chunks from the data files mapped
    (see the module's docstring), else read each one.
    """
    if protocol not in ("stream1", "stream2"):
        raise ValueError(f"protocol {protocol!r}: use stream1 or stream2")
    master_path = Path(master_path)
    table = _recorded_table(master_path)
    with DectrisFile(master_path) as f, h5py.File(master_path, "r") as raw:
        md = f.metadata
        recorded = raw.get("entry/stream")
        if series is None:
            series = int(recorded.attrs.get("series", 1)) if recorded is not None else 1
        unique_id = str(recorded.attrs.get("unique_id", "")) if recorded is not None else ""
        n = f.frame_count
        offsets = frame_times(n, rate, md.frame_time_s, table)
        times_ns = {int(r["frame"]): (int(r["start_time_ns"]), int(r["stop_time_ns"]), int(r["real_time_ns"]))
                    for r in table} if table is not None else {}
        count_ns = int(round(md.count_time_s * 1e9))
        frame_ns = int(round(md.frame_time_s * 1e9))
        wire = WireEncoder(protocol, series, header_detail, channel, unique_id)
        sender.send(wire.start(md), stop)
        pacer = Pacer()
        period = (offsets[-1] + (offsets[-1] - offsets[-2] if n > 1 else 0.0)) if n else 0.0
        supply = _ChunkSupply() if mapped else None
        try:
            sent = skipped = 0
            # lazy frames are small references to their chunks: a repeated replay makes them once
            frames = list(f.iter_frames(series=series, lazy=True)) if mapped and repeat > 1 else None
            for turn in range(repeat):
                for frame in frames if frames is not None else f.iter_frames(series=series, lazy=mapped):
                    if stop is not None and stop.is_set():
                        break
                    if supply is not None:
                        frame = supply.fill(frame)
                    if frame.error:
                        skipped += 1
                        log.warning("frame %d not sent: %s", frame.frame, frame.error)
                        continue
                    k = frame.frame
                    if turn:  # a repeated pass continues the series: frame numbers go on
                        frame = frame.renumbered(k + turn * n)
                    pacer.wait_until(turn * period + (offsets[k] if k < len(offsets) else 0.0))
                    start_ns, stop_ns, real_ns = times_ns.get(
                        frame.frame, (frame.frame * frame_ns, frame.frame * frame_ns + count_ns, count_ns))
                    if not sender.send(wire.image(frame, start_ns, stop_ns, real_ns, share_blob=mapped), stop):
                        break
                    sent += 1
                    if progress is not None:
                        progress(1)
        finally:
            if supply is not None:
                supply.close()
        if not (stop is not None and stop.is_set()):
            # the last frame's exposure ends one frame period after it starts, as at a
            # detector: so n frames take n periods and the reported rate is the paced one
            pacer.wait_until(repeat * period)
        seconds = pacer.elapsed()
        sender.send(wire.end(), stop)
    return ReplayStats(frames=sent, skipped=skipped, seconds=seconds, bytes=sender.bytes_sent)
