"""Typed models of what an EIGER stream carries, for stream v1 and stream2 alike.

A parser turns the wire bytes of one ZeroMQ message into exactly one of these;
an encoder turns them back into wire bytes. Nothing here touches sockets.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

import numpy as np

from stream.encoded_frame import EncodedFrame
from stream.series_header import SeriesHeader


@dataclass(frozen=True)
class SeriesStart:
    """Start of a series: stream v1 ``dheader-1.0`` (+ parts) or stream2 ``start``.

    ``shape`` is ``(rows, cols)`` = ``(y_pixels, x_pixels)`` when the header says it;
    ``dtype`` from ``bit_depth_image`` (v1) or the image data (stream2, may be None).
    ``config`` holds the detector configuration as sent (v1 part 2 JSON; stream2 start
    fields other than arrays), with DECTRIS names (``wavelength`` Å, ``detector_distance``
    m, ``beam_center_x`` px, ``count_time`` s, ``nimages``, ...); code reads it through
    :attr:`header` (typed), not by key. ``pixel_mask`` is ``(rows, cols)`` uint32,
    nonzero = bad, or None when not sent (or unusable, see ``problems``). ``parts`` are
    the wire parts verbatim, for the recorder: bytes, or views of the received frames when
    parsed with ``copy_blob=False`` (the live receiver; the mask is then a view too).
    """

    protocol: str
    series: int
    header_detail: str = "none"
    shape: tuple[int, int] | None = None
    dtype: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    pixel_mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    unique_id: str = ""
    parts: tuple[bytes | memoryview, ...] = field(default=(), repr=False, compare=False)
    problems: tuple[str, ...] = ()
    receive_time: float = 0.0

    @functools.cached_property
    def header(self) -> SeriesHeader:
        """The header's values, typed (read from ``config`` once, here)."""
        return SeriesHeader.from_config(self.config, series=self.series, shape=self.shape, dtype=self.dtype,
                                        pixel_mask=self.pixel_mask)

    @property
    def nimages(self) -> int:
        """Frames announced for the series (nimages × ntrigger), 0 when unknown."""
        return self.header.frames_expected


@dataclass(frozen=True)
class ImageMessage:
    """One frame: the still-compressed :class:`EncodedFrame` plus the detector's times.

    Times are in nanoseconds (stream2's rationals converted), None when not sent.
    ``appendix`` is the optional image appendix part, verbatim.
    """

    protocol: str
    frame: EncodedFrame
    start_time_ns: int | None = None
    stop_time_ns: int | None = None
    real_time_ns: int | None = None
    appendix: bytes | None = field(default=None, repr=False)
    unique_id: str = ""
    reordered: bool = False     # it came after a later frame of its series (still placed by its number)


@dataclass(frozen=True)
class SeriesEnd:
    """``dseries_end-1.0`` / stream2 ``end``; ``implicit`` when inferred (no end message came)."""

    protocol: str
    series: int
    unique_id: str = ""
    parts: tuple[bytes, ...] = field(default=(), repr=False, compare=False)
    implicit: bool = False
    receive_time: float = 0.0


@dataclass(frozen=True)
class BadMessage:
    """A message that cannot be used; ``reason`` says why (logged, rate-limited, counted).

    ``kind`` is the counter it goes to: ``corrupt`` (malformed, inconsistent with its
    series, out of order, repeated) or ``late`` (an image for a series already ended).
    """

    reason: str
    protocol: str = ""
    series: int | None = None
    frame: int | None = None
    receive_time: float = 0.0
    kind: str = "corrupt"


Message = Union[SeriesStart, ImageMessage, SeriesEnd, BadMessage]
