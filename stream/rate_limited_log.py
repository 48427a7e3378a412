"""Logging that cannot flood: at most a few messages per kind per interval, then a summary."""

from __future__ import annotations

import logging
import time
from typing import Callable


class RateLimitedLog:
    """Logs up to ``burst`` messages per ``key`` every ``interval_s``; counts the rest.

    When an interval ends, the next message of that key first reports how many were
    suppressed, so nothing is silently lost from the count.
    """

    def __init__(self, logger: logging.Logger, *, burst: int = 5, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.burst = burst
        self.interval_s = interval_s
        self.clock = clock
        self._window: dict[str, tuple[float, int, int]] = {}  # key -> (start, logged, suppressed)

    def log(self, level: int, key: str, message: str, *args) -> bool:
        """Log ``message % args`` unless ``key`` is over its budget; True if it was logged."""
        now = self.clock()
        start, logged, suppressed = self._window.get(key, (now, 0, 0))
        if now - start >= self.interval_s:
            if suppressed:
                self.logger.log(level, "%s: %d more similar message(s) suppressed in the last %.0f s",
                                key, suppressed, now - start)
            start, logged, suppressed = now, 0, 0
        if logged < self.burst:
            self.logger.log(level, message, *args)
            self._window[key] = (start, logged + 1, suppressed)
            return True
        self._window[key] = (start, logged, suppressed + 1)
        return False

    def flush(self) -> None:
        """Report suppressed counts now (e.g. at the end of a run)."""
        for key, (start, _logged, suppressed) in self._window.items():
            if suppressed:
                self.logger.warning("%s: %d more similar message(s) suppressed", key, suppressed)
        self._window.clear()
