"""Map snapshots from the live processor to viewers: a PUB socket and a subscriber thread.

The processor publishes the latest maps of each run a few times per second; a viewer
keeps only the newest snapshot per run, so it never falls behind and never floods the
GUI. Messages are msgpack (see :class:`MapSnapshot`), never pickle.
"""

from __future__ import annotations

import logging
import threading
import time

import zmq

from monitor.links.map_snapshot import SNAPSHOT_TOPIC, MapSnapshot
from stream.stream_sender import BindAddressError, bind_checked, check_bind_address

log = logging.getLogger(__name__)


class SnapshotPublisher:
    """Binds a PUB socket (loopback unless allowed otherwise) and publishes snapshots."""

    def __init__(self, endpoint: str, *, allow_remote: bool = False, context: zmq.Context | None = None) -> None:
        check_bind_address(endpoint, allow_remote)
        self._own = context is None
        self._context = context or zmq.Context()
        self._socket = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, 4)   # slow viewers drop old snapshots, they never queue
        self._socket.setsockopt(zmq.LINGER, 0)
        try:
            self.endpoint = bind_checked(self._socket, endpoint)
        except BindAddressError:
            self._socket.close(0)
            if self._own:
                self._context.term()
            raise
        self.published = 0

    def publish(self, snapshot: MapSnapshot) -> None:
        self._socket.send_multipart([SNAPSHOT_TOPIC, snapshot.to_bytes()], flags=zmq.NOBLOCK)
        self.published += 1

    def close(self) -> None:
        self._socket.close(0)
        if self._own:
            self._context.term()


class SnapshotSubscriber:
    """Receives snapshots in a background thread; :meth:`latest` returns the newest per run.

    ``connected`` is True once anything arrived; :meth:`age` says how long ago, so a
    viewer can show "no data for N s" when the processor stops or restarts (ZeroMQ
    reconnects by itself).
    """

    def __init__(self, endpoint: str, *, context: zmq.Context | None = None) -> None:
        self.endpoint = endpoint
        self._own = context is None
        self._context = context or zmq.Context()
        self._lock = threading.Lock()
        self._latest: dict[str, MapSnapshot] = {}
        self._order: list[str] = []
        self._last = 0.0
        self.received = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nanomaps-snapshots", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        sock = self._context.socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, SNAPSHOT_TOPIC)
        sock.setsockopt(zmq.RCVHWM, 4)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        try:
            while not self._stop.is_set():
                if not sock.poll(100):
                    continue
                parts = sock.recv_multipart()
                try:
                    snap = MapSnapshot.from_bytes(parts[-1])
                except Exception as exc:  # malformed data must not kill the viewer: count and go on
                    self.errors += 1
                    log.warning("ignoring a malformed map snapshot: %s", exc)
                    continue
                with self._lock:
                    if snap.run not in self._latest:
                        self._order.append(snap.run)
                    self._latest[snap.run] = snap
                    self._last = time.monotonic()
                    self.received += 1
        finally:
            sock.close(0)

    @property
    def connected(self) -> bool:
        return self._last > 0

    def age(self) -> float:
        """Seconds since the last snapshot (inf before the first)."""
        return time.monotonic() - self._last if self._last else float("inf")

    def latest(self) -> dict[str, MapSnapshot]:
        """Newest snapshot of every run seen, in the order runs first appeared."""
        with self._lock:
            return {run: self._latest[run] for run in self._order}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        if self._own:
            self._context.term()
