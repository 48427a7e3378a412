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
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from monitor.links.frame_link import FrameServer, FrameUnavailable
from monitor.links.map_snapshot import FrameView, MapSnapshot
from monitor.links.snapshot_link import SnapshotPublisher
from monitor.session.batch_runner import BatchRunner
from monitor.session.frame_views import frame_view
from monitor.session.map_collector import MapCollector, RunCounters, count_records
from monitor.session.results_file import ResultsWriter
from monitor.session.start_geometry import geometry_from_start
from monitor.session.status_line import StatusLine
from processors.config import ConfigError, NanomapsConfig
from processors.frame_processor import cached_pixel_geometry
from processors.geometry import GeometryError
from processors.process_batch import BatchResult, processor_for
from processors.processing_setup import ProcessingSetup
from stream.encoded_frame import EncodedFrame
from stream.output_path import check_output_file
from stream.raster_scan import RasterScan
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
    expect_documents: bool = False     # bluesky start documents will come (give each series time to get one)
    document_wait_s: float = 5.0       # how long a series waits for its start document
    publish: str | None = None         # map snapshots for viewers (PUB), e.g. tcp://127.0.0.1:5557
    frames: str | None = None          # frames on demand for the inspector (REP), e.g. tcp://127.0.0.1:5558


@dataclass(frozen=True)
class LiveSummary:
    counters: RunCounters
    seconds: float
    stopped_by: str
    latency_ms: tuple[float, float]      # median, 95th percentile (receive → result)
    record_paths: tuple[Path, ...] = ()
    timing: dict = field(default_factory=dict)
    results: tuple[Path, ...] = ()       # one results file per run


class StageTiming:
    """Latency (receive → result) and per-stage times of the good frames of a run or session."""

    def __init__(self, capacity: int = 5000) -> None:
        self._latencies: deque[float] = deque(maxlen=capacity)
        self._stage_s = np.zeros(2)  # decode, process: sums over frames
        self._stage_n = 0

    def add(self, records: np.ndarray) -> None:
        """Account the ``status == 0`` records of a batch result."""
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
        p50, p95 = self.percentiles()
        n = max(self._stage_n, 1)
        return {"latency_median_ms": p50, "latency_p95_ms": p95, "decode_mean_ms": 1e3 * self._stage_s[0] / n,
                "frame_mean_ms": 1e3 * self._stage_s[1] / n}


@dataclass(eq=False)
class RunState:
    """One run (one map): from a bluesky start document, or the config's [scan]."""

    uid: str
    index: int
    geometry: str               # "bluesky", "config" or "strip"
    parent: str
    collector: MapCollector
    writer: ResultsWriter
    out: Path
    next_offset: int = 0
    done: bool = False
    closed: bool = False
    dirty_file: bool = True
    dirty_snapshot: bool = True
    last_publish: float = 0.0
    exit_status: str = ""       # the bluesky stop document's: "success", "abort", "fail"; "" while open
    timing: StageTiming = field(default_factory=StageTiming)  # this run's frames only


class RateMeter:
    """Frames per second over the last few seconds."""

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
        self.arena: SharedArena | None = None
        self.publisher = self.frame_server = None
        self.receiver: StreamReceiver | None = None
        try:
            self._open(config, options)
        except BaseException:
            self.close()  # no socket or shared memory may outlive a failed start
            raise
        self.timing = StageTiming()  # the whole session (the summary); each run has its own
        self.recorder: StreamRecorder | None = None
        self.last_message_time = time.monotonic()
        self.last_good_time: float | None = None  # a valid image arrived (--idle-timeout counts from here)
        self.ready = threading.Event()  # set once the workers have built their tables
        self.runs: dict[str, RunState] = {}
        self._documents_seen = False
        self.series_setup: dict[int, ProcessingSetup | None] = {}
        self.recent = RecentFrames()
        self._rate = RateMeter()

    def _open(self, config: NanomapsConfig, options: LiveOptions) -> None:
        """Check the config and outputs, take the sockets and shared memory; raises on a user's mistake."""
        check_output_file(options.out, what="results file")
        if options.record is not None:
            check_output_file(options.record, what="recording")
        # geometry, tables and windows are checked before listening: a bad config fails now,
        # and workers can build their tables while the detector is still arming
        self.base_setup = ProcessingSetup.from_config(config)
        processor_for(self.base_setup)
        # a busy or malformed viewer address is the user's to fix before data flows, not a
        # surprise later: fail at start with the fix (--publish none to go without viewers)
        self.publisher = SnapshotPublisher(options.publish) if options.publish else None
        self.frame_server = FrameServer(options.frames, self._frame_for) if options.frames else None
        # local workers read frames from shared memory (one copy, no pipes); its size is the backlog bound
        self.arena = SharedArena(self._budget) if options.scheduler is None else None
        self.receiver = StreamReceiver(options.endpoint, socket_type=config.stream.socket,
                                       protocol=config.stream.protocol, channel=config.stream.channel,
                                       copy_blobs=self.arena is None,
                                       # the workers decode every frame and count a truncated one as
                                       # corrupt: the socket thread need not walk its blocks too
                                       check_blocks=False)

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
        if isinstance(msg, ImageMessage) or self.last_good_time is None:
            # the idle clock starts with the first message of any kind and is reset only by
            # valid images: a stream of undecodable messages must not keep a session alive
            self.last_good_time = self.last_message_time
        if recorder is not None:
            recorder.on_message(msg)
        if isinstance(msg, ImageMessage):
            frame = msg.frame
            self.recent.add(frame)
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
                self._queue.put(("dropped", frame.series))  # counted by the main thread, for its run
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

    # --- runs --------------------------------------------------------------------------
    def on_document(self, name: str, doc: dict) -> None:
        """A bluesky document (any thread): a start document gives the next series its map, a stop
        document says how the run ended (shown and written: an aborted map must say so)."""
        if name == "start":
            self._documents_seen = True
            self._queue.put(("start-document", doc))
        elif name == "stop":
            self._queue.put(("stop-document", doc))

    def _new_run(self, doc: dict | None) -> "RunState":
        """A run from a bluesky start document, or from the config's [scan] when there is none."""
        cfg = self.config
        index = len(self.runs) + 1
        if doc is None:
            scan, geometry, uid, parent = cfg.scan, "config", f"run-{index}", ""
        else:
            uid, parent = str(doc.get("uid", f"run-{index}")), str(doc.get("parent_uid") or "")
            scan = geometry_from_start(doc)
            geometry = "bluesky"
            if scan is None:  # no grid in the start document: a 1-D strip that grows
                motors = tuple(doc.get("motors") or ("", "point"))[-2:]
                scan = RasterScan((1, max(1, int(doc.get("num_points") or 1))),
                                  motors=(motors[0] if len(motors) == 2 else "", motors[-1]))
                geometry = "strip"
        out = self.options.out if index == 1 else self.options.out.with_name(
            f"{self.options.out.stem}_{index}{self.options.out.suffix}")
        writer = ResultsWriter(out, cfg, scan, inputs=(self.options.endpoint,), poni_text=self.base_setup.poni_text,
                               run_uid=uid, parent_uid=parent, geometry=geometry)
        run = RunState(uid, index, geometry, parent, MapCollector(scan, tuple(p.name for p in cfg.peaks), {}),
                       writer, out)
        self.runs[uid] = run
        log.info("run %s: %s map %d × %d (%s)%s → %s", uid[:8], geometry, scan.shape[0], scan.shape[1],
                 "snake" if scan.snake else "raster", f", rescan of {parent[:8]}" if parent else "", out)
        return run

    def _write_run(self, run: "RunState", final: bool = False) -> None:
        cfg = self.config
        run.writer.set_scan(run.collector.scan)
        maps = run.collector.result_maps(cfg.peaks, cfg.derived, cfg.williamson_hall_peaks)
        run.writer.write(maps, run.collector.frames_table(), run.collector.counters, final=final,
                         timing=run.timing.as_dict(), exit_status=run.exit_status)
        run.dirty_file = False

    def _publish(self, run: "RunState") -> None:
        if self.publisher is None:
            return
        cfg = self.config
        maps = run.collector.result_maps(cfg.peaks, cfg.derived, cfg.williamson_hall_peaks)
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
        p50, p95 = self.timing.percentiles()
        snap = MapSnapshot(run=run.uid, maps={k: v.astype(np.float32) for k, v in flat.items()}, x=x, y=y,
                           motors=scan.motors, snake=scan.snake, counters=run.collector.counters.as_dict(),
                           rates={"frames_per_s": self._rate.rate(), "latency_median_ms": p50, "latency_p95_ms": p95},
                           progress=measured / max(scan.n_points, 1), geometry=run.geometry, parent_run=run.parent,
                           peaks=tuple(p.name for p in cfg.peaks), behind=self.counters.dropped > 0, done=run.done,
                           exit_status=run.exit_status)
        self.publisher.publish(snap)
        run.dirty_snapshot = False

    # --- frames on demand ------------------------------------------------------------
    def _frame_for(self, run_id: str, row: int, col: int) -> FrameView:
        run = self.runs.get(run_id)
        if run is None:
            raise FrameUnavailable(f"no run {run_id!r} in this processor (runs: {', '.join(self.runs) or 'none'})")
        slot = run.collector.slot_of_point(row, col)
        if slot < 0:
            raise FrameUnavailable(f"point ({row}, {col}) is outside the {run.collector.scan.shape} map")
        rec = run.collector.records[slot]
        series, number = int(rec["series"]), int(rec["frame"])
        if number < 0:
            raise FrameUnavailable(f"point ({row}, {col}) has no frame yet")
        frame = self.recent.get((series, number))
        source = "ring buffer of recent frames"
        if frame is None and self.recorder is not None:
            frame = self.recorder.read_frame(series, number)
            source = "recording"
        if frame is None:
            raise FrameUnavailable(f"frame {number} of series {series} is no longer in memory"
                                   + ("" if self.recorder else "; record the run (--record) to inspect older frames"))
        setup = self.series_setup.get(series) or self.base_setup
        processor = processor_for(setup)
        geometry = cached_pixel_geometry(setup.poni_text, setup.poni_source)
        try:
            return frame_view(processor, frame, run=run_id, row=row, col=col, q_map=geometry.q_A,
                              chi_map=geometry.chi_deg, source=source)
        except ValueError as exc:
            raise FrameUnavailable(f"frame {number} of series {series}: {exc}") from exc

    # --- main thread -----------------------------------------------------------------
    def run(self, stop: threading.Event) -> LiveSummary:
        cfg, opt = self.config, self.options
        t0 = time.monotonic()
        status = StatusLine(enabled=opt.status)
        series_run: dict[int, RunState] = {}
        pending_doc: list[dict] = []
        early = RunCounters()  # bad messages before the first run
        # bluesky stages the detector (series header) before it opens the run (start document),
        # and the two travel by different sockets: a series may wait for its document a while
        awaiting: dict[int, tuple[float, SeriesStart]] = {}
        held: dict[int, list] = {}            # records of awaiting series
        held_received: dict[int, int] = {}    # frames received for awaiting series

        def on_result(batch, result: BatchResult) -> None:
            self._release(batch)
            rec = result.records
            count_records(self.counters, rec)
            for series in np.unique(rec["series"]):
                mine = rec[rec["series"] == series]
                run = series_run.get(int(series))
                if run is not None:
                    run.collector.add(BatchResult(mine))
                    run.timing.add(mine)
                    run.dirty_file = run.dirty_snapshot = True
                elif int(series) in awaiting:
                    held.setdefault(int(series), []).append(mine)
            self.timing.add(rec)
            self._rate.add(int(np.count_nonzero(rec["status"] == 0)))
            for kind, message in result.messages:
                self.limiter.log(logging.WARNING, kind, "%s", message)

        runner = BatchRunner(opt.workers, opt.scheduler, on_result, self.counters, self.limiter)
        warming = runner.warm_up(self.base_setup)
        receiver_thread = threading.Thread(target=self._receive_loop, name="nanomaps-receiver", daemon=True)
        receiver_thread.start()
        log.info("listening on %s; processing on %s%s%s", opt.endpoint, runner.description,
                 f"; maps on {self.publisher.endpoint}" if self.publisher else "",
                 f"; frames on {self.frame_server.endpoint}" if self.frame_server else "")

        setup: ProcessingSetup | None = None
        current: RunState | None = None
        batch: list = []
        batch_started = 0.0
        ready: deque = deque()
        series_done = 0
        last_frame: dict[int, int] = {}
        receiving = True
        stopped_by = "series"
        last_write = last_publish = time.monotonic()

        def close_batch() -> None:
            nonlocal batch
            if batch:
                ready.append((setup, batch))
                batch = []

        def begin_run(doc: dict | None) -> RunState:
            """A new map: the previous bluesky run is complete, its file written a last time."""
            nonlocal current, early
            if current is not None and current.geometry != "config":
                current.done = True
                self._write_run(current, final=True)
                self._publish(current)
            current = self._new_run(doc)
            current.collector.counters.corrupt += early.corrupt
            current.collector.counters.late += early.late
            early = RunCounters()
            return current

        def assign(series: int, run: RunState, header: SeriesStart) -> None:
            series_run[series] = run
            if series not in run.collector.series_offsets:
                run.collector.series_offsets[series] = run.next_offset
            if run.geometry == "strip":
                seen = run.next_offset + max(header.nimages, last_frame.get(series, -1) + 1)
                run.collector.grow(max(seen, 1))
            run.collector.counters.received += held_received.pop(series, 0)
            for records in held.pop(series, []):
                run.collector.add(BatchResult(records))
                run.timing.add(records)
            run.dirty_file = run.dirty_snapshot = True

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
                    if isinstance(msg, tuple) and msg[0] == "start-document":
                        if awaiting:  # the series header came first: this document is its run
                            series = next(iter(awaiting))
                            _, header = awaiting.pop(series)
                            assign(series, begin_run(msg[1]), header)
                        else:
                            pending_doc.append(msg[1])
                    elif isinstance(msg, tuple) and msg[0] == "stop-document":
                        run = self.runs.get(str(msg[1].get("run_start", "")))
                        if run is not None:
                            run.exit_status = str(msg[1].get("exit_status") or "")
                            run.dirty_file = run.dirty_snapshot = True
                            if run.exit_status != "success":
                                log.warning("run %s ended: %s%s", run.uid[:8], run.exit_status,
                                            f" ({msg[1]['reason']})" if msg[1].get("reason") else "")
                    elif isinstance(msg, tuple) and msg[0] == "dropped":
                        self.counters.received += 1
                        self.counters.dropped += 1
                        run = series_run.get(msg[1])
                        if run is not None:
                            run.collector.counters.received += 1
                            run.collector.counters.dropped += 1
                            run.dirty_file = run.dirty_snapshot = True
                    elif isinstance(msg, ImageMessage):
                        self.counters.received += 1
                        frame = msg.frame
                        run = series_run.get(frame.series)
                        if run is not None:
                            run.collector.counters.received += 1
                        elif frame.series in awaiting:
                            held_received[frame.series] = held_received.get(frame.series, 0) + 1
                        if setup is None or (run is None and frame.series not in awaiting):
                            self.counters.dropped += 1
                            if run is not None:
                                run.collector.counters.dropped += 1
                            self._release([frame])
                            continue
                        if run is not None and run.geometry == "strip":
                            slot = run.collector.series_offsets.get(frame.series, 0) + frame.frame
                            if slot >= run.collector.scan.n_frames:
                                run.collector.grow(max(2 * run.collector.scan.n_frames, slot + 1))
                        last_frame[frame.series] = max(last_frame.get(frame.series, -1), frame.frame)
                        if not batch:
                            batch_started = time.monotonic()
                        batch.append(frame)
                        if len(batch) >= cfg.executor.batch_size:
                            close_batch()
                    elif isinstance(msg, SeriesStart):
                        close_batch()
                        if pending_doc:
                            assign(msg.series, begin_run(pending_doc.pop(0)), msg)  # a bluesky run begins
                        elif self._documents_seen or opt.expect_documents:
                            awaiting[msg.series] = (time.monotonic() + opt.document_wait_s, msg)
                        elif current is None:
                            assign(msg.series, begin_run(None), msg)  # the config's [scan]
                        else:
                            assign(msg.series, current, msg)  # one scan recorded as several series
                        for problem in msg.problems:
                            log.warning("series %d header: %s", msg.series, problem)
                        setup = self._setup_for(msg)
                        self.series_setup[msg.series] = setup
                    elif isinstance(msg, SeriesEnd):
                        close_batch()
                        series_done += 1
                        run = series_run.get(msg.series)
                        if run is not None:
                            run.next_offset = run.collector.series_offsets.get(msg.series, 0) + \
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
                        # a bad message belongs to the run being received (or the first one to come)
                        key = "late" if msg.kind == "late" else "corrupt"
                        counters = current.collector.counters if current is not None else early
                        setattr(counters, key, getattr(counters, key) + 1)
                        self.limiter.log(logging.WARNING, f"{msg.kind} message", "%s message: %s",
                                         msg.kind, msg.reason)
                for series, (deadline, header) in list(awaiting.items()):
                    if time.monotonic() > deadline or not receiving:
                        log.warning("series %d: no bluesky start document within %.0f s: its map uses the "
                                    "config's [scan]", series, opt.document_wait_s)
                        del awaiting[series]
                        assign(series, begin_run(None), header)
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
                good = self.last_good_time
                if (opt.idle_timeout_s and good is not None and not self._stop_receiving.is_set()
                        and time.monotonic() - good > opt.idle_timeout_s):
                    stopped_by = "idle"
                    log.info("no valid frame for %.0f s (--idle-timeout): stopping", opt.idle_timeout_s)
                    self._stop_receiving.set()
                if not receiving and not ready and not batch and not awaiting:
                    break
                # 5. results at least once per second, maps to viewers a few times per second
                now = time.monotonic()
                if now - last_write >= cfg.monitor.flush_interval_s:
                    for run in self.runs.values():
                        if run.dirty_file and not run.closed:
                            self._write_run(run)
                    last_write = now
                if now - last_publish >= 0.25:
                    for run in self.runs.values():
                        if run.dirty_snapshot or now - run.last_publish > 2.0:
                            self._publish(run)
                            run.last_publish = now
                    last_publish = now
                status.update(self._status_text(runner, len(ready)))
            if not runner.drain(opt.drain_timeout_s):
                log.error("workers did not finish within %.0f s: %d batch(es) abandoned", opt.drain_timeout_s,
                          runner.in_flight)
        finally:
            self._stop_receiving.set()
            receiver_thread.join(timeout=10)
            runner.close()
            self.limiter.flush()
            if not self.runs:  # nothing ever arrived: still leave a (empty) results file
                self._new_run(None)
            for run in self.runs.values():
                run.done = True
                if not run.closed:
                    self._write_run(run, final=True)
                    self._publish(run)
                    run.writer.close()
                    run.closed = True
            status.update(self._status_text(runner, 0), force=True)
            status.close()
            self.close()
        p50, p95 = self.timing.percentiles()
        return LiveSummary(self.counters, time.monotonic() - t0, stopped_by, (p50, p95),
                           tuple(self.recorder.paths) if self.recorder else (), self.timing.as_dict(),
                           tuple(r.out for r in self.runs.values()))

    def close(self) -> None:
        """Release sockets and shared memory (idempotent; :meth:`run` ends with it)."""
        self.close_links()
        if self.receiver is not None:
            self.receiver.close()
            self.receiver = None
        if self.arena is not None:
            self.arena.close()
            self.arena = None

    def close_links(self) -> None:
        """Stop serving maps and frames (the viewer then shows "no data")."""
        if self.frame_server is not None:
            self.frame_server.close()
            self.frame_server = None
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None

    def _setup_for(self, start: SeriesStart) -> ProcessingSetup:
        """The setup for a new series, checked here so a bad geometry is reported once, clearly.

        A header the config cannot serve (another detector's shape, a mask of the wrong
        shape) falls back on the config's own setup: its frames then reach the workers and
        are counted and mapped as ``wrong_shape``, never silently skipped.
        """
        try:
            setup = ProcessingSetup.from_config(self.config, pixel_mask=start.pixel_mask, shape=start.shape)
            processor_for(setup)  # builds the tables now: fails here, not in every worker
            return setup
        except (ConfigError, GeometryError) as exc:
            log.error("series %d: %s (its frames are counted as wrong_shape%s)", start.series, exc,
                      ", and recorded" if self.options.record else "")
            return self.base_setup

    def _status_text(self, runner: BatchRunner, ready: int) -> str:
        c = self.counters
        p50, p95 = self.timing.percentiles()
        behind = " BEHIND" if c.dropped else ""
        # rarer troubles appear only when they happen, so the line stays readable
        extra = "".join(f" | {label} {n}" for label, n in (("wrong shape", c.wrong_shape),
                                                              ("missing", c.missing),
                                                              ("outside scan", c.outside_scan)) if n)
        return (f"received {c.received} | processed {c.processed} | skipped {c.dropped}{behind} | corrupt {c.corrupt}"
                f" | late {c.late}{extra} | queued {ready} in flight {runner.in_flight} | backlog "
                f"{self.backlog_bytes / 1e6:.0f} MB | latency {p50:.0f}/{p95:.0f} ms (p50/p95)")
