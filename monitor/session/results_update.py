"""What one write of a results file carries: the parts of a run that changed since the last one.

The live loop takes a :class:`ResultsUpdate` from a run's :class:`MapCollector` (on its own
thread) and hands it to the writer thread; the update holds copies only, so the collector
goes on filling while the file is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from monitor.session.map_collector import MapCollector, MapRegion, ResultMaps
from processors.config import NanomapsConfig
from stream.raster_scan import RasterScan


@dataclass(frozen=True)
class ResultsUpdate:
    """Changes to write into a results file.

    ``maps`` are the maps of ``region`` only (``region.shape``), or None when no point changed.
    ``new_frames`` are rows to append to the per-frame table; ``frames``, when given, is the
    whole table in slot order and replaces it (a final or full write). ``counters`` and
    ``timing`` (ms) replace the stored values; an empty string leaves its field as it is.
    ``full``: it holds every map point and the whole table (it repairs a file after a failed write).
    ``hot_pixels``: every hot pixel of the run so far, ``(n, 2)`` int64 (row, col) (replaces the stored list).
    """

    scan: RasterScan
    region: MapRegion | None
    maps: ResultMaps | None
    new_frames: np.ndarray
    frames: np.ndarray | None
    counters: dict[str, int]
    timing: dict[str, float] = field(default_factory=dict)
    exit_status: str = ""
    stopped_by: str = ""
    error: str = ""
    final: bool = False
    full: bool = False
    hot_pixels: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))


def take_update(collector: MapCollector, config: NanomapsConfig, *, full: bool = False, final: bool = False,
                timing: dict[str, float] | None = None, exit_status: str = "", stopped_by: str = "",
                error: str = "") -> ResultsUpdate:
    """The changes of ``collector`` since its last update (its filled slots are taken).

    ``full``: every map point and the whole frames table (a complete rewrite). ``final``: the
    end of a run: the frames table is rewritten whole, in slot order (appended rows come in
    the order frames were filled), and ``end_time`` is set.
    """
    filled = collector.take_filled()
    scan = collector.scan
    if full:
        region: MapRegion | None = MapRegion(0, scan.shape[0], 0, scan.shape[1])
    else:
        region = MapRegion.around(*scan.points_of(filled))
    maps = None if region is None else collector.result_maps(config.peaks, config.derived,
                                                              config.williamson_hall_peaks, region)
    # frames moved by the run's events: rows already in the file would be wrong, rewrite the table
    whole = full or final or collector.take_moved()
    return ResultsUpdate(scan=scan, region=region, maps=maps,
                         new_frames=collector.frames_table(filled[:0] if whole else filled),
                         frames=collector.frames_table() if whole else None,
                         counters=collector.counters.as_dict(), timing=dict(timing or {}),
                         exit_status=exit_status, stopped_by=stopped_by, error=error, final=final, full=full,
                         hot_pixels=collector.hot_pixels)
