"""The run router on its own: message sequences in, decisions out (no sockets, threads or files)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from monitor.session.run_events import (
    DocumentTimedOut,
    RunBegun,
    RunComplete,
    RunExit,
    SeriesAssigned,
    StripGrown,
)
from monitor.session.run_router import STOPPED_GRACE_S, RunRouter
from monitor.session.start_geometry import MAX_MAP_POINTS
from stream.raster_scan import RasterScan
from stream.stream_messages import SeriesStart

CONFIG_SCAN = RasterScan((4, 5), motors=("y", "x"))
OUT = Path("/data/R.h5")
GRID = {"uid": "grid-1", "plan_name": "grid_scan", "shape": [3, 4], "extents": [[0.0, 1.0], [0.0, 1.5]],
        "snaking": [False, True], "motors": ["piezo_y", "piezo_x"], "num_points": 12}
COUNT = {"uid": "count-1", "plan_name": "count", "num_points": 5, "parent_uid": "grid-1", "motors": ["piezo_x"]}


def header(series: int, nimages: int = 0) -> SeriesStart:
    return SeriesStart(protocol="stream1", series=series, config={"nimages": nimages} if nimages else {})


def router(**kwargs) -> RunRouter:
    return RunRouter(CONFIG_SCAN, OUT, **kwargs)


def kinds(events) -> list[str]:
    return [type(e).__name__ for e in events]


def test_without_bluesky_every_series_is_a_config_run_of_its_own():
    r = router()
    first = r.series_start(header(1), now=0.0)
    assert kinds(first) == ["RunBegun", "SeriesAssigned"]
    run = first[0].run
    assert (run.index, run.uid, run.geometry, run.parent, run.out) == (1, "run-1", "config", "", OUT)
    assert run.scan == CONFIG_SCAN and run.n_frames == 20
    assert first[1].series == 1 and first[1].run is run and first[1].offset == 0
    for k in range(7):
        assert r.frame(1, k) == (run, True, None)
    r.series_end(1)
    # the next series is a new map in a new file (was: it continued the first map, its frames
    # beyond the scan dropped as outside_scan)
    second = r.series_start(header(2), now=1.0)
    assert kinds(second) == ["RunBegun", "SeriesAssigned"]
    new = second[0].run
    assert new is not run and (new.index, new.uid, new.geometry, new.out) == (2, "run-2", "config",
                                                                             Path("/data/R_2.h5"))
    assert second[1].run is new and second[1].offset == 0
    assert r.run_of(2) is new and r.run_of(1) is run and list(r.runs) == ["run-1", "run-2"]


def test_start_document_before_the_header_gives_the_next_series_its_run():
    r = router()
    assert r.start_document(GRID) == []
    events = r.series_start(header(3), now=0.0)
    assert kinds(events) == ["RunBegun", "SeriesAssigned"]
    run = events[0].run
    assert (run.uid, run.geometry, run.out) == ("grid-1", "bluesky", OUT)
    assert run.scan.shape == (3, 4) and run.scan.snake and run.scan.motors == ("piezo_y", "piezo_x")
    assert events[1].series == 3 and events[1].run is run


def test_header_before_its_start_document_waits_and_its_records_are_held():
    r = router(expect_documents=True, document_wait_s=2.0)
    assert r.series_start(header(1), now=10.0) == [] and r.waiting
    # frames are accepted (they will be processed) but have no run yet
    assert r.frame(1, 0) == (None, True, None) and r.frame(1, 1) == (None, True, None)
    records = np.arange(2)
    assert r.records(1, records) is None  # held
    assert r.expire(11.9) == []           # still within its wait
    events = r.start_document(GRID)
    assert kinds(events) == ["RunBegun", "SeriesAssigned"]
    assigned = events[1]
    assert assigned.run.uid == "grid-1" and assigned.series == 1 and assigned.offset == 0
    # what arrived while it waited is released to its run, once
    assert assigned.received == 2 and len(assigned.records) == 1 and assigned.records[0] is records
    assert not r.waiting and r.records(1, records) is assigned.run


def test_records_of_a_series_without_a_run_are_neither_held_nor_routed():
    r = router()
    assert r.frame(5, 0) == (None, False, None)  # no header: skipped by the caller
    assert r.records(5, np.arange(3)) is None
    r.series_start(header(1), now=0.0)
    assert r.frame(5, 1).accepted is False


def test_series_waiting_too_long_falls_back_on_the_config_scan():
    r = router(expect_documents=True, document_wait_s=5.0)
    r.series_start(header(1), now=100.0)
    r.frame(1, 0)
    assert r.expire(105.0) == []  # the deadline itself is not past it
    events = r.expire(105.01)
    assert kinds(events) == ["DocumentTimedOut", "RunBegun", "SeriesAssigned"]
    assert events[0] == DocumentTimedOut(1, 5.0)
    assert events[1].run.geometry == "config" and events[1].run.scan == CONFIG_SCAN
    assert events[2].received == 1 and not r.waiting


def test_expire_with_force_releases_every_waiting_series_in_order():
    r = router(expect_documents=True)
    r.series_start(header(1), now=0.0)
    r.series_start(header(2), now=0.0)
    events = r.expire(0.0, force=True)  # the receiver is done: nothing will come
    assigned = [e for e in events if isinstance(e, SeriesAssigned)]
    assert [a.series for a in assigned] == [1, 2]
    # each gets a run of its own (a config run is never completed by the next one)
    assert [a.run.out for a in assigned] == [OUT, Path("/data/R_2.h5")]
    assert not any(isinstance(e, RunComplete) for e in events)


def test_a_document_seen_makes_later_headers_wait_and_announced_ones_too():
    r = router()
    r.start_document(GRID)
    r.series_start(header(1), now=0.0)
    assert r.series_start(header(2), now=0.0) == [] and r.waiting  # documents come: wait for its own
    r2 = router()
    # the caller was told of a document still on its way to the router: the header waits for it
    assert r2.series_start(header(1), now=0.0, documents_announced=True) == [] and r2.waiting
    assert kinds(r2.start_document(GRID)) == ["RunBegun", "SeriesAssigned"]


def test_a_pending_document_is_taken_by_the_next_series_whichever_it_is():
    r = router()
    r.start_document(GRID)
    r.start_document(COUNT)
    a = r.series_start(header(7), now=0.0)
    b = r.series_start(header(3), now=0.0)
    assert a[0].run.uid == "grid-1" and a[-1].series == 7
    assert b[-1].run.uid == "count-1" and b[-1].series == 3


def test_new_bluesky_run_completes_the_previous_one_and_names_files_in_order():
    r = router()
    r.start_document(GRID)
    first = r.series_start(header(1), now=0.0)[0].run
    r.start_document(COUNT)
    events = r.series_start(header(2), now=1.0)
    assert kinds(events) == ["RunComplete", "RunBegun", "SeriesAssigned"]  # 5 points, no frame yet: no growth
    assert events[0].run is first and first.done
    second = events[1].run
    assert (second.index, second.out, second.parent) == (2, Path("/data/R_2.h5"), "grid-1")
    r.start_document({"uid": "grid-2", "shape": [2, 2], "extents": [[0, 1], [0, 1]]})
    third = r.series_start(header(3), now=2.0)
    assert third[0].run is second and third[1].run.out == Path("/data/R_3.h5")


def test_config_run_is_not_completed_by_a_later_bluesky_run():
    r = router()
    config_run = r.series_start(header(1), now=0.0)[0].run
    r.start_document(GRID)
    events = r.series_start(header(2), now=0.0)
    assert kinds(events) == ["RunBegun", "SeriesAssigned"] and not config_run.done


def test_strip_runs_grow_with_the_header_and_the_frames():
    r = router()
    r.start_document(COUNT)  # no grid: a 1-D strip as long as num_points
    events = r.series_start(header(1, nimages=8), now=0.0)
    run = events[0].run
    assert run.geometry == "strip" and events[0].scan.shape == (1, 5) and events[0].scan.motors == ("", "piezo_x")
    # the header announces 8 frames: the strip grows to them before any frame comes
    assert isinstance(events[1], StripGrown) and events[1].run is run and events[1].n_frames == 8
    assert run.n_frames == 8 and run.scan.shape == (1, 8)
    assert r.frame(1, 7) == (run, True, None)
    # a frame beyond: at least doubled, so a long strip is not grown frame by frame
    assert r.frame(1, 8) == (run, True, 16)
    assert r.frame(1, 40) == (run, True, 41)
    assert run.scan.shape == (1, 41)


def test_strip_grows_for_frames_received_while_waiting():
    r = router(expect_documents=True)
    r.series_start(header(1), now=0.0)  # nimages unknown
    for k in range(6):
        r.frame(1, k)
    events = r.start_document({"uid": "strip", "num_points": 2})
    grown = [e for e in events if isinstance(e, StripGrown)]
    assert len(grown) == 1 and grown[0].n_frames == 6


def test_series_end_moves_the_next_offset_of_a_strip():
    r = router()
    r.start_document({"uid": "s", "num_points": 1})
    run = r.series_start(header(1), now=0.0)[0].run
    for k in range(3):
        r.frame(1, k)
    assert run.next_offset == 0
    r.series_end(1)
    assert run.next_offset == 3 and run.n_frames == 4  # grown to max(2 × 1, 2) then max(2 × 2, 3)
    assert r.series_start(header(2), now=0.0) == []      # documents were seen: it waits for its own


def test_stop_document_sets_the_exit_status_of_its_run():
    r = router()
    r.start_document(GRID)
    run = r.series_start(header(1), now=0.0)[0].run
    assert r.stop_document({"run_start": "unknown", "exit_status": "fail"}) == []
    events = r.stop_document({"run_start": "grid-1", "exit_status": "abort", "reason": "user pressed Abort"})
    (ended,) = events
    assert isinstance(ended, RunExit) and ended.run is run
    assert (ended.exit_status, ended.reason) == ("abort", "user pressed Abort")
    assert run.exit_status == "abort"
    (ok,) = r.stop_document({"run_start": "grid-1", "exit_status": "success"})
    assert ok.reason == "" and run.exit_status == "success"


def test_bad_messages_before_the_first_run_go_to_it():
    r = router()
    assert r.bad_message("corrupt") is None and r.bad_message("corrupt") is None and r.bad_message("late") is None
    begun = r.series_start(header(1), now=0.0)[0]
    assert isinstance(begun, RunBegun) and (begun.early_corrupt, begun.early_late) == (2, 1)
    assert r.bad_message("late") is begun.run
    r.start_document(GRID)
    later = r.series_start(header(2), now=0.0)
    assert (later[0].early_corrupt, later[0].early_late) == (0, 0)


def test_ensure_run_only_when_there_was_none():
    r = router()
    begun = r.ensure_run()
    assert begun is not None and begun.run.geometry == "config" and begun.run.out == OUT
    assert r.ensure_run() is None


@pytest.mark.parametrize("doc, out", [({"uid": "a"}, OUT), ({}, OUT)])
def test_documents_without_a_uid_are_named_by_their_index(doc, out):
    r = router()
    r.start_document(doc)
    run = r.series_start(header(1), now=0.0)[0].run
    assert run.out == out and run.uid == (doc.get("uid") or "run-1")


MALFORMED = [
    {"uid": "m", "shape": 7},
    {"uid": "m", "shape": None},
    {"uid": "m", "shape": "3x4"},
    {"uid": "m", "shape": [3]},
    {"uid": "m", "shape": [3, "4"]},
    {"uid": "m", "shape": [[3], [4]]},
    {"uid": "m", "shape": [float("nan"), 4]},
    {"uid": "m", "shape": [float("inf"), 4]},
    {"uid": "m", "shape": [-3, 4]},
    {"uid": "m", "shape": [True, 4]},
    {"uid": "m", "shape": [10**30, 10**30]},
    {"uid": "m", "shape": [200_000, 1]},      # a side over MAX_MAP_SIDE
    {"uid": "m", "shape": [5000, 5000]},      # 25 M points, over MAX_MAP_POINTS
    {"uid": "m", "num_points": "many"},
    {"uid": "m", "num_points": float("nan")},
    {"uid": "m", "num_points": float("inf")},
    {"uid": "m", "num_points": -5},
    {"uid": "m", "num_points": [1, 2]},
    {"uid": "m", "num_points": 10**30, "motors": 7},
    {"uid": "m", "motors": 7, "num_points": None},
    {"uid": "m", "motors": [None, {"a": 1}], "shape": 7},
    {"uid": ["not", "a", "string"], "parent_uid": {"x": 1}},
]


@pytest.mark.parametrize("doc", MALFORMED, ids=range(len(MALFORMED)))
def test_a_malformed_start_document_gives_a_strip_never_an_exception(doc, caplog):
    r = router()
    r.start_document(doc)
    with caplog.at_level("WARNING", logger="monitor.session.run_router"):
        events = r.series_start(header(1, nimages=3), now=0.0)
    run = events[0].run
    assert kinds(events)[0] == "RunBegun" and run.geometry == "strip"
    assert run.scan.shape[0] == 1 and 1 <= run.n_frames <= MAX_MAP_POINTS
    for k in range(5):
        assert r.frame(1, k).accepted
    assert run.n_frames >= 5
    if "shape" in doc or doc.get("num_points") is not None:  # there and unusable: one warning for the run
        assert len([rec for rec in caplog.records if "without usable map geometry" in rec.message]) == 1


@pytest.mark.parametrize("extra", [{"extents": 5}, {"extents": [[0, "a"], [0, 1]]}, {"extents": [[0, float("nan")], [0, 1]]},
                                   {"extents": [[-1e308, 1e308], [0, 1]]}, {"snaking": "yes"}, {"snaking": 3.5},
                                   {"snake_axes": [1, None]}, {"motors": ["a"]}, {"motors": [1, 2]},
                                   {"plan_name": "list_grid_scan", "plan_args": {"args": ["m", [0, "x"], "n", 5]}},
                                   {"plan_name": "list_grid_scan", "plan_args": [1, 2]}])
def test_a_grid_with_malformed_extras_keeps_its_grid(extra):
    r = router()
    r.start_document({"uid": "g", "shape": [3, 4], **extra})
    run = r.series_start(header(1), now=0.0)[0].run
    assert run.geometry == "bluesky" and run.scan.shape == (3, 4)
    assert run.scan.step is None or all(math.isfinite(s) for s in run.scan.step)


def test_a_strip_grows_to_the_cap_and_drops_frames_beyond(caplog):
    r = router()
    r.start_document({"uid": "s", "num_points": 2})
    run = r.series_start(header(1, nimages=10**15), now=0.0)[0].run
    assert run.n_frames == MAX_MAP_POINTS
    with caplog.at_level("WARNING", logger="monitor.session.run_router"):
        assert r.frame(1, MAX_MAP_POINTS - 1) == (run, True, None)
        assert r.frame(1, MAX_MAP_POINTS) == (run, False, None)
        assert r.frame(1, 10**12) == (run, False, None)
    assert len([rec for rec in caplog.records if "beyond" in rec.message]) == 1


def test_a_stop_document_that_is_not_a_mapping_is_ignored():
    assert router().stop_document(["not", "a", "document"]) == []


# --- runs and series matched for certain (issue 9) -------------------------------------------------
EIGER_GRID = {**GRID, "uid": "grid-A", "detectors": ["eiger"]}
OTHER_COUNT = {"uid": "count-X", "plan_name": "count", "num_points": 3, "detectors": ["pilatus", "i0"]}


def test_a_run_of_other_detectors_takes_no_series_and_opens_no_map(caplog):
    r = router()
    with caplog.at_level("INFO", logger="monitor.session.run_router"):
        assert r.start_document(OTHER_COUNT, now=0.0) == []
    assert [rec.getMessage() for rec in caplog.records] == ["run count-X of other detectors (pilatus, i0): no map"]
    assert r.stop_document({"run_start": "count-X", "exit_status": "success"}, now=0.5) == []
    r.start_document({**EIGER_GRID, "uid": "grid-B"}, now=1.0)
    events = r.series_start(header(1), now=1.1)
    assert kinds(events) == ["RunBegun", "SeriesAssigned"] and events[0].run.uid == "grid-B"
    assert list(r.runs) == ["grid-B"] and events[0].run.out == OUT


def test_grid_count_of_another_detector_grid_each_series_in_its_own_run():
    r = router(expect_documents=True)
    r.start_document(EIGER_GRID, now=0.0)
    a = r.series_start(header(1), now=0.1)[0].run
    r.series_end(1)
    r.stop_document({"run_start": "grid-A", "exit_status": "success"}, now=1.0)
    r.start_document(OTHER_COUNT, now=2.0)
    r.stop_document({"run_start": "count-X", "exit_status": "success"}, now=3.0)
    r.start_document({**EIGER_GRID, "uid": "grid-B"}, now=4.0)
    events = r.series_start(header(2), now=4.1)
    b = events[1].run
    assert kinds(events) == ["RunComplete", "RunBegun", "SeriesAssigned"] and events[0].run is a
    assert (a.uid, b.uid, b.out) == ("grid-A", "grid-B", Path("/data/R_2.h5")) and r.run_of(2) is b


def test_a_waiting_header_is_not_taken_by_a_run_of_other_detectors():
    r = router(expect_documents=True, document_wait_s=5.0)
    assert r.series_start(header(1), now=0.0) == []
    assert r.start_document(OTHER_COUNT, now=0.5) == [] and r.waiting
    events = r.start_document(EIGER_GRID, now=1.0)
    assert kinds(events) == ["RunBegun", "SeriesAssigned"] and events[0].run.uid == "grid-A"


@pytest.mark.parametrize("detectors", [None, 7, {"eiger": 1}])
def test_a_document_without_a_usable_detectors_list_takes_the_next_series(detectors):
    r = router()
    doc = dict(GRID) if detectors is None else {**GRID, "detectors": detectors}
    r.start_document(doc, now=0.0)
    assert r.series_start(header(1), now=0.1)[0].run.uid == "grid-1"


def test_detectors_as_one_name_and_a_configured_detector():
    r = router(detector="eiger2")
    assert r.start_document({**GRID, "detectors": "eiger"}, now=0.0) == []
    r.start_document({**GRID, "uid": "mine", "detectors": "eiger2"}, now=0.0)
    assert r.series_start(header(1), now=0.1)[0].run.uid == "mine"


def test_a_stale_start_document_expires_and_a_much_later_series_does_not_take_it(caplog):
    r = router(document_wait_s=2.0)
    r.start_document(EIGER_GRID, now=0.0)
    assert r.expire(4.0) == []  # 2 × document_wait_s
    with caplog.at_level("WARNING", logger="monitor.session.run_router"):
        (expired,) = r.expire(4.01)
    assert (expired.uid, expired.stopped) == ("grid-A", False)
    assert any("grid-A" in rec.getMessage() and "dropped" in rec.getMessage() for rec in caplog.records)
    # documents were seen: the series waits for its own, and none comes
    assert r.series_start(header(1), now=60.0) == []
    events = r.expire(62.5)
    assert kinds(events) == ["DocumentTimedOut", "RunBegun", "SeriesAssigned"]
    assert events[1].run.geometry == "config" and "grid-A" not in r.runs


def test_a_series_header_expires_a_stale_document_before_taking_one():
    r = router(document_wait_s=1.0)
    r.start_document(EIGER_GRID, now=0.0)
    events = r.series_start(header(1), now=30.0)  # the loop had no turn to expire it
    assert kinds(events) == ["DocumentExpired"] and r.waiting


def test_a_start_document_whose_stop_came_first_is_dropped_after_a_short_grace():
    r = router(document_wait_s=5.0)
    r.start_document(EIGER_GRID, now=0.0)
    r.stop_document({"run_start": "grid-A", "exit_status": "success"}, now=0.2)
    assert r.expire(0.2 + STOPPED_GRACE_S) == []  # a header in transit may still take it
    (expired,) = r.expire(0.21 + STOPPED_GRACE_S)
    assert (expired.uid, expired.stopped) == ("grid-A", True)
    assert r.series_start(header(1), now=2.0) == []  # waits for its own document


def test_a_header_in_transit_still_takes_a_document_whose_stop_came_first():
    r = router(document_wait_s=5.0)
    r.start_document(EIGER_GRID, now=0.0)
    r.stop_document({"run_start": "grid-A", "exit_status": "abort", "reason": "user pressed Abort"}, now=0.1)
    events = r.series_start(header(1), now=0.2)
    assert events[0].run.uid == "grid-A"
    # and the run ends as its stop document said (its file must not show a map that looks complete)
    assert kinds(events) == ["RunBegun", "RunExit", "SeriesAssigned"]
    assert (events[1].exit_status, events[1].reason) == ("abort", "user pressed Abort")
    assert events[0].run.exit_status == "abort"


def test_documents_without_a_time_never_go_stale():
    r = router(document_wait_s=1.0)
    r.start_document(EIGER_GRID)
    assert r.expire(1e9) == []
    assert [type(e).__name__ for e in r.expire(0.0, force=True)] == ["DocumentExpired"]


# --- events: frames placed by the run's events, series matched by the id they name ---------------

def descriptor(run_uid: str, uid: str = "d-1", name: str = "primary") -> dict:
    return {"uid": uid, "run_start": run_uid, "name": name}


def event(seq: int, image: int | None, series: int | None = None, desc: str = "d-1", det: str = "eiger") -> dict:
    data = {"piezo_x": 0.1}
    if image is not None:
        data[f"{det}_image_number"] = image
    if series is not None:
        data[f"{det}_series"] = series
    return {"descriptor": desc, "seq_num": seq, "data": data}


def test_events_place_frames_after_a_pause_and_resume():
    """A suspender paused point 3 (0-based) after its trigger; on resume the RunEngine triggered it
    again: frame 4 is point 3 and every later frame one point before its number."""
    r = router(detector="eiger")
    r.start_document(GRID)
    run = r.series_start(header(7, nimages=12), now=0.0)[0].run
    r.descriptor_document(descriptor("grid-1"))
    placed = []
    for seq, image in [(1, 0), (2, 1), (3, 2), (4, 4), (5, 5), (12, 12)]:  # frame 3: interrupted, no event
        placed += r.event_document(event(seq, image, series=7))
    assert [(p.run, p.series, p.frame, p.slot) for p in placed] == [
        (run, 7, 0, 0), (run, 7, 1, 1), (run, 7, 2, 2), (run, 7, 4, 3), (run, 7, 5, 4), (run, 7, 12, 11)]


def test_events_of_other_streams_and_malformed_events_place_nothing():
    r = router(detector="eiger")
    r.start_document(GRID)
    r.series_start(header(1), now=0.0)
    r.descriptor_document(descriptor("grid-1", uid="base", name="baseline"))
    assert r.event_document(event(1, 0, desc="base")) == []          # a baseline reading is no point
    assert r.event_document(event(1, 0, desc="unknown")) == []       # a descriptor never seen
    r.descriptor_document(descriptor("grid-1"))
    for bad in (event(0, 0), event(1, -1), event(1, True), event(1, 2.5), {"descriptor": "d-1"},
                {"descriptor": "d-1", "seq_num": 1, "data": "junk"}, event(99, 0), "junk", None):
        assert r.event_document(bad) == [], bad                        # seq 99: beyond the 12 points
    # without <det>_series: the run's only series
    (p,) = r.event_document(event(2, 1))
    assert (p.series, p.frame, p.slot) == (1, 1, 1)
    # another detector's image number is not ours
    assert r.event_document(event(3, 2, det="pilatus")) == []


def test_an_event_naming_another_runs_series_is_not_used(caplog):
    r = router(detector="eiger")
    r.start_document(GRID)
    r.series_start(header(1), now=0.0)
    r.descriptor_document(descriptor("grid-1"))
    for _ in range(2):
        assert r.event_document(event(1, 0, series=5)) == []
    assert sum("name series 5" in m for m in caplog.messages) == 1


def test_events_grow_a_strip_to_the_point_they_name():
    r = router(detector="eiger")
    r.start_document({"uid": "strip", "num_points": 2, "detectors": ["eiger"]})
    run = r.series_start(header(1), now=0.0)[0].run
    r.descriptor_document(descriptor("strip"))
    events = r.event_document(event(6, 6))
    assert kinds(events) == ["StripGrown", "FramePlaced"] and events[1].slot == 5 and run.n_frames >= 6


def test_once_events_name_series_headers_are_matched_by_them_not_by_time():
    """A stale start document (its series never came) and the next run's: with series ids the next
    header takes the run its events name, not the oldest document."""
    r = router(detector="eiger", document_wait_s=5.0)
    r.start_document({**GRID, "uid": "a"}, now=0.0)
    r.series_start(header(1), now=0.0)
    r.descriptor_document(descriptor("a", uid="da"))
    r.event_document(event(1, 0, series=1, desc="da"))                # the events name series: ids from now on
    r.start_document({**GRID, "uid": "stale"}, now=1.0)                 # a run whose series never comes
    r.start_document({**GRID, "uid": "b"}, now=1.1)
    assert r.series_start(header(2), now=1.2) == []                     # waits for an event naming it
    r.descriptor_document(descriptor("b", uid="db"))
    events = r.event_document(event(1, 0, series=2, desc="db"), now=1.3)
    assert kinds(events) == ["RunComplete", "RunBegun", "SeriesAssigned", "FramePlaced"]
    assert events[1].run.uid == "b" and r.run_of(2).uid == "b"
    # a header no event names in time takes the oldest waiting document after all (time order)
    r.start_document({**GRID, "uid": "c"}, now=2.0)
    r.series_start(header(3), now=2.0)
    events = r.expire(now=7.5)
    assert r.run_of(3).uid == "stale"                                   # the oldest one still waiting
    assert "DocumentTimedOut" not in kinds(events)


def test_series_end_moves_the_next_offset_by_what_the_header_announced():
    r = router()
    r.start_document({"uid": "s", "num_points": 1})
    run = r.series_start(header(1, nimages=10), now=0.0)[0].run
    for k in (0, 1, 2):            # the detector stopped after 3 of its 10 frames
        r.frame(1, k)
    r.series_end(1)
    assert run.next_offset == 10
