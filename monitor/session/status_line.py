"""A live one-line status on the terminal (rewritten in place), or a log line now and then."""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger("nanomaps.status")


class StatusLine:
    """Shows the latest status: in place on a terminal every ``interval_s``, else logged every ``log_every_s``."""

    def __init__(self, stream: TextIO | None = None, *, interval_s: float = 0.5, log_every_s: float = 10.0,
                 enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.interactive = enabled and self.stream.isatty()
        self.enabled = enabled
        self.interval_s = interval_s if self.interactive else log_every_s
        self._last = 0.0
        self._width = 0

    def due(self, now: float | None = None) -> bool:
        """Whether :meth:`update` would show a line now (``now``: ``time.monotonic()`` s).

        The live loop asks first: building the text (latency percentiles over thousands of
        frames) on every turn of the loop cost more than the frames' own handling.
        """
        if not self.enabled:
            return False
        return (time.monotonic() if now is None else now) - self._last >= self.interval_s

    def update(self, text: str, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and not self.due(now):
            return
        self._last = now
        if self.interactive:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()
            self._width = len(text)
        else:
            log.info("%s", text)

    def close(self) -> None:
        if self.interactive and self._width:
            self.stream.write("\n")
            self.stream.flush()


def status_text(c, latency_ms: tuple[float, float], queued: int, in_flight: int, backlog_bytes: int) -> str:
    """The live status line from the session's counters (a RunCounters), latency (median, p95 in ms),
    batches queued and in flight, and the backlog in bytes."""
    p50, p95 = latency_ms
    behind = " BEHIND" if c.dropped else ""
    # rarer troubles appear only when they happen, so the line stays readable
    extra = "".join(f" | {label} {n}" for label, n in (("wrong shape", c.wrong_shape), ("missing", c.missing),
                                                          ("outside scan", c.outside_scan)) if n)
    return (f"received {c.received} | processed {c.processed} | skipped {c.dropped}{behind} | corrupt {c.corrupt}"
            f" | late {c.late}{extra} | queued {queued} in flight {in_flight} | backlog "
            f"{backlog_bytes / 1e6:.0f} MB | latency {p50:.0f}/{p95:.0f} ms (p50/p95)")
