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

    def update(self, text: str, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
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
