"""Frames into batches by count, by age, and at the end; no clock inside (``now`` is given)."""

from __future__ import annotations

import pytest

from monitor.session.batcher import Batcher


def test_a_full_batch_leaves_at_once():
    b = Batcher(3, timeout_s=0.1, context="setup-1")
    for k in range(7):
        b.add(k, now=0.0)
    assert list(b.ready) == [("setup-1", [0, 1, 2]), ("setup-1", [3, 4, 5])]
    assert b.open_frames == 1 and not b.empty
    assert b.take() == ("setup-1", [0, 1, 2])


def test_a_batch_leaves_when_its_first_frame_is_old_enough():
    b = Batcher(16, timeout_s=0.25)  # times exact in binary: the test is about >=, not rounding
    b.add("a", now=10.0)
    b.add("b", now=10.125)
    b.flush_if_old(10.1875)
    assert not b.ready
    b.flush_if_old(10.25)  # measured from the first frame, not the last
    assert list(b.ready) == [(None, ["a", "b"])]
    b.flush_if_old(99.0)  # nothing open: nothing to send
    assert len(b.ready) == 1
    b.add("c", now=20.0)  # a new batch starts its own clock
    b.flush_if_old(20.125)
    assert b.open_frames == 1


def test_flush_at_the_end_and_between_series():
    b = Batcher(4, timeout_s=1.0, context="series-1")
    b.add(0, now=0.0)
    b.add(1, now=0.0)
    b.flush()  # a new series header: its frames get their own batch and setup
    b.context = "series-2"
    b.add(2, now=0.0)
    b.flush()  # the end: whatever is open leaves
    b.flush()  # and nothing twice
    assert [b.take(), b.take()] == [("series-1", [0, 1]), ("series-2", [2])]
    assert b.empty and b.open_frames == 0
    with pytest.raises(IndexError):
        b.take()


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size"):
        Batcher(0, timeout_s=0.1)


def test_waiting_batches_of_one_setup_leave_together_up_to_a_size():
    b = Batcher(3, timeout_s=1.0, context="series-1")
    for k in range(8):
        b.add(k, now=0.0)
    b.flush()  # [0 1 2] [3 4 5] [6 7] of series 1
    b.context = "series-2"
    for k in range(8, 12):
        b.add(k, now=0.0)  # [8 9 10] of series 2, 11 still open
    assert b.take(max_frames=7) == ("series-1", [0, 1, 2, 3, 4, 5])  # [6 7] would make 8
    assert b.take(max_frames=7) == ("series-1", [6, 7])  # never mixed with another setup
    assert b.take(max_frames=0) == ("series-2", [8, 9, 10])  # no size: one batch, as take()
    assert not b.ready and b.open_frames == 1
    b.add(12, now=0.0)
    b.add(13, now=0.0)
    assert b.take(max_frames=100) == ("series-2", [11, 12, 13])  # one batch only: nothing to merge
