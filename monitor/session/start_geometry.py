"""A run's map geometry from its bluesky start document.

The session reads this, not the bluesky layer: a start document is plain data (a
mapping), and which frame lands on which map point is the session's business.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from stream.raster_scan import RasterScan


def geometry_from_start(doc: Mapping[str, Any]) -> RasterScan | None:
    """Which frame is which map point, from a run's start document; None without a 2-D grid.

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
    """
    shape = doc.get("shape")
    if shape is None or len(shape) != 2:
        return None
    try:
        rows, cols = int(shape[0]), int(shape[1])
    except (TypeError, ValueError):
        return None
    if rows < 1 or cols < 1:
        return None
    motors = doc.get("motors")
    names = (str(motors[0]), str(motors[1])) if motors is not None and len(motors) == 2 else ("y", "x")
    snaking = doc.get("snaking")
    if snaking is not None:
        snake = bool(len(snaking) > 1 and snaking[1])
    else:  # list_grid_scan: repr(snake_axes): "True", "False" or a list of device reprs
        axes = str(doc.get("snake_axes", "False"))
        snake = axes == "True" or f"name='{names[1]}'" in axes
    step = None
    origin = (0.0, 0.0)
    if doc.get("plan_name") == "list_grid_scan":
        axes = _list_grid_axes(doc)
        if axes is not None:
            step, origin = (axes[0][0], axes[1][0]), (axes[0][1], axes[1][1])
    else:
        extents = doc.get("extents")
        if extents is not None and len(extents) == 2 and all(len(e) == 2 for e in extents):
            (y0, y1), (x0, x1) = ((float(a), float(b)) for a, b in extents)
            step = ((y1 - y0) / (rows - 1) if rows > 1 else 0.0, (x1 - x0) / (cols - 1) if cols > 1 else 0.0)
            origin = (y0, x0)
    return RasterScan(shape=(rows, cols), snake=snake, step=step, origin=origin, motors=names)


def _list_grid_axes(doc: Mapping[str, Any]) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """``((step, first), (step, first))`` of list_grid_scan's position lists when both are evenly spaced."""
    try:
        args = doc["plan_args"]["args"]
        lists = [np.asarray(args[1], dtype=float), np.asarray(args[3], dtype=float)]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    out = []
    for positions in lists:
        if positions.ndim != 1 or positions.size == 0:
            return None
        steps = np.diff(positions)
        step = float(steps[0]) if steps.size else 0.0
        if steps.size and not np.allclose(steps, step, rtol=1e-6, atol=1e-9):
            return None
        out.append((step, float(positions[0])))
    return out[0], out[1]
