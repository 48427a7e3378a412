"""Results files made from a template: the runs of a live session share one layout.

Making a results file's layout (``ResultsWriter._create``: about 145 datasets and 235
attributes for three peaks) costs ≈ 50–55 ms of CPU, all of it holding the GIL inside
HDF5 calls, at the moment a series starts: the receiver and the loop that hands frames to
the workers wait for it while the series' first frames arrive (docs/live_path.md). The
layout depends only on the config, the scan, the timing figures and how many inputs are
named; the values that differ from run to run are a handful of strings. So the first file
of a layout is also kept as a template (the bytes of a closed HDF5 file), and each later
file of that layout is the template written out, opened, given its run's strings and
switched to SWMR: ≈ 2–3 ms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable

from processors.config import NanomapsConfig


@dataclass(frozen=True)
class ResultsTemplate:
    """A results file's whole layout: ``image``, the bytes of a closed HDF5 file holding every
    group, dataset and attribute (its run strings those of the run it was made for), and the
    paths of its map datasets (resized together when a scan grows)."""

    image: bytes = field(repr=False)
    map_paths: tuple[str, ...]


class ResultsTemplates:
    """The templates of one session's results files, by layout key; bound to one ``config``
    (a writer with another config makes its file itself)."""

    def __init__(self, config: NanomapsConfig) -> None:
        self.config = config
        self._by_key: dict[Hashable, ResultsTemplate] = {}
        self.built = 0  # templates made (one per layout met)

    def get(self, key: Hashable) -> ResultsTemplate | None:
        return self._by_key.get(key)

    def put(self, key: Hashable, template: ResultsTemplate) -> None:
        self._by_key[key] = template
        self.built += 1
