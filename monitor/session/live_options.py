"""What a live session is asked to do (:class:`LiveOptions`) and what it reports (:class:`LiveSummary`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from monitor.session.map_collector import RunCounters


@dataclass(frozen=True)
class LiveOptions:
    """How to run: where from, where to, how much, how long."""

    endpoint: str
    out: Path
    record: Path | None = None
    workers: int | None = None
    scheduler: str | None = None
    series: int = 1                    # stop after this many series; 0 = until stopped
    idle_timeout_s: float | None = None  # stop when nothing arrived for this long (after data came)
    status: bool = True
    drain_timeout_s: float = 120.0
    expect_documents: bool = False     # bluesky start documents will come (give each series time to get one)
    document_wait_s: float = 5.0       # how long a series waits for its start document
    publish: str | None = None         # map snapshots for viewers (PUB), e.g. tcp://127.0.0.1:5557
    frames: str | None = None          # frames on demand for the inspector (REP), e.g. tcp://127.0.0.1:5558


@dataclass(frozen=True)
class LiveSummary:
    """What a live session did; ``counters`` are the session's (``counters.hot_pixels_masked``: the
    distinct hot pixels the workers masked, over all runs, also printed by ``process``)."""

    counters: RunCounters
    seconds: float
    stopped_by: str
    latency_ms: tuple[float, float]      # median, 95th percentile (receive → result)
    record_paths: tuple[Path, ...] = ()
    timing: dict = field(default_factory=dict)
    results: tuple[Path, ...] = ()       # one results file per run
    error: str = ""                      # what failed (receiver or recording); stopped_by is then "error"
