"""The live main thread's intake (monitor.session.main_queue.take_messages)."""

import queue

from monitor.session.main_queue import BATCH_DONE, take_messages
from monitor.session.receiver_thread import RECEIVER_DONE


def filled(*items) -> queue.Queue:
    q = queue.Queue()
    for item in items:
        q.put(item)
    return q


def test_bursts_are_handled_in_order_and_a_finished_batch_ends_the_turn():
    q = filled("a", ["b", "c"], "d", BATCH_DONE, "e")
    seen = []
    assert take_messages(q, seen.append, wait_s=0.0) is True
    assert seen == ["a", "b", "c", "d"]  # the free worker is fed before "e" is taken
    assert take_messages(q, seen.append, wait_s=0.0) is True
    assert seen[-1] == "e" and q.empty()


def test_the_receiver_done_marker_says_nothing_more_comes():
    seen = []
    assert take_messages(filled("a", RECEIVER_DONE, "late"), seen.append, wait_s=0.0) is False
    assert seen == ["a"]


def test_a_turn_takes_at_most_the_limit_and_an_empty_queue_returns_after_the_wait():
    q = filled(*range(10))
    seen = []
    assert take_messages(q, seen.append, wait_s=0.0, limit=4) is True
    assert seen == [0, 1, 2, 3] and q.qsize() == 6
    assert take_messages(queue.Queue(), seen.append, wait_s=0.01) is True and len(seen) == 4
