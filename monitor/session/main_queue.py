"""What wakes the live main thread: the receiver's messages, documents, finished batches.

The receiver thread puts validated messages (one at a time, or a burst as a list), bluesky
documents arrive from the RunEngine's thread, and the executor's thread puts
:data:`BATCH_DONE` as each batch finishes: the main loop blocks in one place and turns
only when there is something to do (or a timer is due).
"""

from __future__ import annotations

import queue
from collections.abc import Callable

from monitor.session.receiver_thread import RECEIVER_DONE

#: Put by the executor's thread as each batch finishes (a free worker to feed).
BATCH_DONE = object()
#: Longest wait of the main loop for a message (s): batch ages, file writes, stop requests and
#: idle timeouts are checked at least this often; messages and finished batches wake it at once.
LOOP_WAIT_S = 0.02
#: Messages handled per turn at most: the rest of the loop (batches, files) stays lively.
MAX_PER_TURN = 500


def take_messages(q: queue.Queue, handle: Callable[[object], None], wait_s: float = LOOP_WAIT_S,
                  limit: int = MAX_PER_TURN) -> bool:
    """Hand what ``q`` holds to ``handle``, one message at a time, waiting up to ``wait_s`` for
    the first. Stops early at a finished batch (feed the worker that is free now) or when the
    receiver is done; returns False once the receiver is done (nothing more will come)."""
    taken = 0
    while taken < limit:
        try:
            msg = q.get(timeout=wait_s) if wait_s else q.get_nowait()
        except queue.Empty:
            return True
        wait_s = 0.0
        if msg is BATCH_DONE:
            return True
        if msg is RECEIVER_DONE:
            return False
        if isinstance(msg, list):  # the receiver's messages, a burst at a time
            for m in msg:
                handle(m)
            taken += len(msg)
        else:
            handle(msg)
            taken += 1
    return True
