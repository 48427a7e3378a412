"""Rescans: the request a user makes on a map, its checks, and who runs it (``PlanRunner``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from processors.config import RescanConfig


class RescanRefused(ValueError):
    """A rescan that may not run; the message says which rule and how to fix the request."""


@dataclass(frozen=True)
class GridScanRequest:
    """A finer grid scan over a rectangle of a map, in motor units (µm).

    ``slow_*`` is the row (outer) motor, ``fast_*`` the column (inner) motor; ``num``
    counts points including both ends, as bluesky's ``grid_scan`` does. ``parent_uid``
    is the run the rectangle was drawn on; it goes into the new run's start document.
    """

    slow_motor: str
    slow_start: float
    slow_stop: float
    slow_num: int
    fast_motor: str
    fast_start: float
    fast_stop: float
    fast_num: int
    snake: bool = False
    plan: str = "grid_scan"
    parent_uid: str | None = None
    md: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.slow_num, self.fast_num)

    @property
    def step(self) -> tuple[float, float]:
        """Step (µm) along slow and fast axes (0 for a single point)."""
        def step(a, b, n):
            return (b - a) / (n - 1) if n > 1 else 0.0
        return (step(self.slow_start, self.slow_stop, self.slow_num),
                step(self.fast_start, self.fast_stop, self.fast_num))


def check_rescan(request: GridScanRequest, rules: RescanConfig, *, max_points: int = 250_000) -> None:
    """Raise :class:`RescanRefused` unless ``request`` respects ``rules`` ([rescan] in the config)."""
    if request.plan not in rules.allowed_plans:
        raise RescanRefused(f"plan {request.plan!r} is not allowed here; [rescan] allowed_plans = "
                            f"{list(rules.allowed_plans)}")
    for motor, start, stop, num in ((request.slow_motor, request.slow_start, request.slow_stop, request.slow_num),
                                    (request.fast_motor, request.fast_start, request.fast_stop, request.fast_num)):
        if num < 1:
            raise RescanRefused(f"{motor}: {num} points; a scan needs at least one")
        if motor not in rules.limits:
            raise RescanRefused(f"motor {motor!r} has no limits in [rescan] limits; add {motor} = [low, high] "
                                "(µm) to the config before rescanning with it")
        low, high = rules.limits[motor]
        lo, hi = min(start, stop), max(start, stop)
        if lo < low or hi > high:
            raise RescanRefused(f"{motor} would move to {lo:g}…{hi:g} µm, outside its limits {low:g}…{high:g} µm; "
                                "draw the rectangle inside the limits")
    if request.slow_num * request.fast_num > max_points:
        raise RescanRefused(f"{request.slow_num} × {request.fast_num} points is more than {max_points}; "
                            "use a coarser step or a smaller region")


class PlanRunner(Protocol):
    """Who runs scans: an in-process RunEngine, or bluesky-queueserver."""

    def submit(self, request: GridScanRequest) -> str:
        """Queue or start ``request`` (already checked); returns an id for it."""

    def abort(self) -> str | None:
        """Stop the running scan now (only scans this runner submitted); optionally what was done, one line."""

    @property
    def busy(self) -> bool:
        """True while a scan runs or waits in the queue."""

    def close(self) -> None:
        """Release connections and threads."""
