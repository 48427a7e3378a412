"""The beamline :class:`~monitor.bluesky.plan_runner.PlanRunner`: plans go to bluesky-queueserver (design §7).

:class:`QueueServerRunner` talks to a running RE Manager (``start-re-manager``) over its
0MQ control socket with ``bluesky_queueserver_api.zmq.REManagerAPI``. A rescan becomes a
queue item ``grid_scan([detectors], slow, start, stop, num, fast, start, stop, num,
snake_axes=..., md={parent_uid, nanomaps_request})``; the server's startup code
resolves the device names. Documents of the runs do not come back this way: the worker
publishes them to the bluesky 0MQ proxy (see ``monitor/bluesky/qserver_profile``).

:func:`queue_server_command` gives the command line that starts an RE Manager with our
profile (``monitor/bluesky/qserver_profile``): every socket on loopback, a Redis address, and
the generated list of plans and devices written outside the source tree;
:func:`queue_server_environment` gives the environment it needs: the motor limits of the
config's ``[rescan]`` (the profile enforces them on the server, whoever submits), where the
documents go, and optionally the private key that encrypts its control socket.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from bluesky_queueserver_api import BPlan
from bluesky_queueserver_api.api_base import WaitTimeoutError
from bluesky_queueserver_api.comm_base import RequestFailedError, RequestTimeoutError
from bluesky_queueserver_api.zmq import REManagerAPI

from monitor.bluesky.plan_runner import GridScanRequest, RescanRefused
from monitor.bluesky.run_engine_runner import request_metadata
from processors.config import RescanConfig, check_z85_key
from stream.zmq_address import check_connect_address, check_listening

#: Startup directory for ``start-re-manager --startup-dir`` (devices piezo_y, piezo_x, det;
#: plan grid_scan, with motor limits) and its user group permissions (exactly those).
PROFILE_DIR = Path(__file__).resolve().with_name("qserver_profile")
PERMISSIONS_FILE = PROFILE_DIR / "user_group_permissions.yaml"


def start_re_manager_executable() -> str:
    """``start-re-manager`` of this Python environment (next to ``sys.executable``), else from PATH."""
    beside = Path(sys.executable).with_name("start-re-manager")
    if beside.exists():
        return str(beside)
    found = shutil.which("start-re-manager")
    if found is None:
        raise FileNotFoundError("start-re-manager not found: install bluesky-queueserver in this environment")
    return found


def queue_server_command(*, zmq_control_addr: str, zmq_info_addr: str, redis_addr: str,
                         existing_plans_path: str | Path, redis_name_prefix: str = "nanomaps",
                         startup_dir: str | Path = PROFILE_DIR,
                         permissions_path: str | Path = PERMISSIONS_FILE) -> list[str]:
    """The ``start-re-manager`` command line for the nanomaps profile.

    ``zmq_control_addr``/``zmq_info_addr`` are where the manager binds (give
    ``tcp://127.0.0.1:PORT``: its defaults bind every interface); ``redis_addr`` is
    ``HOST:PORT`` of a running Redis; ``existing_plans_path`` is the YAML file the
    manager (re)writes with the plans and devices it found when the environment opens
    (keep it out of the source tree). The worker runs plain Python (no IPython kernel).
    """
    return [start_re_manager_executable(),
            "--zmq-control-addr", zmq_control_addr,
            "--zmq-info-addr", zmq_info_addr,
            "--zmq-publish-console", "OFF",
            "--redis-addr", redis_addr,
            "--redis-name-prefix", redis_name_prefix,
            "--startup-dir", str(startup_dir),
            "--existing-plans-devices", str(existing_plans_path),
            "--update-existing-plans-devices", "ENVIRONMENT_OPEN",
            "--user-group-permissions", str(permissions_path),
            "--user-group-permissions-reload", "ON_STARTUP",
            "--use-ipython-kernel", "OFF"]


#: Environment variable of the profile's motor limits: JSON ``{"motor": [low, high]}`` in µm.
LIMITS_VARIABLE = "NANOMAPS_RESCAN_LIMITS"
#: Environment variable of the profile: the bluesky 0MQ proxy input its documents go to.
DOCUMENTS_PROXY_VARIABLE = "NANOMAPS_DOCUMENTS_PROXY"
#: Environment variable ``start-re-manager`` reads its private key from (encrypts the control socket).
PRIVATE_KEY_VARIABLE = "QSERVER_ZMQ_PRIVATE_KEY_FOR_SERVER"


def queue_server_environment(rules: RescanConfig, *, documents_proxy: str | None = None,
                             private_key: str | None = None) -> dict[str, str]:
    """Environment variables to add to ``start-re-manager``'s environment for our profile.

    ``rules`` is the config's ``[rescan]``: its ``limits`` (µm) become the motors' soft
    limits and the limits ``grid_scan`` checks on the server, so a scan submitted by any
    client stays inside them (a motor without limits does not move). ``documents_proxy``
    is the bluesky 0MQ proxy input the worker publishes its documents to.
    ``private_key`` (z85, 40 characters; ``qserver-zmq-keys`` makes a pair) encrypts the
    control socket: clients then need the public key. An environment variable rather
    than a command-line option, so the key does not show in the process list.
    """
    env = {LIMITS_VARIABLE: json.dumps({motor: list(pair) for motor, pair in rules.limits.items()})}
    if documents_proxy is not None:
        check_connect_address(documents_proxy, what="documents proxy address")
        env[DOCUMENTS_PROXY_VARIABLE] = documents_proxy
    if private_key is not None:
        env[PRIVATE_KEY_VARIABLE] = private_key
    return env


def check_public_key(key: str) -> None:
    """Raise ValueError unless ``key`` is a 0MQ CURVE key as z85 text (40 characters)."""
    problem = check_z85_key(key)
    if problem:
        raise ValueError(f"queue server public key: {problem}")


class QueueServerError(RuntimeError):
    """The queue server did not do what was asked; the message names its address and what to check."""


class QueueServerTimeout(QueueServerError, TimeoutError):
    """The queue server did not answer (or a wait on it ran out) in time."""


_Method = TypeVar("_Method", bound=Callable)


def _names_the_address(action: str) -> Callable[[_Method], _Method]:
    """Turn the API's timeouts and refusals in a method into :class:`QueueServerError` naming the address.

    bluesky-queueserver-api says only "Request timeout: ..." and which address it was
    is what the user needs to check. ``action`` says what was being done ("abort the scan").
    """
    def wrap(method: _Method) -> _Method:
        @functools.wraps(method)
        def named(self: "QueueServerRunner", *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except RequestTimeoutError:
                raise QueueServerTimeout(
                    f"queue server {self.zmq_control_addr} did not answer within {self.request_timeout_s:g} s "
                    f"(trying to {action}): is start-re-manager running with --zmq-control-addr "
                    f"{self.zmq_control_addr}?{self._key_hint}") from None
            except WaitTimeoutError as exc:
                raise QueueServerTimeout(f"queue server {self.zmq_control_addr}: gave up trying to {action}: "
                                         f"{exc}") from None
            except RequestFailedError as exc:
                # it answered, and said no: its own message is the reason
                raise QueueServerError(f"queue server {self.zmq_control_addr} refused to {action}: {exc}") from exc
        return named  # type: ignore[return-value]
    return wrap


class QueueServerRunner:
    """Submits rescans to bluesky-queueserver at ``zmq_control_addr`` (e.g. ``tcp://127.0.0.1:60615``).

    ``detectors`` are the detector names in the server's startup code; ``zmq_info_addr``
    is the server's console-output address (unused here, but the API connects to it,
    default ``tcp://localhost:60625``). ``md`` is added
    to every start document, with ``parent_uid`` and ``nanomaps_request``.
    ``status_polling_period`` (s) sets how fast waits notice a change (the API's
    default, 1 s, makes an abort take seconds). A request the server does not answer
    within ``request_timeout_s`` raises :class:`QueueServerTimeout` naming the address;
    ``zmq_public_key`` (z85, 40 characters) is the server's public key when it encrypts
    its control socket (``QSERVER_ZMQ_PRIVATE_KEY_FOR_SERVER``): without the right key
    such a server never answers, and the timeout's message says to check the key;
    an item the server refuses (plan or device not allowed, bad arguments) raises
    :class:`RescanRefused` with the server's message. A malformed address raises
    :class:`stream.zmq_address.AddressError` (a ValueError) here; :meth:`check` tells
    whether a server answers, before anything depends on it.
    """

    def __init__(self, zmq_control_addr: str, *, detectors: Sequence[str] = ("det",), md: dict | None = None,
                 zmq_info_addr: str | None = None, status_polling_period: float = 0.1,
                 timeout_s: float = 30.0, request_timeout_s: float = 2.0,
                 zmq_public_key: str | None = None) -> None:
        check_connect_address(zmq_control_addr, what="queue server address")
        if zmq_info_addr is not None:
            check_connect_address(zmq_info_addr, what="queue server info address")
        self.zmq_control_addr = zmq_control_addr
        self.detectors = list(detectors)
        self.timeout_s = timeout_s
        self.request_timeout_s = request_timeout_s
        self._md = dict(md or {})
        if zmq_public_key is not None:
            check_public_key(zmq_public_key)
        self.zmq_public_key = zmq_public_key
        # None: the API then takes QSERVER_ZMQ_PUBLIC_KEY from the environment, if set
        self._api_options = dict(zmq_control_addr=zmq_control_addr, zmq_info_addr=zmq_info_addr,
                                 zmq_public_key=zmq_public_key, timeout_recv=request_timeout_s, status_polling_period=status_polling_period,
                                 status_expiration_period=min(status_polling_period, 0.5))
        self._api_client: REManagerAPI | None = None
        self._submitted: list[str] = []
        #: In every item's md: marks the copies the server re-queues (new uid) of our failed or
        #: aborted items as ours; another monitor has another id.
        self.client_id = f"nanomaps-monitor-{uuid.uuid4()}"

    @property
    def _key_hint(self) -> str:
        """What to check about encryption when the server does not answer."""
        if self.zmq_public_key is None:
            return (" If it encrypts its control socket, give its public key ([bluesky] "
                    "queue_server_public_key).")
        return " Is the public key ([bluesky] queue_server_public_key) the one of this server?"

    @property
    def api(self) -> REManagerAPI:
        """The underlying API client (for queries this class does not wrap)."""
        return self._api

    @property
    def _api(self) -> REManagerAPI:
        # made on first use, so that check() can refuse a dead address before the API's
        # sockets, threads and log lines exist
        if self._api_client is None:
            self._api_client = REManagerAPI(**self._api_options)
        return self._api_client

    # ------------------------------------------------------------------ server

    def check(self, timeout_s: float = 2.0) -> None:
        """Raise :class:`QueueServerError` (or ``AddressError``) unless a queue server answers at the address.

        A TCP probe first (an unused port fails at once, with the reason), then one
        status request (something else listening there does not answer it). Costs
        at most ``timeout_s`` + ``request_timeout_s`` seconds.
        """
        check_listening(self.zmq_control_addr, what="queue server (start-re-manager --zmq-control-addr)",
                        timeout_s=timeout_s)
        self.status()

    @_names_the_address("read its status")
    def status(self) -> dict[str, Any]:
        return self._api.status(reload=True)

    # ------------------------------------------------------------------ PlanRunner

    def plan_item(self, request: GridScanRequest) -> BPlan:
        """The queue item for ``request``."""
        md = {**self._md, **request.md, "parent_uid": request.parent_uid,
              "nanomaps_request": request_metadata(request), "nanomaps_client": self.client_id}
        return BPlan(request.plan, list(self.detectors),
                     request.slow_motor, request.slow_start, request.slow_stop, request.slow_num,
                     request.fast_motor, request.fast_start, request.fast_stop, request.fast_num,
                     snake_axes=bool(request.snake), md=md)

    @_names_the_address("submit the scan")
    def submit(self, request: GridScanRequest) -> str:
        """Add ``request`` to the queue and start the queue if it is idle; returns the item uid.

        Copies of our earlier items that failed or were aborted, which the server keeps at the
        head of the queue, are removed first: starting the queue would run them again.
        """
        for item in self._api.queue_get()["items"]:
            if item.get("result") and self._is_ours(item):
                self._quietly(lambda uid=item["item_uid"]: self._api.item_remove(uid=uid))
        try:
            response = self._api.item_add(self.plan_item(request))
        except RequestFailedError as exc:
            raise RescanRefused(f"the queue server at {self.zmq_control_addr} refused the scan: {exc}") from exc
        uid = response["item"]["item_uid"]
        self._submitted.append(uid)
        if self.status()["manager_state"] == "idle":
            try:
                self._api.queue_start()
            except RequestFailedError:
                # someone else started it between our status and the request: fine if it runs now
                if self.status()["manager_state"] == "idle":
                    raise
        return uid

    @_names_the_address("abort the scan")
    def abort(self) -> str:
        """Abort the plan now if it is one of ours (pause immediately, then abort); take our items off the queue.

        Only items this runner submitted are touched: our waiting items are removed
        first (so the queue cannot go on to one of them), then a running item of ours
        is paused and aborted; the server puts it back at the head of the queue with a
        new uid and that copy is removed too. A plan someone else submitted is neither
        paused nor aborted, and their queued items stay (after aborting ours the queue
        is stopped, as after any abort: they start it again). Returns what was done, in
        one line for the user.
        """
        waiting = self._remove_ours()
        deadline = time.monotonic() + self.timeout_s
        paused_by_us: str | None = None
        aborted: str | None = None
        while True:
            status = self.status()
            state, running = status["manager_state"], status["running_item_uid"]
            ours = bool(running) and self._is_ours(running)
            if state == "paused":
                if ours:
                    self._api.re_abort()
                    self._api.wait_for_idle(timeout=max(1.0, deadline - time.monotonic()))
                    aborted = running
                elif paused_by_us is not None:
                    # our pause reached the next plan, someone else's, after ours had ended: undo it
                    self._quietly(self._api.re_resume)
                break
            if state != "executing_queue" or (running and not ours):
                break  # no plan runs (idle, or a task, or the environment opens), or someone else's
            if state == "executing_queue" and ours and status["re_state"] == "running" \
                    and not status["pause_pending"]:
                # fails harmlessly if the plan ended meanwhile; retried while a plan is about to start
                self._quietly(self._api.re_pause, "immediate")
                paused_by_us = running
            if time.monotonic() > deadline:
                raise QueueServerTimeout(f"queue server {self.zmq_control_addr} stayed {state!r} for "
                                         f"{self.timeout_s:g} s; could not abort")
            time.sleep(0.05)
        self._remove_ours()  # the re-queued copy of the aborted item
        removed = f"{waiting} queued scan(s) of ours removed"
        if aborted is not None:
            return f"aborted scan {aborted}" + (f"; {removed}" if waiting else "")
        others = f"; the running plan {running} was not submitted here and goes on" if running and not ours else ""
        return f"no scan of ours was running; {removed}" + others

    @property
    @_names_the_address("ask whether a scan runs")
    def busy(self) -> bool:
        """True while the queue runs or is paused, or one of our items waits in the queue.

        Not for copies of our failed items that the server keeps in the queue: they wait
        for nobody (the next :meth:`submit` removes them)."""
        status = self.status()
        if status["manager_state"] != "idle" or status["running_item_uid"]:
            return True
        if status["items_in_queue"] == 0:
            return False
        return any(self._is_ours(item) and not item.get("result") for item in self._api.queue_get()["items"])

    def close(self) -> None:
        """Close the connection (the server, its environment and its queue stay as they are)."""
        if self._api_client is None:
            return
        self._api_client.close()
        self._release_library_contexts()
        self._api_client = None

    def _release_library_contexts(self) -> None:
        """Destroy the zmq contexts bluesky-queueserver-api 0.0.13 leaves open after ``close()``.

        Its request client (``_client._ctx``) and its console and system-info monitors
        (``_rco._socket``) each keep a context that is never closed; collected later they
        raise ResourceWarnings in whatever code runs then. Best effort on private names:
        whatever is not there (another version) is left alone.
        """
        client = getattr(self._api, "_client", None)
        thread = getattr(client, "_zmq_receive_thread", None)
        if thread is not None:
            thread.join(2.0)
        contexts = []
        if client is not None and getattr(client, "_ctx", None) is not None and not (thread and thread.is_alive()):
            contexts.append(client._ctx)
        for monitor in (getattr(self._api, "_console_monitor", None), getattr(self._api, "_system_info_monitor", None)):
            socket = getattr(getattr(monitor, "_rco", None), "_socket", None)
            if socket is not None:
                contexts.append(socket.context)
        for context in contexts:
            if not context.closed:
                context.destroy(linger=0)

    def __enter__(self) -> "QueueServerRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ results

    @_names_the_address("read its history")
    def history(self) -> list[dict]:
        """Finished items, oldest first, each with ``result`` (``exit_status``, ``run_uids``, …)."""
        return self._api.history_get(reload=True)["items"]

    def item_result(self, uid: str) -> dict | None:
        """The ``result`` of item ``uid`` once it finished ("completed", "aborted", "failed", …), else None."""
        for item in reversed(self.history()):
            if item["item_uid"] == uid:
                return item.get("result", {})
        return None

    def wait_finished(self, uid: str, timeout: float | None = None) -> dict:
        """Wait until item ``uid`` is in the history; its ``result``."""
        deadline = time.monotonic() + (timeout or self.timeout_s)
        while True:
            result = self.item_result(uid)
            if result is not None:
                return result
            if time.monotonic() > deadline:
                raise QueueServerTimeout(f"queue server {self.zmq_control_addr}: item {uid} did not finish within "
                                         f"{timeout or self.timeout_s:g} s")
            time.sleep(0.1)

    @_names_the_address("wait for the item to run")
    def wait_running(self, uid: str, timeout: float | None = None) -> None:
        """Wait until item ``uid`` runs (its plan is executing)."""
        self._api.wait_for_condition(lambda s: s["running_item_uid"] == uid and s["re_state"] == "running",
                                     timeout=timeout or self.timeout_s)

    # ------------------------------------------------------------------ helpers

    def _quietly(self, request, *args) -> None:
        """Send a request that may fail because the state changed meanwhile (e.g. the plan just ended)."""
        try:
            request(*args)
        except RequestFailedError:
            pass

    def _is_ours(self, item: dict | str) -> bool:
        """Whether ``item`` (a queue item, or the uid of the running one) was submitted by this runner.

        By uid, or by our ``client_id`` in its md: the server gives a failed or aborted item
        a new uid when it puts it back in the queue.
        """
        if isinstance(item, str):
            if item in self._submitted:
                return True
            item = self._api.queue_get().get("running_item") or {}
            if not item:
                return False
        md = (item.get("kwargs") or {}).get("md") or {}
        return item.get("item_uid") in self._submitted or md.get("nanomaps_client") == self.client_id

    def _remove_ours(self) -> int:
        """Remove our items from the queue (waiting ones, re-queued copies of failed or aborted ones); how many."""
        removed = 0
        for item in self._api.queue_get()["items"]:
            if self._is_ours(item):
                try:
                    self._api.item_remove(uid=item["item_uid"])
                    removed += 1
                except RequestFailedError:
                    pass  # it started or was removed meanwhile
        return removed
