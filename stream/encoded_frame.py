"""One detector frame as it travels: still compressed, with its place in the series."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stream.shared_arena import ArenaSlice

#: Encodings a frame blob can carry. ``bslz4`` and ``lz4`` use the HDF5 filter framing
#: (12-byte big-endian header), exactly as the DECTRIS file writer stores chunks and as
#: stream v1 sends ``bs*-lz4<``; ``raw`` is little-endian pixels.
ENCODINGS = ("bslz4", "lz4", "raw")

#: Pixel types EIGER detectors send, their bytes per pixel, and the type of each bit depth.
DTYPES = ("uint8", "uint16", "uint32")
ITEMSIZE = {"uint8": 1, "uint16": 2, "uint32": 4}
DTYPE_OF_BITS = {8 * size: name for name, size in ITEMSIZE.items()}


@dataclass(frozen=True, slots=True)
class ChunkSource:
    """Where a frame's chunk lies on disk: HDF5 file, dataset, index along the frame axis.

    Offline, frames may travel as this small reference instead of their bytes, so that
    workers that see the same files read the chunks themselves (no copy through the
    main process).
    """

    path: str
    dataset: str
    index: int


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """A still-compressed frame and where it belongs.

    ``shape`` is ``(rows, columns)`` of the decoded array (note: stream v1 says
    ``[x, y]``; the reader swaps it). ``error`` is non-empty when the frame is known to
    exist but could not be read at all (e.g. its data file is missing): ``blob`` is then
    empty and the frame is reported, not processed. With ``source`` set and ``blob``
    empty, the bytes are elsewhere: on disk (:class:`ChunkSource`) or in shared memory
    (:class:`~stream.shared_arena.ArenaSlice`). ``blob`` may be a memoryview.
    """

    series: int
    frame: int
    encoding: str
    dtype: str
    shape: tuple[int, int]
    blob: bytes
    receive_time: float = 0.0
    error: str = ""
    source: "ChunkSource | ArenaSlice | None" = None

    def with_blob(self, blob, encoding: str | None = None) -> "EncodedFrame":
        """This frame with its bytes ``blob`` (and ``encoding``, when given) in place.

        ``dataclasses.replace`` does the same, but looks the fields up anew on every call: ≈ 16 µs
        per frame in a worker, where the decode before has pushed that Python code out of the
        caches (measured, docs/live_path.md). Every field is passed on; a test compares the two.
        """
        return EncodedFrame(self.series, self.frame, self.encoding if encoding is None else encoding, self.dtype,
                            self.shape, blob, self.receive_time, self.error, self.source)

    def renumbered(self, frame: int) -> "EncodedFrame":
        """This frame as frame number ``frame`` (a repeated replay continues the series), made
        directly for the reason :meth:`with_blob` gives. Every other field is passed on."""
        return EncodedFrame(self.series, frame, self.encoding, self.dtype, self.shape, self.blob,
                            self.receive_time, self.error, self.source)

    @property
    def nbytes_decoded(self) -> int:
        """Size in bytes of the decoded frame."""
        return self.shape[0] * self.shape[1] * ITEMSIZE.get(self.dtype, 0)
