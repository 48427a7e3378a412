"""``nanomaps reprocess``: recorded DECTRIS files → fitted maps → results.h5, offline.

The same ``process_batch`` as live processing, fed from HDF5 chunks: frames are read
still compressed and decoded in the workers. At most ``2 × workers`` batches are in
flight, so memory does not grow with the number of frames. A worker that dies is
replaced and its batches are retried once; frames that fail twice are marked, counted
and the run goes on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from monitor.session.batch_runner import BatchRunner
from monitor.session.map_collector import MapCollector, RunCounters
from monitor.session.progress import progress_bar
from monitor.session.results_file import ResultsWriter
from processors.config import NanomapsConfig
from processors.frame_processor import FrameProcessor
from processors.processing_setup import ProcessingSetup
from stream.dectris_file import DectrisFile, DectrisFileError
from stream.encoded_frame import EncodedFrame
from stream.output_path import check_output_file
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
              progress: bool = True, read_in_workers: bool | None = None) -> ReprocessSummary:
    """Process every frame of ``masters`` (one scan, in order) and write ``out``.

    ``read_in_workers``: workers read the chunks from the files themselves (default for
    a local pool, which sees the same disk); otherwise this process reads them and ships
    the bytes (default for a Dask cluster, whose workers may not see the files).

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
                           poni_text=setup.poni_text, setup_id=setup.fingerprint) as writer:
            bar = progress_bar(min(total, scan.n_frames), "reprocess", enabled=progress)

            def on_result(batch, result) -> None:
                collector.add(result)
                for kind, message in result.messages:
                    limiter.log(logging.WARNING, kind, "%s", message)
                bar.update(len(batch))

            runner = BatchRunner(workers, scheduler, on_result, collector.counters, limiter)
            try:
                log.info("processing %d frames on %s", total, runner.description)
                frames = (fr for series, f in enumerate(files)
                          for fr in f.iter_frames(series=series, stop=max(0, scan.n_frames - offsets[series]),
                                                  lazy=lazy))
                last_checkpoint = time.monotonic()
                for batch in _batches(frames, batch_size):
                    while not runner.can_submit():
                        runner.poll()
                        if time.monotonic() - last_checkpoint > CHECKPOINT_INTERVAL_S:
                            checkpoint()
                            last_checkpoint = time.monotonic()
                    collector.counters.received += len(batch)
                    runner.submit(setup, batch)
                runner.drain()
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
                            description)
