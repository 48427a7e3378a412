"""Frames into batches for the workers: by count, or by age so a slow scan is not held back."""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

Frame = TypeVar("Frame")
Context = TypeVar("Context")


class Batcher(Generic[Context, Frame]):
    """Collects frames into batches of at most ``batch_size``, queued in :attr:`ready` as
    ``(context, batch)`` jobs, in order.

    A batch is closed when it holds ``batch_size`` frames, when :meth:`flush_if_old` finds
    its first frame ``timeout_s`` s old or older, or on :meth:`flush`. ``context`` (the
    processing setup of the series being received) travels with each batch: change it
    only after a :meth:`flush`, so one batch never mixes two. Times are seconds on any
    clock the caller chooses (``now`` arguments); there is no clock inside.
    """

    def __init__(self, batch_size: int, timeout_s: float, context: Context | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.context = context
        self.ready: deque[tuple[Context | None, list[Frame]]] = deque()
        self._batch: list[Frame] = []
        self._started = 0.0  # when the open batch got its first frame

    @property
    def open_frames(self) -> int:
        """Frames in the batch not yet closed."""
        return len(self._batch)

    @property
    def empty(self) -> bool:
        """No frame anywhere: none in the open batch, no batch ready."""
        return not self._batch and not self.ready

    def add(self, frame: Frame, now: float) -> None:
        """Add ``frame`` received at ``now`` (s); a full batch is closed at once."""
        if not self._batch:
            self._started = now
        self._batch.append(frame)
        if len(self._batch) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Close the open batch (if any frame is in it)."""
        if self._batch:
            self.ready.append((self.context, self._batch))
            self._batch = []

    def flush_if_old(self, now: float) -> None:
        """Close the open batch if its first frame came ``timeout_s`` s or more before ``now``."""
        if self._batch and now - self._started >= self.timeout_s:
            self.flush()

    def take(self, max_frames: int = 0) -> tuple[Context | None, list[Frame]]:
        """The oldest ready job (``IndexError`` if none). With ``max_frames``, the ready jobs
        after it that have the same context join it, in order, while the job stays within
        ``max_frames`` frames: a caller that fell behind catches up in fewer, larger jobs."""
        context, batch = self.ready.popleft()
        while (self.ready and self.ready[0][0] is context
               and len(batch) + len(self.ready[0][1]) <= max_frames):
            batch = batch + self.ready.popleft()[1]
        return context, batch
