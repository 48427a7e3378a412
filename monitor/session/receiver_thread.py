"""The receiver thread: owns the ZeroMQ socket and the raw recorder, bounds the backlog of images.

The recording gets every frame whatever happens downstream. Validated messages go to
the main thread through a queue, as lists (what arrived in one burst); only images are
bounded: when the compressed frames waiting or in flight would exceed the budget, an
image is skipped for live processing and a ``("dropped", series)`` message says so
(counted, never silent).

Failures are loud, never a quiet end of the stream: an unexpected error of the socket
thread ends receiving and is kept in :attr:`ReceiverThread.errors`; the recorder failing
to write (an ``OSError``, e.g. a full disk) stops the recording only, logs an error and is
kept there too, while live processing goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Iterable

from stream.encoded_frame import EncodedFrame
from stream.rate_limited_log import RateLimitedLog
from stream.shared_arena import ArenaSlice, SharedArena
from stream.stream_messages import ImageMessage
from stream.stream_receiver import StreamReceiver
from stream.stream_recorder import StreamRecorder

log = logging.getLogger("nanomaps.process")

RECEIVER_DONE = object()  # the last thing the receiver thread puts on the queue
#: Wire messages taken at most per hand-over to the main thread (those already waiting).
RECEIVE_BURST = 32


def in_arena(msg: ImageMessage, piece: ArenaSlice) -> ImageMessage:
    """``msg`` with its frame's bytes at ``piece`` in shared memory instead of in the message.

    Built field by field: ``dataclasses.replace`` (twice per frame) cost more than the
    rest of the routing. Every field is carried over (a test checks it against the
    dataclasses' fields).
    """
    f = msg.frame
    frame = EncodedFrame(f.series, f.frame, f.encoding, f.dtype, f.shape, b"", f.receive_time, f.error, piece)
    return ImageMessage(msg.protocol, frame, start_time_ns=msg.start_time_ns, stop_time_ns=msg.stop_time_ns,
                        real_time_ns=msg.real_time_ns, appendix=msg.appendix, unique_id=msg.unique_id,
                        reordered=msg.reordered)


class RecentFrames:
    """The last ``capacity`` frames received, by (series, frame), for the frame inspector.

    Holds references only (blobs are views of received messages or shared bytes): no copy.
    """

    def __init__(self, capacity: int = 64) -> None:
        self._lock = threading.Lock()
        self._frames: "OrderedDict[tuple[int, int], EncodedFrame]" = OrderedDict()
        self.capacity = capacity

    def add(self, frame: EncodedFrame) -> None:
        with self._lock:
            self._frames[(frame.series, frame.frame)] = frame
            while len(self._frames) > self.capacity:
                self._frames.popitem(last=False)

    def get(self, key: tuple[int, int]) -> EncodedFrame | None:
        with self._lock:
            return self._frames.get(key)


class ReceiverThread:
    """Receives into ``out`` (a queue read by the main thread) until ``stop`` is set.

    Frames go into ``arena`` (shared memory for local workers) when there is one, else
    stay in the message, counted against ``budget_bytes``; either way :meth:`release`
    frees their space once processed. ``record``: the raw recording's path, or None.
    """

    def __init__(self, receiver: StreamReceiver, out: queue.Queue, stop: threading.Event, *,
                 record: Path | None, arena: SharedArena | None, budget_bytes: int, recent: RecentFrames,
                 limiter: RateLimitedLog) -> None:
        self.receiver = receiver
        self.out = out
        self.stop = stop
        self.record = record
        self.arena = arena
        self.budget_bytes = budget_bytes
        self.recent = recent
        self.limiter = limiter
        self.recorder: StreamRecorder | None = None  # kept after a failure: its files can still be read
        self.recording = False  # the recorder is being written (False once it failed)
        self.errors: list[str] = []  # what went wrong (receiver or recorder), for the summary and files
        self.last_message_time = time.monotonic()
        self.last_good_time: float | None = None  # a valid image arrived (--idle-timeout counts from here)
        self._pending_lock = threading.Lock()
        self._pending_bytes = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="nanomaps-receiver", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """The thread runs (it still owns the socket: nobody else may close it)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def backlog_bytes(self) -> int:
        """Compressed bytes received and not yet released."""
        return self.arena.used if self.arena is not None else self._pending_bytes

    def release(self, frames: Iterable[EncodedFrame]) -> None:
        """``frames`` are done with (processed or skipped): their backlog space is free again."""
        if self.arena is not None:
            for f in frames:
                if isinstance(f.source, ArenaSlice):
                    self.arena.release(f.source)
            return
        with self._pending_lock:
            self._pending_bytes -= sum(len(f.blob) for f in frames)

    def _loop(self) -> None:
        recorder = StreamRecorder(self.record) if self.record else None
        self.recorder = recorder
        self.recording = recorder is not None
        last_flush = time.monotonic()
        try:
            while not self.stop.is_set():
                # what is already waiting goes to the main thread as one list: one queue hand-over
                # (lock, wake-up) per burst, not per frame; what was routed goes even if a later
                # message of the burst fails
                routed = []
                try:
                    for msg in self.receiver.receive(100, RECEIVE_BURST):
                        item = self._route(msg)
                        if item is not None:
                            routed.append(item)
                finally:
                    if routed:
                        self.out.put(routed)
                if self.recording and time.monotonic() - last_flush >= 1.0:
                    self._record(self.recorder.flush)
                    last_flush = time.monotonic()
            for msg in self.receiver.finish():  # the series never ended: close it here
                routed = self._route(msg)
                if routed is not None:
                    self.out.put([routed])
        except Exception as exc:  # the socket thread must report, not vanish
            self.errors.append(f"the receiver stopped on an unexpected error: {type(exc).__name__}: {exc}")
            log.exception("the receiver stopped on an unexpected error")
        finally:
            if self.recording:
                self._record(self.recorder.close)
            self.out.put(RECEIVER_DONE)

    def _record(self, action, *args) -> None:
        """``action`` of the recorder; an OSError (disk full, file system gone) ends the recording only."""
        try:
            action(*args)
        except OSError as exc:
            self.recording = False
            where = f" ({self.recorder.paths[-1]})" if self.recorder.paths else ""
            self.errors.append(f"recording stopped{where}: {exc}")
            log.error("recording stopped%s: %s; live processing goes on, frames from now on are not recorded",
                      where, exc)
            try:
                self.recorder.close()  # whatever it can still save
            except Exception:  # the first error is the one reported
                log.debug("closing the failed recording", exc_info=True)

    def _route(self, msg):
        """Record ``msg``, put its frame in the backlog; returns what goes to the main thread
        (the message, or ``("dropped", series)`` for a frame skipped), or None."""
        self.last_message_time = time.monotonic()
        if isinstance(msg, ImageMessage) or self.last_good_time is None:
            # the idle clock starts with the first message of any kind and is reset only by
            # valid images: a stream of undecodable messages must not keep a session alive
            self.last_good_time = self.last_message_time
        if self.recording:
            self._record(self.recorder.on_message, msg)
        if isinstance(msg, ImageMessage):
            frame = msg.frame
            self.recent.add(frame)
            if self.arena is not None:
                piece = self.arena.put(frame.blob)
                if piece is not None:
                    msg = in_arena(msg, piece)
            else:
                with self._pending_lock:
                    piece = None if self._pending_bytes + len(frame.blob) > self.budget_bytes else len(frame.blob)
                    if piece is not None:
                        self._pending_bytes += piece
            if piece is None:
                self.limiter.log(logging.WARNING, "backlog", "processing is behind: frame %d of series %d skipped "
                                 "for live processing%s", frame.frame, frame.series,
                                 " (still recorded)" if self.recording else "")
                return ("dropped", frame.series)  # counted by the main thread, for its run
        return msg
