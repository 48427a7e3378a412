"""The demo's signal handling (monitor.sim.demo_control.DemoStop), called as Python calls a handler."""

import signal
import sys

import pytest

from monitor.sim.demo_control import DemoInterrupted, DemoStop


def test_first_signal_raises_in_the_main_code_and_later_ones_are_ignored():
    stop = DemoStop()
    with pytest.raises(DemoInterrupted):
        stop._handle(signal.SIGINT, sys._getframe())
    stop._handle(signal.SIGTERM, sys._getframe())  # ignored: the cleanup must run to its end
    assert stop.signum == signal.SIGINT


def test_a_signal_inside_a_finalizer_is_noted_and_raised_at_the_next_check():
    """A signal that lands while a __del__ runs (CI saw one in llvmlite's, during numba work) must not
    raise there: Python would print "Exception ignored … Traceback" and drop it."""
    stop = DemoStop()
    escaped = []

    class Finalized:
        def __del__(self):
            try:
                stop._handle(signal.SIGINT, sys._getframe())
            except BaseException as exc:  # noqa: BLE001 — what would have been printed and lost
                escaped.append(exc)

    obj = Finalized()
    del obj
    assert escaped == [] and stop.signum == signal.SIGINT
    with pytest.raises(DemoInterrupted):
        stop.check()
