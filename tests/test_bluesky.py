"""bluesky path end to end: RunEngine in a worker thread, simulated motors, the simulated EIGER
streaming real frames over loopback ZeroMQ, documents over the bluesky 0MQ proxy with msgpack.

Nothing of ours is mocked: frames go through a bound PUSH socket into a real
StreamReceiver, documents through a real proxy into a RemoteDispatcher.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from datetime import datetime, timezone

import msgpack
import numpy as np
import pytest
import zmq
from bluesky import RunEngine
from bluesky.plans import count, list_grid_scan, rel_grid_scan, scan
from bluesky.utils import DuringTask
from ophyd.sim import SynAxis, SynGauss

from monitor.bluesky.documents import (
    DocumentProxy,
    DocumentPublisher,
    DocumentSubscriber,
    check_proxy,
    pack_document,
    unpack_document,
    wait_until_linked,
)
from monitor.bluesky.plan_runner import GridScanRequest, check_rescan
from monitor.bluesky.run_engine_runner import RunEngineRunner
from monitor.session.start_geometry import geometry_from_start
from monitor.sim.simulated_eiger import FrameSource, SampleModel, SimulatedEiger
from processors.config import DEFAULT_DETECTOR, RescanConfig, load_config
from processors.demo_setup import write_demo_config
from stream.chunk_codec import ChunkDecoder
from stream.raster_scan import RasterScan
from stream.stream_messages import BadMessage, ImageMessage, SeriesEnd, SeriesStart
from stream.stream_receiver import StreamReceiver
from stream.stream_sender import StreamSender
from stream.zmq_address import AddressError

#: the demo scan's area: 24 x 32 points at 0.5 µm from (0, 0)
AREA = ((0.0, 11.5), (0.0, 15.5))
LIMITS = RescanConfig(limits={"piezo_y": (-1.0, 13.0), "piezo_x": (-1.0, 17.0)})


@pytest.fixture(autouse=True)
def no_threads_left():
    """Every test stops the threads it started (zmq's process-wide garbage collector aside)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        left = [t for t in set(threading.enumerate()) - before
                if t.is_alive() and type(t).__name__ != "GarbageCollectorThread"]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"threads left running: {[t.name for t in left]}"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> FrameSource:
    config = load_config(write_demo_config(tmp_path_factory.mktemp("bluesky_cfg")))
    return FrameSource(config, seed=3)


class Listener:
    """A real StreamReceiver (PULL) drained by a thread; keeps every validated message."""

    def __init__(self, endpoint: str) -> None:
        self.receiver = StreamReceiver(endpoint)
        self.messages: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.messages.extend(self.receiver.receive(50))

    def series(self, series: int, timeout: float = 20.0) -> list:
        """Messages of ``series`` once its end arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msgs = [m for m in list(self.messages) if self._series_of(m) == series]
            if msgs and isinstance(msgs[-1], SeriesEnd):
                return msgs
            time.sleep(0.02)
        raise AssertionError(f"series {series} did not end within {timeout} s")

    @staticmethod
    def _series_of(m):
        if isinstance(m, ImageMessage):
            return m.frame.series
        return getattr(m, "series", None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.receiver.close()


class Rig:
    """Motors, the simulated EIGER on a loopback PUSH socket, a listener and a RunEngineRunner."""

    def __init__(self, source: FrameSource, *, protocol: str = "stream1", callbacks=()) -> None:
        self.y = SynAxis(name="piezo_y")
        self.x = SynAxis(name="piezo_x")
        self.sender = StreamSender("tcp://127.0.0.1:*")
        self.listener = Listener(self.sender.endpoint)
        self.eiger = SimulatedEiger("eiger", source=source, motors=(self.y, self.x), sender=self.sender,
                                    protocol=protocol, seed=5)
        self.docs: list[tuple[str, dict]] = []
        self.runner = RunEngineRunner([self.eiger], {"piezo_y": self.y, "piezo_x": self.x},
                                      callbacks=[lambda n, d: self.docs.append((n, d)), *callbacks],
                                      md={"beamline": "test"})

    def events(self, run_uid: str) -> list[dict]:
        descriptors = {d["uid"] for n, d in self.docs if n == "descriptor" and d["run_start"] == run_uid}
        return sorted((d for n, d in self.docs if n == "event" and d["descriptor"] in descriptors),
                      key=lambda d: d["seq_num"])

    def close(self) -> None:
        self.runner.close()
        self.eiger.close()
        self.listener.close()
        self.sender.close(linger_s=0)


@pytest.fixture
def rig(source):
    r = Rig(source)
    yield r
    r.close()


def decode(msg: ImageMessage) -> np.ndarray:
    return ChunkDecoder().decode_into(msg.frame, np.empty(msg.frame.nbytes_decoded, np.uint8))


def has_spots(frame: np.ndarray, mask: np.ndarray) -> bool:
    """Background is Poisson(1) (max ~10 on 1M pixels); a spot peaks at > 100 counts."""
    return int(frame[~mask].max()) > 50


def assert_frames_follow_the_sample(source: FrameSource, images: list[ImageMessage], events: list[dict]) -> list:
    on = []
    for msg, ev in zip(images, events):
        y, x = ev["data"]["piezo_y"], ev["data"]["piezo_x"]
        expected = source.sample.on_crystal_at(y, x)
        assert has_spots(decode(msg), source.renderer.mask) == expected, (msg.frame.frame, y, x)
        on.append(expected)
    return on


def test_grid_scan_streams_one_real_frame_per_point_in_snake_order(rig, source):
    (y0, y1), (x0, x1) = AREA
    request = GridScanRequest("piezo_y", y0, y1, 6, "piezo_x", x0, x1, 8, snake=True, parent_uid="parent-0")
    outcome = rig.runner.run_blocking(request, timeout=60)
    assert outcome.exit_status == "success"
    start = outcome.start
    assert start["plan_name"] == "grid_scan" and start["parent_uid"] == "parent-0"
    assert start["nanomaps_request"]["fast_num"] == 8 and start["beamline"] == "test"
    assert rig.runner.start_documents[-1] is start
    # the run names the simulated EIGER: with the default [bluesky] detector its series is the run's
    assert start["detectors"] == [DEFAULT_DETECTOR] == [rig.eiger.name]

    series = rig.eiger.series.get()
    msgs = rig.listener.series(series)
    header, images, end = msgs[0], msgs[1:-1], msgs[-1]
    assert isinstance(header, SeriesStart) and header.series == series and header.header_detail == "all"
    assert header.shape == source.metadata.shape and header.nimages == 48
    assert header.pixel_mask is not None and np.array_equal(header.pixel_mask != 0, source.renderer.mask)
    assert all(isinstance(m, ImageMessage) for m in images)
    assert [m.frame.frame for m in images] == list(range(48))
    assert isinstance(end, SeriesEnd) and not end.implicit
    assert not [m for m in rig.listener.messages if isinstance(m, BadMessage)]

    events = rig.events(start["uid"])
    assert [e["data"]["eiger_image_number"] for e in events] == list(range(48))
    assert all(e["data"]["eiger_series"] == series for e in events)

    # the start document's geometry says where every frame is, snake rows included
    geometry = geometry_from_start(start)
    assert geometry.shape == (6, 8) and geometry.snake and geometry.motors == ("piezo_y", "piezo_x")
    assert geometry.origin == (y0, x0)
    assert geometry.step == pytest.approx(((y1 - y0) / 5, (x1 - x0) / 7))
    rows, cols = geometry.points_of(np.arange(48))
    ys, xs = geometry.axis_positions()
    for k, ev in enumerate(events):
        assert ev["data"]["piezo_y"] == pytest.approx(ys[rows[k]])
        assert ev["data"]["piezo_x"] == pytest.approx(xs[cols[k]])
    assert list(cols[8:16]) == list(range(7, -1, -1))  # row 1 runs backwards, as bluesky moved

    # the frames show spots exactly where the beam hits the supercrystal
    on = assert_frames_follow_the_sample(source, images, events)
    assert 10 < sum(on) < 48  # the crystal fills the middle, the corners are off it


def test_rescan_of_a_rectangle_sees_the_finer_structure(rig, source):
    rig.runner.abort()  # nothing runs: a no-op
    parent = rig.runner.run_blocking(GridScanRequest("piezo_y", *AREA[0], 6, "piezo_x", *AREA[1], 8), timeout=60)
    assert parent.exit_status == "success"
    parent_geometry = geometry_from_start(parent.start)

    # a rectangle across the crystal's upper edge, at 0.25 µm instead of ~2.3 µm
    rescan = GridScanRequest("piezo_y", 0.0, 2.0, 9, "piezo_x", 6.0, 8.0, 9, snake=True,
                             parent_uid=parent.run_uid)
    check_rescan(rescan, LIMITS)
    job = rig.runner.submit(rescan)
    assert rig.runner.busy
    outcome = rig.runner.result(job, timeout=60)
    assert outcome.exit_status == "success" and not rig.runner.busy
    assert outcome.start["parent_uid"] == parent.run_uid
    assert [d["uid"] for d in rig.runner.start_documents] == [parent.run_uid, outcome.run_uid]

    geometry = geometry_from_start(outcome.start)
    assert geometry.shape == (9, 9) and geometry.origin == (0.0, 6.0)
    assert geometry.step == pytest.approx((0.25, 0.25))
    assert all(abs(f) < abs(p) / 8 for f, p in zip(geometry.step, parent_geometry.step))
    events = rig.events(outcome.run_uid)
    assert len(events) == 81
    assert all(0.0 <= e["data"]["piezo_y"] <= 2.0 and 6.0 <= e["data"]["piezo_x"] <= 8.0 for e in events)

    images = rig.listener.series(rig.eiger.series.get())[1:-1]
    on = assert_frames_follow_the_sample(source, images, events)
    # the fine grid resolves the edge: off-crystal rows at the top, on-crystal rows below
    grid = np.zeros((9, 9), bool)
    rows, cols = geometry.points_of(np.arange(81))
    grid[rows, cols] = on
    assert not grid[0].any() and grid[-1].all()


def test_abort_ends_a_long_scan_promptly(rig, caplog):
    caplog.set_level(logging.INFO, logger="monitor.bluesky.run_engine_runner")
    long_scan = GridScanRequest("piezo_y", *AREA[0], 40, "piezo_x", *AREA[1], 40)
    job = rig.runner.submit(long_scan)
    queued = rig.runner.submit(long_scan)
    rig.runner.wait_started(job, timeout=30)
    series = rig.eiger.series.get()
    deadline = time.monotonic() + 30
    while sum(isinstance(m, ImageMessage) and m.frame.series == series for m in list(rig.listener.messages)) < 5:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    t0 = time.monotonic()
    rig.runner.abort()
    outcome = rig.runner.result(job, timeout=10)
    elapsed = time.monotonic() - t0
    assert outcome.exit_status == "abort" and outcome.stop["exit_status"] == "abort"
    assert elapsed < 5.0  # "promptly": well before the 1600-point scan could finish (generous for a loaded CI)
    # frames go out when triggered, events are emitted after the read: a few frames may have no event yet
    assert 1 <= outcome.stop["num_events"]["primary"] < 1600
    assert rig.runner.result(queued, timeout=1).exit_status == "cancelled"
    assert not rig.runner.busy
    # the detector still closed its series: header, the frames it took, end
    msgs = rig.listener.series(series)
    assert isinstance(msgs[-1], SeriesEnd) and not msgs[-1].implicit
    assert len(msgs) - 2 == rig.eiger.image_number.get() + 1
    # an abort someone asked for is no error: one INFO line, not bluesky's ERROR "Run aborted" traceback
    records = caplog.get_records("call")
    assert [r.getMessage() for r in records if r.levelno >= logging.ERROR] == []
    assert any(r.levelno == logging.INFO and "aborted by the user" in r.getMessage() for r in records)
    # and the runner goes on with the next request
    again = rig.runner.run_blocking(GridScanRequest("piezo_y", 0, 1, 2, "piezo_x", 0, 1, 2), timeout=30)
    assert again.exit_status == "success"


@pytest.mark.allow_error_log  # bluesky logs "Run aborted" at ERROR
def test_abort_while_no_receiver_reads_does_not_hang(source, caplog):
    """With nobody on the PULL side the header cannot leave: the scan waits at its first trigger,
    abort still ends it, and unstage gives up on the unsent series after drain_timeout_s."""
    y, x = SynAxis(name="piezo_y"), SynAxis(name="piezo_x")
    sender = StreamSender("tcp://127.0.0.1:*")
    eiger = SimulatedEiger("eiger", source=source, motors=(y, x), sender=sender, drain_timeout_s=0.5)
    runner = RunEngineRunner([eiger], {"piezo_y": y, "piezo_x": x})
    try:
        job = runner.submit(GridScanRequest("piezo_y", 0, 1, 2, "piezo_x", 0, 1, 2))
        runner.wait_started(job, timeout=10)
        time.sleep(0.3)
        assert runner.busy and eiger.frames_sent == 0
        t0 = time.monotonic()
        runner.abort()
        outcome = runner.result(job, timeout=10)
        assert outcome.exit_status == "abort" and time.monotonic() - t0 < 3.0
    finally:
        runner.close()
        eiger.close()
        sender.close(linger_s=0)
    warnings = [r.getMessage() for r in caplog.get_records("call") if r.levelno == logging.WARNING]
    assert any("took no frames" in w for w in warnings)


def test_stream2_protocol(source):
    r = Rig(source, protocol="stream2")
    try:
        outcome = r.runner.run_blocking(GridScanRequest("piezo_y", 5, 6, 2, "piezo_x", 7, 8, 2), timeout=30)
        assert outcome.exit_status == "success"
        msgs = r.listener.series(r.eiger.series.get())
        assert {m.protocol for m in msgs} == {"stream2"}
        assert [m.frame.frame for m in msgs[1:-1]] == [0, 1, 2, 3]
        assert all(has_spots(decode(m), source.renderer.mask) for m in msgs[1:-1])  # the crystal's centre
    finally:
        r.close()


def test_sample_model_places_the_crystal_under_the_demo_scan(source):
    sample = source.sample
    assert sample.pixel_um == pytest.approx(0.125) and sample.shape == (93, 125)
    assert sample.extent_um == AREA
    assert sample.on_crystal_at(5.75, 7.75) and not sample.on_crystal_at(0.0, 0.0)
    assert sample.point_at(-1.0, 3.0) == (-1, -1)  # off the sample: background only
    assert sample.point_at(0.06, 0.07) == (0, 1)
    with pytest.raises(ValueError, match="step"):
        SampleModel.covering(RasterScan((4, 4)))


def test_geometry_from_real_start_documents():
    """What bluesky really writes: grid_scan (descending, odd shape, snake), 1-D scan, count."""
    y, x = SynAxis(name="piezo_y"), SynAxis(name="piezo_x")
    det = SynGauss("det", x, "piezo_x", center=0, Imax=1, sigma=1)
    docs: list[tuple[str, dict]] = []
    runner = RunEngineRunner([det], {"piezo_y": y, "piezo_x": x}, callbacks=[lambda n, d: docs.append((n, d))])
    try:
        out = runner.run_blocking(GridScanRequest("piezo_y", 2.0, 1.0, 3, "piezo_x", 10.0, 12.0, 5, snake=True),
                                  timeout=30)
    finally:
        runner.close()
    start = out.start
    assert tuple(start["shape"]) == (3, 5) and tuple(start["snaking"]) == (False, True)
    assert [list(e) for e in start["extents"]] == [[2.0, 1.0], [10.0, 12.0]]
    assert tuple(start["motors"]) == ("piezo_y", "piezo_x")
    g = geometry_from_start(unpack_document(pack_document(start)))  # as it arrives over msgpack
    assert g.step == pytest.approx((-0.5, 0.5)) and g.origin == (2.0, 10.0) and g.snake
    events = sorted((d for n, d in docs if n == "event"), key=lambda d: d["seq_num"])
    rows, cols = g.points_of(np.arange(15))
    ys, xs = g.axis_positions()
    moved = np.array([(e["data"]["piezo_y"], e["data"]["piezo_x"]) for e in events])
    np.testing.assert_allclose(moved, np.column_stack([ys[rows], xs[cols]]))

    re_docs: list[tuple[str, dict]] = []
    RE = RunEngine({}, context_managers=[], during_task=DuringTask())
    try:
        RE.subscribe(lambda n, d: re_docs.append((n, d)))
        RE(scan([det], x, 0, 1, 5))
        RE(count([det], 3))
        RE(list_grid_scan([det], y, [1.0, 2.0, 4.0], x, [5.0, 5.5, 6.0], snake_axes=True))
        RE(list_grid_scan([det], y, [1.0, 2.0, 3.0], x, [6.0, 5.5, 5.0], snake_axes=[x]))
        y.set(3.0)
        x.set(4.0)
        RE(rel_grid_scan([det], y, -1, 1, 3, x, -1, 1, 2))
    finally:
        RE.loop.call_soon_threadsafe(RE.loop.stop)
        RE._th.join(5)
        RE.loop.close()
    starts = [d for n, d in re_docs if n == "start"]
    assert "shape" not in starts[0] and geometry_from_start(starts[0]) is None  # 1-D scan: a growing strip
    assert geometry_from_start(starts[1]) is None  # count
    uneven = geometry_from_start(starts[2])
    assert uneven.shape == (3, 3) and uneven.snake and uneven.step is None
    even = geometry_from_start(starts[3])
    assert even.snake and even.step == pytest.approx((1.0, -0.5)) and even.origin == (1.0, 6.0)
    events = [d for n, d in re_docs if n == "event" and d["descriptor"] in
              {x["uid"] for m, x in re_docs if m == "descriptor" and x["run_start"] == starts[3]["uid"]}]
    rows, cols = even.points_of(np.arange(9))
    ys, xs = even.axis_positions()
    np.testing.assert_allclose([(e["data"]["piezo_y"], e["data"]["piezo_x"]) for e in events],
                               np.column_stack([ys[rows], xs[cols]]))
    relative = geometry_from_start(starts[4])  # extents relative to (3, 4)
    assert relative.origin == (-1.0, -1.0) and relative.step == pytest.approx((1.0, 2.0))
    assert geometry_from_start({"shape": [2, 3]}).step is None


def test_documents_travel_through_the_0mq_proxy_with_msgpack(source):
    received: list[tuple[str, dict]] = []
    raw: list[bytes] = []
    proxy = DocumentProxy()
    publisher = DocumentPublisher(proxy.in_address)
    subscriber = DocumentSubscriber(proxy.out_address, lambda n, d: received.append((n, d)))
    ctx = zmq.Context()
    tap = ctx.socket(zmq.SUB)  # a raw listener: what is really on the wire
    tap.setsockopt(zmq.SUBSCRIBE, b"")
    tap.setsockopt(zmq.LINGER, 0)
    tap.connect(proxy.out_address)
    rig = None
    try:
        assert proxy.in_address.startswith("tcp://127.0.0.1:") and proxy.out_address.startswith("tcp://127.0.0.1:")
        wait_until_linked(publisher, subscriber)
        deadline = time.monotonic() + 10  # the tap's subscription must be through too
        while True:
            publisher.ping("tap")
            if tap.poll(100):
                tap.recv()
                break
            assert time.monotonic() < deadline
        while tap.poll(50):
            tap.recv()

        rig = Rig(source, callbacks=[publisher])
        outcome = rig.runner.run_blocking(GridScanRequest("piezo_y", 4, 5, 3, "piezo_x", 6, 7, 4, snake=True,
                                                          parent_uid="parent-zmq"), timeout=60)
        assert outcome.exit_status == "success"
        # numpy and datetime values (not in grid_scan's documents, but in others') travel as plain values
        publisher("start", {"uid": "numpy-doc", "time": time.time(), "a": np.arange(4, dtype=np.int64),
                            "b": np.float32(0.5), "c": np.int32(7), "when": datetime(2026, 1, 2, tzinfo=timezone.utc),
                            "shape": (2, 2), "flag": np.bool_(True)})
        deadline = time.monotonic() + 10
        while not any(d.get("uid") == "numpy-doc" for _, d in list(received)):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        while tap.poll(200):
            raw.append(tap.recv())
    finally:
        tap.close()
        ctx.term()
        if rig is not None:
            rig.close()
        subscriber.close()
        publisher.close()
        proxy.close()

    assert subscriber.callback_errors == 0
    names = [n for n, _ in received]
    assert names[0] == "start" and "stop" in names
    descriptors = {d["uid"] for n, d in received if n == "descriptor" and d["run_start"] == outcome.run_uid}
    start = received[0][1]
    assert start["uid"] == outcome.run_uid and start["parent_uid"] == "parent-zmq"
    assert start["shape"] == [3, 4] and start["snaking"] == [False, True]
    assert geometry_from_start(start) == geometry_from_start(outcome.start)
    assert sum(n == "event" and d["descriptor"] in descriptors for n, d in received) == 12
    stop = next(d for n, d in received if n == "stop")
    assert stop["run_start"] == outcome.run_uid and stop["exit_status"] == "success"
    local_events = [d for n, d in rig.docs if n == "event"]
    remote_events = [d for n, d in received if n == "event"]
    assert [e["data"] for e in remote_events] == [e["data"] for e in local_events]
    extra = next(d for n, d in received if d.get("uid") == "numpy-doc")
    assert extra["a"] == [0, 1, 2, 3] and extra["b"] == 0.5 and extra["c"] == 7 and extra["flag"] is True
    assert extra["when"] == "2026-01-02T00:00:00+00:00" and extra["shape"] == [2, 2]

    # on the wire: "prefix name body", the body msgpack, never a pickle
    assert publisher._serializer is pack_document
    assert {m.split(b" ", 2)[1] for m in raw} >= {b"start", b"descriptor", b"event", b"stop"}
    for message in raw:
        prefix, name, body = message.split(b" ", 2)
        assert isinstance(msgpack.unpackb(body, raw=False), dict)
        with pytest.raises(Exception):
            pickle.loads(body)


# ----------------------------------------------------------------------------- proxy addresses


def test_check_proxy_names_the_address_and_the_fix():
    with DocumentProxy() as proxy:
        check_proxy(proxy.out_address, timeout_s=2.0)  # a running proxy passes
        port = int(proxy.out_address.rsplit(":", 1)[1])
    # the proxy is closed now: its port refuses connections
    address = f"tcp://127.0.0.1:{port}"
    with pytest.raises(AddressError) as refused:
        check_proxy(address, timeout_s=2.0)
    text = str(refused.value)
    assert address in text and "nothing answers there" in text and "bluesky-0MQ-proxy" in text
    assert "\n" not in text
    with pytest.raises(AddressError, match="did you mean tcp://localhost:5578"):
        check_proxy("localhost:5578")
    with pytest.raises(AddressError, match="port 1-65535"):
        check_proxy("tcp://127.0.0.1:0")
    with pytest.raises(AddressError, match="unknown host"):
        check_proxy("tcp://no-such-host.invalid:5578", timeout_s=2.0)
    with pytest.raises(AddressError, match="no such socket file"):
        check_proxy("ipc:///nonexistent/nanomaps-proxy")
    assert issubclass(AddressError, ValueError)


def test_document_subscriber_rejects_a_bad_address_at_once():
    for bad in ("localhost:5578", "tcp://127.0.0.1", "udp://127.0.0.1:5578", ("127.0.0.1", "x")):
        with pytest.raises(AddressError, match="bluesky proxy"):
            DocumentSubscriber(bad, lambda n, d: None)
    t0 = time.monotonic()
    with pytest.raises(AddressError, match="cannot connect"):  # zmq refuses it: one line, not a ZMQError
        DocumentSubscriber("ipc:///tmp/" + "x" * 200, lambda n, d: None)
    assert time.monotonic() - t0 < 5  # not the 10 s start-up wait
    with DocumentProxy() as proxy:
        host, port = proxy.out_address.removeprefix("tcp://").rsplit(":", 1)
        with DocumentSubscriber((host, int(port)), lambda n, d: None) as subscriber:
            assert subscriber.address == proxy.out_address
