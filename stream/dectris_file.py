"""Read EIGER frames exactly as the DECTRIS file writer stores them.

A master file ``<name>_master.h5`` links data files ``<name>_data_NNNNNN.h5`` as
``/entry/data/data_NNNNNN``; each holds ``/entry/data/data`` ``(n, rows, cols)`` with
one frame per chunk, bitshuffle-LZ4 (filter 32008) or LZ4 (32004) compressed. Chunks are
read with ``read_direct_chunk`` and handed on still compressed, so decoding happens in
the workers, exactly as for frames from the stream.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle and LZ4 filters for fallbacks)
import numpy as np

from stream.detector_metadata import DetectorMetadata
from stream.encoded_frame import ChunkSource, EncodedFrame

log = logging.getLogger(__name__)

_DATA_LINK = re.compile(r"^data_(\d{6})$")
_DATA_FILE_NAME = re.compile(r"_data_\d{6}\.h5$")
_FILTER_BITSHUFFLE = 32008
_FILTER_LZ4 = 32004
_BSHUF_LZ4 = 2  # bitshuffle filter option: compression = LZ4


class DectrisFileError(OSError):
    """A master file that cannot be used at all (not found, not a DECTRIS master)."""


@dataclass(frozen=True)
class DataPart:
    """One ``/entry/data/data_NNNNNN`` entry of a master file."""

    name: str
    index: int
    filename: str
    frames: int          # frames found in it (0 when unreadable)
    first_frame: int     # 0-based series frame number of its first frame
    error: str = ""      # why it could not be opened, empty when fine


def _read_scalar(group: h5py.Group, path: str, default=None):
    try:
        value = group[path][()]
    except KeyError:
        return default
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.ndarray) and value.shape == (1,):
        value = value[0]
    return value.item() if hasattr(value, "item") else value


def _encoding_of(ds: h5py.Dataset) -> str | None:
    """``bslz4``/``lz4``/``raw`` when chunks can be read directly, else None."""
    if ds.chunks is None or ds.chunks[0] != 1 or tuple(ds.chunks[1:]) != tuple(ds.shape[1:]):
        return None
    plist = ds.id.get_create_plist()
    filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
    if not filters:
        return "raw"
    if len(filters) != 1:
        return None
    code, _flags, values, _name = filters[0]
    if code == _FILTER_BITSHUFFLE and len(values) >= 5 and values[4] == _BSHUF_LZ4:
        return "bslz4"
    if code == _FILTER_LZ4:
        return "lz4"
    return None


class DectrisFile:
    """A DECTRIS master file and its data files; a context manager.

    ``metadata`` describes detector and series; ``parts`` lists the data files with
    what was found in each; :meth:`iter_frames` yields every frame still compressed,
    and an :class:`EncodedFrame` with ``error`` set for each frame that a missing or
    unreadable data file should have held.
    """

    def __init__(self, master_path: str | Path) -> None:
        self.path = Path(master_path)
        if not self.path.is_file():
            raise DectrisFileError(f"{self.path}: no such file (expected a DECTRIS *_master.h5)")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise DectrisFileError(f"{self.path}: not an HDF5 file ({exc})") from exc
        if "entry/data" not in self._file:
            self._file.close()
            raise DectrisFileError(f"{self.path}: no /entry/data group, not a DECTRIS master file")
        if not any(_DATA_LINK.match(n) for n in self._file["entry/data"]):
            reason = self._not_a_master_reason()
            self._file.close()
            raise DectrisFileError(reason)
        self.parts: list[DataPart] = self._scan_parts()
        self.metadata = self._read_metadata()
        self.parts = self._size_unreadable_parts(self.parts, self.metadata.frames_expected)
        if len(self.unreadable_parts) < len(self.parts):
            # some data survive: say which frames will be missing; none at all is check_readable's error
            for part in self.unreadable_parts:
                log.error("%s: %s (frames %d-%d missing)", self.path, part.error, part.first_frame,
                          part.first_frame + part.frames - 1)

    def _not_a_master_reason(self) -> str:
        if "data" in self._file["entry/data"].keys():
            guess = _DATA_FILE_NAME.sub("_master.h5", self.path.name)
            fix = f"pass {guess}" if guess != self.path.name else "pass its *_master.h5"
            return f"{self.path}: a DECTRIS data file, not a master file. Fix: {fix} (it links the data files)"
        return f"{self.path}: /entry/data holds no data_NNNNNN links, not a DECTRIS master file"

    def check_readable(self) -> None:
        """Raise :class:`DectrisFileError` when not one data file of the master can be read.

        Some missing files are survivable (their frames are counted missing); none at all
        means a master copied without its data, which deserves one clear line.
        """
        if self.parts and all(p.error for p in self.parts):
            names = ", ".join(p.filename for p in self.parts[:3]) + (", ..." if len(self.parts) > 3 else "")
            raise DectrisFileError(f"{self.path}: none of its {len(self.parts)} data file(s) can be read "
                                   f"({names}; first error: {self.parts[0].error.split(': ', 1)[-1]}). "
                                   "Fix: copy the *_data_NNNNNN.h5 files next to the master")

    @property
    def unreadable_parts(self) -> list[DataPart]:
        """Data files that are missing or cannot be opened."""
        return [p for p in self.parts if p.error]

    # --- metadata -----------------------------------------------------------------
    def _read_metadata(self) -> DetectorMetadata:
        det = self._file.get("entry/instrument/detector")
        spec = det.get("detectorSpecific") if det is not None else None
        dtype, shape = self._data_dtype_shape()
        x_pixels = int(_read_scalar(spec, "x_pixels_in_detector", shape[1])) if spec is not None else shape[1]
        y_pixels = int(_read_scalar(spec, "y_pixels_in_detector", shape[0])) if spec is not None else shape[0]
        mask = None
        if spec is not None and "pixel_mask" in spec:
            mask = np.asarray(spec["pixel_mask"][()], dtype=np.uint32)
        nimages = int(_read_scalar(spec, "nimages", 0) or 0) if spec is not None else 0
        ntrigger = int(_read_scalar(spec, "ntrigger", 1) or 1) if spec is not None else 1

        def det_value(name, default=0.0):
            return float(_read_scalar(det, name, default)) if det is not None else default

        return DetectorMetadata(
            description=str(_read_scalar(det, "description", "") if det is not None else ""),
            x_pixels=x_pixels, y_pixels=y_pixels, dtype=dtype,
            x_pixel_size_m=det_value("x_pixel_size", 75e-6),
            y_pixel_size_m=det_value("y_pixel_size", 75e-6),
            detector_distance_m=det_value("detector_distance"),
            beam_center_x_px=det_value("beam_center_x"),
            beam_center_y_px=det_value("beam_center_y"),
            wavelength_A=float(_read_scalar(self._file, "entry/instrument/beam/incident_wavelength", 0.0)),
            count_time_s=det_value("count_time"),
            frame_time_s=det_value("frame_time"),
            nimages=nimages, ntrigger=ntrigger,
            compression=str(_read_scalar(spec, "compression", "") if spec is not None else ""),
            pixel_mask=mask,
        )

    def _data_dtype_shape(self) -> tuple[str, tuple[int, int]]:
        for part in self.parts:
            if not part.error:
                ds = self._file["entry/data"][part.name]
                return ds.dtype.name, (int(ds.shape[1]), int(ds.shape[2]))
        # no readable data: fall back on what the master says
        spec = self._file.get("entry/instrument/detector/detectorSpecific")
        bits = int(_read_scalar(self._file, "entry/instrument/detector/bit_depth_image", 32) or 32)
        rows = int(_read_scalar(spec, "y_pixels_in_detector", 0) or 0) if spec is not None else 0
        cols = int(_read_scalar(spec, "x_pixels_in_detector", 0) or 0) if spec is not None else 0
        return {8: "uint8", 16: "uint16"}.get(bits, "uint32"), (rows, cols)

    def _scan_parts(self) -> list[DataPart]:
        group = self._file["entry/data"]
        names = sorted(n for n in group if _DATA_LINK.match(n))
        parts = []
        first = 0
        frames_per_file = None
        for name in names:
            index = int(_DATA_LINK.match(name).group(1))
            link = group.get(name, getlink=True)
            filename = getattr(link, "filename", self.path.name)
            try:
                ds = group[name]
                frames = int(ds.shape[0])
                low = ds.attrs.get("image_nr_low")
                start = int(np.asarray(low).reshape(-1)[0]) - 1 if low is not None else first
                if ds.ndim != 3:
                    raise OSError(f"dataset has {ds.ndim} dimensions, expected 3 (frame, row, col)")
                parts.append(DataPart(name, index, filename, frames, start))
                frames_per_file = frames_per_file or frames
                first = start + frames
            except (KeyError, OSError) as exc:
                reason = f"{name} -> {filename}: cannot open ({exc})"
                guess = frames_per_file or 0
                parts.append(DataPart(name, index, filename, guess, first, error=reason))
                first += guess
        return parts

    @staticmethod
    def _size_unreadable_parts(parts: list[DataPart], expected: int) -> list[DataPart]:
        """Give unreadable parts of unknown size the frames the master says are missing."""
        unknown = [i for i, p in enumerate(parts) if p.error and p.frames == 0]
        missing = expected - sum(p.frames for p in parts)
        if not unknown or missing <= 0:
            return parts
        share, extra = divmod(missing, len(unknown))
        sized, first = [], 0
        for i, p in enumerate(parts):
            frames = p.frames
            if i in unknown:
                frames = share + (1 if unknown.index(i) < extra else 0)
                p = DataPart(p.name, p.index, p.filename, frames, first, p.error)
            sized.append(p)
            first = max(first, p.first_frame + frames)
        return sized

    # --- frames -------------------------------------------------------------------
    @property
    def frame_count(self) -> int:
        """Frames the series holds or should hold (readable + those of missing files)."""
        return max((p.first_frame + p.frames for p in self.parts), default=0)

    def _chunk_location(self, part: DataPart) -> tuple[str, str]:
        """Absolute file and dataset path holding ``part``'s frames."""
        link = self._file["entry/data"].get(part.name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            target = Path(link.filename)
            if not target.is_absolute():
                target = self.path.parent / target
            return str(target.resolve()), link.path
        return str(self.path.resolve()), f"/entry/data/{part.name}"

    def iter_frames(self, series: int = 0, start: int = 0, stop: int | None = None, *,
                    lazy: bool = False) -> Iterator[EncodedFrame]:
        """Yield frames ``start <= frame < stop`` in series order, still compressed.

        ``lazy``: frames whose chunks can be read directly carry a :class:`ChunkSource`
        instead of their bytes (see :class:`ChunkReader`).
        """
        md = self.metadata
        shape = md.shape
        for part in self.parts:
            lo, hi = part.first_frame, part.first_frame + part.frames
            lo_sel, hi_sel = max(lo, start), hi if stop is None else min(hi, stop)
            if lo_sel >= hi_sel:
                continue
            if part.error:
                for k in range(lo_sel, hi_sel):
                    yield EncodedFrame(series, k, "raw", md.dtype, shape, b"", error=part.error)
                continue
            ds = self._file["entry/data"][part.name]
            encoding = _encoding_of(ds)
            dtype = ds.dtype.name
            fshape = (int(ds.shape[1]), int(ds.shape[2]))
            location = self._chunk_location(part) if lazy and encoding is not None else None
            if location is not None:
                path, name = location
                for k in range(lo_sel, hi_sel):  # positional: a replay makes thousands a second
                    yield EncodedFrame(series, k, encoding, dtype, fshape, b"", 0.0, "", ChunkSource(path, name, k - lo))
                continue
            for k in range(lo_sel, hi_sel):
                i = k - lo
                try:
                    if encoding is None:
                        blob, enc = np.ascontiguousarray(ds[i]).tobytes(), "raw"
                    else:
                        filter_mask, blob = ds.id.read_direct_chunk((i, 0, 0))
                        enc = "raw" if (filter_mask & 1 and encoding != "raw") else encoding
                    yield EncodedFrame(series, k, enc, dtype, fshape, blob)
                except (OSError, KeyError, ValueError, RuntimeError) as exc:
                    # RuntimeError: an unallocated chunk (a frame the recorder never received)
                    yield EncodedFrame(series, k, "raw", dtype, fshape, b"",
                                       error=f"{part.filename} frame {i}: read failed ({exc})")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "DectrisFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ChunkReader:
    """Reads the chunks of lazy frames (:class:`ChunkSource`), keeping a few files open.

    One per worker process. A chunk whose filter was skipped by the writer (HDF5
    filter mask) comes back as ``raw``.

    ``reuse_buffer``: each chunk is read into one buffer kept by the reader (grown to the
    largest chunk seen) and the frame's ``blob`` is a memoryview of it, valid until the next
    :meth:`read`: a worker that decodes each frame before reading the next saves a fresh
    allocation of a few MB per frame, and its page faults (with the dataset lookup kept
    below, ≈ 0.3 ms per EIGER 4M frame, measured: docs/partial_decode.md). False (the
    default): ``blob`` is ``bytes`` of its own.
    """

    def __init__(self, max_open: int = 4, *, reuse_buffer: bool = False) -> None:
        self.max_open = max_open
        self.reuse_buffer = reuse_buffer
        self._buffer = np.empty(0, dtype=np.uint8)
        # path → (open file, {dataset path: dataset}): h5py's lookup of a dataset by path
        # costs tens of µs, as much per frame as a small chunk's read
        self._open: dict[str, tuple[h5py.File, dict[str, h5py.Dataset]]] = {}

    def _dataset(self, source: ChunkSource) -> h5py.Dataset:
        entry = self._open.pop(source.path, None)
        if entry is None:
            if len(self._open) >= self.max_open:
                oldest = next(iter(self._open))
                self._open.pop(oldest)[0].close()
            entry = (h5py.File(source.path, "r"), {})
        self._open[source.path] = entry  # most recently used last
        f, datasets = entry
        ds = datasets.get(source.dataset)
        if ds is None:
            ds = datasets[source.dataset] = f[source.dataset]
        return ds

    def _read_chunk(self, ds: h5py.Dataset, index: int) -> tuple[int, bytes | memoryview]:
        coord = (index,) + (0,) * (ds.ndim - 1)
        if not self.reuse_buffer:
            return ds.id.read_direct_chunk(coord)
        try:
            return ds.id.read_direct_chunk(coord, out=self._buffer)
        except ValueError:
            size = ds.id.get_chunk_info_by_coord(coord).size
            if size <= self._buffer.size:
                raise
            # grown with room to spare: compressed sizes vary from frame to frame
            self._buffer = np.empty(size + size // 4, dtype=np.uint8)
            return ds.id.read_direct_chunk(coord, out=self._buffer)

    def read(self, frame: EncodedFrame) -> EncodedFrame:
        """``frame`` with its bytes, or with ``error`` set when they cannot be read."""
        source = frame.source
        if source is None or frame.blob:
            return frame
        try:
            filter_mask, blob = self._read_chunk(self._dataset(source), source.index)
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            # RuntimeError: an unallocated chunk (a frame the recorder never received)
            return replace(frame, error=f"{Path(source.path).name} frame {source.index}: read failed ({exc})")
        encoding = "raw" if (filter_mask & 1 and frame.encoding != "raw") else frame.encoding
        return frame.with_blob(blob, encoding)

    def close(self) -> None:
        for f, _ in self._open.values():
            f.close()
        self._open.clear()
