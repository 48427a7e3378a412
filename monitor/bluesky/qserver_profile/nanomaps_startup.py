"""Startup code of the bluesky-queueserver worker for nanomaps (loaded with ``--startup-dir``).

Defines what the queue server may run: a RunEngine ``RE``, two simulated piezo motors
``piezo_y`` (slow, rows) and ``piezo_x`` (fast, columns), a simulated point detector
``det`` and the plan ``grid_scan`` (``user_group_permissions.yaml`` allows exactly these).
At a beamline this directory is replaced by the beamline's own profile; the names must
match ``[scan] motors`` and ``[rescan] limits`` of the nanomaps config.

Motor limits (µm): ``NANOMAPS_RESCAN_LIMITS`` is JSON ``{"piezo_y": [low, high], ...}``,
the numbers of the config's ``[rescan] limits`` (``queue_server_environment`` in
``monitor/bluesky/queue_server_runner.py`` writes it). ``grid_scan`` refuses a range
outside them before the run opens, so nothing moves; the motors refuse such a move
themselves too (soft limits). A motor without limits does not move at all: a server
started without the variable refuses every scan, with the reason.

Documents: when ``NANOMAPS_DOCUMENTS_PROXY`` is set (``tcp://HOST:PORT`` of a bluesky
0MQ proxy's input), every document is published there with msgpack (never pickle).
"""

import json
import os
import typing

from bluesky import RunEngine
from bluesky import plans as bp
from bluesky_queueserver import parameter_annotation_decorator
from ophyd.sim import SynAxis, SynGauss
from ophyd.utils import LimitError

RE = RunEngine({})

_LIMITS_VARIABLE = "NANOMAPS_RESCAN_LIMITS"


def _read_limits(text):
    """``{motor: (low, high)}`` (µm) from the JSON in ``NANOMAPS_RESCAN_LIMITS`` ("" or unset: none)."""
    if not text:
        return {}
    raw = json.loads(text)
    limits = {}
    for motor, pair in raw.items():
        low, high = (float(x) for x in pair)
        if not low < high:
            raise ValueError(f"{_LIMITS_VARIABLE}: {motor} limits {pair!r} are not [low, high] with low < high")
        limits[motor] = (low, high)
    return limits


_limits = _read_limits(os.environ.get(_LIMITS_VARIABLE, ""))


def _outside(motor_name, low_wanted, high_wanted):
    """Why moving ``motor_name`` over ``low_wanted``…``high_wanted`` µm is refused, or "" when allowed."""
    if motor_name not in _limits:
        return (f"{motor_name} has no limits on this queue server: start it with {_LIMITS_VARIABLE} "
                f"(the nanomaps config's [rescan] limits)")
    low, high = _limits[motor_name]
    if low_wanted < low or high_wanted > high:
        return (f"{motor_name} would move to {low_wanted:g}…{high_wanted:g} µm, outside its limits "
                f"{low:g}…{high:g} µm")
    return ""


class LimitedAxis(SynAxis):
    """A simulated axis with soft limits from ``NANOMAPS_RESCAN_LIMITS``: a move outside raises LimitError."""

    @property
    def limits(self):
        """(low, high) µm; (0, 0), ophyd's "none", when none were given (and then every move is refused)."""
        return _limits.get(self.name, (0.0, 0.0))

    def set(self, value, **kwargs):
        why = _outside(self.name, value, value)
        if why:
            raise LimitError(why)
        return super().set(value, **kwargs)


piezo_y = LimitedAxis(name="piezo_y", labels={"motors"})
piezo_x = LimitedAxis(name="piezo_x", labels={"motors"})
det = SynGauss("det", piezo_x, "piezo_x", center=8.0, Imax=1000.0, sigma=4.0, labels={"detectors"})


@parameter_annotation_decorator({
    "description": "bluesky's grid_scan, refused before the run opens when a motor range leaves its limits.",
    "parameters": {
        # enums of device names: any other name (a subdevice, an unknown device) fails validation
        # when the item is queued (the built-in __READABLE__/__MOVABLE__ would accept any string)
        "detectors": {"annotation": "typing.List[Detectors]", "devices": {"Detectors": ["det"]}},
        "args": {"annotation": "typing.Union[Motors, float, int]", "devices": {"Motors": ["piezo_y", "piezo_x"]},
                 "description": "motor, start, stop, num for each axis (slowest first), µm"},
    },
})
def grid_scan(detectors, *args, snake_axes: bool = False, md: typing.Optional[dict] = None):  # noqa: UP007
    """bluesky.plans.grid_scan after checking every motor's start…stop against its limits (µm)."""
    # md is annotated so that the server leaves its strings alone: in unannotated parameters it
    # replaces every device name by the device (e.g. "piezo_y" in nanomaps_request)
    if len(args) % 4:
        raise ValueError(f"grid_scan takes motor, start, stop, num per axis; got {len(args)} arguments")
    for i in range(0, len(args), 4):
        motor, start, stop = args[i:i + 3]
        why = _outside(motor.name, min(start, stop), max(start, stop))
        if why:
            raise LimitError(f"grid_scan refused: {why}")
    return (yield from bp.grid_scan(detectors, *args, snake_axes=snake_axes, md=md))


_proxy = os.environ.get("NANOMAPS_DOCUMENTS_PROXY")
if _proxy:
    from monitor.bluesky.documents import DocumentPublisher

    RE.subscribe(DocumentPublisher(_proxy))
