"""What the live loop keeps per run: its map, results file, timing, and when it is written or published."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from monitor.links.map_snapshot import MapSnapshot
from monitor.session.map_collector import MapCollector
from monitor.session.results_file import ResultsWriter
from monitor.session.run_events import RunPlan
from processors.config import NanomapsConfig


class StageTiming:
    """Latency (receive → result) and per-stage times of the good frames of a run or session."""

    def __init__(self, capacity: int = 5000) -> None:
        self._latencies: deque[float] = deque(maxlen=capacity)  # ms, the last ``capacity`` good frames
        self._stage_s = np.zeros(2)  # decode, process: sums over frames, s
        self._stage_n = 0

    def add(self, records: np.ndarray) -> None:
        """Account the ``status == 0`` records of a batch result (times in s)."""
        ok = records["status"] == 0
        self._latencies.extend((records["done_time"] - records["receive_time"])[ok] * 1e3)
        self._stage_s += (float(records["decode_s"][ok].sum()), float(records["process_s"][ok].sum()))
        self._stage_n += int(ok.sum())

    def percentiles(self) -> tuple[float, float]:
        """Median and 95th percentile latency in ms (NaN before any frame)."""
        if not self._latencies:
            return (float("nan"), float("nan"))
        values = np.fromiter(self._latencies, dtype=np.float64)
        return float(np.percentile(values, 50)), float(np.percentile(values, 95))

    def as_dict(self) -> dict[str, float]:
        """Latency percentiles and mean decode / processing time per frame, all in ms."""
        p50, p95 = self.percentiles()
        n = max(self._stage_n, 1)
        return {"latency_median_ms": p50, "latency_p95_ms": p95, "decode_mean_ms": 1e3 * self._stage_s[0] / n,
                "frame_mean_ms": 1e3 * self._stage_s[1] / n}


class RateMeter:
    """Frames per second over the last ``window_s`` seconds (monotonic clock)."""

    def __init__(self, window_s: float = 3.0) -> None:
        self.window_s = window_s
        self._events: deque[tuple[float, int]] = deque()

    def add(self, n: int) -> None:
        now = time.monotonic()
        self._events.append((now, n))
        while self._events and now - self._events[0][0] > self.window_s:
            self._events.popleft()

    def rate(self) -> float:
        if not self._events:
            return 0.0
        span = max(time.monotonic() - self._events[0][0], 1e-3)
        return sum(n for _, n in self._events) / span


@dataclass(eq=False)
class RunState:
    """One run (one map) being processed: the router's :class:`RunPlan` (uid, geometry, file),
    the map it fills, its open results file and what is still to be written or published.

    ``dirty_file`` may be set from another thread to ask for a rewrite at the next flush.
    """

    plan: RunPlan
    collector: MapCollector
    writer: ResultsWriter
    done: bool = False
    closed: bool = False
    dirty_file: bool = True
    dirty_snapshot: bool = True
    last_publish: float = 0.0   # monotonic s of its last snapshot
    exit_status: str = ""       # the bluesky stop document's: "success", "abort", "fail"; "" while open
    timing: StageTiming = field(default_factory=StageTiming)  # this run's frames only

    @property
    def uid(self) -> str:
        return self.plan.uid

    @property
    def index(self) -> int:
        return self.plan.index

    @property
    def geometry(self) -> str:
        """``"bluesky"``, ``"config"`` or ``"strip"``."""
        return self.plan.geometry

    @property
    def parent(self) -> str:
        return self.plan.parent

    @property
    def out(self) -> Path:
        return self.plan.out


class OutputSchedule:
    """When runs are rewritten and published: results files every ``flush_interval_s`` s (those
    changed since), map snapshots every ``snapshot_interval_s`` s (those changed, or not sent
    for ``snapshot_refresh_s`` s, so a viewer that joins late still gets every map).

    ``now``: seconds on a monotonic clock, given by the caller.
    """

    def __init__(self, flush_interval_s: float, now: float, *, snapshot_interval_s: float = 0.25,
                 snapshot_refresh_s: float = 2.0) -> None:
        self.flush_interval_s = flush_interval_s
        self.snapshot_interval_s = snapshot_interval_s
        self.snapshot_refresh_s = snapshot_refresh_s
        self._last_write = self._last_publish = now

    def files_due(self, runs: Iterable[RunState], now: float) -> list[RunState]:
        """The runs whose file to rewrite now (none between flush intervals)."""
        if now - self._last_write < self.flush_interval_s:
            return []
        self._last_write = now
        return [run for run in runs if run.dirty_file and not run.closed]

    def snapshots_due(self, runs: Iterable[RunState], now: float) -> list[RunState]:
        """The runs whose snapshot to publish now; they count as published at ``now``."""
        if now - self._last_publish < self.snapshot_interval_s:
            return []
        self._last_publish = now
        due = [run for run in runs if run.dirty_snapshot or now - run.last_publish > self.snapshot_refresh_s]
        for run in due:
            run.last_publish = now
        return due


def map_snapshot(run: RunState, config: NanomapsConfig, *, rates: dict[str, float], behind: bool) -> MapSnapshot:
    """What viewers get of ``run``: its maps as float32 ``[rows, cols]`` (intensity, each peak's
    amplitude q0 dq phi0 dphi dphi_do, derived/*), axes (µm, or point index when the step is
    unknown), counters, ``rates`` (frames_per_s, latency_*_ms) and progress (0–1)."""
    maps = run.collector.result_maps(config.peaks, config.derived, config.williamson_hall_peaks)
    flat = {"intensity": maps.intensity}
    for peak, params in maps.spots.items():
        for key in ("amplitude", "q0", "dq", "phi0", "dphi", "dphi_do"):
            flat[f"{peak}/{key}"] = params[key]
    for key, values in maps.derived.items():
        flat[f"derived/{key}"] = values
    scan = run.collector.scan
    positions = scan.axis_positions()
    y, x = positions if positions is not None else (np.arange(scan.shape[0], dtype=float),
                                                    np.arange(scan.shape[1], dtype=float))
    measured = int(np.isfinite(maps.intensity).sum())
    return MapSnapshot(run=run.uid, maps={k: v.astype(np.float32) for k, v in flat.items()}, x=x, y=y,
                       motors=scan.motors, snake=scan.snake, counters=run.collector.counters.as_dict(),
                       rates=rates, progress=measured / max(scan.n_points, 1), geometry=run.geometry,
                       parent_run=run.parent, peaks=tuple(p.name for p in config.peaks), behind=behind,
                       done=run.done, exit_status=run.exit_status)
