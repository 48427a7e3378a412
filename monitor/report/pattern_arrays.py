"""The arrays behind ``nanomaps pattern``'s figure, as ``.npy`` or HDF5 for the user's own tools."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from monitor.report.pattern_figure import PatternFigureData
from monitor.session.scan_pattern import ScanPattern


def save_pattern_npy(path: str | Path, data: PatternFigureData) -> None:
    """The shown image, float64 ``(rows, cols)``, NaN where masked or never valid."""
    with open(path, "wb") as fh:  # np.save(str) would append .npy to a name without it
        np.save(fh, data.image, allow_pickle=False)


def save_pattern_h5(path: str | Path, scan: ScanPattern, data: PatternFigureData) -> None:
    """``/pattern``: sum, count, max, mask, the shown image and its (q, χ) histogram with edges, units in attrs."""
    p = scan.pattern
    with h5py.File(path, "w") as f:
        g = f.create_group("pattern")
        g.attrs["master"] = str(scan.master)
        g.attrs["first_frame"], g.attrs["stop_frame"] = scan.frames
        g.attrs["frames_read"] = p.frames
        g.attrs["frames_skipped"] = scan.skipped
        g.attrs["stat"] = data.stat
        for name, values, unit in (("sum", p.sums, "counts"), ("count", p.counts, "frames"),
                                   ("max", p.maxima, "counts"), ("image", data.image, data.stat)):
            ds = g.create_dataset(name, data=values, compression="gzip", compression_opts=4, shuffle=True)
            ds.attrs["units"] = unit
        g.create_dataset("mask", data=p.mask.astype(np.uint8), compression="gzip")
        g["mask"].attrs["meaning"] = "1 = excluded (detector, file pixel_mask, config mask)"
        pol = g.create_group("polar")
        pol.create_dataset("values", data=data.polar).attrs["axes"] = "q, chi"
        pol.create_dataset("q_edges", data=data.q_edges).attrs["units"] = "1/angstrom"
        pol.create_dataset("chi_edges", data=data.chi_edges).attrs["units"] = "degrees"
