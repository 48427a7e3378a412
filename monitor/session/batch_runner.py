"""Feeds batches to an executor with bounded work in flight and survives dead workers.

Shared by ``reprocess`` and live ``process``: the same submission, completion and
recovery code whatever the source of the frames.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

from monitor.session.map_collector import RunCounters
from processors.executor import ExecutorHandle, open_executor
from processors.frame_record import FRAME_WORKER_FAILED, failed_records
from processors.process_batch import BatchResult, prepare, process_batch, warm_up
from processors.processing_setup import ProcessingSetup
from stream.encoded_frame import EncodedFrame
from stream.rate_limited_log import RateLimitedLog

log = logging.getLogger("nanomaps.batches")

Batch = list[EncodedFrame]
Job = tuple[ProcessingSetup, Batch]


class BatchRunner:
    """Runs :func:`process_batch` on ``(setup, batch)`` jobs, at most ``2 × workers`` at once.

    ``on_result(batch, result)`` is called in this thread for every finished batch, in
    completion order. When the pool breaks (a worker died), every job that was in
    flight becomes a suspect: suspects are retried one at a time in a new pool, so the
    one that kills its worker again is found, its frames are marked ``worker_failed``
    and counted, and the others complete normally.

    :meth:`stop` (an interrupted run) waits a bounded time for what is in flight, then
    abandons the rest and stops the workers: nothing is retried or restarted after it.
    """

    def __init__(self, workers: int | None, scheduler: str | None,
                 on_result: Callable[[Batch, BatchResult], None], counters: RunCounters,
                 limiter: RateLimitedLog, stop: threading.Event | None = None,
                 on_done: Callable[[Future], None] | None = None) -> None:
        self.workers, self.scheduler = workers, scheduler
        self.on_result = on_result
        # called (in the executor's thread) as each batch finishes: lets a caller block on its
        # own queue instead of polling the futures
        self.on_done = on_done
        self.counters = counters
        self.limiter = limiter
        self.handle: ExecutorHandle = open_executor(workers, scheduler)
        self._in_flight: dict[Future, Job] = {}
        self._suspects: list[Job] = []
        self._stop = stop  # once set, a broken pool means "given up", not "restart and retry"
        self._stopping = False
        self.abandoned = 0  # frames given up by stop()

    @property
    def description(self) -> str:
        return self.handle.description

    @property
    def capacity(self) -> int:
        return 2 * self.handle.workers

    @property
    def in_flight(self) -> int:
        return len(self._in_flight) + len(self._suspects)

    def can_submit(self) -> bool:
        return not self._suspects and len(self._in_flight) < self.capacity

    def _submit(self, job: Job) -> bool:
        try:
            future = self.handle.executor.submit(process_batch, *job)
            self._in_flight[future] = job
            if self.on_done is not None:
                future.add_done_callback(self.on_done)
            return True
        except BrokenProcessPool:
            if self._stop_requested():  # the signal stopped the workers too: nothing will run it now
                self._give_up(job[1])
            elif not any(job is s for s in self._suspects):
                self._suspects.append(job)
            return False

    def _give_up(self, batch: Batch) -> None:
        if not self.abandoned:
            log.info("stopping: frames the worker pool can no longer process are given up (its workers were "
                     "stopped with the command, e.g. a signal to the whole process group)")
        self.abandoned += len(batch)

    def _stop_requested(self) -> bool:
        if self._stop is not None and self._stop.is_set():
            self._stopping = True
        return self._stopping

    def submit(self, setup: ProcessingSetup, batch: Batch) -> None:
        """Queue one batch (call when :meth:`can_submit`; otherwise it waits as a suspect)."""
        if not self._submit((setup, batch)) and not self._stop_requested():
            self._died_between_tasks()

    def _died_between_tasks(self) -> None:
        self.counters.worker_failures += 1
        self.limiter.log(logging.ERROR, "worker", "the worker pool broke: a worker process died between tasks")
        self._restart("a worker process died between tasks")

    def warm_up(self, setup: ProcessingSetup, arena: str | None = None) -> list[Future]:
        """Have every worker build its processor now, before frames arrive (and map the shared
        ``arena`` frames will come in); the futures say when."""
        futures = []
        for _ in range(self.handle.workers):
            try:
                futures.append(self.handle.executor.submit(warm_up, setup, arena=arena))
            except BrokenProcessPool:
                break
        return futures

    def prepare(self, setup: ProcessingSetup, dtype: str | None = None) -> list[Future]:
        """Have the workers build their processor for ``setup`` (and frames of ``dtype``) now
        (:func:`prepare`), ahead of its batches; a worker that takes two of these builds once.
        Not counted as work in flight; nothing is lost if it fails (the first batch builds)."""
        futures = []
        for _ in range(self.handle.workers):
            try:
                futures.append(self.handle.executor.submit(prepare, setup, dtype))
            except (BrokenProcessPool, RuntimeError):  # broken or shut down: the batches will say so
                break
        return futures

    def poll(self, timeout: float | None = None) -> int:
        """Handle batches finished within ``timeout`` s (None: wait for one); returns how many."""
        if self._suspects and self._stop_requested():
            # waiting for a retry that will not come: a stopped run restarts no pool
            for _, batch in self._suspects:
                self._give_up(batch)
            self._suspects.clear()
        if self._suspects and not self._in_flight:
            if not self._submit(self._suspects[0]):
                self._died_between_tasks()
                return 0
        if not self._in_flight:
            return 0
        if timeout is not None and timeout <= 0:
            # a look without waiting: wait() would set up a waiter on every future, each turn
            done = [f for f in self._in_flight if f.done()]
        else:
            done, _ = wait(list(self._in_flight), timeout=timeout, return_when=FIRST_COMPLETED)
        broken = False
        for future in done:
            job = self._in_flight.pop(future)
            setup, batch = job
            retrying = bool(self._suspects) and job is self._suspects[0]
            try:
                result: BatchResult = future.result()
            except BrokenProcessPool:
                if self._stop_requested():  # e.g. SIGTERM to the whole process group: the frames are given up
                    self._give_up(batch)
                    continue
                broken = True
                self.counters.worker_failures += 1
                self.limiter.log(logging.ERROR, "worker", "a worker process died while processing frames %d-%d",
                                 batch[0].frame, batch[-1].frame)
                if retrying:
                    self._suspects.pop(0)
                    self.on_result(batch, BatchResult(failed_records(batch, len(setup.peaks), FRAME_WORKER_FAILED)))
                else:
                    self._suspects.append(job)
                continue
            except Exception as exc:  # a bug in a worker must not lose the run: count it, keep the traceback
                self.counters.worker_failures += 1
                log.exception("processing frames %d-%d failed: %s", batch[0].frame, batch[-1].frame, exc)
                result = BatchResult(failed_records(batch, len(setup.peaks), FRAME_WORKER_FAILED))
            if retrying:
                self._suspects.pop(0)
            self.on_result(batch, result)
        if broken:
            self._restart("a worker process died")
        return len(done)

    def _restart(self, why: str) -> None:
        """Every future of a broken pool fails: take its jobs back and start a new pool."""
        self._suspects.extend(j for j in self._in_flight.values() if not any(j is s for s in self._suspects))
        self._in_flight.clear()
        self.handle.close()
        self.handle = open_executor(self.workers, self.scheduler)
        log.warning("%s: restarted the worker pool (%s); retrying %d batch(es) one at a time",
                    why, self.handle.description, len(self._suspects))

    def drain(self, timeout: float | None = None) -> bool:
        """Finish everything in flight (within ``timeout`` s if given); True when nothing is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.in_flight:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self.poll(left)
        return True

    def stop(self, timeout: float) -> int:
        """Submit nothing more; collect what finishes within ``timeout`` s, abandon the rest.

        Batches waiting for a retry are given up at once, a broken pool is not restarted,
        and batches still running after ``timeout`` are cancelled and their workers
        terminated, so that :meth:`close` returns promptly and leaves no process behind.
        Returns the number of frames given up (also in :attr:`abandoned`).
        """
        self._stopping = True
        self.abandoned += sum(len(batch) for _, batch in self._suspects)
        self._suspects.clear()
        deadline = time.monotonic() + max(0.0, timeout)
        while self._in_flight:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.poll(left)
        if self._in_flight:
            self.abandoned += sum(len(batch) for _, batch in self._in_flight.values())
            for future in self._in_flight:
                future.cancel()
            self._in_flight.clear()
            self._terminate_workers()
        return self.abandoned

    def _terminate_workers(self) -> None:
        """Stop a local pool's workers now, mid-task (a Dask cluster's are not ours to stop)."""
        executor = self.handle.executor
        if not isinstance(executor, ProcessPoolExecutor):
            return
        processes = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)

    def close(self) -> None:
        self.handle.close()
