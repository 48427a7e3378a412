"""What the run router answers with: the runs it plans and the decisions the live loop acts on.

:class:`RunPlan` is one run as the router sees it; the events (:class:`RunBegun`,
:class:`SeriesAssigned`, :class:`FramePlaced`, ...) and :class:`FrameRoute` are its
decisions (see :mod:`monitor.session.run_router` for the rules that make them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from stream.raster_scan import RasterScan


@dataclass(eq=False)
class RunPlan:
    """One run as the router sees it (identity matters: two runs may share a uid).

    ``n_frames`` is the number of frame slots of its map; it changes only for a
    ``"strip"``, whose ``scan`` is then ``(1, n_frames)`` (the caller grows its map along,
    on :class:`StripGrown` or :attr:`FrameRoute.grow_to`).
    ``series_offsets`` maps a series number to the slot of its frame 0; ``next_offset``
    is the slot where the next series of this run starts.
    """

    index: int                  # 1-based file number: 1 → out, k → <stem>_<k><suffix>
    uid: str                    # the start document's uid, or "run-<index>"
    geometry: str               # "bluesky", "config" or "strip"
    parent: str                 # the start document's parent_uid ("" if none)
    scan: RasterScan            # the map's geometry (a strip's grows with n_frames)
    out: Path                   # its results file
    n_frames: int = 0           # frame slots (grows for a strip)
    next_offset: int = 0
    series_offsets: dict[int, int] = field(default_factory=dict)
    done: bool = False          # completed by the next run
    exit_status: str = ""       # from the stop document: "success", "abort", "fail"; "" while open


@dataclass(frozen=True, eq=False)
class RunBegun:
    """Open ``run``: make its map and results file, of geometry ``scan`` (the run's as it began:
    a strip may have grown since, with a :class:`StripGrown` to follow). ``early_corrupt`` /
    ``early_late``: bad messages received before any run existed, to be counted in this one."""

    run: RunPlan
    scan: RasterScan
    early_corrupt: int = 0
    early_late: int = 0


@dataclass(frozen=True, eq=False)
class RunComplete:
    """``run`` is complete (a new bluesky run began): write its file a last time, publish it done."""

    run: RunPlan


@dataclass(frozen=True, eq=False)
class StripGrown:
    """The strip ``run`` now has ``n_frames`` frame slots: grow its map to ``(1, n_frames)``."""

    run: RunPlan
    n_frames: int


@dataclass(frozen=True, eq=False)
class SeriesAssigned:
    """Series ``series`` belongs to ``run``; its frame 0 is slot ``offset`` of the map.

    ``received`` frames of it and the batch ``records`` (structured arrays of frame
    records) came while it waited for its start document: they are released to ``run``
    now. Both are empty for a series assigned at its header.
    """

    series: int
    run: RunPlan
    offset: int
    received: int = 0
    records: tuple[Any, ...] = ()


@dataclass(frozen=True)
class DocumentTimedOut:
    """Series ``series`` got no start document within ``wait_s`` s: it falls back on the config's [scan]."""

    series: int
    wait_s: float


@dataclass(frozen=True)
class DocumentExpired:
    """The start document ``uid`` got no series in time (``stopped``: its stop document came first): dropped."""

    uid: str
    stopped: bool


@dataclass(frozen=True, eq=False)
class RunExit:
    """The stop document of ``run`` came: it ended with ``exit_status`` (``reason`` may be "")."""

    run: RunPlan
    exit_status: str
    reason: str = ""


@dataclass(frozen=True, eq=False)
class FramePlaced:
    """The run's events put frame ``frame`` of ``series`` at map slot ``slot`` of ``run``."""

    run: RunPlan
    series: int
    frame: int
    slot: int


Event = (RunBegun | RunComplete | StripGrown | SeriesAssigned | DocumentTimedOut | DocumentExpired | RunExit
         | FramePlaced)


class FrameRoute(NamedTuple):
    """Where one frame goes. ``accepted`` False: no run and none to come, or a strip ``run``
    that cannot grow to hold it (``MAX_MAP_POINTS``): skip it and count it as dropped.
    ``run`` None with ``accepted``: its series waits for its start document.
    ``grow_to``: the strip ``run`` must first grow to this many frame slots."""

    run: RunPlan | None
    accepted: bool
    grow_to: int | None = None

