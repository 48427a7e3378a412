"""Frames placed by the run's events (bluesky pause and resume) against a plain reference, for
every order in which records and events may arrive."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.session.map_collector import MapCollector
from processors.frame_record import FRAME_OK, empty_records
from processors.process_batch import BatchResult
from stream.raster_scan import RasterScan

PEAKS = ("100",)


def record(series: int, frame: int) -> np.ndarray:
    r = empty_records(1, len(PEAKS))
    r["series"], r["frame"], r["status"], r["intensity"] = series, frame, FRAME_OK, frame
    return r


@st.composite
def paused_scans(draw):
    """A series of a ``points``-point scan paused ``len(pauses)`` times: each pause interrupted the
    exposure of a point, measured again on resume. Returns the frame each point got (the events),
    the interrupted frames, and an arrival order of records and events (events in order)."""
    points = draw(st.integers(2, 14))
    pauses = sorted(draw(st.sets(st.integers(0, points - 1), max_size=3)))
    frame_of_point, orphans, frame = [], [], 0
    for point in range(points):
        if point in pauses:
            orphans.append(frame)
            frame += 1
        frame_of_point.append(frame)
        frame += 1
    items = [("record", f) for f in range(frame)]
    events = [("event", p) for p in range(points)]
    lost = draw(st.sets(st.integers(0, points - 1), max_size=2))      # events that never came
    events = [e for e in events if e[1] not in lost]
    order = draw(st.permutations(items))
    # merge the events into the records' order, keeping the events' own order
    slots = sorted(draw(st.lists(st.integers(0, len(order)), min_size=len(events), max_size=len(events))))
    arrival = list(order)
    for k, (e, at) in enumerate(zip(events, slots)):
        arrival.insert(at + k, e)
    return points, frame_of_point, orphans, lost, arrival


@settings(max_examples=300, deadline=None)
@given(paused_scans())
def test_every_point_holds_the_frame_its_event_gave_whatever_the_arrival_order(scan):
    points, frame_of_point, orphans, lost, arrival = scan
    collector = MapCollector(RasterScan((1, points)), PEAKS, {3: 0})
    for kind, k in arrival:
        if kind == "record":
            collector.add(BatchResult(record(3, k)))
        else:
            collector.place_by_event(3, frame_of_point[k], k)
    placed = collector.records["frame"]
    for point in range(points):
        if point in lost:          # no event: its frame is placed by the shift of the events before it
            continue
        assert placed[point] == frame_of_point[point], (point, list(placed), arrival)
    # no frame sits twice, and an interrupted exposure never hides a measured point
    measured = placed[placed >= 0]
    assert len(set(measured.tolist())) == measured.size
    if not lost:
        assert not set(orphans) & set(measured.tolist())
        assert collector.counters.repeated_point == len(orphans)
        assert collector.counters.duplicate == 0 and collector.counters.outside_scan == 0


def test_without_events_frames_sit_at_their_numbers():
    collector = MapCollector(RasterScan((2, 3)), PEAKS, {1: 0})
    collector.add(BatchResult(np.concatenate([record(1, k) for k in (4, 0, 2)])))
    assert collector.records["frame"].tolist() == [0, -1, 2, -1, 4, -1]
