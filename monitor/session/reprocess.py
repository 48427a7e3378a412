"""``nanomaps reprocess``: recorded DECTRIS files → fitted maps → results.h5, offline.

The same ``process_batch`` as live processing, fed from HDF5 chunks: frames are read
still compressed and decoded in the workers. At most ``2 × workers`` batches are in
flight, so memory does not grow with the number of frames. A worker that dies is
replaced and its batches are retried once; frames that fail twice are marked, counted
and the run goes on.

A set ``stop`` event (Ctrl-C, SIGTERM) ends the run early but cleanly: nothing more is
submitted, batches in flight are collected for at most :data:`STOP_WAIT_S` and the rest
given up, the workers are shut down, and the maps of every frame processed so far are
written to a complete results file (``end_time``, counters, ``stopped_by = "signal"``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from monitor.session.batch_runner import BatchRunner
from monitor.session.map_collector import MapCollector, RunCounters, hot_pixels_message
from monitor.session.progress import progress_bar
from monitor.session.results_file import ResultsWriter
from monitor.session.results_update import take_update
from processors.config import NanomapsConfig
from processors.frame_processor import FrameProcessor
from processors.processing_setup import ProcessingSetup
from stream.dectris_file import DectrisFile, DectrisFileError
from stream.encoded_frame import EncodedFrame
from stream.heap_freeze import freeze_long_lived
from stream.output_path import check_output_file
from stream.rate_limited_log import RateLimitedLog

log = logging.getLogger("nanomaps.reprocess")

#: Offline runs still write the results file this often, so a crash loses little.
CHECKPOINT_INTERVAL_S = 10.0
#: After a stop request, how long batches already running may take before they are given up.
STOP_WAIT_S = 5.0
#: How often the loop looks at the stop event while it waits for results.
POLL_S = 0.2


@dataclass(frozen=True)
class ReprocessSummary:
    out: Path
    counters: RunCounters
    frames_in_files: int
    points: int
    seconds: float
    workers: str
    frames_to_process: int = 0   # frames of the inputs that the scan uses (min(input frames, scan frames))
    interrupted: bool = False    # stopped early by the ``stop`` event: the maps hold the frames processed so far


def _batches(frames: Iterable[EncodedFrame], size: int) -> Iterator[list[EncodedFrame]]:
    batch: list[EncodedFrame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _open_inputs(masters: Sequence[str | Path]) -> list[DectrisFile]:
    files = []
    try:
        for path in masters:
            files.append(DectrisFile(path))
            files[-1].check_readable()
    except DectrisFileError:
        for f in files:
            f.close()
        raise
    shapes = {f.metadata.shape for f in files}
    if len(shapes) > 1:
        for f in files:
            f.close()
        raise DectrisFileError(f"input files hold frames of different shapes {sorted(shapes)}; "
                               "reprocess one detector at a time")
    return files


def reprocess(masters: Sequence[str | Path], config: NanomapsConfig, out: str | Path, *,
              workers: int | None = None, scheduler: str | None = None, batch_size: int | None = None,
              progress: bool = True, read_in_workers: bool | None = None,
              stop: threading.Event | None = None) -> ReprocessSummary:
    """Process every frame of ``masters`` (one scan, in order) and write ``out``.

    ``read_in_workers``: workers read the chunks from the files themselves (default for
    a local pool, which sees the same disk); otherwise this process reads them and ships
    the bytes (default for a Dask cluster, whose workers may not see the files).

    ``stop``: when set (e.g. by a signal handler), submit nothing more, collect what is in
    flight for at most :data:`STOP_WAIT_S`, write the maps of the frames processed so far
    and return a summary with ``interrupted`` True.

    Raises ConfigError / GeometryError / DectrisFileError before any work when the
    configuration, geometry or inputs cannot be used.
    """
    t0 = time.perf_counter()
    check_output_file(out, what="results file")  # before any input is opened or worker started
    files = _open_inputs(masters)
    try:
        first = files[0].metadata
        setup = ProcessingSetup.from_config(config, pixel_mask=first.pixel_mask, shape=first.shape)
        FrameProcessor(setup)  # fail fast: geometry, masks and windows checked before any work
        scan = config.scan
        offsets, total = {}, 0
        for series, f in enumerate(files):
            offsets[series] = total
            # a series cut short still had its points: the next starts after all it announced
            announced = f.metadata.frames_expected
            if 0 < announced != f.frame_count:
                log.info("%s: %d frames, its header announced %d: the next series starts after %d",
                         f.path, f.frame_count, announced, announced)
            total += announced if announced > 0 else f.frame_count
        if total > scan.n_frames:
            log.warning("the input's series span %d frames but [scan] shape %s × %d frame(s) per point needs %d: "
                        "the last %d frames are ignored", total, list(scan.shape), scan.frames_per_point,
                        scan.n_frames, total - scan.n_frames)
        elif total < scan.n_frames:
            log.warning("the input's series span %d frames but [scan] shape %s needs %d: %d map points stay "
                        "unmeasured (NaN)", total, list(scan.shape), scan.n_frames, scan.n_frames - total)
        names = tuple(p.name for p in config.peaks)
        collector = MapCollector(scan, names, offsets)
        limiter = RateLimitedLog(log)
        batch_size = batch_size or config.executor.batch_size
        workers = workers or config.executor.workers
        scheduler = scheduler or config.executor.scheduler
        lazy = (scheduler is None) if read_in_workers is None else read_in_workers

        def stopped() -> bool:
            return stop is not None and stop.is_set()

        def checkpoint(final: bool = False) -> None:
            """Write what changed since the last checkpoint (the file is readable meanwhile: SWMR)."""
            writer.write(take_update(collector, config, final=final,
                                     stopped_by="signal" if final and interrupted else ""))

        interrupted = False
        to_process = min(total, scan.n_frames)
        with ResultsWriter(out, config, scan, inputs=tuple(str(Path(m)) for m in masters),
                           poni_text=setup.poni_text, setup_id=setup.fingerprint) as writer:
            bar = progress_bar(to_process, "reprocess", enabled=progress)

            def on_result(batch, result) -> None:
                collector.add(result)
                new_hot = collector.take_new_hot_pixels()
                if new_hot:
                    limiter.log(logging.WARNING, "hot pixels", "%s", hot_pixels_message(new_hot))
                for kind, message in result.messages:
                    limiter.log(logging.WARNING, kind, "%s", message)
                bar.update(len(batch))

            runner = BatchRunner(workers, scheduler, on_result, collector.counters, limiter, stop=stop)
            freeze_long_lived()  # this process's modules, files and maps outlive the run's per-frame objects
            last_checkpoint = time.monotonic()

            def wait_for_results() -> None:
                nonlocal last_checkpoint
                runner.poll(POLL_S)  # a bounded wait, so that a stop request is seen promptly
                if time.monotonic() - last_checkpoint > CHECKPOINT_INTERVAL_S:
                    checkpoint()
                    last_checkpoint = time.monotonic()

            try:
                log.info("processing %d frames on %s", total, runner.description)
                frames = (fr for series, f in enumerate(files)
                          for fr in f.iter_frames(series=series, stop=max(0, scan.n_frames - offsets[series]),
                                                  lazy=lazy))
                for batch in _batches(frames, batch_size):
                    while not runner.can_submit() and not stopped():
                        wait_for_results()
                    if stopped():
                        interrupted = True
                        break
                    collector.counters.received += len(batch)
                    runner.submit(setup, batch)
                while runner.in_flight and not interrupted:
                    if stopped():
                        interrupted = True
                        break
                    wait_for_results()
                if interrupted:
                    abandoned = runner.stop(STOP_WAIT_S)
                    if abandoned:
                        log.info("interrupted: %d frame(s) in flight were given up", abandoned)
                description = runner.description
            finally:
                runner.close()
            bar.close()
            limiter.flush()
            checkpoint(final=True)
    finally:
        for f in files:
            f.close()
    return ReprocessSummary(Path(out), collector.counters, total, scan.n_points, time.perf_counter() - t0,
                            description, frames_to_process=to_process, interrupted=interrupted)
