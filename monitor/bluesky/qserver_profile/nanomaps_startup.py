"""Startup code of the bluesky-queueserver worker for nanomaps (loaded with ``--startup-dir``).

Defines what the queue server may run: a RunEngine ``RE``, two simulated piezo motors
``piezo_y`` (slow, rows) and ``piezo_x`` (fast, columns), a simulated point detector
``det`` and the plans ``grid_scan`` and ``count``. At a beamline this directory is
replaced by the beamline's own profile; the names must match ``[scan] motors`` and
``[rescan] limits`` of the nanomaps config.

Documents: when ``NANOMAPS_DOCUMENTS_PROXY`` is set (``tcp://HOST:PORT`` of a bluesky
0MQ proxy's input), every document is published there with msgpack (never pickle).
"""

import os

from bluesky import RunEngine
from bluesky.plans import count, grid_scan  # noqa: F401  (the queue server lists them as plans)
from ophyd.sim import SynAxis, SynGauss

RE = RunEngine({})

piezo_y = SynAxis(name="piezo_y", labels={"motors"})
piezo_x = SynAxis(name="piezo_x", labels={"motors"})
det = SynGauss("det", piezo_x, "piezo_x", center=8.0, Imax=1000.0, sigma=4.0, labels={"detectors"})

_proxy = os.environ.get("NANOMAPS_DOCUMENTS_PROXY")
if _proxy:
    from monitor.bluesky.documents import DocumentPublisher

    RE.subscribe(DocumentPublisher(_proxy))
