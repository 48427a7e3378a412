"""One ZeroMQ connection to an EIGER (or ``nanomaps replay``/``simulate``): receive, parse, validate.

PULL by default (a PUSH socket deals each message to ONE consumer, so we are the only
one); SUB can be chosen. Multipart messages are received without copying
(``copy=False``) and parsed from the frames' buffers. The protocol is stream v1 or
stream2, or detected per message (v1 parts are JSON, stream2 is one CBOR item).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import zmq

from stream.series_validator import SeriesValidator
from stream.stream1_codec import parse_stream1
from stream.stream2_codec import parse_stream2
from stream.stream_messages import BadMessage, ImageMessage, Message, SeriesEnd, SeriesStart
from stream.zmq_address import check_connect_address

SOCKET_TYPES = {"pull": zmq.PULL, "sub": zmq.SUB}
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)


@dataclass
class ReceiverCounters:
    """Messages seen on the wire, by what they turned out to be."""

    messages: int = 0
    headers: int = 0
    images: int = 0
    ends: int = 0
    implicit_ends: int = 0
    corrupt: int = 0
    late: int = 0
    reordered: int = 0      # images that came after a later frame of their series (passed on)
    bytes: int = 0


def protocol_of(buffers: list) -> str:
    """The protocol a message's parts suggest: v1 is several parts or a JSON header, stream2 one CBOR item."""
    if not buffers:  # ZeroMQ delivers no empty multipart, but the parser says so rather than raising
        return "stream1"
    first = buffers[0]
    return "stream1" if len(buffers) > 1 or (len(first) and first[0] == 0x7B) else "stream2"


def looks_like(buffers: list, protocol: str) -> bool:
    """A cheap positive sign of ``protocol``: v1's JSON header part, or stream2's CBOR self-describe tag."""
    if not buffers:
        return False
    first = bytes(buffers[0][:3])
    if protocol == "stream1":
        return first[:1] == b"{"
    return len(buffers) == 1 and first == b"\xd9\xd9\xf7"


class StreamReceiver:
    """Receives and validates messages from ``endpoint`` (e.g. ``tcp://127.0.0.1:9999``).

    :meth:`receive` returns the validated messages of one wire message (usually one;
    two when a new header implicitly ends the open series), or [] on timeout.
    ``rcvhwm`` bounds the messages libzmq queues for us (memory nobody else counts);
    the caller must drain the socket faster than the detector sends. With
    ``copy_blobs=False`` stream v1 image blobs stay views of the received frames (the
    caller copies them once, e.g. into shared memory). ``check_blocks=False`` leaves
    the walk over compressed blocks to whoever decodes the frames.
    """

    def __init__(self, endpoint: str, *, socket_type: str = "pull", protocol: str = "auto",
                 channel: str = "threshold_1", context: zmq.Context | None = None, rcvhwm: int = 64,
                 copy_blobs: bool = True, check_blocks: bool = True) -> None:
        if socket_type not in SOCKET_TYPES:
            raise ValueError(f"socket type {socket_type!r} unknown; use 'pull' or 'sub'")
        if protocol not in ("auto", "stream1", "stream2"):
            raise ValueError(f"protocol {protocol!r} unknown; use auto, stream1 or stream2")
        check_connect_address(endpoint, what="detector stream")  # before libzmq's bare "Invalid argument"
        self.endpoint = endpoint
        self.protocol = protocol
        self.channel = channel
        self.copy_blobs = copy_blobs
        self.check_blocks = check_blocks
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._socket = self._context.socket(SOCKET_TYPES[socket_type])
        self._socket.setsockopt(zmq.RCVHWM, rcvhwm)
        self._socket.setsockopt(zmq.LINGER, 0)
        if socket_type == "sub":
            self._socket.setsockopt(zmq.SUBSCRIBE, b"")
        self._socket.connect(endpoint)
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        self.validator = SeriesValidator()
        self.counters = ReceiverCounters()

    def _parse(self, frames: list[zmq.Frame], now: float) -> Message:
        buffers = [f.buffer for f in frames]
        protocol = self.protocol if self.protocol != "auto" else protocol_of(buffers)
        if protocol == "stream1":
            msg = parse_stream1(buffers, receive_time=now, copy_blob=self.copy_blobs,
                                check_blocks=self.check_blocks)
        elif len(buffers) != 1:
            msg = BadMessage(f"stream2 message with {len(buffers)} parts (expected one CBOR item)", "stream2",
                             receive_time=now)
        else:
            msg = parse_stream2(buffers[0], channel=self.channel, receive_time=now, check_blocks=self.check_blocks)
        if isinstance(msg, BadMessage) and self.protocol != "auto":
            other = protocol_of(buffers)
            if other != protocol and looks_like(buffers, other):
                # a forced protocol that does not match the detector: every message would be
                # "corrupt"; say what it looks like instead
                msg = replace(msg, reason=f"{msg.reason}; the message looks like {other}, not {protocol}. "
                                          f"Fix: --protocol {other} (or auto)")
        return msg

    def receive(self, timeout_ms: int = 100, max_messages: int = 1) -> list[Message]:
        """Wait up to ``timeout_ms`` for a wire message and return what it validates to; with
        ``max_messages`` > 1, also those of up to ``max_messages`` - 1 more wire messages that are
        already waiting (no further wait): a caller that fell behind catches up in bulk."""
        if not self._poller.poll(timeout_ms):
            return []
        out = self._take(self._socket.recv_multipart(copy=False))
        # ZMQ_EVENTS says whether a message is waiting without a raised zmq.Again per burst
        # (plain ints: pyzmq's flag enums cost more than the check itself)
        for _ in range(max_messages - 1):
            if not self._socket.getsockopt(_EVENTS) & _POLLIN:
                break
            out += self._take(self._socket.recv_multipart(copy=False))
        return out

    def _take(self, frames: list[zmq.Frame]) -> list[Message]:
        """Count, parse and validate one wire message."""
        now = time.time()
        c = self.counters
        c.messages += 1
        c.bytes += sum(len(f.buffer) for f in frames)
        out = self.validator.check(self._parse(frames, now))
        for msg in out:
            if isinstance(msg, SeriesStart):
                c.headers += 1
            elif isinstance(msg, ImageMessage):
                c.images += 1
                c.reordered += msg.reordered
            elif isinstance(msg, SeriesEnd):
                c.ends += 1
                c.implicit_ends += msg.implicit
            elif isinstance(msg, BadMessage):
                if msg.kind == "late":
                    c.late += 1
                else:
                    c.corrupt += 1
        return out

    def finish(self) -> list[Message]:
        """Close the open series (no end message came): an implicit :class:`SeriesEnd`, or []."""
        out = self.validator.close_open_series(time.time())
        self.counters.ends += len(out)
        self.counters.implicit_ends += len(out)
        return out

    def close(self) -> None:
        self._socket.close(0)
        if self._own_context:
            self._context.term()

    def __enter__(self) -> "StreamReceiver":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
