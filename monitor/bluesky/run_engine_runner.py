"""The in-process :class:`~monitor.bluesky.plan_runner.PlanRunner`: a bluesky RunEngine in one worker thread.

Design §7: ``RunEngine({}, context_managers=[], during_task=DuringTask())`` — no SIGINT
handler (only the main thread may install one) and no Qt loop while waiting. The
RunEngine is created, called and closed in the runner's own thread; plans arrive
through a queue. :meth:`RunEngineRunner.abort` is the one call from another thread:
``RunEngine.abort`` schedules the abort on the RunEngine's event loop (thread-safe),
cancels the running plan, lets it clean up (unstage) and ends the run with
``exit_status`` "abort".

bluesky logs every end other than success as ERROR "Run aborted" with the whole
traceback (50 lines for a user's abort). Here an abort is one INFO line and a failed
plan one WARNING line with the reason; the traceback goes to DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

from bluesky import RunEngine
from bluesky.log import ComposableLogAdapter
from bluesky.plans import grid_scan
from bluesky.utils import DuringTask, FailedPause, PlanHalt, RequestAbort, RunEngineInterrupted
from ophyd import Signal

from monitor.bluesky.plan_runner import GridScanRequest

log = logging.getLogger(__name__)

DocumentCallback = Callable[[str, dict], None]


@dataclass
class RunOutcome:
    """How a submitted request ended: the run's start and stop documents and its exit status.

    ``exit_status`` is the stop document's ("success", "abort", "fail"), or "cancelled"
    for a request aborted before it started (no run, no documents).
    """

    job_id: str
    request: GridScanRequest
    exit_status: str = ""
    reason: str = ""
    start: dict | None = None
    stop: dict | None = None
    run_uids: tuple[str, ...] = ()

    @property
    def run_uid(self) -> str | None:
        return self.start["uid"] if self.start else None


@dataclass
class _Job:
    job_id: str
    request: GridScanRequest
    future: Future = field(default_factory=Future)
    started: threading.Event = field(default_factory=threading.Event)
    outcome: RunOutcome | None = None
    abort_requested: bool = False


#: What bluesky raises inside the plan when it is aborted or halted (an ending someone asked for).
_ABORT_EXCEPTIONS = (RequestAbort, asyncio.CancelledError, FailedPause, PlanHalt)


class _RunEndLog(ComposableLogAdapter):
    """The RunEngine's logger, with its "Run aborted" traceback turned into one line.

    bluesky calls ``log.exception("Run aborted")`` inside the ``except`` that caught
    the plan's end, so :func:`sys.exc_info` is the reason. ``describe_run`` gives the
    run's name for the line (e.g. ``"run abc12345"``).
    """

    def __init__(self, adapter: logging.LoggerAdapter, describe_run: Callable[[], str]) -> None:
        super().__init__(adapter.logger, adapter.extra)
        self._describe_run = describe_run

    def exception(self, msg, *args, exc_info=True, **kwargs) -> None:
        if msg != "Run aborted":
            super().exception(msg, *args, exc_info=exc_info, **kwargs)
            return
        exc = sys.exc_info()[1]
        run = self._describe_run()
        if isinstance(exc, _ABORT_EXCEPTIONS):
            reason = getattr(self.extra.get("RE"), "_reason", "") or "aborted"  # what abort(reason) was given
            log.info("%s ended: %s", run, reason)
        else:
            log.warning("%s failed: %s: %s", run, type(exc).__name__, exc)
        log.debug("%s ended by", run, exc_info=exc)


class _AbortTraceNoise(logging.Filter):
    """Drops bluesky's "No open traces left to close!" WARNING from one RunEngine's loop thread.

    bluesky ≤ 1.14 closes a run's tracing span on abort and then warns that the span is
    gone when the stop document goes out: every abort said so, and nothing is wrong.
    Only records of ``thread_id`` are touched, so other RunEngines in the process keep theirs.
    """

    MESSAGE = "No open traces left to close!"

    def __init__(self, thread_id: int | None) -> None:
        super().__init__()
        self.thread_id = thread_id

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.thread == self.thread_id and record.msg == self.MESSAGE)


def request_metadata(request: GridScanRequest) -> dict[str, Any]:
    """The request as plain values, for the start document's ``nanomaps_request``."""
    out = asdict(request)
    out.pop("md")
    return out


class RunEngineRunner:
    """Runs :class:`GridScanRequest` s with ``bluesky.plans.grid_scan`` on an in-process RunEngine.

    ``detectors`` are ophyd readables (e.g. a :class:`~monitor.sim.simulated_eiger.SimulatedEiger`);
    ``motors`` maps the names used in requests to positioners. Every document goes to
    each of ``callbacks`` as ``(name, doc)``; a callback that raises fails the run (as
    bluesky does), so keep them robust. ``md`` is added to every start document, with
    ``parent_uid`` and ``nanomaps_request`` (the request's fields). A detector with a
    ``num_images`` signal is told the number of points before each run.
    """

    def __init__(self, detectors: list, motors: Mapping[str, Any], *, callbacks: Sequence[DocumentCallback] = (),
                 md: dict | None = None) -> None:
        self._detectors = list(detectors)
        self._motors = dict(motors)
        self._callbacks = list(callbacks)
        self._md = dict(md or {})
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._pending: list[_Job] = []
        self._current: _Job | None = None
        self._closed = False
        self._starts: list[dict] = []
        self._re: RunEngine | None = None
        self._by_id: dict[str, _Job] = {}
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._work, args=(ready, failure), name="nanomaps-run-engine-runner",
                                        daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            raise failure[0]

    # ------------------------------------------------------------------ PlanRunner

    def submit(self, request: GridScanRequest) -> str:
        """Queue ``request`` (already checked with ``check_rescan``); returns its job id."""
        self._plan_args(request)  # unknown motors fail here, in the caller's thread
        job = _Job(uuid.uuid4().hex, request)
        with self._lock:
            if self._closed:
                raise RuntimeError("this RunEngineRunner is closed")
            self._pending.append(job)
            self._by_id[job.job_id] = job
        self._jobs.put(job)
        return job.job_id

    def abort(self, reason: str = "aborted by the user", timeout: float = 10.0) -> None:
        """Abort the running scan (its run ends with exit_status "abort") and drop queued ones."""
        with self._lock:
            dropped, self._pending = self._pending, []
            job = self._current
            if job is not None:
                job.abort_requested = True
        for pending in dropped:
            pending.started.set()
            pending.outcome = RunOutcome(pending.job_id, pending.request, "cancelled", reason)
            pending.future.set_result(pending.outcome)
        if job is None:
            return
        deadline = time.monotonic() + timeout
        while not job.future.done():
            state = self._re.state
            if state in ("running", "paused"):
                try:
                    self._re.abort(reason)
                    return
                except RuntimeError as exc:  # bluesky's TransitionError: it finished or began aborting meanwhile
                    log.debug("RunEngine.abort: %s", exc)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the RunEngine stayed {state!r} for {timeout} s; could not abort")
            time.sleep(0.005)  # between dequeue and RunEngine start, or already cleaning up

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._current is not None or bool(self._pending)

    def close(self, timeout: float = 30.0) -> None:
        """Abort what runs, stop the worker thread and the RunEngine's event loop."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self.busy:
            self.abort("runner closed")
        self._jobs.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"the RunEngine worker thread did not stop within {timeout} s")

    def __enter__(self) -> "RunEngineRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ waiting and results

    def result(self, job_id: str, timeout: float | None = None) -> RunOutcome:
        """Wait until job ``job_id`` ended; its :class:`RunOutcome` (re-raises a failure of the plan)."""
        return self._job(job_id).future.result(timeout)

    def future(self, job_id: str) -> Future:
        """A ``concurrent.futures.Future`` of the job's :class:`RunOutcome`."""
        return self._job(job_id).future

    def wait_started(self, job_id: str, timeout: float | None = None) -> dict:
        """Wait until the job's run has opened; its start document."""
        job = self._job(job_id)
        if not job.started.wait(timeout):
            raise TimeoutError(f"job {job_id} did not start within {timeout} s")
        if job.outcome is None or job.outcome.start is None:
            status = job.outcome.exit_status if job.outcome else "cancelled"
            raise RuntimeError(f"job {job_id} ended without opening a run ({status or 'failed'})")
        return job.outcome.start

    def run_blocking(self, request: GridScanRequest, timeout: float | None = None) -> RunOutcome:
        """Submit ``request`` and wait for it to end."""
        return self.result(self.submit(request), timeout)

    @property
    def start_documents(self) -> list[dict]:
        """Start documents of every run of this runner, oldest first."""
        return list(self._starts)

    def _job(self, job_id: str) -> _Job:
        try:
            return self._by_id[job_id]
        except KeyError:
            raise KeyError(f"no job {job_id!r} was submitted to this runner") from None

    # ------------------------------------------------------------------ worker thread

    def _plan_args(self, request: GridScanRequest) -> tuple:
        missing = [m for m in (request.slow_motor, request.fast_motor) if m not in self._motors]
        if missing:
            raise KeyError(f"motor(s) {missing} are not known to this runner; it has {sorted(self._motors)}")
        if request.plan != "grid_scan":
            raise ValueError(f"plan {request.plan!r}: this runner runs grid_scan only")
        slow, fast = self._motors[request.slow_motor], self._motors[request.fast_motor]
        return (slow, request.slow_start, request.slow_stop, request.slow_num,
                fast, request.fast_start, request.fast_stop, request.fast_num), fast

    def _plan(self, request: GridScanRequest):
        args, fast = self._plan_args(request)
        md = {**self._md, **request.md, "parent_uid": request.parent_uid,
              "nanomaps_request": request_metadata(request)}
        return grid_scan(self._detectors, *args, snake_axes=[fast] if request.snake else False, md=md)

    def _describe_current_run(self) -> str:
        job = self._current
        start = job.outcome.start if job is not None and job.outcome is not None else None
        return f"run {start['uid'][:8]}" if start else "scan (no run opened)"

    def _on_document(self, name: str, doc: dict) -> None:
        job = self._current
        if name == "start":
            self._starts.append(doc)
            if job is not None:
                job.outcome.start = doc
                job.started.set()
        elif name == "stop" and job is not None:
            job.outcome.stop = doc

    def _work(self, ready: threading.Event, failure: list) -> None:
        try:
            re = RunEngine({}, context_managers=[], during_task=DuringTask())
            re.log = _RunEndLog(re.log, self._describe_current_run)
            re.subscribe(self._on_document)
            for cb in self._callbacks:
                re.subscribe(cb)
            self._re = re
        except BaseException as exc:
            failure.append(exc)
            ready.set()
            return
        noise = _AbortTraceNoise(getattr(getattr(re, "_th", None), "ident", None))
        bluesky_log = logging.getLogger("bluesky")
        bluesky_log.addFilter(noise)
        ready.set()
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    break
                with self._lock:
                    if job not in self._pending:  # cancelled by abort() while queued
                        continue
                    self._pending.remove(job)
                    self._current = job
                    job.outcome = RunOutcome(job.job_id, job.request)
                try:
                    self._run(re, job)
                finally:
                    with self._lock:
                        self._current = None
                    job.started.set()
        finally:
            bluesky_log.removeFilter(noise)
            re.loop.call_soon_threadsafe(re.loop.stop)
            re._th.join(5.0)
            if not re.loop.is_running():
                re.loop.close()

    def _run(self, re: RunEngine, job: _Job) -> None:
        outcome = job.outcome
        try:
            n = job.request.slow_num * job.request.fast_num
            for det in self._detectors:
                if isinstance(getattr(det, "num_images", None), Signal):
                    det.num_images.put(n)
            try:
                uids = re(self._plan(job.request))
            except RunEngineInterrupted:
                uids = tuple(re._run_start_uids)
            outcome.run_uids = tuple(uids)
            if outcome.stop is not None:
                outcome.exit_status = outcome.stop.get("exit_status", "")
                outcome.reason = outcome.stop.get("reason", "")
            else:
                outcome.exit_status = "abort" if job.abort_requested else "fail"
        except BaseException as exc:
            job.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        job.future.set_result(outcome)
