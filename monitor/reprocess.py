"""``nanomaps reprocess``: recorded DECTRIS files → fitted maps → results.h5, offline.

The same ``process_batch`` as live processing, fed from HDF5 chunks: frames are read
still compressed and decoded in the workers. At most ``2 × workers`` batches are in
flight, so memory does not grow with the number of frames. A worker that dies is
replaced and its batches are retried once; frames that fail twice are marked, counted
and the run goes on.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from monitor.map_collector import MapCollector, RunCounters
from monitor.progress import progress_bar
from monitor.results_file import ResultsWriter
from processors.config import ConfigError, NanomapsConfig, load_config
from processors.executor import ExecutorHandle, open_executor
from processors.frame_processor import FrameProcessor
from processors.frame_record import FRAME_WORKER_FAILED, failed_records
from processors.geometry import GeometryError
from processors.process_batch import BatchResult, process_batch
from processors.processing_setup import ProcessingSetup
from stream.dectris_file import DectrisFile, DectrisFileError
from stream.encoded_frame import EncodedFrame
from stream.rate_limited_log import RateLimitedLog

log = logging.getLogger("nanomaps.reprocess")

#: Offline runs still write the results file this often, so a crash loses little.
CHECKPOINT_INTERVAL_S = 10.0


@dataclass(frozen=True)
class ReprocessSummary:
    out: Path
    counters: RunCounters
    frames_in_files: int
    points: int
    seconds: float
    workers: str


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
              progress: bool = True, read_in_workers: bool | None = None) -> ReprocessSummary:
    """Process every frame of ``masters`` (one scan, in order) and write ``out``.

    ``read_in_workers``: workers read the chunks from the files themselves (default for
    a local pool, which sees the same disk); otherwise this process reads them and ships
    the bytes (default for a Dask cluster, whose workers may not see the files).

    Raises ConfigError / GeometryError / DectrisFileError before any work when the
    configuration, geometry or inputs cannot be used.
    """
    t0 = time.perf_counter()
    files = _open_inputs(masters)
    try:
        first = files[0].metadata
        setup = ProcessingSetup.from_config(config, pixel_mask=first.pixel_mask, shape=first.shape)
        FrameProcessor(setup)  # fail fast: geometry, masks and windows checked before any work
        scan = config.scan
        offsets, total = {}, 0
        for series, f in enumerate(files):
            offsets[series] = total
            total += f.frame_count
        if total > scan.n_frames:
            log.warning("the input holds %d frames but [scan] shape %s × %d frame(s) per point needs %d: "
                        "the last %d frames are ignored", total, list(scan.shape), scan.frames_per_point,
                        scan.n_frames, total - scan.n_frames)
        elif total < scan.n_frames:
            log.warning("the input holds %d frames but [scan] shape %s needs %d: %d map points stay "
                        "unmeasured (NaN)", total, list(scan.shape), scan.n_frames, scan.n_frames - total)
        names = tuple(p.name for p in config.peaks)
        collector = MapCollector(scan, names, offsets)
        limiter = RateLimitedLog(log)
        batch_size = batch_size or config.executor.batch_size
        workers = workers or config.executor.workers
        scheduler = scheduler or config.executor.scheduler
        lazy = (scheduler is None) if read_in_workers is None else read_in_workers

        def checkpoint(final: bool = False) -> None:
            maps = collector.result_maps(config.peaks, config.derived, config.williamson_hall_peaks)
            writer.write(maps, collector.frames_table(), collector.counters, final=final)

        with ResultsWriter(out, config, scan, inputs=tuple(str(Path(m)) for m in masters),
                           poni_text=setup.poni_text, setup_id=setup.fingerprint) as writer, \
                open_executor(workers, scheduler) as handle:
            log.info("processing %d frames on %s", total, handle.description)
            frames = (fr for series, f in enumerate(files)
                      for fr in f.iter_frames(series=series, stop=max(0, scan.n_frames - offsets[series]),
                                              lazy=lazy))
            bar = progress_bar(min(total, scan.n_frames), "reprocess", enabled=progress)
            handle = _run_batches(handle, setup, _batches(frames, batch_size), collector, limiter, bar,
                                  checkpoint, workers, scheduler)
            bar.close()
            limiter.flush()
            checkpoint(final=True)
            description = handle.description
    finally:
        for f in files:
            f.close()
    return ReprocessSummary(Path(out), collector.counters, total, scan.n_points, time.perf_counter() - t0,
                            description)


def _run_batches(handle: ExecutorHandle, setup: ProcessingSetup, batches: Iterator[list[EncodedFrame]],
                 collector: MapCollector, limiter: RateLimitedLog, bar, checkpoint,
                 workers: int | None, scheduler: str | None) -> ExecutorHandle:
    """Feed batches with a bounded number in flight; survive dead workers. Returns the live handle.

    When the pool breaks, every batch that was in flight is a suspect: suspects are
    retried one at a time in a new pool, so the one that kills its worker again is
    found, marked ``worker_failed`` and counted, and the others complete normally.
    """
    in_flight: dict[Future, list[EncodedFrame]] = {}
    suspects: list[list[EncodedFrame]] = []
    n_peaks = len(setup.peaks)
    last_checkpoint = time.monotonic()
    exhausted = False

    def finish(batch: list[EncodedFrame], result: BatchResult) -> None:
        collector.add(result)
        for kind, message in result.messages:
            limiter.log(logging.WARNING, kind, "%s", message)
        bar.update(len(batch))

    def submit(batch: list[EncodedFrame]) -> bool:
        """False when the pool is already broken (a worker died between tasks)."""
        try:
            in_flight[handle.executor.submit(process_batch, setup, batch)] = batch
            return True
        except BrokenProcessPool:
            if not any(batch is s for s in suspects):
                suspects.append(batch)
            return False

    while in_flight or suspects or not exhausted:
        broken = False
        if suspects:
            if not in_flight:
                broken = not submit(suspects[0])
        else:
            while not exhausted and len(in_flight) < 2 * handle.workers:
                batch = next(batches, None)
                if batch is None:
                    exhausted = True
                    break
                collector.counters.received += len(batch)
                if not submit(batch):
                    broken = True
                    break
        if in_flight and not broken:
            done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for future in done:
                batch = in_flight.pop(future)
                retrying = bool(suspects) and batch is suspects[0]
                try:
                    result: BatchResult = future.result()
                except BrokenProcessPool:
                    broken = True
                    collector.counters.worker_failures += 1
                    limiter.log(logging.ERROR, "worker", "a worker process died while processing frames %d-%d",
                                batch[0].frame, batch[-1].frame)
                    if retrying:
                        suspects.pop(0)
                        finish(batch, BatchResult(failed_records(batch, n_peaks, FRAME_WORKER_FAILED)))
                    else:
                        suspects.append(batch)
                    continue
                except Exception as exc:  # a bug in a worker must not lose the run: count it, keep the traceback
                    collector.counters.worker_failures += 1
                    log.exception("processing frames %d-%d failed: %s", batch[0].frame, batch[-1].frame, exc)
                    result = BatchResult(failed_records(batch, n_peaks, FRAME_WORKER_FAILED))
                if retrying:
                    suspects.pop(0)
                finish(batch, result)
        elif broken:
            collector.counters.worker_failures += 1
            limiter.log(logging.ERROR, "worker", "the worker pool broke (a worker process died between tasks)")
        if broken:
            # every future of a broken pool fails: take all its batches back, start a new pool
            suspects.extend(b for b in in_flight.values() if not any(b is s for s in suspects))
            in_flight.clear()
            handle.close()
            handle = open_executor(workers, scheduler)
            log.warning("restarted the worker pool (%s); retrying %d batch(es) one at a time",
                        handle.description, len(suspects))
        if time.monotonic() - last_checkpoint > CHECKPOINT_INTERVAL_S:
            checkpoint()
            last_checkpoint = time.monotonic()
    return handle


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nanomaps reprocess",
        description="Fit every configured Bragg spot of every frame of recorded DECTRIS files (master + data "
                    "files, as the DECTRIS file writer or `nanomaps record` writes them) and write the maps to a "
                    "results file. Several master files are taken as consecutive parts of one scan.",
        epilog="example: nanomaps reprocess scan_master.h5 --config cfg.toml --out results.h5 --workers 2")
    p.add_argument("masters", nargs="+", metavar="MASTER.h5", help="DECTRIS master file(s), in scan order")
    p.add_argument("--config", required=True, metavar="C", help="TOML configuration (peaks, scan, geometry)")
    p.add_argument("--out", required=True, metavar="R.h5", help="results file to write (overwritten)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N", help="local worker processes (default: one per core)")
    where.add_argument("--scheduler", metavar="ADDR", help="Dask scheduler address, e.g. tcp://host:8786")
    p.add_argument("--batch-size", type=int, metavar="N", help="frames per task (default: [executor] batch_size)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers is not None and args.workers < 1:
        print("nanomaps reprocess: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
        summary = reprocess(args.masters, config, args.out, workers=args.workers, scheduler=args.scheduler,
                            batch_size=args.batch_size, progress=not args.no_progress)
    except (ConfigError, GeometryError, DectrisFileError, ConnectionError) as exc:
        print(f"nanomaps reprocess: {exc}", file=sys.stderr)
        return 2
    c = summary.counters
    rate = c.received / summary.seconds if summary.seconds > 0 else 0.0
    print(f"{summary.out}: {c.processed} of {c.received} frames processed ({rate:.0f} frames/s on "
          f"{summary.workers}); fits ok {c.fits_ok}, rejected {c.fits_rejected}; corrupt {c.corrupt}, "
          f"missing {c.missing}, wrong shape {c.wrong_shape}, worker failures {c.worker_failures}")
    if c.processed == 0:
        print("nanomaps reprocess: no frame could be processed", file=sys.stderr)
        return 1
    return 0
