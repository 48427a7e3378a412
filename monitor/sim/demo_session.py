"""Everything of the demo in one process: motors, a simulated EIGER, bluesky, processing.

A bluesky RunEngine (worker thread) drives ``ophyd.sim`` motors through grid scans; the
simulated EIGER renders each frame from the motor positions on the model supercrystal
and pushes it over loopback ZeroMQ in the real wire format; the run's documents travel
through a bluesky 0MQ proxy (msgpack) to the live processor, whose maps and frames the
monitor window shows. Nothing is mocked: the same parts run at a beamline.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
from ophyd.sim import SynAxis

from monitor.bluesky.documents import DocumentProxy, DocumentPublisher, DocumentSubscriber, wait_until_linked
from monitor.bluesky.plan_runner import GridScanRequest
from monitor.bluesky.run_engine_runner import RunEngineRunner
from monitor.session.live_processor import LiveOptions, LiveProcessor, LiveSummary
from monitor.sim.simulated_eiger import SimulatedEiger
from processors.config import NanomapsConfig, load_config
from processors.demo_setup import write_demo_config
from processors.truth_comparison import recovered_vs_truth, truth_at_points
from stream.stream_sender import StreamSender

log = logging.getLogger("nanomaps.demo")


class DemoSession:
    """Starts all parts on loopback; :meth:`close` stops them in order. A context manager.

    Closing is safe at any moment (a Ctrl-C in the middle of a scan): the running scan is
    aborted first (one log line, see :mod:`monitor.bluesky.run_engine_runner`), then processing finishes the frames received, writes the results and
    stops its worker processes and shared memory, then the links close.
    """

    #: the order in which :meth:`close` stops the parts: the scan before the frames it
    #: would still send, processing before the links it listens to
    CLOSE_ORDER = ("runner", "eiger", "processor", "subscriber", "documents", "proxy", "sender")

    def __init__(self, out: str | Path, *, shape: tuple[int, int] | None = None, workers: int | None = None,
                 protocol: str = "stream1", record: bool = True) -> None:
        self.out = Path(out)
        self._closers: dict[str, Callable[[], None]] = {}
        self._closing = threading.Event()
        self.config: NanomapsConfig = load_config(write_demo_config(self.out / "config", shape=shape))
        try:
            self._start(workers, protocol, record)
        except BaseException:
            self.close()
            raise

    def _start(self, workers, protocol, record) -> None:
        self.sender = StreamSender("tcp://127.0.0.1:*")
        self._closers["sender"] = lambda: self.sender.close(linger_s=0)
        self.proxy = DocumentProxy()
        self._closers["proxy"] = self.proxy.close
        self.documents = DocumentPublisher(self.proxy.in_address)
        self._closers["documents"] = self.documents.close
        motors = self.config.scan.motors
        self.slow = SynAxis(name=motors[0])
        self.fast = SynAxis(name=motors[1])
        self.eiger = SimulatedEiger.from_config("eiger", self.config, motors=(self.slow, self.fast),
                                                sender=self.sender, protocol=protocol)
        self._closers["eiger"] = self.eiger.close
        options = LiveOptions(endpoint=self.sender.endpoint, out=self.out / "results.h5", workers=workers, series=0,
                              status=False, publish="tcp://127.0.0.1:*", frames="tcp://127.0.0.1:*",
                              expect_documents=True,
                              record=self.out / "raw" / "scan_master.h5" if record else None)
        self._stop = threading.Event()
        self._summary: dict[str, LiveSummary] = {}
        self.processor = LiveProcessor(self.config, options)
        self._thread = threading.Thread(target=lambda: self._summary.setdefault("s", self.processor.run(self._stop)),
                                        name="nanomaps-demo-processor", daemon=True)
        self._closers["processor"] = self._close_processor
        self.subscriber = DocumentSubscriber(self.proxy.out_address, self.processor.on_document)
        self._closers["subscriber"] = self.subscriber.close
        wait_until_linked(self.documents, self.subscriber)
        self.runner = RunEngineRunner([self.eiger], {motors[0]: self.slow, motors[1]: self.fast},
                                      callbacks=[self.documents])
        self._closers["runner"] = self.runner.close
        _start_without_stop_signals(self._thread)

    @property
    def snapshots_endpoint(self) -> str:
        return self.processor.publisher.endpoint

    @property
    def frames_endpoint(self) -> str:
        return self.processor.frame_server.endpoint

    def main_scan(self) -> GridScanRequest:
        """The config's [scan] as a grid scan request (motor positions in µm)."""
        scan = self.config.scan
        (rows, cols), (dy, dx), (y0, x0) = scan.shape, scan.step, scan.origin
        return GridScanRequest(scan.motors[0], y0, y0 + dy * (rows - 1), rows,
                               scan.motors[1], x0, x0 + dx * (cols - 1), cols, snake=scan.snake)

    def run_scan(self, request: GridScanRequest, timeout: float = 180.0) -> str:
        """Run ``request`` and wait until its frames are processed (``timeout`` s each); returns the run uid.

        Raises ``RuntimeError`` when the scan did not succeed (aborted by :meth:`close`, failed).
        """
        outcome = self.runner.run_blocking(request, timeout=timeout)
        if outcome.exit_status != "success":
            raise RuntimeError(f"the scan ended with {outcome.exit_status or 'no stop document'}"
                               f"{f' ({outcome.reason})' if outcome.reason else ''}")
        uid = outcome.run_uid
        self.wait_processed(uid, request.slow_num * request.fast_num, timeout)
        return uid

    def wait_processed(self, uid: str, n: int, timeout: float = 180.0) -> None:
        """Wait until ``n`` frames of run ``uid`` are accounted for (at most ``timeout`` s, or until closed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._closing.is_set():
                raise RuntimeError("the demo session was closed")
            run = self.processor.runs.get(uid)
            if run is not None:
                c = run.collector.counters
                if c.decoded + c.corrupt + c.dropped + c.worker_failed >= n:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"run {uid} was not processed within {timeout:.0f} s")

    def finish(self, timeout: float = 120.0) -> LiveSummary | None:
        """Stop processing (after what was received) and return its summary (None if it failed).

        A scan still running (the window closed mid-scan) is aborted first: its detector
        would otherwise wait for a receiver that no longer reads.
        """
        self._close_parts(("runner", "eiger"))
        self._stop.set()
        self._thread.join(timeout)
        return self._summary.get("s")

    def _close_processor(self) -> None:
        if self._thread.ident is None:  # never ran: release what its constructor took (sockets, shared memory)
            self.processor.close_links()
            self.processor.receiver.close()
            if self.processor.arena is not None:
                self.processor.arena.close()
            return
        self._stop.set()  # run() finishes what was received, writes results, stops its workers
        self._thread.join(60)
        if self._thread.is_alive():
            raise RuntimeError("live processing did not stop within 60 s")

    def close(self) -> None:
        """Stop every part (see :attr:`CLOSE_ORDER`); a part that fails to close is reported, the rest still close."""
        self._closing.set()
        self._close_parts(self.CLOSE_ORDER)

    def _close_parts(self, names) -> None:
        for name in names:
            closer = self._closers.pop(name, None)
            if closer is None:
                continue
            try:
                closer()
            except Exception as exc:  # shutting down: report, keep closing the rest
                log.error("closing the demo's %s failed: %s", name, exc)

    def __enter__(self) -> "DemoSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _start_without_stop_signals(thread: threading.Thread) -> None:
    """Start ``thread`` with SIGINT and SIGTERM blocked in it, and so in the processes it spawns.

    Processing spawns its worker processes from this thread, and a child inherits the
    signal mask through exec: a Ctrl-C at the terminal (sent to the whole process group)
    then reaches only the demo, which stops the workers in order, instead of killing a
    worker mid-import with a traceback. Python runs signal handlers in the main thread
    whatever thread the kernel picks, so the demo itself still sees every signal.
    """
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: nothing to inherit
        thread.start()
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def interesting_region(results: Path, config: NanomapsConfig, width_um: float = 3.0,
                       height_um: float = 2.5) -> tuple[float, float, float, float]:
    """A rectangle (y0, y1, x0, x1 µm) worth a closer look: around the largest nanocrystals."""
    import h5py

    with h5py.File(results, "r") as f:
        size = f["entry/results/derived/size"][()]
        y = f["entry/scan/y"][()]
        x = f["entry/scan/x"][()]
    if not np.isfinite(size).any():
        r, c = size.shape[0] // 2, size.shape[1] // 2
    else:
        r, c = np.unravel_index(np.nanargmax(size), size.shape)
    limits = config.rescan.limits
    ylo, yhi = limits.get(config.scan.motors[0], (y.min(), y.max()))
    xlo, xhi = limits.get(config.scan.motors[1], (x.min(), x.max()))
    y0 = float(np.clip(y[r] - height_um / 2, max(ylo, y.min()), min(yhi, y.max()) - height_um))
    x0 = float(np.clip(x[c] - width_um / 2, max(xlo, x.min()), min(xhi, x.max()) - width_um))
    return y0, y0 + height_um, x0, x0 + width_um


def truth_errors(session, uid: str) -> dict[str, float]:
    """Median absolute errors of a run's maps against the simulated sample (widths, size relative)."""
    run = session.processor.runs[uid]
    config = session.config
    maps = run.collector.result_maps(config.peaks, config.derived, config.williamson_hall_peaks)
    sample = session.eiger.source.sample
    ys, xs = run.collector.scan.axis_positions()
    index = np.array([[sample.point_at(y, x) for x in xs] for y in ys])  # (rows, cols, 2)
    truth = truth_at_points(sample.truth, index[..., 0], index[..., 1])
    metrics = recovered_vs_truth(maps.spots, maps.derived, truth, config.peaks)
    keys = [f"{p.name}/{k}" for p in config.peaks if p.hkl is not None for k in ("q0", "dq", "phi0")] + ["size"]
    return {k: metrics[k] for k in keys if k in metrics}
