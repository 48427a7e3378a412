"""Checks each parsed stream message against the series it claims to belong to.

The parsers judge one message alone; this judges it in context: an image before any
header, an image of another series, a shape or pixel type that differs from the
header's, a frame number repeated, a new header while a series is still open (the
detector was restarted or the end message was lost). A frame out of order is passed on,
marked ``reordered``: it is placed by its number. It keeps no sockets and no clock, so
every rule is tested without a network.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from stream.stream_messages import BadMessage, ImageMessage, Message, SeriesEnd, SeriesStart


@dataclass
class _OpenSeries:
    start: SeriesStart
    shape: tuple[int, int] | None
    dtype: str | None
    last_frame: int = -1
    seen: set[int] = field(default_factory=set)


class SeriesValidator:
    """Turns parsed messages into the messages downstream may trust.

    :meth:`check` returns a list: usually the message itself; a :class:`BadMessage`
    in place of an image that does not fit its series; a synthetic
    ``SeriesEnd(implicit=True)`` before a header that arrives while a series is open.
    """

    def __init__(self) -> None:
        self._open: _OpenSeries | None = None
        self._closed: set[tuple[str, int]] = set()

    @property
    def open_series(self) -> SeriesStart | None:
        return self._open.start if self._open else None

    def check(self, msg: Message) -> list[Message]:
        if isinstance(msg, SeriesStart):
            out: list[Message] = []
            if self._open is not None:
                out.append(self._close(implicit=True, receive_time=msg.receive_time))
            self._open = _OpenSeries(msg, msg.shape, msg.dtype)
            self._closed.discard((msg.protocol, msg.series))  # a restarted detector may reuse the number
            out.append(msg)
            return out
        if isinstance(msg, ImageMessage):
            return [self._check_image(msg)]
        if isinstance(msg, SeriesEnd):
            s = self._open
            if s is None or s.start.series != msg.series:
                where = "no series is open" if s is None else f"series {s.start.series} is open"
                return [BadMessage(f"end of series {msg.series} while {where}", msg.protocol, msg.series,
                                   receive_time=msg.receive_time)]
            self._closed.add((s.start.protocol, s.start.series))
            self._open = None
            return [msg]
        return [msg]

    def close_open_series(self, receive_time: float = 0.0) -> list[Message]:
        """End the open series without an end message (e.g. the user stopped listening)."""
        return [self._close(implicit=True, receive_time=receive_time)] if self._open else []

    def _close(self, *, implicit: bool, receive_time: float) -> SeriesEnd:
        s = self._open
        self._closed.add((s.start.protocol, s.start.series))
        self._open = None
        return SeriesEnd(s.start.protocol, s.start.series, s.start.unique_id, implicit=implicit,
                         receive_time=receive_time)

    def _check_image(self, msg: ImageMessage) -> Message:
        f = msg.frame
        s = self._open

        def bad(reason: str, kind: str = "corrupt") -> BadMessage:
            return BadMessage(reason, msg.protocol, f.series, f.frame, f.receive_time, kind)

        if s is None:
            if (msg.protocol, f.series) in self._closed:
                return bad(f"frame {f.frame} of series {f.series} arrived after the series ended", "late")
            return bad(f"frame {f.frame} of series {f.series} arrived before any series header")
        if f.series != s.start.series:
            if (msg.protocol, f.series) in self._closed:
                return bad(f"frame {f.frame} of series {f.series} arrived after the series ended", "late")
            return bad(f"frame {f.frame} belongs to series {f.series} but series {s.start.series} is open")
        if s.shape is not None and tuple(f.shape) != tuple(s.shape):
            return bad(f"frame {f.frame} has shape {tuple(f.shape)}, the series header says {tuple(s.shape)}")
        if s.dtype is None:
            s.dtype = f.dtype  # stream2 start messages need not say it: the first image does
        elif f.dtype != s.dtype:
            return bad(f"frame {f.frame} is {f.dtype}, the series is {s.dtype}")
        if f.frame < 0:
            return bad(f"frame number {f.frame} is negative")
        if f.frame in s.seen:
            return bad(f"frame {f.frame} repeated")
        s.seen.add(f.frame)
        if f.frame < s.last_frame:  # placed by its number all the same: nothing is lost to a reorder
            return replace(msg, reordered=True)
        s.last_frame = f.frame
        return msg
