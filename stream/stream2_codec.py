"""DECTRIS stream2: one CBOR message per ZeroMQ message ⇄ typed messages.

:func:`parse_stream2` turns one message into exactly one :class:`SeriesStart`,
:class:`ImageMessage`, :class:`SeriesEnd` or :class:`BadMessage`; it is stateless and
never raises for bad input. The ``encode_stream2_*`` functions build messages structured
like the real captures, for replay and simulation.

CBOR tags used (design §3): 55799 self-describe (cbor2 unwraps it itself); 40
multi-dimensional array ``[dims=[y, x], typed array]`` (row-major); RFC 8746 typed
arrays 64–87; 56500 DECTRIS compression ``[name, elem_size, bytes]`` *inside* the typed
array tag: ``40 → [dims, 70 → 56500 → ["bslz4", 4, blob]]``. The ``bslz4``/``lz4`` blobs
carry the HDF5 filter framing (12-byte header) — our :class:`EncodedFrame` encodings.
Times are rationals ``[numerator, denominator]`` in seconds, converted to integer ns.

cbor2 ≥ 6 returns maps and arrays inside tags as ``frozendict``/tuples: this module
only relies on ``collections.abc.Mapping`` and ``Sequence``.
"""

from __future__ import annotations

import datetime
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import cbor2
import dectris.compression as _dectris
import numpy as np

from stream.blob_framing import declared_size, frame_blob_problem
from stream.detector_metadata import DetectorMetadata
from stream.encoded_frame import DTYPE_OF_BITS, DTYPES, EncodedFrame
from stream.stream_messages import BadMessage, ImageMessage, Message, SeriesEnd, SeriesStart

PROTOCOL = "stream2"

TAG_SELF_DESCRIBE = 55799
TAG_MULTI_DIM = 40
TAG_COMPRESSION = 56500

#: RFC 8746 typed-array tags → numpy dtype (76 is reserved; 83/87 float128 is not supported).
TYPED_ARRAY_DTYPES: dict[int, np.dtype] = {
    64: np.dtype("u1"), 65: np.dtype(">u2"), 66: np.dtype(">u4"), 67: np.dtype(">u8"),
    68: np.dtype("u1"), 69: np.dtype("<u2"), 70: np.dtype("<u4"), 71: np.dtype("<u8"),
    72: np.dtype("i1"), 73: np.dtype(">i2"), 74: np.dtype(">i4"), 75: np.dtype(">i8"),
    77: np.dtype("<i2"), 78: np.dtype("<i4"), 79: np.dtype("<i8"),
    80: np.dtype(">f2"), 81: np.dtype(">f4"), 82: np.dtype(">f8"),
    84: np.dtype("<f2"), 85: np.dtype("<f4"), 86: np.dtype("<f8"),
}
#: Frame dtype → little-endian typed-array tag, for encoding.
_FRAME_TAG = {"uint8": 64, "uint16": 69, "uint32": 70}
_COMPRESSIONS = ("bslz4", "lz4")
#: The most bytes an array of a start message (pixel mask, flatfield) may decode to: an EIGER2 16M
#: uint32 mask is 73 MB; a header that declares more is refused before anything is allocated.
MAX_ARRAY_BYTES = 1 << 30
_NS = 1_000_000_000
_MESSAGE_TYPES = ("start", "image", "end")

#: stream2 start field → DECTRIS stream v1 / file-writer alias added to ``config``.
_V1_ALIASES = {
    "incident_wavelength": "wavelength",
    "number_of_images": "nimages",
    "number_of_triggers": "ntrigger",
    "image_size_x": "x_pixels_in_detector",
    "image_size_y": "y_pixels_in_detector",
    "pixel_size_x": "x_pixel_size",
    "pixel_size_y": "y_pixel_size",
    "detector_description": "description",
    "detector_serial_number": "detector_number",
    "incident_energy": "photon_energy",
    "saturation_value": "countrate_correction_count_cutoff",
}


class _Bad(Exception):
    """Internal: abort parsing with a reason (never escapes :func:`parse_stream2`)."""


# --------------------------------------------------------------------------- arrays

@dataclass(frozen=True)
class _ArrayPayload:
    """A typed array's element type and payload, still compressed when ``compression``."""

    dtype: np.dtype
    data: bytes
    compression: str = ""  # "" raw, else "bslz4" / "lz4"
    elem_size: int = 0


def _payload(value: Any, what: str) -> tuple[tuple[int, ...], _ArrayPayload]:
    """Unpack ``40 → [dims, typed → (56500 → [name, elem, bytes] | bytes)]``; raise _Bad."""
    if not isinstance(value, cbor2.CBORTag) or value.tag != TAG_MULTI_DIM:
        kind = f"tag {value.tag}" if isinstance(value, cbor2.CBORTag) else type(value).__name__
        size = ""
        if isinstance(value, (bytes, bytearray)):
            size = f" of {len(value)} bytes" + (" (a placeholder?)" if len(value) <= 16 else "")
        raise _Bad(f"{what} is {kind}{size}, not a tag-40 multi-dimensional array")
    inner = value.value
    if not isinstance(inner, Sequence) or isinstance(inner, (str, bytes)) or len(inner) != 2:
        raise _Bad(f"{what}: tag 40 must hold [dims, typed array]")
    dims, typed = inner
    if (not isinstance(dims, Sequence) or isinstance(dims, (str, bytes)) or not dims
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims)):
        raise _Bad(f"{what}: dims {dims!r} are not positive integers")
    if not isinstance(typed, cbor2.CBORTag) or typed.tag not in TYPED_ARRAY_DTYPES:
        kind = f"tag {typed.tag}" if isinstance(typed, cbor2.CBORTag) else type(typed).__name__
        raise _Bad(f"{what}: array payload is {kind}, not a supported RFC 8746 typed array (tags 64-86)")
    dtype = TYPED_ARRAY_DTYPES[typed.tag]
    content = typed.value
    if isinstance(content, (bytes, bytearray)):
        return tuple(dims), _ArrayPayload(dtype, bytes(content))
    if isinstance(content, cbor2.CBORTag) and content.tag == TAG_COMPRESSION:
        c = content.value
        if (not isinstance(c, Sequence) or isinstance(c, (str, bytes)) or len(c) != 3
                or not isinstance(c[0], str) or not isinstance(c[1], int)
                or not isinstance(c[2], (bytes, bytearray))):
            raise _Bad(f"{what}: tag 56500 must hold [name, elem_size, bytes]")
        name, elem_size, blob = c
        if name not in _COMPRESSIONS:
            raise _Bad(f"{what}: unknown compression {name!r}; expected one of {', '.join(_COMPRESSIONS)}")
        if elem_size != dtype.itemsize:
            raise _Bad(f"{what}: compression elem_size {elem_size} does not match typed array "
                       f"tag {typed.tag} ({dtype.name}, {dtype.itemsize} bytes)")
        return tuple(dims), _ArrayPayload(dtype, bytes(blob), name, elem_size)
    kind = f"tag {content.tag}" if isinstance(content, cbor2.CBORTag) else type(content).__name__
    raise _Bad(f"{what}: typed array tag {typed.tag} holds {kind}, not bytes or tag 56500")


def _to_numpy(dims: tuple[int, ...], p: _ArrayPayload, what: str) -> np.ndarray:
    """Decoded (read-only, native-order when it was little-endian) array; raise _Bad."""
    nbytes = math.prod(dims) * p.dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise _Bad(f"{what}: dims {list(dims)} {p.dtype.name} would be {nbytes} bytes, more than the "
                   f"{MAX_ARRAY_BYTES} an array may have")
    data = p.data
    if p.compression:
        declared = declared_size(data)
        if declared != nbytes:
            raise _Bad(f"{what}: {p.compression} header declares {declared} decoded bytes, "
                       f"dims {list(dims)} {p.dtype.name} need {nbytes}")
        try:
            data = _dectris.decompress(data, p.compression, elem_size=p.elem_size)
        except (RuntimeError, ValueError, MemoryError) as exc:
            raise _Bad(f"{what}: {p.compression} payload does not decode ({type(exc).__name__}: {exc})") from None
    if len(data) != nbytes:
        raise _Bad(f"{what}: dims {list(dims)} {p.dtype.name} need {nbytes} bytes, payload has {len(data)}")
    return np.frombuffer(data, dtype=p.dtype).reshape(dims)


# --------------------------------------------------------------------------- parsing

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _time_ns(value: Any) -> int | None:
    """Rational seconds ``[num, den]`` (or a Fraction / number) → integer ns, None if unusable."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) == 2:
        num, den = value
        if _is_int(num) and _is_int(den) and den > 0:
            return (num * _NS + den // 2) // den
        return None
    if isinstance(value, Fraction) and value.denominator > 0:
        return round(value * _NS)
    if _is_int(value):
        return value * _NS
    return None


def _plain(value: Any, depth: int = 0) -> tuple[bool, Any]:
    """(True, plain Python copy) for small JSON-like values, (False, None) for arrays/bytes/tags."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True, value
    if isinstance(value, datetime.datetime | datetime.date):
        return True, value.isoformat()
    if isinstance(value, Fraction):
        return True, float(value)
    if depth >= 4:
        return False, None
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            ok, plain = _plain(v, depth + 1)
            if not ok or not isinstance(k, str):
                return False, None
            out[k] = plain
        return True, out
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)) and len(value) <= 64:
        items = []
        for v in value:
            ok, plain = _plain(v, depth + 1)
            if not ok:
                return False, None
            items.append(plain)
        return True, items
    return False, None


def _start_config(msg: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for key, value in msg.items():
        if not isinstance(key, str) or key == "type":
            continue
        ok, plain = _plain(value)
        if ok:
            config[key] = plain
    for name, alias in _V1_ALIASES.items():
        if name in config and alias not in config:
            config[alias] = config[name]
    config.setdefault("ntrigger", 1)
    return config


def _channels(msg: Mapping[str, Any]) -> list[str] | None:
    channels = msg.get("channels")
    if isinstance(channels, Sequence) and not isinstance(channels, (str, bytes)):
        return [c for c in channels if isinstance(c, str)]
    return None


def parse_stream2(data: Any, channel: str = "threshold_1", receive_time: float = 0.0, *,
                  check_blocks: bool = True) -> Message:
    """Parse one stream2 CBOR message for ``channel``; never raises for bad input.

    ``check_blocks=False`` skips the walk over compressed blocks (see
    :func:`~stream.blob_framing.frame_blob_problem`).
    """
    try:
        view = memoryview(data).cast("B")
    except (TypeError, ValueError) as exc:
        return BadMessage(f"message is not contiguous bytes ({exc})", PROTOCOL, receive_time=receive_time)
    series: int | None = None
    frame: int | None = None
    try:
        if len(view) == 0:
            raise _Bad("empty message")
        try:
            msg = cbor2.loads(view)
        except (cbor2.CBORError, ValueError, TypeError, OverflowError, EOFError, LookupError,
                RecursionError, MemoryError) as exc:
            raise _Bad(f"not valid CBOR ({type(exc).__name__}: {exc})"[:300]) from None
        if not isinstance(msg, Mapping):
            raise _Bad(f"CBOR message is {type(msg).__name__}, not a map")
        mtype = msg.get("type")
        if _is_int(msg.get("series_id")):
            series = msg["series_id"]
        if _is_int(msg.get("image_id")):
            frame = msg["image_id"]
        if mtype not in _MESSAGE_TYPES:
            raise _Bad(f"unknown message type {mtype!r}; expected start, image or end")
        if not _is_int(msg.get("series_id")) or msg["series_id"] < 0:
            raise _Bad(f"{mtype} message series_id is {msg.get('series_id')!r}, not a non-negative integer")
        unique_id = msg.get("series_unique_id", "")
        if not isinstance(unique_id, str):
            raise _Bad(f"{mtype} message series_unique_id is {type(unique_id).__name__}, not a string")
        if mtype == "start":
            return _parse_start(msg, view, channel, unique_id, receive_time)
        if mtype == "image":
            return _parse_image(msg, channel, unique_id, receive_time, check_blocks)
        return SeriesEnd(protocol=PROTOCOL, series=series, unique_id=unique_id, parts=(bytes(view),),
                         receive_time=receive_time)
    except _Bad as bad:
        return BadMessage(str(bad), PROTOCOL, series=series, frame=frame, receive_time=receive_time)


def _parse_start(msg: Mapping[str, Any], view: memoryview, channel: str, unique_id: str,
                 receive_time: float) -> SeriesStart:
    channels = _channels(msg)
    if channels is not None and channel not in channels:
        raise _Bad(f"channel {channel!r} is not in this series; channels present: {', '.join(channels) or 'none'}")
    problems: list[str] = []
    x, y = msg.get("image_size_x"), msg.get("image_size_y")
    shape = (y, x) if _is_int(x) and _is_int(y) and x > 0 and y > 0 else None
    if shape is None:
        problems.append(f"start has no usable image_size_x/y ({x!r}, {y!r}): frame shape unknown")
    bits = msg.get("bit_depth_image")
    dtype = DTYPE_OF_BITS.get(bits) if _is_int(bits) else None
    if bits is not None and dtype is None:
        problems.append(f"bit_depth_image is {bits!r}, not 8, 16 or 32: pixel type unknown")
    pixel_mask = None
    masks = msg.get("pixel_mask")
    sent_mask = isinstance(masks, Mapping) and len(masks) > 0
    if masks is not None:
        mask = _channel_array(masks, channel, "pixel_mask", shape, problems)
        if mask is not None:
            if mask.dtype.kind not in "ui":
                problems.append(f"pixel_mask for {channel} is {mask.dtype.name}, not integer: not used")
            else:
                pixel_mask = mask if mask.dtype == np.uint32 else mask.astype(np.uint32)
    if msg.get("flatfield") is not None:
        _channel_array(msg["flatfield"], channel, "flatfield", shape, problems, decode=False)
    return SeriesStart(protocol=PROTOCOL, series=msg["series_id"],
                       header_detail="all" if sent_mask else "basic",
                       shape=shape, dtype=dtype, config=_start_config(msg), pixel_mask=pixel_mask,
                       unique_id=unique_id, parts=(bytes(view),), problems=tuple(problems),
                       receive_time=receive_time)


def _channel_array(per_channel: Any, channel: str, what: str, shape, problems: list[str],
                   decode: bool = True) -> np.ndarray | None:
    """``per_channel[channel]`` as a (rows, cols) array, or None with a problem noted."""
    if not isinstance(per_channel, Mapping):
        problems.append(f"{what} is {type(per_channel).__name__}, not a map of channels: not used")
        return None
    if channel not in per_channel:
        problems.append(f"{what} has no entry for {channel} (has: {', '.join(map(str, per_channel))}): not used")
        return None
    try:
        dims, payload = _payload(per_channel[channel], f"{what} for {channel}")
        if shape is not None and dims != shape:
            raise _Bad(f"{what} for {channel} has dims {list(dims)}, image is {list(shape)}")
        if not decode:
            if not payload.compression:
                _to_numpy(dims, payload, f"{what} for {channel}")  # size check only
            return None
        return _to_numpy(dims, payload, f"{what} for {channel}")
    except _Bad as bad:
        problems.append(f"{bad}: not used")
        return None


def _parse_image(msg: Mapping[str, Any], channel: str, unique_id: str, receive_time: float,
                 check_blocks: bool = True) -> ImageMessage:
    series = msg["series_id"]
    frame = msg.get("image_id")
    if not _is_int(frame) or frame < 0:
        raise _Bad(f"image message image_id is {frame!r}, not a non-negative integer")
    data = msg.get("data")
    if not isinstance(data, Mapping):
        raise _Bad(f"image message data is {type(data).__name__}, not a map of channels")
    if channel not in data:
        raise _Bad(f"channel {channel!r} not in image data; channels present: "
                   f"{', '.join(map(str, data)) or 'none'}")
    dims, p = _payload(data[channel], f"data.{channel}")
    if len(dims) != 2:
        raise _Bad(f"data.{channel} has dims {list(dims)}, not [y, x]")
    shape = (dims[0], dims[1])
    if p.dtype.kind != "u" or p.dtype.itemsize > 4:
        raise _Bad(f"data.{channel} is {p.dtype.name}; frames must be one of {', '.join(DTYPES)}")
    blob = p.data
    if p.dtype.byteorder == ">":
        if p.compression:
            raise _Bad(f"data.{channel}: compressed big-endian pixels ({p.dtype.str}) are not supported")
        if len(blob) == shape[0] * shape[1] * p.dtype.itemsize:
            blob = np.frombuffer(blob, dtype=p.dtype).astype(p.dtype.newbyteorder("<")).tobytes()
    dtype = f"uint{8 * p.dtype.itemsize}"
    encoded = EncodedFrame(series, frame, p.compression or "raw", dtype, shape, blob, receive_time)
    problem = frame_blob_problem(encoded, walk=check_blocks)
    if problem:
        raise _Bad(f"data.{channel}: dims {list(dims)}: {problem}")
    return ImageMessage(protocol=PROTOCOL, frame=encoded,
                        start_time_ns=_time_ns(msg.get("start_time")),
                        stop_time_ns=_time_ns(msg.get("stop_time")),
                        real_time_ns=_time_ns(msg.get("real_time")),
                        unique_id=unique_id)


# --------------------------------------------------------------------------- encoding

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_unique_id() -> str:
    """A ULID (26 Crockford base-32 characters, time-ordered) like the DCU's series_unique_id."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def _array(array: np.ndarray, tag: int) -> cbor2.CBORTag:
    """``40 → [[rows, cols], tag → raw little-endian bytes]``."""
    array = np.ascontiguousarray(array, dtype=TYPED_ARRAY_DTYPES[tag])
    return cbor2.CBORTag(TAG_MULTI_DIM, [list(array.shape), cbor2.CBORTag(tag, array.tobytes())])


def _rational(ns: int) -> list[int]:
    return [int(ns), _NS]


def _check_series(series: int) -> None:
    if not _is_int(series) or series < 0:
        raise ValueError(f"series must be a non-negative integer, got {series!r}")


def encode_stream2_start(series: int, metadata: DetectorMetadata, *, channel: str = "threshold_1",
                         unique_id: str | None = None, with_mask: bool = True) -> bytes:
    """A stream2 ``start`` message for ``metadata``; with_mask adds the pixel mask (uint32,
    zeros if ``metadata.pixel_mask`` is None) and a flatfield of ones, like the DCU."""
    _check_series(series)
    if metadata.dtype not in _FRAME_TAG:
        raise ValueError(f"metadata dtype {metadata.dtype!r} is not one of {', '.join(DTYPES)}")
    rows, cols = metadata.shape
    msg: dict[str, Any] = {
        "type": "start",
        "series_id": series,
        "series_unique_id": unique_id if unique_id is not None else new_unique_id(),
        "arm_date": datetime.datetime.now(datetime.timezone.utc),
        "beam_center_x": float(metadata.beam_center_x_px),
        "beam_center_y": float(metadata.beam_center_y_px),
        "bit_depth_image": 8 * np.dtype(metadata.dtype).itemsize,
        "channels": [channel],
        "count_time": float(metadata.count_time_s),
        "detector_description": metadata.description,
        "detector_distance": float(metadata.detector_distance_m),
        "frame_time": float(metadata.frame_time_s),
        "image_size_x": int(cols),
        "image_size_y": int(rows),
        "incident_wavelength": float(metadata.wavelength_A),
        "number_of_images": int(metadata.nimages),
        "number_of_triggers": int(metadata.ntrigger),
        "pixel_size_x": float(metadata.x_pixel_size_m),
        "pixel_size_y": float(metadata.y_pixel_size_m),
    }
    if metadata.wavelength_A > 0:
        msg["incident_energy"] = 12398.419843320026 / metadata.wavelength_A
    if with_mask:
        mask = metadata.mask_or_zeros()
        msg["flatfield"] = {channel: _array(np.ones((rows, cols), dtype="<f4"), 85)}
        msg["flatfield_enabled"] = True
        msg["pixel_mask"] = {channel: _array(mask, 70)}
        msg["pixel_mask_enabled"] = True
    return cbor2.dumps(cbor2.CBORTag(TAG_SELF_DESCRIBE, msg))


def encode_stream2_image(frame: EncodedFrame, *, unique_id: str = "", channel: str = "threshold_1",
                         start_time_ns: int = 0, stop_time_ns: int = 0, real_time_ns: int = 0) -> bytes:
    """A stream2 ``image`` message carrying ``frame``'s blob as is (no recompression)."""
    if frame.dtype not in _FRAME_TAG:
        raise ValueError(f"frame dtype {frame.dtype!r} is not one of {', '.join(DTYPES)}")
    tag = _FRAME_TAG[frame.dtype]
    blob = bytes(frame.blob)
    if frame.encoding == "raw":
        typed = cbor2.CBORTag(tag, blob)
    elif frame.encoding in _COMPRESSIONS:
        typed = cbor2.CBORTag(tag, cbor2.CBORTag(TAG_COMPRESSION,
                                                 [frame.encoding, np.dtype(frame.dtype).itemsize, blob]))
    else:
        raise ValueError(f"frame encoding {frame.encoding!r} is not one of bslz4, lz4, raw")
    msg = {
        "type": "image",
        "series_id": frame.series,
        "series_unique_id": unique_id,
        "image_id": frame.frame,
        "real_time": _rational(real_time_ns),
        "start_time": _rational(start_time_ns),
        "stop_time": _rational(stop_time_ns),
        "data": {channel: cbor2.CBORTag(TAG_MULTI_DIM, [list(frame.shape), typed])},
    }
    return cbor2.dumps(cbor2.CBORTag(TAG_SELF_DESCRIBE, msg))


def encode_stream2_end(series: int, unique_id: str = "") -> bytes:
    """A stream2 ``end`` message."""
    _check_series(series)
    return cbor2.dumps(cbor2.CBORTag(TAG_SELF_DESCRIBE,
                                     {"type": "end", "series_id": series, "series_unique_id": unique_id}))
