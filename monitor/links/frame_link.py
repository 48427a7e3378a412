"""Frames on demand: the viewer asks the processor for one frame (REQ/REP, msgpack).

Frames are never streamed to the GUI: a click asks for one, the processor answers with
the decoded frame, its mask, where the peak windows are, and the fits.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

import msgpack
import zmq

from monitor.links.map_snapshot import FrameView
from stream.stream_sender import BindAddressError, bind_checked, check_bind_address

log = logging.getLogger(__name__)


class FrameUnavailable(LookupError):
    """The processor cannot provide this frame; the message says why."""


class FrameServer:
    """Answers frame requests in a thread: ``handler(run, row, col) -> FrameView``.

    The handler raises :class:`FrameUnavailable` with a reason; any other error is
    reported to the viewer as a message too (and logged here), never a dead socket.
    """

    def __init__(self, endpoint: str, handler: Callable[[str, int, int], FrameView], *,
                 allow_remote: bool = False, context: zmq.Context | None = None) -> None:
        check_bind_address(endpoint, allow_remote)
        self._own = context is None
        self._context = context or zmq.Context()
        self._socket = self._context.socket(zmq.REP)
        self._socket.setsockopt(zmq.LINGER, 0)
        try:
            self.endpoint = bind_checked(self._socket, endpoint)
        except BindAddressError:
            self._socket.close(0)
            if self._own:
                self._context.term()
            raise
        self._handler = handler
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nanomaps-frames", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._socket.poll(100):
                continue
            raw = self._socket.recv()
            try:
                req = msgpack.unpackb(raw, raw=False)
                view = self._handler(str(req["run"]), int(req["row"]), int(req["col"]))
                reply = msgpack.packb({"ok": True, "view": view.to_bytes()}, use_bin_type=True)
            except FrameUnavailable as exc:
                reply = msgpack.packb({"ok": False, "error": str(exc)}, use_bin_type=True)
            except Exception as exc:  # report, keep serving
                log.exception("frame request failed")
                reply = msgpack.packb({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, use_bin_type=True)
            self._socket.send(reply)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._socket.close(0)
        if self._own:
            self._context.term()


class FrameClient:
    """Asks a :class:`FrameServer` for frames; raises :class:`FrameUnavailable` on any failure."""

    def __init__(self, endpoint: str, *, timeout_s: float = 5.0, context: zmq.Context | None = None) -> None:
        self.endpoint = endpoint
        self.timeout_ms = int(timeout_s * 1000)
        self._own = context is None
        self._context = context or zmq.Context()
        self._socket = None
        self._lock = threading.Lock()

    def _connect(self):
        sock = self._context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        return sock

    def fetch(self, run: str, row: int, col: int) -> FrameView:
        with self._lock:
            if self._socket is None:
                self._socket = self._connect()
            self._socket.send(msgpack.packb({"run": run, "row": int(row), "col": int(col)}, use_bin_type=True))
            if not self._socket.poll(self.timeout_ms):
                # a REQ socket without its reply is stuck: start a fresh one next time
                self._socket.close(0)
                self._socket = None
                raise FrameUnavailable(f"the processor at {self.endpoint} did not answer within "
                                       f"{self.timeout_ms / 1000:.0f} s (is `nanomaps process` running?)")
            reply = msgpack.unpackb(self._socket.recv(), raw=False)
        if not reply.get("ok"):
            raise FrameUnavailable(reply.get("error", "unknown error"))
        return FrameView.from_bytes(reply["view"])

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close(0)
                self._socket = None
        if self._own:
            self._context.term()
