"""Which run (map) each series belongs to: the decisions of the live loop, without its sockets.

A *run* is one map with its own results file: one per bluesky start document, or one
from the config's ``[scan]`` when no documents come. :class:`RunRouter` is fed what the
live loop receives — series headers and ends, frames, bluesky start and stop documents,
batch records, bad messages, the passing of time (a ``now`` argument in seconds, any
monotonic clock: there is no clock inside) — and answers with decisions and events
(:class:`RunBegun`, :class:`SeriesAssigned`, ...) that the caller acts on. It never
touches sockets, threads, workers or files, so every rule can be tested with a few
plain calls.

The rules:

* a run takes a detector series only if that detector takes part in it: a start
  document whose ``detectors`` list does not name ``detector`` (``[bluesky] detector``)
  opens no map and takes no series (one INFO line); a document without ``detectors``
  takes part (a malformed ``detectors``, neither a list nor a string, counts as absent);
* a start document that arrives before any series header waits, and the next series
  header takes it; it waits at most ``2 × document_wait_s`` (the header was sent before
  it, at staging: it is only in transit), and once its stop document came, at most
  ``min(document_wait_s, STOPPED_GRACE_S)`` more: then it is dropped with a warning,
  so a much later series cannot take it;
* a header that arrives while documents are expected (or were seen) waits up to
  ``document_wait_s`` for its document; the first start document to come is its run;
  on timeout the series gets a run of the config's ``[scan]``;
* without bluesky, every series is a run of its own with the config's ``[scan]``
  (``R.h5``, ``R_2.h5``, ...); several series form one scan only offline
  (``reprocess`` of several master files);
* a new run completes the previous one unless that was a config run;
* a start document without a 2-D grid gives a 1-D strip that grows as frames come;
  a malformed one (any key of any type) does too, with one warning for its run, never an
  exception; a strip grows to at most ``MAX_MAP_POINTS`` slots, frames beyond are dropped;
* the next series of a run (a config run takes every series) starts after the frames its
  header announced (``nimages × ntrigger``), or after its highest frame number when the
  header does not say;
* the run's events place frames (bluesky suspenders pause a scan at a beam loss; on resume
  the RunEngine rewinds to its last checkpoint and triggers the detector again, so a
  series has a frame more than the run has points): an event of the run's ``primary``
  stream whose ``data`` carry ``<detector>_image_number`` puts that frame of the run's
  series at point ``seq_num - 1`` (:class:`FramePlaced`); ``<detector>_series`` names the
  series (without it, the run's only series); an event that names a series matched with
  another run is not used (one warning per run: the runs were matched wrongly);
* once events have named series, series and start documents are matched by them, not by
  time: a header waits (up to ``document_wait_s``) for the first event that names its
  series, and that event's run is its run; a header no event names in time takes the
  oldest waiting start document (time order), else a run of the config's ``[scan]``;
* run ``k`` (1-based, counted by distinct uids) writes ``out`` for ``k = 1``, else
  ``<stem>_<k><suffix>``, e.g. ``R.h5``, ``R_2.h5``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from monitor.session.run_events import (
    DocumentExpired,
    DocumentTimedOut,
    Event,
    FramePlaced,
    FrameRoute,
    RunBegun,
    RunComplete,
    RunExit,
    RunPlan,
    SeriesAssigned,
    StripGrown,
)
from monitor.session.start_geometry import MAX_MAP_POINTS, geometry_and_problem, whole_number
from processors.config import DEFAULT_DETECTOR
from stream.raster_scan import RasterScan
from stream.stream_messages import SeriesStart

log = logging.getLogger(__name__)

STOPPED_GRACE_S = 1.0  # a start document whose stop came before any series waits at most this much more


@dataclass
class _PendingDocument:
    """A start document no series header has taken yet, dropped after ``deadline`` (s)."""

    doc: Mapping[str, Any]
    uid: str
    deadline: float
    stopped: bool = False       # its stop document came
    exit_status: str = ""       # and said this (kept for a header still in transit)
    reason: str = ""


class RunRouter:
    """Decides runs, offsets and files for the live loop; see the module docstring for the rules.

    ``config_scan``: the config's ``[scan]`` (the map when no start document gives one);
    ``out``: the first run's results file; ``expect_documents``: start documents will
    come, so every series header waits up to ``document_wait_s`` s for its own;
    ``detector``: the ophyd name of the stream's detector (runs without it take no series).
    """

    def __init__(self, config_scan: RasterScan, out: Path, *, expect_documents: bool = False,
                 document_wait_s: float = 5.0, detector: str = DEFAULT_DETECTOR) -> None:
        self.config_scan = config_scan
        self.out = Path(out)
        self.expect_documents = expect_documents
        self.document_wait_s = document_wait_s
        self.detector = detector
        self._other_runs: set[str] = set()            # uids of runs of other detectors (their stops are ignored)
        self.current: RunPlan | None = None           # the run begun last
        self.runs: dict[str, RunPlan] = {}            # by uid; a repeated uid replaces the earlier run
        self._documents_seen = False
        self._pending_docs: list[_PendingDocument] = []   # start documents no header has taken yet
        self._series_run: dict[int, RunPlan] = {}
        # bluesky stages the detector (series header) before it opens the run (start document),
        # and the two travel by different sockets: a series may wait for its document a while
        self._awaiting: dict[int, tuple[float, SeriesStart]] = {}   # series → (deadline, header)
        self._held: dict[int, list[Any]] = {}                     # records of awaiting series
        self._held_received: dict[int, int] = {}                  # frames received for awaiting series
        self._last_frame: dict[int, int] = {}                     # highest frame number accepted per series
        self._early = {"corrupt": 0, "late": 0}                   # bad messages before the first run
        self._strip_full: set[str] = set()                        # strips whose frames overflowed (warned)
        self._nimages: dict[int, int] = {}                        # frames each series' header announced
        self._descriptors: dict[str, str] = {}                    # primary-stream descriptor uid → run uid
        self._event_conflicts: set[str] = set()                   # runs whose events named another's series
        self._ids_seen = False                                    # events name series: match by id, not time

    # --- questions ------------------------------------------------------------------
    @property
    def waiting(self) -> bool:
        """Some series still waits for its start document (the loop must not end yet)."""
        return bool(self._awaiting)

    def run_of(self, series: int) -> RunPlan | None:
        """The run of ``series``; None while it waits for its document, or when it has none."""
        return self._series_run.get(series)

    # --- series ---------------------------------------------------------------------
    def series_start(self, header: SeriesStart, now: float, *, documents_announced: bool = False) -> list[Event]:
        """A series header at time ``now`` (s). ``documents_announced``: a start document was
        announced to the caller but has not reached the router yet (it comes by another
        thread), so this series must wait for it as if documents were expected."""
        events = self.expire(now) if self._pending_docs else []  # a stale document is no one's
        if self._pending_docs and not self._ids_seen:
            return events + self._begin_pending(self._pending_docs.pop(0)) + self._assign(header.series,
                                                                                          self.current, header)
        if self.expect_documents or self._documents_seen or documents_announced:
            self._awaiting[header.series] = (now + self.document_wait_s, header)
            return events
        return events + self._begin(None) + self._assign(header.series, self.current, header)  # a run per series

    def series_end(self, series: int) -> None:
        """The series ended: the next series of its run starts after its highest frame number."""
        run = self._series_run.get(series)
        if run is not None:
            announced = self._nimages.get(series, 0)
            length = announced if announced > 0 else self._last_frame.get(series, -1) + 1
            run.next_offset = max(run.next_offset, run.series_offsets.get(series, 0) + length)

    def frame(self, series: int, number: int) -> FrameRoute:
        """Frame ``number`` (0-based) of ``series`` arrived: where it goes (see :class:`FrameRoute`)."""
        run = self._series_run.get(series)
        if run is None:
            if series not in self._awaiting:
                return FrameRoute(None, False)
            self._held_received[series] = self._held_received.get(series, 0) + 1
        grow_to = None
        if run is not None and run.geometry == "strip":
            slot = run.series_offsets.get(series, 0) + number
            if slot >= MAX_MAP_POINTS:
                if run.uid not in self._strip_full:
                    self._strip_full.add(run.uid)
                    log.warning("run %s: frame %d of series %d lies beyond the %d slots a strip may have: "
                                "dropped (and every later one)", run.uid, number, series, MAX_MAP_POINTS)
                return FrameRoute(run, False)
            if slot >= run.n_frames:
                grow_to = self._grow(run, max(2 * run.n_frames, slot + 1))
        self._last_frame[series] = max(self._last_frame.get(series, -1), number)
        return FrameRoute(run, True, grow_to)

    def records(self, series: int, records: Any) -> RunPlan | None:
        """Processed ``records`` of ``series``: the run to add them to; None when they are held
        (the series waits for its document; they come back in its :class:`SeriesAssigned`)
        or belong to no run."""
        run = self._series_run.get(series)
        if run is None and series in self._awaiting:
            self._held.setdefault(series, []).append(records)
        return run

    def bad_message(self, kind: str) -> RunPlan | None:
        """A bad message (``kind`` "corrupt" or "late") belongs to the run being received: returned;
        before the first run it is kept for that run (:attr:`RunBegun.early_corrupt`) and None returned."""
        if self.current is None:
            self._early[kind] += 1
        return self.current

    # --- documents and time -----------------------------------------------------------
    def start_document(self, doc: Mapping[str, Any], now: float | None = None) -> list[Event]:
        """A bluesky start document at time ``now`` (s; None: it never goes stale): the run of the (first)
        waiting series, else of the next header; no run at all if the stream's detector takes no part."""
        self._documents_seen = True
        others = self._other_detectors(doc)
        if others is not None:
            uid = _uid_of(doc)
            self._other_runs.add(uid)
            log.info("run %s of other detectors (%s): no map", uid or "?", ", ".join(others) or "none")
            return []
        if self._awaiting and not self._ids_seen:  # the series header came first: this document is its run
            series = next(iter(self._awaiting))
            _, header = self._awaiting.pop(series)
            return self._begin(doc) + self._assign(series, self.current, header)
        deadline = math.inf if now is None else now + 2 * self.document_wait_s
        self._pending_docs.append(_PendingDocument(doc, _uid_of(doc), deadline))
        return []

    def _other_detectors(self, doc: Any) -> list[str] | None:
        """The detectors of a run the stream's detector takes no part in; None when it takes part
        (or the document does not say: no ``detectors`` key, or one neither a list nor a string)."""
        if not isinstance(doc, Mapping):
            return None
        names = doc.get("detectors")
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, (list, tuple)):
            return None
        names = [n if isinstance(n, str) else repr(n) for n in names]
        return None if self.detector in names else names

    def stop_document(self, doc: Mapping[str, Any], now: float | None = None) -> list[Event]:
        """A bluesky stop document: how its run (``run_start`` uid) ended; ignored for an unknown run.
        A start document of it still waiting for a series waits at most ``STOPPED_GRACE_S`` more."""
        if not isinstance(doc, Mapping):
            return []
        uid = str(doc.get("run_start", ""))
        if now is not None:
            for pending in self._pending_docs:
                if pending.uid == uid and uid:
                    pending.deadline = min(pending.deadline, now + min(self.document_wait_s, STOPPED_GRACE_S))
                    pending.stopped = True
                    pending.exit_status = str(doc.get("exit_status") or "")
                    pending.reason = str(doc.get("reason") or "")
        run = self.runs.get(uid)
        if run is None:
            return []
        run.exit_status = str(doc.get("exit_status") or "")
        return [RunExit(run, run.exit_status, str(doc.get("reason") or ""))]

    def descriptor_document(self, doc: Mapping[str, Any]) -> None:
        """An event descriptor: the events of a ``primary`` stream descriptor can place frames."""
        if not isinstance(doc, Mapping) or doc.get("name", "primary") != "primary":
            return
        uid, run_start = doc.get("uid"), doc.get("run_start")
        if isinstance(uid, str) and isinstance(run_start, str):
            self._descriptors[uid] = run_start

    def event_document(self, doc: Mapping[str, Any], now: float | None = None) -> list[Event]:
        """An event: matches its run with the series it names, and places the frame it names (module docstring)."""
        run_uid = self._descriptors.get(doc.get("descriptor")) if isinstance(doc, Mapping) else None
        data = doc.get("data") if run_uid is not None else None
        if not isinstance(data, Mapping):
            return []
        series = whole_number(data.get(f"{self.detector}_series"), 0)
        number = whole_number(data.get(f"{self.detector}_image_number"), 0)
        point = whole_number(doc.get("seq_num"))
        events: list[Event] = []
        self._ids_seen |= series is not None
        pending = next((p for p in self._pending_docs if p.uid == run_uid), None)
        if series is not None and series in self._awaiting and pending is not None:
            self._pending_docs.remove(pending)   # the run its events name: matched for certain
            _, header = self._awaiting.pop(series)
            events += self._begin(pending.doc) + self._assign(series, self.current, header)
        run = self.runs.get(run_uid)
        if run is None or number is None or point is None or point < 1:
            return events
        if series is None:  # the events do not say: the run's only series
            mine = [s for s, r in self._series_run.items() if r is run]
            series = mine[0] if len(mine) == 1 else None
        if series is None or self._series_run.get(series) is not run:
            if series is not None and run.uid not in self._event_conflicts:
                self._event_conflicts.add(run.uid)
                other = self._series_run.get(series)
                log.warning("run %s: its events name series %d, which %s: its frames stay where they "
                            "arrived", run.uid, series, f"was matched with run {other.uid} by arrival order"
                            if other is not None else "this processor has not seen")
            return events
        slot = (point - 1) * run.scan.frames_per_point
        if run.geometry == "strip" and slot >= run.n_frames:
            if slot >= MAX_MAP_POINTS:
                return events
            grow_to = self._grow(run, max(2 * run.n_frames, slot + 1))
            if grow_to is not None:
                events.append(StripGrown(run, grow_to))
        if slot < run.n_frames:
            events.append(FramePlaced(run, series, number, slot))
        return events

    def expire(self, now: float, *, force: bool = False) -> list[Event]:
        """Start documents waiting for a series past their deadline (or all, if ``force``) are dropped
        (:class:`DocumentExpired`); series whose deadline passed by ``now`` (s), or all waiting ones if
        ``force`` (nothing more will be received), get a run of the config's [scan]."""
        events: list[Event] = []
        for pending in list(self._pending_docs):
            if now > pending.deadline or force:
                self._pending_docs.remove(pending)
                why = ("before its stop document" if pending.stopped else f"within {2 * self.document_wait_s:g} s"
                       if now > pending.deadline else "before the stream ended")
                log.warning("run %s: no series came for its start document %s: dropped (no map)",
                            pending.uid or "?", why)
                events.append(DocumentExpired(pending.uid, pending.stopped))
        for series, (deadline, header) in list(self._awaiting.items()):
            if now > deadline or force:
                del self._awaiting[series]
                if self._pending_docs:  # no event named it: the documents' time order decides after all
                    events += self._begin_pending(self._pending_docs.pop(0)) + self._assign(series, self.current, header)
                    continue
                events.append(DocumentTimedOut(series, self.document_wait_s))
                events += self._begin(None)
                events += self._assign(series, self.current, header)
        return events

    def ensure_run(self) -> RunBegun | None:
        """At the end: a config run if there never was one (an empty results file is still written)."""
        if self.runs:
            return None
        run = self._plan(None)
        return RunBegun(run, run.scan)

    # --- decisions --------------------------------------------------------------------
    def _plan(self, doc: Mapping[str, Any] | None) -> RunPlan:
        """A run from a bluesky start document, or from the config's [scan] when there is none."""
        index = len(self.runs) + 1
        if doc is None:
            scan, geometry, uid, parent = self.config_scan, "config", f"run-{index}", ""
        else:
            if not isinstance(doc, Mapping):
                doc = {}
            uid = doc.get("uid")
            uid = uid if isinstance(uid, str) and uid else f"run-{index}"
            parent = doc.get("parent_uid")
            parent = parent if isinstance(parent, str) else ""
            scan, problem = geometry_and_problem(doc)
            geometry = "bluesky"
            if scan is None:  # no grid in the start document: a 1-D strip that grows
                length, length_problem = _strip_length(doc.get("num_points"))
                scan = RasterScan((1, length), motors=_strip_motors(doc.get("motors")))
                geometry = "strip"
                problems = "; ".join(p for p in (problem, length_problem) if p)
                if problems:  # once per run: the run is planned once
                    log.warning("run %s: start document without usable map geometry (%s): its frames go "
                                "into a 1-D strip that grows as they come", uid, problems)
        out = self.out if index == 1 else self.out.with_name(f"{self.out.stem}_{index}{self.out.suffix}")
        run = RunPlan(index, uid, geometry, parent, scan, out, n_frames=scan.n_frames)
        self.runs[uid] = run
        return run

    def _begin(self, doc: Mapping[str, Any] | None) -> list[Event]:
        """A new run; the previous one is complete unless it was the config's (which takes every series)."""
        events: list[Event] = []
        if self.current is not None and self.current.geometry != "config":
            self.current.done = True
            events.append(RunComplete(self.current))
        self.current = self._plan(doc)
        events.append(RunBegun(self.current, self.current.scan, self._early["corrupt"], self._early["late"]))
        self._early = {"corrupt": 0, "late": 0}
        return events

    def _begin_pending(self, pending: _PendingDocument) -> list[Event]:
        """The run of a waiting start document; if its stop document came first (the header was
        still in transit), the run ends as that said: its exit status is not lost."""
        events = self._begin(pending.doc)
        if pending.stopped:
            self.current.exit_status = pending.exit_status
            events.append(RunExit(self.current, pending.exit_status, pending.reason))
        return events

    def _assign(self, series: int, run: RunPlan, header: SeriesStart) -> list[Event]:
        self._series_run[series] = run
        self._nimages[series] = header.nimages
        offset = run.series_offsets.setdefault(series, run.next_offset)
        events: list[Event] = []
        if run.geometry == "strip":
            seen = run.next_offset + max(header.nimages, self._last_frame.get(series, -1) + 1)
            grow_to = self._grow(run, min(max(seen, 1), MAX_MAP_POINTS))
            if grow_to is not None:
                events.append(StripGrown(run, grow_to))
        events.append(SeriesAssigned(series, run, offset, self._held_received.pop(series, 0),
                                     tuple(self._held.pop(series, []))))
        return events

    @staticmethod
    def _grow(run: RunPlan, n_frames: int) -> int | None:
        """Grow the strip ``run`` to ``n_frames`` slots; the new size, or None if it was that long already."""
        n_frames = min(n_frames, MAX_MAP_POINTS)
        if n_frames <= run.n_frames:
            return None
        run.n_frames = n_frames
        run.scan = RasterScan((1, n_frames), motors=run.scan.motors)
        return n_frames


def _uid_of(doc: Any) -> str:
    """A start document's uid ("" when it has none usable)."""
    uid = doc.get("uid") if isinstance(doc, Mapping) else None
    return uid if isinstance(uid, str) else ""


def _strip_length(num_points: Any) -> tuple[int, str]:
    """A strip's first length from a start document's ``num_points``: ``(length, problem)``;
    1 when it is missing or unusable (the strip grows as frames come), at most ``MAX_MAP_POINTS``."""
    if num_points is None:
        return 1, ""
    if isinstance(num_points, float) and math.isfinite(num_points) and num_points.is_integer():
        num_points = int(num_points)
    if not isinstance(num_points, int) or isinstance(num_points, bool) or num_points < 0:
        text = repr(num_points) if isinstance(num_points, (int, float)) else type(num_points).__name__
        return 1, f"num_points {text} is not a non-negative integer"
    if num_points > MAX_MAP_POINTS:
        return MAX_MAP_POINTS, f"num_points {num_points} is more than a strip may hold ({MAX_MAP_POINTS})"
    return max(num_points, 1), ""


def _strip_motors(motors: Any) -> tuple[str, str]:
    """A strip's axis names from ``motors``: the last two names (slow "" for one motor), else ("", "point")."""
    if not isinstance(motors, (list, tuple)) or not motors or not all(isinstance(m, str) for m in motors):
        return ("", "point")
    return (motors[-2] if len(motors) >= 2 else "", motors[-1])
