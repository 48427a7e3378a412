"""Live processing: one detector stream in, maps out, nothing lost.

Threads: a receiver thread (:mod:`monitor.session.receiver_thread`) owns the ZeroMQ
socket and the raw recorder, so the recording gets every frame whatever happens
downstream; it hands validated messages to this (main) thread through a queue. Only
images are bounded: when the compressed frames waiting or in flight exceed
``max_backlog_mb``, further images are skipped for live processing and counted
(``dropped``), never silently. The main thread asks the :class:`RunRouter` which run
(map) each series and frame belongs to, batches frames still compressed
(:class:`Batcher`: by count, or by age so a slow scan is not delayed), feeds the
:class:`BatchRunner`, places results by ``(series, frame)``, and at least once per second
hands each run's changes to the results writer thread (:class:`ResultsWriterThread`,
:class:`OutputSchedule`), which writes them into the file, readable during the run (SWMR)
and complete after Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import numpy as np

from monitor.links.frame_link import FrameServer
from monitor.links.map_snapshot import FrameView
from monitor.links.snapshot_link import SnapshotPublisher
from monitor.session.batch_runner import BatchRunner
from monitor.session.batcher import Batcher
from monitor.session.event_pages import events_of_page
from monitor.session.frame_views import run_frame_view
from monitor.session.live_options import LiveOptions, LiveSummary
from monitor.session.main_queue import BATCH_DONE, take_messages
from monitor.session.map_collector import MapCollector, RunCounters, count_records, hot_pixels_message
from monitor.session.receiver_thread import ReceiverThread, RecentFrames
from monitor.session.results_file import ResultsWriter, make_layout_template
from monitor.session.results_template import ResultsTemplates
from monitor.session.results_update import take_update
from monitor.session.results_writer_thread import ResultsWriterThread
from monitor.session.run_events import (
    DocumentTimedOut,
    Event,
    FramePlaced,
    RunBegun,
    RunComplete,
    RunExit,
    RunPlan,
    SeriesAssigned,
    StripGrown,
)
from monitor.session.run_router import RunRouter
from monitor.session.run_state import OutputSchedule, RateMeter, RunState, StageTiming, map_snapshot
from monitor.session.series_setups import SeriesSetups
from monitor.session.status_line import StatusLine, status_text
from processors.config import NanomapsConfig
from processors.process_batch import BatchResult
from processors.processing_setup import ProcessingSetup
from stream.encoded_frame import EncodedFrame
from stream.heap_freeze import freeze_long_lived
from stream.output_path import check_output_file
from stream.raster_scan import RasterScan
from stream.rate_limited_log import RateLimitedLog
from stream.shared_arena import SharedArena
from stream.stream_messages import BadMessage, ImageMessage, SeriesEnd, SeriesStart
from stream.stream_receiver import StreamReceiver
from stream.stream_recorder import StreamRecorder

# these live in their own modules now; importing them from here still works
__all__ = ["LiveOptions", "LiveProcessor", "LiveSummary", "RateMeter", "RecentFrames", "RunState", "StageTiming"]

log = logging.getLogger("nanomaps.process")

#: At most this many waiting batches are sent to a worker as one job (see :meth:`Batcher.take`).
MERGED_BATCHES = 4



class LiveProcessor:
    """Runs one live session; :meth:`run` returns when done, stopped or idle."""

    def __init__(self, config: NanomapsConfig, options: LiveOptions) -> None:
        self.config = config
        self.options = options
        self.counters = RunCounters()
        self.limiter = RateLimitedLog(log)
        self._hot_pixels: set[tuple[int, int]] = set()  # hot pixels reported in any run of the session
        self._queue: queue.Queue = queue.Queue()
        self._stop_receiving = threading.Event()
        self.arena: SharedArena | None = None
        self.publisher = self.frame_server = None
        self.receiver: StreamReceiver | None = None
        # the frame server may ask for frames as soon as it listens
        self.runs: dict[str, RunState] = {}
        self.recent = RecentFrames()
        self._intake: ReceiverThread | None = None
        try:
            self._open(config, options)
        except BaseException:
            self.close()  # no socket or shared memory may outlive a failed start
            raise
        self._intake = ReceiverThread(self.receiver, self._queue, self._stop_receiving, record=options.record,
                                      arena=self.arena, budget_bytes=int(config.stream.max_backlog_mb * 1e6),
                                      recent=self.recent, limiter=self.limiter)
        self.timing = StageTiming()  # the whole session (the summary); each run has its own
        self.ready = threading.Event()  # set once the workers have built their tables
        self._documents_seen = False
        self._rate = RateMeter()
        self._router = RunRouter(config.scan, options.out, expect_documents=options.expect_documents,
                                 document_wait_s=options.document_wait_s, detector=config.bluesky.detector)
        self._state: dict[RunPlan, RunState] = {}  # the router's runs (by identity) → their maps and files
        self._batcher: Batcher[ProcessingSetup, EncodedFrame] = Batcher(config.executor.batch_size,
                                                                         config.stream.batch_timeout_s)
        self._series_done = 0
        self._files = ResultsWriterThread()  # writes every run's results file, off this loop
        # each run's file is the template of its layout with the run's strings (≈ 2 ms, not
        # ≈ 50 ms of HDF5 calls holding the GIL as its series' first frames arrive)
        self._templates = ResultsTemplates(config)
        self._runner: BatchRunner | None = None  # the workers, while run() runs

    def _open(self, config: NanomapsConfig, options: LiveOptions) -> None:
        """Check the config and outputs, take the sockets and shared memory; raises on a user's mistake."""
        check_output_file(options.out, what="results file")
        if options.record is not None:
            check_output_file(options.record, what="recording")
        # geometry, tables and windows are checked before listening: a bad config fails now,
        # and workers can build their tables while the detector is still arming
        self.setups = SeriesSetups(config)
        # a busy or malformed viewer address is the user's to fix before data flows, not a
        # surprise later: fail at start with the fix (--publish none to go without viewers)
        self.publisher = SnapshotPublisher(options.publish) if options.publish else None
        self.frame_server = FrameServer(options.frames, self._frame_for) if options.frames else None
        # local workers read frames from shared memory (one copy, no pipes); its size is the backlog bound
        self.arena = SharedArena(int(config.stream.max_backlog_mb * 1e6)) if options.scheduler is None else None
        self.receiver = StreamReceiver(options.endpoint, socket_type=config.stream.socket,
                                       protocol=config.stream.protocol, channel=config.stream.channel,
                                       copy_blobs=self.arena is None,
                                       # the workers decode every frame and count a truncated one as
                                       # corrupt: the socket thread need not walk its blocks too
                                       check_blocks=False)

    @property
    def recorder(self) -> StreamRecorder | None:
        """The raw recorder (made by the receiver thread when it starts; None without --record)."""
        return self._intake.recorder if self._intake is not None else None

    @property
    def backlog_bytes(self) -> int:
        return self._intake.backlog_bytes if self._intake is not None else 0

    # --- documents (any thread) ------------------------------------------------------
    def on_document(self, name: str, doc: dict) -> None:
        """A bluesky document (any thread): a start document gives the next series its map, a stop
        document says how the run ended (shown and written: an aborted map must say so)."""
        if name == "start":
            self._documents_seen = True
            self._queue.put(("start-document", doc))
        elif name == "stop":
            self._queue.put(("stop-document", doc))
        elif name in ("descriptor", "event"):  # events place frames and name series (see RunRouter)
            self._queue.put((f"{name}-document", doc))
        elif name == "event_page":
            for event in events_of_page(doc):
                self._queue.put(("event-document", event))

    # --- runs: acting on the router's decisions ----------------------------------------
    def _apply(self, events: list[Event]) -> None:
        """Act on the router's decisions (DocumentExpired: logged by the router, nothing to do)."""
        for event in events:
            if isinstance(event, RunComplete):
                run = self._state[event.run]
                run.done = True
                self._write_run(run, final=True)
                self._publish(run)
            elif isinstance(event, RunBegun):
                run = self._new_run(event.run, event.scan)
                run.collector.counters.corrupt += event.early_corrupt
                run.collector.counters.late += event.early_late
            elif isinstance(event, StripGrown):
                self._state[event.run].collector.grow(event.n_frames)
            elif isinstance(event, SeriesAssigned):
                run = self._state[event.run]
                run.collector.series_offsets.setdefault(event.series, event.offset)
                run.collector.counters.received += event.received
                for records in event.records:
                    self._add_records(run, records)
                run.dirty_file = run.dirty_snapshot = True
            elif isinstance(event, DocumentTimedOut):
                log.warning("series %d: no bluesky start document within %.0f s: its map uses the "
                            "config's [scan]", event.series, event.wait_s)
            elif isinstance(event, FramePlaced):
                run = self._state[event.run]
                run.collector.place_by_event(event.series, event.frame, event.slot)
                run.dirty_file = run.dirty_snapshot = True
            elif isinstance(event, RunExit):
                run = self._state[event.run]
                run.exit_status = event.exit_status
                run.dirty_file = run.dirty_snapshot = True
                if run.exit_status != "success":
                    log.warning("run %s ended: %s%s", run.uid[:8], run.exit_status,
                                f" ({event.reason})" if event.reason else "")

    def _new_run(self, plan: RunPlan, scan: RasterScan) -> RunState:
        """Open the map and results file of a run the router began, with map geometry ``scan``."""
        cfg = self.config
        writer = ResultsWriter(plan.out, cfg, scan, inputs=(self.options.endpoint,),
                               poni_text=self.setups.base.poni_text, run_uid=plan.uid, parent_uid=plan.parent,
                               geometry=plan.geometry, timing_keys=tuple(StageTiming().as_dict()), create=False,
                               templates=self._templates)
        self._files.create(writer)  # on the writer thread, before any of its writes
        run = RunState(plan, MapCollector(scan, tuple(p.name for p in cfg.peaks), {}), writer)
        self.runs[plan.uid] = run
        self._state[plan] = run
        log.info("run %s: %s map %d × %d (%s)%s → %s", plan.uid[:8], plan.geometry, scan.shape[0], scan.shape[1],
                 "snake" if scan.snake else "raster", f", rescan of {plan.parent[:8]}" if plan.parent else "",
                 plan.out)
        return run

    def _add_records(self, run: RunState, records: np.ndarray) -> None:
        """Place ``records`` in ``run``'s map; outside_scan and duplicate count for the session too."""
        c = run.collector.counters
        outside, duplicate = c.outside_scan, c.duplicate
        run.collector.add(BatchResult(records))
        run.timing.add(records)
        new_hot = run.collector.take_new_hot_pixels()
        if new_hot:  # the session's count is the union over its runs
            self._hot_pixels.update(new_hot)
            self.counters.hot_pixels_masked = len(self._hot_pixels)
            self.limiter.log(logging.WARNING, "hot pixels", "run %s: %s", run.uid[:8], hot_pixels_message(new_hot))
        self.counters.outside_scan += c.outside_scan - outside
        self.counters.duplicate += c.duplicate - duplicate

    def _run_of(self, plan: RunPlan | None) -> RunState | None:
        return None if plan is None else self._state[plan]

    def _write_run(self, run: RunState, final: bool = False, *, stopped_by: str = "", error: str = "") -> None:
        """Hand ``run``'s changes since its last write to the writer thread. A periodic write
        waits while the previous one is still being written (the changes stay in the collector
        for the next); a final one never waits."""
        if not final and self._files.busy(run.writer):
            return
        # after a failed write the file misses what that write held: rewrite it whole
        update = take_update(run.collector, self.config, full=run.writer.stale, final=final,
                             timing=run.timing.as_dict(), exit_status=run.exit_status, stopped_by=stopped_by,
                             error=error)
        self._files.submit(run.writer, update)
        run.dirty_file = False

    def _publish(self, run: RunState) -> None:
        if self.publisher is None:
            return
        p50, p95 = self.timing.percentiles()
        rates = {"frames_per_s": self._rate.rate(), "latency_median_ms": p50, "latency_p95_ms": p95}
        self.publisher.publish(map_snapshot(run, self.config, rates=rates, behind=self.counters.dropped > 0))
        run.dirty_snapshot = False

    # --- frames on demand ------------------------------------------------------------
    def _frame_for(self, run_id: str, row: int, col: int) -> FrameView:
        return run_frame_view(self.runs, self.setups, self.recent, self.recorder, run_id, row, col)

    # --- main thread: messages from the receiver ---------------------------------------
    def _handle(self, msg) -> None:
        """One message from the receiver thread's queue (or a document put there by :meth:`on_document`)."""
        if isinstance(msg, tuple):
            kind, payload = msg
            if kind == "start-document":
                self._apply(self._router.start_document(payload, time.monotonic()))
            elif kind == "stop-document":
                self._apply(self._router.stop_document(payload, time.monotonic()))
            elif kind == "descriptor-document":
                self._router.descriptor_document(payload)
            elif kind == "event-document":
                self._apply(self._router.event_document(payload, time.monotonic()))
            elif kind == "dropped":
                self._on_dropped(payload)
        elif isinstance(msg, ImageMessage):
            self._on_image(msg.frame, msg.reordered)
        elif isinstance(msg, SeriesStart):
            self._on_series_start(msg)
        elif isinstance(msg, SeriesEnd):
            self._on_series_end(msg)
        elif isinstance(msg, BadMessage):
            self._on_bad_message(msg)

    def _on_dropped(self, series: int) -> None:
        """The receiver skipped a frame of ``series`` (backlog full): counted for the session and its run."""
        self.counters.received += 1
        self.counters.dropped += 1
        run = self._run_of(self._router.run_of(series))
        if run is not None:
            run.collector.counters.received += 1
            run.collector.counters.dropped += 1
            run.dirty_file = run.dirty_snapshot = True

    def _on_image(self, frame: EncodedFrame, reordered: bool = False) -> None:
        self.counters.received += 1
        self.counters.reordered += reordered
        route = self._router.frame(frame.series, frame.frame)
        run = self._run_of(route.run)
        if run is not None:
            run.collector.counters.received += 1
            run.collector.counters.reordered += reordered
        if not route.accepted:  # no header for its series: no run, no setup to process it with
            self.counters.dropped += 1
            self._intake.release([frame])
            return
        if route.grow_to is not None:
            run.collector.grow(route.grow_to)
        self._batcher.add(frame, time.monotonic())

    def _on_series_start(self, header: SeriesStart) -> None:
        self._batcher.flush()  # a batch has one setup: the new series gets its own
        for problem in header.problems:
            log.warning("series %d header: %s", header.series, problem)
        setup = self.setups.start(header, self._runner, recording=self.options.record is not None)
        self._apply(self._router.series_start(header, time.monotonic(), documents_announced=self._documents_seen))
        self._batcher.context = setup

    def _on_series_end(self, end: SeriesEnd) -> None:
        self._batcher.flush()
        self._series_done += 1
        self._router.series_end(end.series)
        opt = self.options
        log.info("series %d ended%s (%d/%s)", end.series, " without an end message" if end.implicit else "",
                 self._series_done, opt.series or "∞")
        if opt.series and self._series_done >= opt.series:
            self._stop_receiving.set()

    def _on_bad_message(self, msg: BadMessage) -> None:
        key = "late" if msg.kind == "late" else "corrupt"
        setattr(self.counters, key, getattr(self.counters, key) + 1)
        # a bad message belongs to the run being received (the router keeps it for the first one to come)
        run = self._run_of(self._router.bad_message(key))
        if run is not None:
            counters = run.collector.counters
            setattr(counters, key, getattr(counters, key) + 1)
        self.limiter.log(logging.WARNING, f"{msg.kind} message", "%s message: %s", msg.kind, msg.reason)

    def _on_result(self, batch: list[EncodedFrame], result: BatchResult) -> None:
        """A batch came back from the workers (this thread): its records go to their runs' maps."""
        self._intake.release(batch)
        rec = result.records
        count_records(self.counters, rec)
        for series in np.unique(rec["series"]):
            mine = rec[rec["series"] == series]
            run = self._run_of(self._router.records(int(series), mine))  # None: held, or no run
            if run is not None:
                self._add_records(run, mine)
                run.dirty_file = run.dirty_snapshot = True
        self.timing.add(rec)
        self._rate.add(int(np.count_nonzero(rec["status"] == 0)))
        for kind, message in result.messages:
            self.limiter.log(logging.WARNING, kind, "%s", message)

    # --- main thread: the loop -----------------------------------------------------------
    def run(self, stop: threading.Event) -> LiveSummary:
        """Process until the series are done, ``stop`` is set or the stream is idle; then write
        every run's file a last time, release everything and return the summary."""
        cfg, opt = self.config, self.options
        t0 = time.monotonic()
        status = StatusLine(enabled=opt.status)
        batches = self._batcher
        # a finished batch wakes this loop through the queue: it blocks in one place, and turns
        # only when there is something to do (or a timer is due)
        runner = BatchRunner(opt.workers, opt.scheduler, self._on_result, self.counters, self.limiter, stop=stop,
                             on_done=lambda _future: self._queue.put(BATCH_DONE))
        self._runner = runner
        if self.arena is not None:
            self.arena.warm_up()
        # the layout of a run mapped on the config's [scan] is made now, while the workers warm up
        make_layout_template(self._templates, cfg.scan, inputs=(opt.endpoint,), poni_text=self.setups.base.poni_text,
                             timing_keys=tuple(StageTiming().as_dict()))
        warming = runner.warm_up(self.setups.base, self.arena.name if self.arena is not None else None)
        self._intake.start()
        log.info("listening on %s; processing on %s%s%s", opt.endpoint, runner.description,
                 f"; maps on {self.publisher.endpoint}" if self.publisher else "",
                 f"; frames on {self.frame_server.endpoint}" if self.frame_server else "")
        receiving = True
        stopped_by = "series"
        outputs = OutputSchedule(cfg.monitor.flush_interval_s, time.monotonic())
        try:
            while True:
                # 1. take what the receiver has (a bounded number per turn keeps the rest lively)
                if not take_messages(self._queue, self._handle):
                    receiving = False
                # nothing more comes once the receiver is done: no series waits any longer
                self._apply(self._router.expire(time.monotonic(), force=not receiving))
                if warming and all(f.done() for f in warming):
                    log.info("ready: %d worker(s) prepared in %.1f s", len(warming), time.monotonic() - t0)
                    warming = []
                    freeze_long_lived()  # start-up is over: its objects need no more GC walks
                    self.ready.set()
                # 2. a batch leaves when full or old enough
                batches.flush_if_old(time.monotonic())
                if not receiving:
                    batches.flush()
                # 3. feed the workers, take finished batches
                while batches.ready and runner.can_submit():
                    # behind (the workers busy, batches waiting): up to 4 batches go as one job; the
                    # per-job costs (a worker's wake-up with its tables out of cache, the result's
                    # trip back, the collection here) are ≈ 0.2 ms per 4M frame at 16 frames a job
                    runner.submit(*batches.take(max_frames=MERGED_BATCHES * batches.batch_size))
                runner.poll(0.0)
                # 4. stop requests
                if stop.is_set() and not self._stop_receiving.is_set():
                    stopped_by = "signal"
                    log.info("stopping: finishing the frames already received")
                    self._stop_receiving.set()
                good = self._intake.last_good_time
                if (opt.idle_timeout_s and good is not None and not self._stop_receiving.is_set()
                        and time.monotonic() - good > opt.idle_timeout_s):
                    stopped_by = "idle"
                    log.info("no valid frame for %.0f s (--idle-timeout): stopping", opt.idle_timeout_s)
                    self._stop_receiving.set()
                if not receiving and batches.empty and not self._router.waiting:
                    break
                # 5. results at least once per second, maps to viewers a few times per second
                now = time.monotonic()
                for run in outputs.files_due(self.runs.values(), now):
                    self._write_run(run)
                for run in outputs.snapshots_due(self.runs.values(), now):
                    self._publish(run)
                if status.due(now):
                    status.update(status_text(self.counters, self.timing.percentiles(), len(batches.ready),
                                              runner.in_flight, self.backlog_bytes))
            if not runner.drain(opt.drain_timeout_s):
                log.error("workers did not finish within %.0f s: %d batch(es) abandoned", opt.drain_timeout_s,
                          runner.in_flight)
        finally:
            self._stop_receiving.set()
            self._intake.join(timeout=10)
            self._files.wait()  # a failed results write so far is this session's error too
            error = "; ".join(self._intake.errors + self._files.errors)
            if error:  # loud: the summary, the exit status and every results file say so
                stopped_by = "error"
            runner.close()
            self._runner = None
            self.limiter.flush()
            if not self.runs:  # nothing ever arrived: still leave a (empty) results file
                first = self._router.ensure_run()
                if first is not None:
                    self._new_run(first.run, first.scan)
            failed_before = len(self._files.errors)
            for run in self.runs.values():
                run.done = True
                if not run.closed:
                    self._write_run(run, final=True, stopped_by=stopped_by, error=error)
                    self._publish(run)
            self._files.close()  # every final write is complete before its file closes
            for run in self.runs.values():
                if not run.closed:
                    run.writer.close()
                    run.closed = True
            if len(self._files.errors) > failed_before:  # a final write failed: the summary still says so
                stopped_by, error = "error", "; ".join(self._intake.errors + self._files.errors)
            if status.enabled:
                status.update(status_text(self.counters, self.timing.percentiles(), 0, runner.in_flight,
                                          self.backlog_bytes), force=True)
            status.close()
            self.close()
        p50, p95 = self.timing.percentiles()
        return LiveSummary(self.counters, time.monotonic() - t0, stopped_by, (p50, p95),
                           tuple(self.recorder.paths) if self.recorder else (), self.timing.as_dict(),
                           tuple(r.out for r in self.runs.values()), error)

    def close(self) -> None:
        """Release sockets and shared memory (idempotent; :meth:`run` ends with it)."""
        self.close_links()
        if self._intake is not None and self._intake.alive:
            # a ZeroMQ socket must not be closed while another thread may use it: the receiver
            # thread did not stop in time; its socket goes with the process
            log.error("the receiver thread did not stop: its socket is left open")
        elif self.receiver is not None:
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
