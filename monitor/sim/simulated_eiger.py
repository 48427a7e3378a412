"""An ophyd device for the simulated EIGER: trigger it and it streams the frame at the motors' position.

The sample is the model supercrystal (:func:`processors.supercrystal.model_supercrystal`)
laid out on a fixed grid in sample coordinates (µm): :class:`SampleModel`. The beam at
motor position ``(slow, fast)`` sees the nearest grid point; off the grid there is
nothing but background. The default sample covers the scan of the config finer than its
step (4 sample points per step), so a finer rescan really sees finer structure.

:class:`SimulatedEiger` behaves like the detector in a bluesky plan: ``stage()`` sends
the series header (new series number each time), each ``trigger()`` renders, encodes
(bitshuffle-LZ4) and pushes the next image of the series in the real wire format
(stream v1 or stream2) through a :class:`~stream.stream_sender.StreamSender`, and
``unstage()`` sends the end message. Rendering and sending run in one background
thread, in trigger order; the status of a trigger finishes once its frame is handed to
the socket (it fails with the exception if rendering or sending failed). ``read()``
gives the frame number and series, never pixels.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.status import DeviceStatus

from processors.config import NanomapsConfig
from processors.diffraction_simulator import FrameRenderer
from processors.frame_realism import FrameRealism
from processors.geometry import load_integrator, read_poni
from processors.simulate_scan import realistic_truth, renderer_for, simulated_detector_metadata
from processors.supercrystal import SupercrystalTruth, model_supercrystal
from stream.chunk_codec import encode_frame
from stream.encoded_frame import EncodedFrame
from stream.raster_scan import RasterScan
from stream.stream_sender import StreamSender
from stream.wire_encoder import WireEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleModel:
    """The supercrystal ``truth`` on a square grid: point ``(i, j)`` sits at ``origin + (i, j) × pixel`` µm.

    ``origin_um`` is ``(slow, fast)`` of ``truth[0, 0]``. :meth:`point_at` gives the
    nearest grid point of a beam position, ``(-1, -1)`` off the sample (more than half a
    pixel outside the grid).
    """

    truth: SupercrystalTruth
    pixel_um: float = 0.125
    origin_um: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if not self.pixel_um > 0:
            raise ValueError(f"sample pixel {self.pixel_um} µm: must be > 0")

    @property
    def shape(self) -> tuple[int, int]:
        return self.truth.shape

    @property
    def extent_um(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """``((slow_first, slow_last), (fast_first, fast_last))`` grid point positions (µm)."""
        rows, cols = self.shape
        y0, x0 = self.origin_um
        return (y0, y0 + (rows - 1) * self.pixel_um), (x0, x0 + (cols - 1) * self.pixel_um)

    def point_at(self, slow_um: float, fast_um: float) -> tuple[int, int]:
        """Nearest grid point ``(row, col)`` of the beam at ``(slow, fast)`` µm; ``(-1, -1)`` off the sample."""
        i = int(np.floor((slow_um - self.origin_um[0]) / self.pixel_um + 0.5))
        j = int(np.floor((fast_um - self.origin_um[1]) / self.pixel_um + 0.5))
        rows, cols = self.shape
        if 0 <= i < rows and 0 <= j < cols:
            return i, j
        return -1, -1

    def on_crystal_at(self, slow_um: float, fast_um: float) -> bool:
        """Whether the beam at ``(slow, fast)`` µm hits the supercrystal (spots expected)."""
        i, j = self.point_at(slow_um, fast_um)
        return i >= 0 and bool(self.truth.on_crystal[i, j])

    @classmethod
    def covering(cls, scan: RasterScan, *, oversample: int = 4, seed: int = 0,
                 orientation_deg: float = 178.0) -> "SampleModel":
        """A model supercrystal over the area of ``scan`` (its motor grid), ``oversample`` points per step.

        The demo's scan (24 × 32 points, 0.5 µm, origin 0) gives a 93 × 125 sample at
        0.125 µm from (0, 0) to (11.5, 15.5) µm: the crystal fills the middle, its
        corners and edges are off-crystal.
        """
        if scan.step is None:
            raise ValueError("the scan has no step: give [scan] step = [dy, dx] (µm) to place the sample")
        if oversample < 1:
            raise ValueError(f"oversample {oversample}: must be >= 1")
        steps = [abs(s) for s in scan.step if s != 0]
        if not steps:
            raise ValueError("the scan's step is zero along both axes")
        pixel = min(steps) / oversample
        (rows, cols), (dy, dx) = scan.shape, scan.step
        y = sorted((scan.origin[0], scan.origin[0] + dy * (rows - 1)))
        x = sorted((scan.origin[1], scan.origin[1] + dx * (cols - 1)))
        shape = (int(round((y[1] - y[0]) / pixel)) + 1, int(round((x[1] - x[0]) / pixel)) + 1)
        truth = model_supercrystal(shape, orientation_deg=orientation_deg, seed=seed)
        return cls(truth=truth, pixel_um=pixel, origin_um=(y[0], x[0]))


class FrameSource:
    """What the detector sees with the beam at ``(slow, fast)`` µm on ``sample``, on ``config``'s detector.

    Builds the pyFAI geometry and the :class:`FrameRenderer` once (about a second for
    an EIGER 1M); share one source between devices and runs. ``background_pool``
    background frames are drawn once and reused (spots are always drawn fresh), so a
    frame costs a few ms. ``metadata`` describes the detector for the series header.
    ``realism`` adds what real frames have (:class:`~processors.frame_realism.FrameRealism`).
    """

    def __init__(self, config: NanomapsConfig, sample: SampleModel | None = None, *, dtype: str = "uint32",
                 encoding: str = "bslz4", seed: int = 0, background_pool: int = 8,
                 realism: FrameRealism | None = None) -> None:
        realism = realism if realism is not None else FrameRealism()
        sample = sample if sample is not None else SampleModel.covering(config.scan, seed=seed)
        self.sample = replace(sample, truth=realistic_truth(sample.truth, realism))
        self.encoding = encoding
        poni_text = read_poni(config.geometry.poni)
        ai = load_integrator(poni_text, str(config.geometry.poni))
        shape = tuple(ai.detector.shape)
        self.renderer: FrameRenderer = renderer_for(config, poni_text, self.sample.truth, shape, dtype=dtype,
                                                    seed=seed, background_pool=background_pool, realism=realism)
        self.metadata = simulated_detector_metadata(ai, dtype, encoding, self.renderer.mask, 0)

    def render(self, slow_um: float, fast_um: float, rng: np.random.Generator) -> np.ndarray:
        """The frame ``(rows, cols)`` at the beam position (background only off the sample)."""
        row, col = self.sample.point_at(slow_um, fast_um)
        return self.renderer.render(row, col, rng)

    def encoded(self, slow_um: float, fast_um: float, rng: np.random.Generator) -> bytes:
        return encode_frame(self.render(slow_um, fast_um, rng), self.encoding)


class SimulatedEiger(Device):
    """A simulated EIGER as an ophyd device; see the module docstring.

    ``motors`` is ``(slow, fast)``: ophyd positioners (e.g. ``ophyd.sim.SynAxis``)
    whose ``position`` is in µm. ``sender`` is a bound :class:`StreamSender` (the
    caller owns it and must not use it while the device runs). ``num_images`` (a
    configuration signal, 0 = unknown) is announced as ``nimages`` in the series
    header; set it before staging when the number of points is known.
    ``drain_timeout_s`` bounds how long ``unstage()`` waits for queued frames to leave
    (a receiver that stopped reading); after it the rest are dropped with a warning.
    """

    image_number = Cpt(Signal, value=-1, kind="hinted")
    series = Cpt(Signal, value=0, kind="normal")
    num_images = Cpt(Signal, value=0, kind="config")

    def __init__(self, name: str, *, source: FrameSource, motors: tuple, sender: StreamSender,
                 protocol: str = "stream1", header_detail: str = "all", first_series: int = 1, seed: int = 0,
                 drain_timeout_s: float = 5.0, **kwargs) -> None:
        super().__init__("", name=name, **kwargs)
        if len(motors) != 2:
            raise ValueError(f"motors must be (slow, fast), got {len(motors)}")
        WireEncoder(protocol, 0, header_detail)  # validates protocol now, not at the first stage()
        self.source = source
        self.motors = tuple(motors)
        self.sender = sender
        self.protocol = protocol
        self.header_detail = header_detail
        self.drain_timeout_s = drain_timeout_s
        self._next_series = first_series
        self._rng = np.random.default_rng(seed)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-frames")
        self._abandon = threading.Event()
        self._wire: WireEncoder | None = None
        self._next_frame = 0
        self._t0_ns = 0
        self._last: Future | None = None
        self._failure: BaseException | None = None
        self.frames_sent = 0

    @classmethod
    def from_config(cls, name: str, config: NanomapsConfig, *, motors: tuple, sender: StreamSender,
                    sample: SampleModel | None = None, dtype: str = "uint32", encoding: str = "bslz4",
                    seed: int = 0, realism: FrameRealism | None = None, **kwargs) -> "SimulatedEiger":
        """Build the :class:`FrameSource` from ``config`` (sample: the default one covering its scan)."""
        source = FrameSource(config, sample, dtype=dtype, encoding=encoding, seed=seed, realism=realism)
        return cls(name, source=source, motors=motors, sender=sender, seed=seed, **kwargs)

    # ------------------------------------------------------------------ background work

    def _queue(self, fn, *args) -> Future:
        if self._executor is None:
            raise RuntimeError(f"{self.name} is closed")
        self._last = self._executor.submit(fn, *args)
        return self._last

    def _send(self, message) -> None:
        if self._failure is not None:
            raise self._failure
        if not self.sender.send(message, self._abandon):
            raise RuntimeError(f"{self.name}: message dropped, the stream receiver stopped reading "
                               f"(waited for it beyond the drain timeout or the device was closed)")

    def _render_and_send(self, wire: WireEncoder, k: int, slow: float, fast: float, status: DeviceStatus) -> None:
        try:
            if self._failure is not None:
                raise self._failure
            blob = self.source.encoded(slow, fast, self._rng)
            md = self.source.metadata
            frame = EncodedFrame(wire.series, k, self.source.encoding, md.dtype, md.shape, blob)
            start_ns = time.monotonic_ns() - self._t0_ns
            count_ns = int(md.count_time_s * 1e9)
            self._send(wire.image(frame, start_ns, start_ns + count_ns, count_ns))
            self.frames_sent += 1
        except BaseException as exc:
            if self._failure is None:
                self._failure = exc
            status.set_exception(exc)
            return
        status.set_finished()

    def _send_control(self, message) -> None:
        try:
            self._send(message)
        except BaseException as exc:
            self._failure = exc
            raise

    # ------------------------------------------------------------------ ophyd / bluesky interface

    def stage(self) -> list:
        staged = super().stage()
        series = self._next_series
        self._next_series += 1
        self._failure = None
        self._abandon.clear()
        self._wire = WireEncoder(self.protocol, series, self.header_detail,
                                 unique_id=f"nanomaps-{self.name}-{series}-{time.time_ns()}")
        self._next_frame = 0
        self._t0_ns = time.monotonic_ns()
        self.series.put(series)
        self.image_number.put(-1)
        metadata = replace(self.source.metadata, nimages=int(self.num_images.get()), ntrigger=1)
        self._queue(self._send_control, self._wire.start(metadata))
        return staged

    def trigger(self) -> DeviceStatus:
        if self._wire is None:
            raise RuntimeError(f"{self.name} must be staged before it is triggered (no series is open)")
        slow = float(self.motors[0].position)
        fast = float(self.motors[1].position)
        k = self._next_frame
        self._next_frame += 1
        self.image_number.put(k)
        status = DeviceStatus(self)
        self._queue(self._render_and_send, self._wire, k, slow, fast, status)
        return status

    def unstage(self) -> list:
        wire = self._wire
        if wire is not None:
            self._wire = None
            done = self._queue(self._send_control, wire.end())
            try:
                done.result(timeout=self.drain_timeout_s)
            except TimeoutError:
                log.warning("%s: the stream receiver took no frames for %.0f s; dropping the rest of series %d",
                            self.name, self.drain_timeout_s, wire.series)
                self._abandon.set()
            except Exception as exc:  # already reported by the trigger status that failed
                log.warning("%s: series %d ended without its end message (%s)", self.name, wire.series, exc)
        return super().unstage()

    def close(self) -> None:
        """Give up queued sends and stop the background thread (the sender stays open: the caller owns it)."""
        self._abandon.set()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def destroy(self) -> None:
        self.close()
        super().destroy()
