"""A run's map geometry from its bluesky start document.

The session reads this, not the bluesky layer: a start document is plain data (a
mapping), and which frame lands on which map point is the session's business.

A start document comes from another program over the network, so reading it is total:
whatever a key holds (wrong types, None, strings, nested junk, NaN, negative or huge
numbers), :func:`geometry_from_start` answers a valid :class:`RasterScan` or None (the
router then makes a 1-D strip), never an exception. Maps larger than
:data:`MAX_MAP_POINTS` points, or :data:`MAX_MAP_SIDE` along one side, are refused the
same way (their arrays would not fit in memory).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stream.raster_scan import RasterScan

log = logging.getLogger(__name__)

#: The most points a map from a start document may have (a float64 map of this many is 80 MB).
MAX_MAP_POINTS = 10_000_000
#: The most points along one side of a map from a start document.
MAX_MAP_SIDE = 100_000


def geometry_from_start(doc: Mapping[str, Any]) -> RasterScan | None:
    """Which frame is which map point, from a run's start document; None without a usable 2-D grid.

    Uses what ``bluesky.plans.grid_scan`` writes: ``shape`` ``[rows, cols]`` (slow,
    fast), ``extents`` ``[[slow_start, slow_stop], [fast_start, fast_stop]]`` in motor
    units, ``snaking`` ``[False, snake]`` and ``motors`` ``[slow, fast]``. Frame ``k``
    is event ``seq_num = k + 1``; in a snake scan every odd row runs from ``fast_stop``
    back to ``fast_start``, as bluesky moves. ``step`` may be negative (a scan that runs
    downwards) and is 0 along an axis with one point.

    Other plans: ``list_grid_scan`` writes no ``snaking`` but ``snake_axes`` (a repr)
    and min/max ``extents``; its position lists (``plan_args``) give the step when they
    are evenly spaced, else ``step`` is None (positions unknown, the grid still maps).
    ``rel_grid_scan``'s extents are relative to where the motors stood when the run
    began, so ``origin`` is relative too (the first event has the absolute positions).
    ``scan``, ``count`` and other 1-D plans have no 2-D ``shape``: None.

    Never raises: see :func:`geometry_and_problem` for why a document gives None.
    """
    return geometry_and_problem(doc)[0]


def geometry_and_problem(doc: Any) -> tuple[RasterScan | None, str]:
    """``(scan, "")``, or ``(None, why)``: ``why`` is ``""`` for a document without ``shape``
    (a 1-D plan: a strip is expected), else what is wrong with its geometry. Never raises."""
    if not isinstance(doc, Mapping):
        return None, f"the start document is {type(doc).__name__}, not a mapping"
    if "shape" not in doc:
        return None, ""
    shape = _pair(doc.get("shape"))
    rows, cols = (whole_number(v) for v in shape) if shape is not None else (None, None)
    if rows is None or cols is None:
        return None, f"shape {_short(doc.get('shape'))} is not [rows, cols] of positive integers"
    if max(rows, cols) > MAX_MAP_SIDE or rows * cols > MAX_MAP_POINTS:
        return None, (f"shape [{rows}, {cols}] is larger than a map may be ({MAX_MAP_SIDE} per side, "
                      f"{MAX_MAP_POINTS} points)")
    motors = _pair(doc.get("motors"))
    names = (motors[0], motors[1]) if motors is not None and all(isinstance(m, str) for m in motors) else ("y", "x")
    snake = _snake(doc, names[1])
    step = None
    origin = (0.0, 0.0)
    if doc.get("plan_name") == "list_grid_scan":
        axes = _list_grid_axes(doc)
        if axes is not None:
            step, origin = (axes[0][0], axes[1][0]), (axes[0][1], axes[1][1])
    else:
        extents = _pair(doc.get("extents"))
        ends = [_pair(e) for e in extents] if extents is not None else [None]
        values = [[_finite(v) for v in e] for e in ends if e is not None]
        if len(values) == 2 and all(v is not None for e in values for v in e):
            (y0, y1), (x0, x1) = values
            dy = (y1 - y0) / (rows - 1) if rows > 1 else 0.0
            dx = (x1 - x0) / (cols - 1) if cols > 1 else 0.0
            if math.isfinite(dy) and math.isfinite(dx):
                step, origin = (dy, dx), (y0, x0)
    return RasterScan(shape=(rows, cols), snake=snake, step=step, origin=origin, motors=names), ""


def _pair(value: Any) -> Sequence[Any] | None:
    """``value`` if it is a list or tuple of two items, else None."""
    return value if isinstance(value, (list, tuple)) and len(value) == 2 else None


def whole_number(value: Any, minimum: int = 1) -> int | None:
    """An integer ≥ ``minimum`` from a document value (an int, or a float with an integer value),
    else None (bools, strings, fractions, NaN, ... are not counts)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and value >= minimum else None


def _finite(value: Any) -> float | None:
    """A finite number as a float, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _flag(value: Any) -> bool:
    """True for ``True`` or a nonzero integer; anything else is False."""
    return value if isinstance(value, bool) else (isinstance(value, int) and value != 0)


def _snake(doc: Mapping[str, Any], fast: str) -> bool:
    """Does the fast axis snake? ``snaking`` ``[slow, fast]`` (grid_scan) or ``snake_axes`` (list_grid_scan)."""
    snaking = doc.get("snaking")
    if snaking is not None:
        if isinstance(snaking, (list, tuple)):
            return len(snaking) > 1 and _flag(snaking[1])
        return _flag(snaking)
    axes = doc.get("snake_axes", "False")  # repr(snake_axes): "True", "False" or a list of device reprs
    if isinstance(axes, str):
        return axes == "True" or f"name='{fast}'" in axes
    if isinstance(axes, (list, tuple)):
        return any(isinstance(a, str) and (a == fast or f"name='{fast}'" in a) for a in axes)
    return _flag(axes)


def _short(value: Any, limit: int = 80) -> str:
    """A short repr of a (possibly huge or deeply nested) value, for a log line."""
    if isinstance(value, (list, tuple, dict)) and len(value) > 8:
        return f"<{type(value).__name__} of {len(value)} items>"
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # very deep nesting; ints of > 4300 digits
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _list_grid_axes(doc: Mapping[str, Any]) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """``((step, first), (step, first))`` of list_grid_scan's position lists when both are evenly spaced."""
    plan_args = doc.get("plan_args")
    args = plan_args.get("args") if isinstance(plan_args, Mapping) else None
    if not isinstance(args, (list, tuple)) or len(args) < 4:
        return None
    out = []
    for raw in (args[1], args[3]):
        if not isinstance(raw, (list, tuple)) or not 0 < len(raw) <= MAX_MAP_SIDE:
            return None
        values = [_finite(v) for v in raw]
        if any(v is None for v in values):
            return None
        positions = np.asarray(values, dtype=float)
        steps = np.diff(positions)
        step = float(steps[0]) if steps.size else 0.0
        if not np.all(np.isfinite(steps)) or (steps.size and not np.allclose(steps, step, rtol=1e-6, atol=1e-9)):
            return None
        out.append((step, float(positions[0])))
    return out[0], out[1]
