"""Write frames in the DECTRIS file-writer layout: ``<name>_master.h5`` + ``<name>_data_NNNNNN.h5``.

Chunks are written with ``write_direct_chunk``: what arrives compressed is stored as is,
never recompressed. The master links each data file as ``/entry/data/data_NNNNNN``
(external link to ``/entry/data/data``), exactly as the DECTRIS file writer does, so
h5py + hdf5plugin, silx and DIALS open the result.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from stream.detector_metadata import DetectorMetadata

_BSLZ4 = hdf5plugin.Bitshuffle(cname="lz4")
_LZ4 = hdf5plugin.LZ4()


def data_file_name(master_path: Path, index: int) -> str:
    """DECTRIS data-file name for 1-based ``index`` next to ``master_path``."""
    stem = master_path.name
    if stem.endswith("_master.h5"):
        stem = stem[: -len("_master.h5")]
    else:
        stem = master_path.stem
    return f"{stem}_data_{index:06d}.h5"


def _nx_group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    group = parent.require_group(name)
    group.attrs["NX_class"] = np.bytes_(nx_class)
    return group


def _scalar(group: h5py.Group, name: str, value, units: str | None = None, dtype=None) -> None:
    if isinstance(value, str):
        ds = group.create_dataset(name, data=np.bytes_(value))
    else:
        ds = group.create_dataset(name, data=np.asarray(value, dtype=dtype))
    if units:
        ds.attrs["units"] = np.bytes_(units)


class DectrisWriter:
    """Writes one series in the DECTRIS layout; a context manager.

    ``write_chunk(blob, frame)`` stores one already-encoded frame (encoding given at
    construction: ``bslz4``, ``lz4`` or ``raw``) as chunk ``frame``; data file ``k``
    holds frames ``(k − 1) × frames_per_file`` onwards, as the DECTRIS file writer
    does. Files are flushed on each new data file, on :meth:`flush` and on close, so
    an interrupted writer still leaves readable files.
    """

    def __init__(self, master_path: str | Path, metadata: DetectorMetadata, *,
                 encoding: str = "bslz4", frames_per_file: int = 100) -> None:
        if encoding not in ("bslz4", "lz4", "raw"):
            raise ValueError(f"unknown encoding {encoding!r}")
        if frames_per_file < 1:
            raise ValueError("frames_per_file must be >= 1")
        self.master_path = Path(master_path)
        self.metadata = metadata
        self.encoding = encoding
        self.frames_per_file = frames_per_file
        self._data_file: h5py.File | None = None
        self._data_ds: h5py.Dataset | None = None
        self._data_index = 0
        self._next_frame = 0
        self.master_path.parent.mkdir(parents=True, exist_ok=True)
        self._master = h5py.File(self.master_path, "w")
        self._write_master_metadata()

    def _write_master_metadata(self) -> None:
        md = self.metadata
        entry = _nx_group(self._master, "entry", "NXentry")
        entry.attrs["default"] = np.bytes_("data")
        _nx_group(entry, "data", "NXdata")
        instrument = _nx_group(entry, "instrument", "NXinstrument")
        beam = _nx_group(instrument, "beam", "NXbeam")
        _scalar(beam, "incident_wavelength", md.wavelength_A, "angstrom", np.float32)
        det = _nx_group(instrument, "detector", "NXdetector")
        _scalar(det, "description", md.description)
        _scalar(det, "x_pixel_size", md.x_pixel_size_m, "m", np.float32)
        _scalar(det, "y_pixel_size", md.y_pixel_size_m, "m", np.float32)
        _scalar(det, "detector_distance", md.detector_distance_m, "m", np.float32)
        _scalar(det, "beam_center_x", md.beam_center_x_px, "pixel", np.float32)
        _scalar(det, "beam_center_y", md.beam_center_y_px, "pixel", np.float32)
        _scalar(det, "count_time", md.count_time_s, "s", np.float32)
        _scalar(det, "frame_time", md.frame_time_s, "s", np.float32)
        _scalar(det, "bit_depth_image", np.dtype(md.dtype).itemsize * 8, None, np.int32)
        _scalar(det, "pixel_mask_applied", 1, None, np.int32)
        spec = _nx_group(det, "detectorSpecific", "NXcollection")
        _scalar(spec, "x_pixels_in_detector", md.x_pixels, None, np.uint32)
        _scalar(spec, "y_pixels_in_detector", md.y_pixels, None, np.uint32)
        _scalar(spec, "nimages", md.nimages, None, np.uint32)
        _scalar(spec, "ntrigger", md.ntrigger, None, np.uint32)
        _scalar(spec, "compression", {"bslz4": "bslz4", "lz4": "lz4", "raw": "none"}[self.encoding])
        if md.pixel_mask is not None:
            spec.create_dataset("pixel_mask", data=np.asarray(md.pixel_mask, dtype=np.uint32),
                                chunks=True, compression="gzip", compression_opts=4)
        self._master.flush()

    def _open_data_file(self, index: int) -> None:
        """Create data file ``index`` (1-based), holding frames from (index − 1) × frames_per_file."""
        self._close_data_file()
        self._data_index = index
        name = data_file_name(self.master_path, index)
        path = self.master_path.parent / name
        rows, cols = self.metadata.shape
        dtype = np.dtype(self.metadata.dtype)
        self._data_file = h5py.File(path, "w")
        entry = _nx_group(self._data_file, "entry", "NXentry")
        data = _nx_group(entry, "data", "NXdata")
        filters = {"bslz4": dict(_BSLZ4), "lz4": dict(_LZ4), "raw": {}}[self.encoding]
        self._data_ds = data.create_dataset(
            "data", shape=(0, rows, cols), maxshape=(None, rows, cols), dtype=dtype,
            chunks=(1, rows, cols), **filters)
        low = (index - 1) * self.frames_per_file + 1
        self._data_ds.attrs["image_nr_low"] = np.int32(low)
        self._data_ds.attrs["image_nr_high"] = np.int32(low - 1)
        self._master["entry/data"][f"data_{index:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
        self._master.flush()

    def _close_data_file(self) -> None:
        if self._data_file is not None:
            self._data_file.close()
            self._data_file = None
            self._data_ds = None

    def write_chunk(self, blob: bytes, frame: int | None = None) -> None:
        """Store one frame, already encoded as this writer's ``encoding``.

        ``frame`` (0-based series frame number) defaults to the next one; frames must
        come in increasing order, gaps stay unallocated (a reader reports them as not
        recorded) so that chunk ``k`` is always frame ``k``.
        """
        frame = self._next_frame if frame is None else frame
        if frame < self._next_frame:
            raise ValueError(f"frame {frame} written after frame {self._next_frame - 1}: frames must increase")
        index = frame // self.frames_per_file + 1
        if self._data_ds is None or index != self._data_index:
            self._open_data_file(index)
        ds = self._data_ds
        local = frame - (index - 1) * self.frames_per_file
        if ds.shape[0] <= local:
            ds.resize(local + 1, axis=0)
        ds.id.write_direct_chunk((local, 0, 0), blob)
        ds.attrs["image_nr_high"] = np.int32(frame + 1)
        self._next_frame = frame + 1

    @property
    def data_index(self) -> int:
        """1-based index of the data file being written (0 before the first frame)."""
        return self._data_index if self._data_ds is not None else 0

    def read_chunk(self, local: int) -> tuple[int, bytes]:
        """``(filter mask, bytes)`` of chunk ``local`` of the open data file (reading back while recording)."""
        if self._data_ds is None:
            raise KeyError("no data file is open")
        return self._data_ds.id.read_direct_chunk((local, 0, 0))

    @property
    def master(self) -> h5py.File:
        """The open master file (to add groups next to the DECTRIS ones)."""
        return self._master

    def flush(self) -> None:
        """Push what was written so far to disk."""
        if self._data_file is not None:
            self._data_file.flush()
        self._master.flush()

    def close(self) -> None:
        self._close_data_file()
        if self._master.id.valid:
            self._master.close()

    def __enter__(self) -> "DectrisWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
