"""The status line says when it is due, so the live loop builds its text only then."""

import io

from monitor.session.status_line import StatusLine


def test_due_only_when_enabled_and_the_interval_has_passed():
    assert not StatusLine(io.StringIO(), enabled=False).due()
    line = StatusLine(io.StringIO(), log_every_s=10.0)  # not a terminal: a log line every 10 s
    assert line.due()
    line.update("received 1")
    assert not line.due()
    assert line.due(line._last + 10.0)
