"""What the live processor publishes and the viewer draws: maps of one run, plus health.

Sent as msgpack (never pickle) on a ZeroMQ PUB socket: arrays travel as raw bytes
with their dtype and shape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

SNAPSHOT_TOPIC = b"maps"


def _pack_array(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": a.tobytes()}


def _unpack_array(d: dict) -> np.ndarray:
    return np.frombuffer(d["data"], dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()


@dataclass(frozen=True)
class MapSnapshot:
    """The maps of one run at one moment.

    ``maps`` holds ``[rows, cols]`` float32 arrays by quantity name: ``intensity``,
    ``<peak>/<param>`` (amplitude, q0, dq, phi0, dphi, dphi_do) and ``derived/<name>``
    (a, b, c, size, microstrain); NaN = not measured or rejected. ``x``/``y`` are the
    column/row positions in motor units (µm) with ``motors`` = (slow, fast) names.
    ``counters`` are the run's frame counters (received, processed, dropped, corrupt,
    late, ...), ``rates`` frames/s and latency (ms), ``progress`` = points measured /
    points in the scan. ``geometry`` says where the map shape came from: ``bluesky``,
    ``config`` or ``strip`` (unknown: a 1-D strip that grows). ``done``: the run's frames
    all came (or the session ended); ``exit_status`` is the bluesky stop document's
    (``"success"``, ``"abort"``, ``"fail"``), ``""`` while the run is open or without bluesky.
    """

    run: str
    maps: dict[str, np.ndarray] = field(repr=False)
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    motors: tuple[str, str] = ("y", "x")
    snake: bool = False
    counters: dict[str, int] = field(default_factory=dict)
    rates: dict[str, float] = field(default_factory=dict)
    progress: float = 0.0
    geometry: str = "config"
    parent_run: str = ""
    peaks: tuple[str, ...] = ()
    behind: bool = False
    done: bool = False
    time: float = field(default_factory=time.time)
    exit_status: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.y), len(self.x))

    def to_bytes(self) -> bytes:
        return msgpack.packb({
            "run": self.run, "maps": {k: _pack_array(v) for k, v in self.maps.items()},
            "x": _pack_array(self.x), "y": _pack_array(self.y), "motors": list(self.motors), "snake": self.snake,
            "counters": self.counters, "rates": self.rates, "progress": self.progress, "geometry": self.geometry,
            "parent_run": self.parent_run, "peaks": list(self.peaks), "behind": self.behind, "done": self.done,
            "time": self.time, "exit_status": self.exit_status}, use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> "MapSnapshot":
        d: dict[str, Any] = msgpack.unpackb(data, raw=False)
        return cls(run=d["run"], maps={k: _unpack_array(v) for k, v in d["maps"].items()},
                   x=_unpack_array(d["x"]), y=_unpack_array(d["y"]), motors=tuple(d["motors"]), snake=d["snake"],
                   counters=dict(d["counters"]), rates=dict(d["rates"]), progress=float(d["progress"]),
                   geometry=d["geometry"], parent_run=d["parent_run"], peaks=tuple(d["peaks"]),
                   behind=bool(d["behind"]), done=bool(d["done"]), time=float(d["time"]),
                   # a publisher from before exit_status existed sends none: "" = unknown/open
                   exit_status=str(d.get("exit_status") or ""))


@dataclass(frozen=True)
class PeakView:
    """One peak of one frame, for the inspector: window, polar patch, fit and residual.

    ``mean``/``model`` are ``(nq, nchi)`` (NaN in empty bins), ``q_centers`` 1/Å,
    ``chi_centers`` degrees (window branch); ``params`` in PARAM_NAMES order;
    ``centre_pixel`` (row, col) of the fitted centre on the detector, or None.
    """

    name: str
    q_centers: np.ndarray
    chi_centers: np.ndarray
    mean: np.ndarray
    model: np.ndarray
    params: np.ndarray
    status: int
    centre_pixel: tuple[float, float] | None = None


@dataclass(frozen=True)
class FrameView:
    """One detector frame fetched on demand: pixels, mask, where the windows are, fits."""

    run: str
    series: int
    frame: int
    row: int
    col: int
    image: np.ndarray                 # (rows, cols) decoded counts (float32; masked pixels as-is)
    mask: np.ndarray                  # (rows, cols) bool, True = masked
    window_labels: np.ndarray         # (rows, cols) uint8: 0 none, k = inside window of peak k-1
    peaks: tuple[PeakView, ...] = ()
    source: str = ""                  # "ring buffer" or the recording it was read from

    def to_bytes(self) -> bytes:
        return msgpack.packb({
            "run": self.run, "series": self.series, "frame": self.frame, "row": self.row, "col": self.col,
            "image": _pack_array(self.image), "mask": _pack_array(self.mask.astype(np.uint8)),
            "window_labels": _pack_array(self.window_labels), "source": self.source,
            "peaks": [{"name": p.name, "q": _pack_array(p.q_centers), "chi": _pack_array(p.chi_centers),
                       "mean": _pack_array(p.mean), "model": _pack_array(p.model), "params": _pack_array(p.params),
                       "status": p.status, "centre": list(p.centre_pixel) if p.centre_pixel else None}
                      for p in self.peaks]}, use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> "FrameView":
        d = msgpack.unpackb(data, raw=False)
        peaks = tuple(PeakView(p["name"], _unpack_array(p["q"]), _unpack_array(p["chi"]), _unpack_array(p["mean"]),
                               _unpack_array(p["model"]), _unpack_array(p["params"]), int(p["status"]),
                               tuple(p["centre"]) if p["centre"] else None) for p in d["peaks"])
        return cls(run=d["run"], series=d["series"], frame=d["frame"], row=d["row"], col=d["col"],
                   image=_unpack_array(d["image"]), mask=_unpack_array(d["mask"]).astype(bool),
                   window_labels=_unpack_array(d["window_labels"]), peaks=peaks, source=d["source"])
