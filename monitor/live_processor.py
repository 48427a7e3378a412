"""Live processing: one detector stream in, maps out, nothing lost.

Threads: a receiver thread owns the ZeroMQ socket and the raw recorder, so the
recording gets every frame whatever happens downstream; it hands validated messages
to this (main) thread through a queue. Only images are bounded: when the compressed
frames waiting or in flight exceed ``max_backlog_mb``, further images are skipped for
live processing and counted (``dropped``), never silently. The main thread batches
frames still compressed — by count, or by age so a slow scan is not delayed — feeds
the :class:`BatchRunner`, places results by ``(series, frame)``, and rewrites the
results file at least once per second, so it is valid after Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from monitor.batch_runner import BatchRunner
from monitor.map_collector import MapCollector, RunCounters
from monitor.results_file import ResultsWriter
from monitor.status_line import StatusLine
from processors.config import ConfigError, NanomapsConfig
from processors.geometry import GeometryError
from processors.process_batch import BatchResult, processor_for
from processors.processing_setup import ProcessingSetup
from stream.rate_limited_log import RateLimitedLog
from stream.shared_arena import ArenaSlice, SharedArena
from stream.stream_messages import BadMessage, ImageMessage, SeriesEnd, SeriesStart
from stream.stream_receiver import StreamReceiver
from stream.stream_recorder import StreamRecorder

log = logging.getLogger("nanomaps.process")

_RECEIVER_DONE = object()


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


@dataclass(frozen=True)
class LiveSummary:
    counters: RunCounters
    seconds: float
    stopped_by: str
    latency_ms: tuple[float, float]      # median, 95th percentile (receive → result)
    record_paths: tuple[Path, ...] = ()
    timing: dict = field(default_factory=dict)


class LiveProcessor:
    """Runs one live session; :meth:`run` returns when done, stopped or idle."""

    def __init__(self, config: NanomapsConfig, options: LiveOptions) -> None:
        self.config = config
        self.options = options
        self.counters = RunCounters()
        self.limiter = RateLimitedLog(log)
        self._queue: queue.Queue = queue.Queue()
        self._stop_receiving = threading.Event()
        self._pending_lock = threading.Lock()
        self._pending_bytes = 0
        self._budget = int(config.stream.max_backlog_mb * 1e6)
        # local workers read frames from shared memory (one copy, no pipes); its size is the backlog bound
        self.arena = SharedArena(self._budget) if options.scheduler is None else None
        self._latencies: deque[float] = deque(maxlen=5000)
        self._stage_s = np.zeros(2)  # decode, process: sums over frames
        self._stage_n = 0
        self.recorder: StreamRecorder | None = None
        # geometry, tables and windows are checked before listening: a bad config fails now,
        # and workers can build their tables while the detector is still arming
        self.base_setup = ProcessingSetup.from_config(config)
        processor_for(self.base_setup)
        self.receiver = StreamReceiver(options.endpoint, socket_type=config.stream.socket,
                                       protocol=config.stream.protocol, channel=config.stream.channel,
                                       copy_blobs=self.arena is None,
                                       # the workers decode every frame and count a truncated one as
                                       # corrupt: the socket thread need not walk its blocks too
                                       check_blocks=False)
        self.last_message_time = time.monotonic()
        self.ready = threading.Event()  # set once the workers have built their tables

    # --- receiver thread -------------------------------------------------------------
    def _receive_loop(self) -> None:
        recorder = StreamRecorder(self.options.record) if self.options.record else None
        self.recorder = recorder
        last_flush = time.monotonic()
        try:
            while not self._stop_receiving.is_set():
                for msg in self.receiver.receive(100):
                    self._route(msg, recorder)
                if recorder is not None and time.monotonic() - last_flush >= 1.0:
                    recorder.flush()
                    last_flush = time.monotonic()
            for msg in self.receiver.finish():  # the series never ended: close it here
                self._route(msg, recorder)
        except Exception:  # the socket thread must report, not vanish
            log.exception("the receiver stopped on an unexpected error")
        finally:
            if recorder is not None:
                recorder.close()
            self._queue.put(_RECEIVER_DONE)

    def _route(self, msg, recorder: StreamRecorder | None) -> None:
        self.last_message_time = time.monotonic()
        if recorder is not None:
            recorder.on_message(msg)
        if isinstance(msg, ImageMessage):
            frame = msg.frame
            if self.arena is not None:
                piece = self.arena.put(frame.blob)
                if piece is not None:
                    msg = replace(msg, frame=replace(frame, blob=b"", source=piece))
            else:
                with self._pending_lock:
                    piece = None if self._pending_bytes + len(frame.blob) > self._budget else len(frame.blob)
                    if piece is not None:
                        self._pending_bytes += piece
            if piece is None:
                self.counters.received += 1
                self.counters.dropped += 1
                self.limiter.log(logging.WARNING, "backlog", "processing is behind: frame %d of series %d skipped "
                                 "for live processing%s", frame.frame, frame.series,
                                 " (still recorded)" if recorder else "")
                return
        self._queue.put(msg)

    def _release(self, batch) -> None:
        """The frames of ``batch`` are done with: their backlog space is free again."""
        if self.arena is not None:
            for f in batch:
                if isinstance(f.source, ArenaSlice):
                    self.arena.release(f.source)
            return
        with self._pending_lock:
            self._pending_bytes -= sum(len(f.blob) for f in batch)

    @property
    def backlog_bytes(self) -> int:
        return self.arena.used if self.arena is not None else self._pending_bytes

    # --- main thread -----------------------------------------------------------------
    def run(self, stop: threading.Event) -> LiveSummary:
        cfg, opt = self.config, self.options
        t0 = time.monotonic()
        collector = MapCollector(cfg.scan, tuple(p.name for p in cfg.peaks), {})
        collector.counters = self.counters
        status = StatusLine(enabled=opt.status)
        writer = ResultsWriter(opt.out, cfg, cfg.scan, inputs=(opt.endpoint,), poni_text=cfg.geometry.poni.read_text())

        def on_result(batch, result: BatchResult) -> None:
            collector.add(result)
            self._release(batch)
            rec = result.records
            ok = rec["status"] == 0
            self._latencies.extend((rec["done_time"] - rec["receive_time"])[ok] * 1e3)
            self._stage_s += (float(rec["decode_s"][ok].sum()), float(rec["process_s"][ok].sum()))
            self._stage_n += int(ok.sum())
            for kind, message in result.messages:
                self.limiter.log(logging.WARNING, kind, "%s", message)

        runner = BatchRunner(opt.workers, opt.scheduler, on_result, self.counters, self.limiter)
        warming = runner.warm_up(self.base_setup)
        receiver_thread = threading.Thread(target=self._receive_loop, name="nanomaps-receiver", daemon=True)
        receiver_thread.start()
        log.info("listening on %s; processing on %s", opt.endpoint, runner.description)

        setup: ProcessingSetup | None = None
        batch: list = []
        batch_started = 0.0
        ready: deque = deque()
        series_seen = 0
        series_done = 0
        next_offset = 0
        last_frame: dict[int, int] = {}
        receiving = True
        stopped_by = "series"
        last_write = time.monotonic()

        def close_batch() -> None:
            nonlocal batch
            if batch:
                ready.append((setup, batch))
                batch = []

        def write(final: bool = False) -> None:
            maps = collector.result_maps(cfg.peaks, cfg.derived, cfg.williamson_hall_peaks)
            writer.write(maps, collector.frames_table(), self.counters, final=final, timing=self._timing())

        try:
            while True:
                # 1. take what the receiver has (a bounded number per turn keeps the rest lively)
                for _ in range(500):
                    try:
                        msg = self._queue.get(timeout=0.005 if (ready or runner.in_flight) else 0.02)
                    except queue.Empty:
                        break
                    if msg is _RECEIVER_DONE:
                        receiving = False
                        break
                    if isinstance(msg, ImageMessage):
                        self.counters.received += 1
                        frame = msg.frame
                        if setup is None:
                            self.counters.dropped += 1
                            self._release([frame])
                            continue
                        last_frame[frame.series] = max(last_frame.get(frame.series, -1), frame.frame)
                        if not batch:
                            batch_started = time.monotonic()
                        batch.append(frame)
                        if len(batch) >= cfg.executor.batch_size:
                            close_batch()
                    elif isinstance(msg, SeriesStart):
                        close_batch()
                        series_seen += 1
                        if msg.series not in collector.series_offsets:
                            collector.series_offsets[msg.series] = next_offset
                        for problem in msg.problems:
                            log.warning("series %d header: %s", msg.series, problem)
                        setup = self._setup_for(msg)
                    elif isinstance(msg, SeriesEnd):
                        close_batch()
                        series_done += 1
                        next_offset = collector.series_offsets.get(msg.series, next_offset) + \
                            last_frame.get(msg.series, -1) + 1
                        log.info("series %d ended%s (%d/%s)", msg.series, " without an end message" if msg.implicit
                                 else "", series_done, opt.series or "∞")
                        if opt.series and series_done >= opt.series:
                            self._stop_receiving.set()
                    elif isinstance(msg, BadMessage):
                        if msg.kind == "late":
                            self.counters.late += 1
                        else:
                            self.counters.corrupt += 1
                        self.limiter.log(logging.WARNING, f"{msg.kind} message", "%s message: %s",
                                         msg.kind, msg.reason)
                if warming and all(f.done() for f in warming):
                    log.info("ready: %d worker(s) prepared in %.1f s", len(warming), time.monotonic() - t0)
                    warming = []
                    self.ready.set()
                # 2. a batch leaves when full or old enough
                if batch and time.monotonic() - batch_started >= cfg.stream.batch_timeout_s:
                    close_batch()
                if not receiving:
                    close_batch()
                # 3. feed the workers, take finished batches
                while ready and runner.can_submit():
                    runner.submit(*ready.popleft())
                runner.poll(0.0 if ready else 0.005)
                # 4. stop requests
                if stop.is_set() and not self._stop_receiving.is_set():
                    stopped_by = "signal"
                    log.info("stopping: finishing the frames already received")
                    self._stop_receiving.set()
                if (opt.idle_timeout_s and series_seen and not self._stop_receiving.is_set()
                        and time.monotonic() - self.last_message_time > opt.idle_timeout_s):
                    stopped_by = "idle"
                    log.info("nothing received for %.0f s: stopping", opt.idle_timeout_s)
                    self._stop_receiving.set()
                if not receiving and not ready and not batch:
                    break
                # 5. results at least once per second; the status line
                if time.monotonic() - last_write >= cfg.monitor.flush_interval_s:
                    write()
                    last_write = time.monotonic()
                status.update(self._status_text(runner, len(ready)))
            if not runner.drain(opt.drain_timeout_s):
                log.error("workers did not finish within %.0f s: %d batch(es) abandoned", opt.drain_timeout_s,
                          runner.in_flight)
        finally:
            self._stop_receiving.set()
            receiver_thread.join(timeout=10)
            runner.close()
            self.limiter.flush()
            write(final=True)
            writer.close()
            status.update(self._status_text(runner, 0), force=True)
            status.close()
            self.receiver.close()
            if self.arena is not None:
                self.arena.close()
        p50, p95 = self._latency_percentiles()
        return LiveSummary(self.counters, time.monotonic() - t0, stopped_by, (p50, p95),
                           tuple(self.recorder.paths) if self.recorder else (), self._timing())

    def _setup_for(self, start: SeriesStart) -> ProcessingSetup | None:
        """The setup for a new series, checked here so a bad geometry is reported once, clearly."""
        try:
            setup = ProcessingSetup.from_config(self.config, pixel_mask=start.pixel_mask, shape=start.shape)
            processor_for(setup)  # builds the tables now: fails here, not in every worker
            return setup
        except (ConfigError, GeometryError) as exc:
            log.error("series %d cannot be processed: %s (its frames are skipped%s)", start.series, exc,
                      ", but recorded" if self.options.record else "")
            return None

    def _latency_percentiles(self) -> tuple[float, float]:
        if not self._latencies:
            return (float("nan"), float("nan"))
        values = np.fromiter(self._latencies, dtype=np.float64)
        return float(np.percentile(values, 50)), float(np.percentile(values, 95))

    def _timing(self) -> dict[str, float]:
        p50, p95 = self._latency_percentiles()
        n = max(self._stage_n, 1)
        return {"latency_median_ms": p50, "latency_p95_ms": p95, "decode_mean_ms": 1e3 * self._stage_s[0] / n,
                "frame_mean_ms": 1e3 * self._stage_s[1] / n}

    def _status_text(self, runner: BatchRunner, ready: int) -> str:
        c = self.counters
        p50, p95 = self._latency_percentiles()
        behind = " BEHIND" if c.dropped else ""
        return (f"received {c.received} | processed {c.processed} | skipped {c.dropped}{behind} | corrupt {c.corrupt}"
                f" | late {c.late} | queued {ready} in flight {runner.in_flight} | backlog "
                f"{self.backlog_bytes / 1e6:.0f} MB | latency {p50:.0f}/{p95:.0f} ms (p50/p95)")
