"""Raw recording of a stream in the DECTRIS file-writer layout, as it arrives.

Chunks are stored with ``write_direct_chunk`` exactly as received (stream v1 ``lz4<``
blocks arrive re-framed by the parser); frame ``k`` is chunk ``k``, so a frame that
never arrived leaves a hole the reader reports. Next to the DECTRIS groups the master
file keeps what the stream said, verbatim, under ``/entry/stream``: the header and end
message parts and a per-frame table (series, frame, detector start/stop/real time in
ns, receive time). Every recording opens in h5py + hdf5plugin and ``nanomaps
reprocess``/``replay`` accept it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import h5py
import numpy as np

from stream.chunk_codec import ChunkDecoder, CorruptFrameError, encode_frame
from stream.dectris_writer import DectrisWriter, data_file_name
from stream.detector_metadata import DetectorMetadata
from stream.encoded_frame import EncodedFrame
from stream.stream_messages import ImageMessage, SeriesEnd, SeriesStart

log = logging.getLogger(__name__)

FRAME_TABLE = np.dtype([("series", "<i8"), ("frame", "<i8"), ("start_time_ns", "<i8"), ("stop_time_ns", "<i8"),
                        ("real_time_ns", "<i8"), ("receive_time", "<f8")])


def metadata_from_header(start: SeriesStart, dtype: str, shape: tuple[int, int], encoding: str) -> DetectorMetadata:
    """DECTRIS master-file metadata from a series header, for frames of ``dtype``, ``shape`` and ``encoding``."""
    h = start.header
    return DetectorMetadata(
        description=h.description, x_pixels=shape[1], y_pixels=shape[0], dtype=dtype,
        x_pixel_size_m=h.x_pixel_size_m, y_pixel_size_m=h.y_pixel_size_m,
        detector_distance_m=h.detector_distance_m, beam_center_x_px=h.beam_center_x_px,
        beam_center_y_px=h.beam_center_y_px, wavelength_A=h.wavelength_A, count_time_s=h.count_time_s,
        frame_time_s=h.frame_time_s, nimages=h.nimages, ntrigger=h.ntrigger,
        compression=encoding, pixel_mask=h.pixel_mask)


def series_master_path(base: Path, index: int) -> Path:
    """``base`` for the first series of a run, ``<name>_<index>_master.h5`` for later ones."""
    if index == 1:
        return base
    stem = base.name.removesuffix("_master.h5").removesuffix(".h5")
    return base.with_name(f"{stem}_{index}_master.h5")


class StreamRecorder:
    """Writes every series it is given to DECTRIS files starting at ``master_path``.

    Feed it validated messages (:meth:`on_start`, :meth:`on_image`, :meth:`on_end`);
    :meth:`close` ends an open series (e.g. Ctrl-C) and leaves valid files.
    ``paths`` lists the master files written so far.
    """

    def __init__(self, master_path: str | Path, *, frames_per_file: int = 1000) -> None:
        self.base = Path(master_path)
        self.frames_per_file = frames_per_file
        self.paths: list[Path] = []
        self.frames_recorded = 0
        self._start: SeriesStart | None = None
        self._writer: DectrisWriter | None = None
        self._table: list[tuple] = []
        self._decoder: ChunkDecoder | None = None
        # series → (master path, frames per file, encoding, dtype, shape), for reading frames back
        self._series_files: dict[int, tuple[Path, int, str, str, tuple[int, int]]] = {}
        self._lock = threading.RLock()  # the receiver thread writes, a frame server may read

    def on_message(self, msg) -> None:
        """Take any validated message; what is not part of a series is ignored."""
        with self._lock:
            if isinstance(msg, SeriesStart):
                self.on_start(msg)
            elif isinstance(msg, ImageMessage):
                self.on_image(msg)
            elif isinstance(msg, SeriesEnd):
                self.on_end(msg)

    def read_frame(self, series: int, frame: int) -> EncodedFrame | None:
        """A recorded frame, still compressed, or None (not recorded, or not this run's series)."""
        with self._lock:
            info = self._series_files.get(series)
            if info is None:
                return None
            master, per_file, encoding, dtype, shape = info
            index, local = divmod(frame, per_file)
            writer = self._writer
            try:
                if writer is not None and writer.master_path == master and writer.data_index == index + 1:
                    filter_mask, blob = writer.read_chunk(local)
                else:
                    path = master.parent / data_file_name(master, index + 1)
                    with h5py.File(path, "r") as f:
                        filter_mask, blob = f["entry/data/data"].id.read_direct_chunk((local, 0, 0))
            except (OSError, KeyError, ValueError, RuntimeError):
                return None  # never written (a frame that did not arrive) or beyond the recording
            return EncodedFrame(series, frame, "raw" if (filter_mask & 1 and encoding != "raw") else encoding,
                                dtype, shape, blob)

    def on_start(self, start: SeriesStart) -> None:
        if self._start is not None:
            self._finish(None)
        self._start = start
        self._table = []

    def _open(self, first: ImageMessage) -> None:
        start = self._start
        frame = first.frame
        path = series_master_path(self.base, len(self.paths) + 1)
        metadata = metadata_from_header(start, frame.dtype, tuple(frame.shape), frame.encoding)
        self._writer = DectrisWriter(path, metadata, encoding=frame.encoding, frames_per_file=self.frames_per_file)
        self.paths.append(path)
        self._series_files[start.series] = (path, self.frames_per_file, frame.encoding, frame.dtype,
                                            tuple(frame.shape))
        stream = self._writer.master.create_group("entry/stream")
        stream.attrs["NX_class"] = "NXcollection"
        stream.attrs["protocol"] = start.protocol
        stream.attrs["series"] = start.series
        stream.attrs["unique_id"] = start.unique_id
        stream.attrs["header_detail"] = start.header_detail
        _store_parts(stream.create_group("header_parts"), start.parts)
        if start.problems:
            stream.attrs["header_problems"] = list(start.problems)
        log.info("recording series %d to %s", start.series, path)

    def on_image(self, msg: ImageMessage) -> None:
        if self._start is None:
            return
        if self._writer is None:
            self._open(msg)
        frame = msg.frame
        blob = frame.blob
        if frame.encoding != self._writer.encoding:
            # one HDF5 filter per dataset: a frame sent with another encoding is stored re-encoded
            self._decoder = self._decoder or ChunkDecoder()
            try:
                image = self._decoder.decode_into(frame, np.empty(frame.nbytes_decoded, np.uint8))
            except CorruptFrameError as exc:
                log.warning("frame %d not recorded: %s", frame.frame, exc)
                return
            blob = encode_frame(image, self._writer.encoding)
        self._writer.write_chunk(blob, frame.frame)
        self.frames_recorded += 1
        def ns(value):
            return -1 if value is None else value

        self._table.append((frame.series, frame.frame, ns(msg.start_time_ns), ns(msg.stop_time_ns),
                            ns(msg.real_time_ns), frame.receive_time))

    def on_end(self, end: SeriesEnd) -> None:
        if self._start is not None:
            self._finish(end)

    def flush(self) -> None:
        """Write the frame table so far and flush (called about once per second)."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if self._writer is not None:
            self._write_table()
            self._writer.flush()

    def _write_table(self) -> None:
        group = self._writer.master["entry/stream"]
        table = np.array(self._table, dtype=FRAME_TABLE)
        if "frames" in group:
            del group["frames"]
        group.create_dataset("frames", data=table, maxshape=(None,), chunks=True)

    def _finish(self, end: SeriesEnd | None) -> None:
        if self._writer is None and self._start is not None:
            log.warning("series %d ended without any image: nothing recorded", self._start.series)
        if self._writer is not None:
            self._write_table()
            stream = self._writer.master["entry/stream"]
            if end is not None and end.parts:
                _store_parts(stream.create_group("end_parts"), end.parts)
            stream.attrs["ended"] = "end message" if (end is not None and not end.implicit) else "no end message"
            self._writer.close()
        self._writer = None
        self._start = None
        self._table = []

    def close(self) -> None:
        """End the open series (if any) and close its files."""
        with self._lock:
            if self._start is not None:
                self._finish(None)


def _store_parts(group: h5py.Group, parts) -> None:
    for i, part in enumerate(parts):
        group.create_dataset(f"part_{i:02d}", data=np.frombuffer(bytes(part), dtype=np.uint8))


def read_stored_parts(group: h5py.Group) -> list[bytes]:
    """The verbatim message parts kept by the recorder, in order."""
    return [group[name][()].tobytes() for name in sorted(group)]
