"""Raw recording of a detector stream (``nanomaps record``): every message, as received."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from monitor.session.status_line import StatusLine
from stream.rate_limited_log import RateLimitedLog
from stream.stream_messages import BadMessage, SeriesEnd
from stream.stream_receiver import StreamReceiver
from stream.stream_recorder import StreamRecorder

log = logging.getLogger("nanomaps.record")


def record_stream(receiver: StreamReceiver, out: Path, *, frames_per_file: int, series: int,
                  stop: threading.Event) -> StreamRecorder:
    """Record what ``receiver`` gets into ``out`` (DECTRIS layout) until ``series`` series ended (0: never)
    or ``stop`` is set; flushes once per second and shows a status line. Closes the receiver and the
    recorder (whose files are then complete) and returns the recorder for its counts and paths.
    """
    limiter = RateLimitedLog(log)
    status = StatusLine()
    recorder = StreamRecorder(out, frames_per_file=frames_per_file)
    done = 0
    last_flush = time.monotonic()
    with receiver:
        try:
            while not stop.is_set() and not (series and done >= series):
                for msg in receiver.receive(100):
                    recorder.on_message(msg)
                    if isinstance(msg, SeriesEnd):
                        done += 1
                    elif isinstance(msg, BadMessage):
                        limiter.log(logging.WARNING, msg.kind, "%s message not recorded: %s", msg.kind, msg.reason)
                if time.monotonic() - last_flush >= 1.0:
                    recorder.flush()
                    last_flush = time.monotonic()
                c = receiver.counters
                status.update(f"recorded {recorder.frames_recorded} frames | series {done} | corrupt {c.corrupt} "
                              f"| late {c.late} | {c.bytes / 1e6:.0f} MB")
        finally:
            recorder.close()
            status.close()
            limiter.flush()
    return recorder
