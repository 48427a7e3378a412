"""The sending end of a detector stream: a bound PUSH socket and a pace keeper.

Used by ``nanomaps replay`` and ``nanomaps simulate``. Sockets bind to loopback unless
the caller explicitly allows another interface.
"""

from __future__ import annotations

import errno
import ipaddress
import threading
import time

import zmq

from stream.zmq_address import AddressError, parse_tcp_address

#: pyzmq's flags as plain ints: its enum's ``|`` costs more than the send it flags
_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)


class BindAddressError(AddressError):
    """A bind address that is malformed, busy, or not loopback without permission to expose it."""


def check_bind_address(endpoint: str, allow_remote: bool = False) -> None:
    """Refuse to bind beyond loopback unless ``allow_remote`` (safe by default).

    ``tcp://HOST:PORT``; PORT may be ``*`` (any free port, see ``StreamSender.endpoint``).
    """
    if endpoint.startswith(("ipc://", "inproc://")):
        return
    try:
        host, _ = parse_tcp_address(endpoint, what="bind address", allow_any_port=True)
    except AddressError as exc:
        raise BindAddressError(str(exc)) from None
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise BindAddressError(f"{endpoint}: binding beyond loopback exposes the stream to the network. "
                               "Fix: use tcp://127.0.0.1:PORT, or pass --allow-remote if that is intended")


def bind_error_text(endpoint: str, exc: zmq.ZMQError) -> str:
    """One line for a failed bind: what, where, and the fix."""
    if exc.errno == errno.EADDRINUSE:
        return (f"{endpoint}: address already in use (another program listens there, perhaps an earlier "
                "replay/simulate/process). Fix: choose another port, or stop that program")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{endpoint}: no such interface on this machine. Fix: bind to tcp://127.0.0.1:PORT"
    return f"{endpoint}: cannot listen there ({exc.strerror})"


def bind_checked(socket: zmq.Socket, endpoint: str) -> str:
    """Bind ``socket``; the bound address (a ``*`` port resolved), or :class:`BindAddressError`."""
    try:
        socket.bind(endpoint)
    except zmq.ZMQError as exc:
        raise BindAddressError(bind_error_text(endpoint, exc)) from None
    return socket.getsockopt_string(zmq.LAST_ENDPOINT)


class StreamSender:
    """A PUSH socket bound to ``endpoint``; :meth:`send` blocks while no receiver is connected."""

    def __init__(self, endpoint: str, *, allow_remote: bool = False, sndhwm: int = 32,
                 context: zmq.Context | None = None) -> None:
        check_bind_address(endpoint, allow_remote)
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._socket = self._context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, sndhwm)
        try:
            self.endpoint = bind_checked(self._socket, endpoint)
        except BindAddressError:
            self.close(linger_s=0)
            raise
        self.messages_sent = 0
        self.bytes_sent = 0

    def send(self, message: bytes | list[bytes], stop: threading.Event | None = None) -> bool:
        """Send one message: a list of parts (stream v1) or one bytes object (stream2).

        Blocks while no receiver can take it (no peer connected, or its queue full),
        but gives up and returns False as soon as ``stop`` is set.
        """
        parts = (message,) if isinstance(message, (bytes, bytearray, memoryview)) else message
        last = len(parts) - 1
        socket = self._socket
        # try at once, and wait only when the peer cannot take it: per message this saves a
        # poll and pyzmq's flag enums (≈ 0.02 ms of the sender's CPU per frame, which at a
        # detector's rate shares the cores with the receiver when both run on one machine)
        while True:
            try:
                socket.send(parts[0], _NOBLOCK | (_SNDMORE if last else 0), copy=False)
                break
            except zmq.Again:
                while not socket.poll(200, zmq.POLLOUT):
                    if stop is not None and stop.is_set():
                        return False
        # the rest of a message whose first part was taken is taken too (ZeroMQ queues whole
        # messages: the high-water mark is tested at the first part)
        size = len(parts[0])
        for k in range(1, last + 1):
            socket.send(parts[k], _SNDMORE if k < last else 0, copy=False)
            size += len(parts[k])
        self.bytes_sent += size
        self.messages_sent += 1
        return True

    def close(self, linger_s: float = 10.0) -> None:
        """Close after up to ``linger_s`` seconds for queued messages to leave."""
        self._socket.close(linger=int(linger_s * 1000))
        if self._own_context:
            self._context.term()

    def __enter__(self) -> "StreamSender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Pacer:
    """Keeps a message from leaving before its offset (seconds) after the pacer was made.

    The caller computes each message's offset (e.g. ``k / rate``, or the recorded
    receive time) and calls :meth:`wait_until` before sending it; to send as fast as
    possible, don't call it.
    """

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def wait_until(self, offset_s: float) -> None:
        """Sleep until ``offset_s`` seconds after the start (at once if that has passed)."""
        delay = self.start + offset_s - time.perf_counter()
        if delay > 0:
            time.sleep(delay)

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self.start
