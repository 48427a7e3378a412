"""Which processing setup each series of a live session is processed with.

The config gives the base setup (checked and built at start, so a bad config fails before
data flow). A series header may bring the detector's mask and shape: its setup is checked
here, once, and built by the workers as soon as the header arrives (``BatchRunner.prepare``),
not once the series' first batch reaches them (at 560 frames/s every 0.1 s is 56 frames
waiting). A header the config cannot serve falls back on the base setup: its frames then
reach the workers and are counted and mapped as ``wrong_shape``, never silently skipped.
"""

from __future__ import annotations

import logging

from monitor.session.batch_runner import BatchRunner
from processors.config import ConfigError, NanomapsConfig
from processors.frame_processor import check_setup
from processors.geometry import GeometryError
from processors.process_batch import processor_for
from processors.processing_setup import ProcessingSetup
from stream.stream_messages import SeriesStart

log = logging.getLogger("nanomaps.process")


class SeriesSetups:
    """The base setup, each series' setup, and which setups the workers were given to build.

    Raises ``ConfigError`` / ``GeometryError`` at construction for a config that cannot be
    processed (the base setup is built here, in this process)."""

    def __init__(self, config: NanomapsConfig) -> None:
        self.config = config
        self.base = ProcessingSetup.from_config(config)
        processor_for(self.base)
        self._by_series: dict[int, ProcessingSetup] = {}
        self.prepared: set[ProcessingSetup] = {self.base}  # the workers warm up with the base
        # setups that passed check_setup: a beamtime's scans mostly repeat one header, whose check
        # (≈ 3 ms of CPU for an EIGER 4M, many times that in wall time while the cores are busy
        # with the frames) need not be done again before its frames can go to the workers
        self._checked: set[ProcessingSetup] = {self.base}

    def of_series(self, series: int) -> ProcessingSetup:
        """The setup ``series`` was given at its header (the base one for a series never started)."""
        return self._by_series.get(series, self.base)

    def start(self, header: SeriesStart, runner: BatchRunner | None, *, recording: bool = False) -> ProcessingSetup:
        """The setup for the series ``header`` starts: made from its mask and shape, handed to
        ``runner``'s workers to build if they have not had it, then checked (the workers' build
        of a setup that fails the check fails too, harmlessly). ``recording``: the message for
        a refused header says the frames are still recorded."""
        try:
            setup = ProcessingSetup.from_config(self.config, pixel_mask=header.pixel_mask, shape=header.shape)
            if runner is not None and setup not in self.prepared:
                self.prepared.add(setup)
                runner.prepare(setup, header.dtype)
            if setup not in self._checked:
                check_setup(setup)  # fails here, clearly, not in every worker
                self._checked.add(setup)
        except (ConfigError, GeometryError) as exc:
            log.error("series %d: %s (its frames are counted as wrong_shape%s)", header.series, exc,
                      ", and recorded" if recording else "")
            setup = self.base
        self._by_series[header.series] = setup
        return setup
