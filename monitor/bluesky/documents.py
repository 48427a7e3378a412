"""bluesky documents over ZeroMQ with msgpack (never pickle).

Publisher → 0MQ proxy → subscribers, as at a beamline (design §7):

- :class:`DocumentPublisher` is a RunEngine callback: bluesky's ``Publisher`` with the
  msgpack serializer :func:`pack_document` (numpy scalars/arrays, tuples, sets,
  datetimes become plain msgpack types).
- :class:`DocumentProxy` runs the proxy (the sockets of ``bluesky.callbacks.zmq.Proxy``)
  in a background thread on loopback, stoppable.
- :class:`DocumentSubscriber` runs bluesky's ``RemoteDispatcher`` (deserializer
  :func:`unpack_document`) in its own thread and hands ``(name, doc)`` to a callback.
- What a start document says about the map is read by the session:
  :func:`monitor.session.start_geometry.geometry_from_start`.
- :func:`check_proxy` probes a proxy's output address before a session relies on it.

Pub/sub drops what is sent before both links are up (the "slow joiner"). Where one
program owns both ends (tests, the demo), :func:`wait_until_linked` sends ping messages
through the publisher until the subscriber sees one. A ping is a ``start``-named message
with prefix ``b"nanomaps-ping"`` whose body has only ``nanomaps_ping``; our subscriber
drops it, other listeners on the same proxy would see it as an odd start document.
"""

from __future__ import annotations

import datetime as _dt
import enum
import logging
import socket
import threading
import time
import uuid
from pathlib import Path, PurePath
from typing import Any, Callable, Mapping

import msgpack
import numpy as np
import zmq
from bluesky.callbacks.zmq import Proxy, Publisher, RemoteDispatcher

from stream.zmq_address import AddressError, check_connect_address, parse_tcp_address

log = logging.getLogger(__name__)

DocumentCallback = Callable[[str, dict], None]

#: Prefix and body key of the link-check messages (see :func:`wait_until_linked`).
PING_PREFIX = b"nanomaps-ping"
PING_KEY = "nanomaps_ping"


# ----------------------------------------------------------------------------- serializer


def _to_builtin(obj: Any) -> Any:
    """msgpack ``default`` hook: numpy and other non-msgpack values → plain Python values."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, _dt.timedelta):
        return obj.total_seconds()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__} ({obj!r:.80}) in a bluesky document with msgpack")


def pack_document(doc: Mapping[str, Any]) -> bytes:
    """A bluesky document as msgpack bytes (tuples become lists, numpy becomes lists/floats/ints)."""
    return msgpack.packb(doc, default=_to_builtin, use_bin_type=True)


def unpack_document(data: bytes) -> dict:
    """Inverse of :func:`pack_document` (strings as ``str``, bytes as ``bytes``)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


# ----------------------------------------------------------------------------- addresses

_PROXY = "bluesky proxy"
_PROXY_FIX = ("Fix: start the 0MQ proxy (e.g. `bluesky-0MQ-proxy 5577 5578`) first, or pass the right address "
              "(the proxy's output port)")


def proxy_address(address: str | tuple[str, int]) -> str:
    """A proxy address as ZeroMQ takes it: ``tcp://HOST:PORT`` (``(host, port)`` is converted), ``ipc://``.

    Raises :class:`~stream.zmq_address.AddressError` (a ``ValueError``) naming the address
    and the expected form; ZeroMQ itself would only say ``Invalid argument``, later.
    """
    if isinstance(address, tuple) and len(address) == 2:
        address = f"tcp://{address[0]}:{address[1]}"
    check_connect_address(address, what=_PROXY)
    return address


def check_proxy(address: str, timeout_s: float = 2.0) -> None:
    """Raise :class:`~stream.zmq_address.AddressError` unless something listens at the proxy output ``address``.

    A TCP probe (connect, then close) of ``tcp://HOST:PORT``, waiting at most
    ``timeout_s`` seconds; an ``ipc://`` address must name an existing socket file. It
    proves that something accepts connections there, not that it is a bluesky proxy:
    ZeroMQ would connect to a closed port silently and retry forever, so without it a
    typo is noticed only when a series ends without its start document.
    """
    address = proxy_address(address)
    if address.startswith("inproc://"):
        return
    if address.startswith("ipc://"):
        if not Path(address.removeprefix("ipc://")).exists():
            raise AddressError(f"{_PROXY} {address}: nothing listens there (no such socket file). {_PROXY_FIX}")
        return
    host, port = parse_tcp_address(address, what=_PROXY)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except socket.gaierror as exc:
        raise AddressError(f"{_PROXY} {address}: unknown host {host!r} ({exc.strerror or exc}). "
                           "Fix: pass the proxy's output address, e.g. tcp://127.0.0.1:5578") from None
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise AddressError(f"{_PROXY} {address}: nothing answers there ({reason}). {_PROXY_FIX}") from None


# ----------------------------------------------------------------------------- publisher


class DocumentPublisher(Publisher):
    """A RunEngine callback sending ``(name, doc)`` to a bluesky 0MQ proxy, msgpack-encoded.

    ``address`` is the proxy's input (``tcp://127.0.0.1:PORT``). Call it from one thread
    at a time (the RunEngine does). :meth:`close` releases the socket.
    """

    def __init__(self, address: str | tuple[str, int], *, prefix: bytes = b"") -> None:
        super().__init__(address, prefix=prefix, serializer=pack_document)
        self._lock = threading.Lock()

    def __call__(self, name: str, doc: dict) -> None:
        with self._lock:
            super().__call__(name, doc)

    def ping(self, token: str) -> None:
        """Send one link-check message (see :func:`wait_until_linked`)."""
        message = b" ".join([PING_PREFIX, b"start", pack_document({PING_KEY: token})])
        with self._lock:
            self._socket.send(message)


# ----------------------------------------------------------------------------- proxy


class DocumentProxy:
    """A bluesky 0MQ proxy (SUB in, PUB out) in a background thread, bound to loopback.

    ``in_address``/``out_address`` default to free loopback ports; read the bound
    addresses from :attr:`in_address` (publishers connect there) and
    :attr:`out_address` (subscribers connect there). The sockets are made by
    ``bluesky.callbacks.zmq.Proxy.configure_server_socket`` and forwarded with a
    steerable ``zmq.proxy`` so that :meth:`close` stops it cleanly.
    """

    def __init__(self, in_address: str = "tcp://127.0.0.1", out_address: str = "tcp://127.0.0.1") -> None:
        self._context = zmq.Context()
        self._control_address = f"inproc://nanomaps-proxy-control-{uuid.uuid4().hex}"
        ready = threading.Event()
        failure: list[BaseException] = []
        addresses: list[str] = []

        def run() -> None:
            try:
                frontend, in_bound = Proxy.configure_server_socket(self._context, zmq.SUB, in_address, None)
                frontend.setsockopt_string(zmq.SUBSCRIBE, "")
                backend, out_bound = Proxy.configure_server_socket(self._context, zmq.PUB, out_address, None)
                control = self._context.socket(zmq.PAIR)
                control.bind(self._control_address)
            except BaseException as exc:  # handed to the constructor, which raises it
                failure.append(exc)
                ready.set()
                return
            addresses.extend([str(in_bound), str(out_bound)])
            ready.set()
            try:
                zmq.proxy_steerable(frontend, backend, None, control)
            except zmq.ContextTerminated:
                pass
            finally:
                for sock in (frontend, backend, control):
                    sock.close(linger=0)

        self._thread = threading.Thread(target=run, name="nanomaps-document-proxy", daemon=True)
        self._thread.start()
        ready.wait(10.0)
        if failure:
            self._thread.join()
            self._context.term()
            raise failure[0]
        self.in_address, self.out_address = addresses
        self._closed = False

    def close(self, timeout: float = 5.0) -> None:
        """Stop forwarding, close the sockets and join the thread."""
        if self._closed:
            return
        self._closed = True
        control = self._context.socket(zmq.PAIR)
        try:
            control.connect(self._control_address)
            control.send(b"TERMINATE")
            self._thread.join(timeout)  # the socket stays open until the proxy has read the command
        finally:
            control.close(linger=0)
        if self._thread.is_alive():
            raise RuntimeError("the 0MQ document proxy did not stop within "
                               f"{timeout} s; its thread is still running")
        self._context.term()

    def __enter__(self) -> "DocumentProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DocumentProxy(in={self.in_address}, out={self.out_address})"


# ----------------------------------------------------------------------------- subscriber


class DocumentSubscriber:
    """bluesky's ``RemoteDispatcher`` (msgpack) in its own thread, feeding ``callback(name, doc)``.

    ``address`` is the proxy's output: ``tcp://HOST:PORT`` (or ``(host, port)``,
    ``ipc://PATH``); a malformed one raises :class:`~stream.zmq_address.AddressError`
    (a ``ValueError``) here, as does a socket that cannot be opened. Connecting does
    not prove that a proxy listens: call :func:`check_proxy` first for that. The
    callback runs in the subscriber's thread; keep it short (hand work to a queue).
    Exceptions in the callback are logged with their traceback and counted in
    :attr:`callback_errors`, and the subscriber goes on.
    """

    def __init__(self, address: str | tuple[str, int], callback: DocumentCallback, *, prefix: bytes = b"") -> None:
        self.address = proxy_address(address)
        self.callback_errors = 0
        self._callback = callback
        self._pings: set[str] = set()
        self._pings_lock = threading.Lock()
        self._dispatcher = RemoteDispatcher(self.address, prefix=prefix, deserializer=unpack_document)
        self._dispatcher.subscribe(self._on_document)
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="nanomaps-document-subscriber", daemon=True)
        self._thread.start()
        self._started.wait(10.0)
        if self._failure is not None:
            self._thread.join()
            if isinstance(self._failure, zmq.ZMQError):
                raise AddressError(f"{_PROXY} {self.address}: cannot connect ({self._failure}). "
                                   "Fix: pass the proxy's output address, e.g. tcp://127.0.0.1:5578") from None
            raise self._failure

    def _run(self) -> None:
        d = self._dispatcher
        # RemoteDispatcher.start() creates its task inside the loop; signal once it runs
        d.loop.call_soon(self._started.set)
        try:
            d.start()
        except BaseException as exc:  # CancelledError on close(); anything else is a real failure
            if not self._started.is_set():  # the socket could not be made: the constructor raises it
                self._failure = exc
                self._started.set()
            elif not self._stopped:
                log.error("document subscriber on %s stopped: %r", self.address, exc, exc_info=exc)

    def _on_document(self, name: str, doc: dict) -> None:
        if PING_KEY in doc:
            with self._pings_lock:
                self._pings.add(str(doc[PING_KEY]))
            return
        try:
            self._callback(name, doc)
        except Exception:
            self.callback_errors += 1
            log.exception("document callback failed on a %s document", name)

    def saw_ping(self, token: str) -> bool:
        with self._pings_lock:
            return token in self._pings

    def close(self, timeout: float = 5.0) -> None:
        """Stop the dispatcher's loop, close its socket and join the thread."""
        if self._stopped:
            return
        self._stopped = True
        d = self._dispatcher

        def cancel() -> None:  # runs in the dispatcher's loop; its task exists once _started is set
            if d._task is not None:
                d._task.cancel()

        try:
            d.loop.call_soon_threadsafe(cancel)
        except RuntimeError:
            pass  # loop already closed: the dispatcher ended on its own
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"the document subscriber on {self.address} did not stop within {timeout} s")

    def __enter__(self) -> "DocumentSubscriber":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def wait_until_linked(publisher: DocumentPublisher, subscriber: DocumentSubscriber, timeout: float = 10.0) -> float:
    """Ping through ``publisher`` until ``subscriber`` sees a ping; returns seconds waited.

    Raises ``TimeoutError`` when no ping arrives (wrong address, proxy not running).
    """
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < timeout:
        token = f"{uuid.uuid4().hex}-{n}"
        publisher.ping(token)
        n += 1
        deadline = time.monotonic() + 0.1
        while time.monotonic() < deadline:
            if subscriber.saw_ping(token):
                return time.monotonic() - start
            time.sleep(0.005)
    raise TimeoutError(f"no ping went from {publisher.address} to {subscriber.address} within {timeout} s; "
                       "check that the proxy runs and the addresses are its in and out ports")
