"""Stream context rules, without sockets: every bad-ordering case gives a reason, good frames pass."""

import pytest

from stream.encoded_frame import EncodedFrame
from stream.series_validator import SeriesValidator
from stream.stream_messages import BadMessage, ImageMessage, SeriesEnd, SeriesStart


def start(series=1, shape=(4, 5), dtype="uint32"):
    return SeriesStart("stream1", series, "basic", shape, dtype)


def image(frame, series=1, shape=(4, 5), dtype="uint32"):
    return ImageMessage("stream1", EncodedFrame(series, frame, "raw", dtype, shape, bytes(80)))


def kinds(messages):
    return [type(m).__name__ for m in messages]


def test_good_series_passes():
    v = SeriesValidator()
    assert kinds(v.check(start())) == ["SeriesStart"]
    for k in range(3):
        assert kinds(v.check(image(k))) == ["ImageMessage"]
    assert kinds(v.check(SeriesEnd("stream1", 1))) == ["SeriesEnd"]
    assert v.open_series is None


@pytest.mark.parametrize("setup, msg, words", [
    ([], image(0), "before any series header"),
    ([start()], image(0, series=2), "belongs to series 2 but series 1 is open"),
    ([start()], image(0, shape=(5, 4)), "shape (5, 4), the series header says (4, 5)"),
    ([start()], image(0, dtype="uint16"), "is uint16, the series is uint32"),
    ([start(), image(0), image(1)], image(1), "frame 1 repeated"),
    ([start()], image(-1), "negative"),
    ([], SeriesEnd("stream1", 4), "end of series 4 while no series is open"),
])
def test_bad_context_gives_reason(setup, msg, words):
    v = SeriesValidator()
    for m in setup:
        v.check(m)
    (out,) = v.check(msg)
    assert isinstance(out, BadMessage) and out.kind == "corrupt"
    assert words in out.reason
    # the next good frame still passes
    if v.open_series is not None:
        assert kinds(v.check(image(100))) == ["ImageMessage"]


def test_out_of_order_frame_is_passed_on_marked_reordered():
    """A frame that overtook another (e.g. two sender threads) still has its place: pass it on, marked."""
    v = SeriesValidator()
    v.check(start())
    assert not v.check(image(0))[0].reordered
    assert not v.check(image(3))[0].reordered
    (out,) = v.check(image(2))
    assert isinstance(out, ImageMessage) and out.reordered and out.frame.frame == 2
    (out,) = v.check(image(1))
    assert out.reordered                       # still behind frame 3, the highest seen
    assert not v.check(image(4))[0].reordered
    (out,) = v.check(image(2))                 # but a repeat stays a repeat
    assert isinstance(out, BadMessage) and "repeated" in out.reason


def test_late_frame_after_end():
    v = SeriesValidator()
    v.check(start())
    v.check(image(0))
    v.check(SeriesEnd("stream1", 1))
    (out,) = v.check(image(1))
    assert isinstance(out, BadMessage) and out.kind == "late"


def test_new_header_closes_open_series_implicitly():
    """A restarted detector (or a lost end message): the open series ends, the new one starts."""
    v = SeriesValidator()
    v.check(start(1))
    v.check(image(0))
    out = v.check(start(1))  # same number again: a restart
    assert kinds(out) == ["SeriesEnd", "SeriesStart"] and out[0].implicit
    assert kinds(v.check(image(0))) == ["ImageMessage"]  # frame 0 again is fine in the new series
    out = v.check(start(2, shape=(8, 8)))
    assert kinds(out) == ["SeriesEnd", "SeriesStart"]
    assert kinds(v.check(image(0, series=2, shape=(8, 8)))) == ["ImageMessage"]
    assert kinds(v.close_open_series()) == ["SeriesEnd"]
    assert v.close_open_series() == []


def test_dtype_learnt_from_first_image_when_header_is_silent():
    v = SeriesValidator()
    v.check(SeriesStart("stream2", 7, "basic", (4, 5), None))
    assert kinds(v.check(image(0, series=7, dtype="uint16"))) == ["ImageMessage"]
    (out,) = v.check(image(1, series=7, dtype="uint32"))
    assert isinstance(out, BadMessage)
