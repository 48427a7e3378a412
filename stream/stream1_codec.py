"""DECTRIS SIMPLON stream v1: multipart JSON + binary parts ⇄ typed messages.

:func:`parse_stream1` turns the parts of ONE ZeroMQ multipart message into exactly one
:class:`SeriesStart`, :class:`ImageMessage`, :class:`SeriesEnd` or :class:`BadMessage`.
It is stateless and never raises for bad input: whatever is wrong with the message is
said in ``BadMessage.reason`` (or, for a header that is still usable, in
``SeriesStart.problems``).

The ``encode_stream1_*`` functions do the reverse, for replay and simulation; they raise
``ValueError`` for arguments that cannot be encoded (programming errors, not wire input).

Wire format (design §3): header ``dheader-1.0`` (+ config for ``basic``, + three
(descriptor, blob) pairs for ``all``, + optional appendix); image ``dimage-1.0``,
``dimage_d-1.0`` (``shape`` is ``[x, y]``), blob, ``dconfig-1.0`` (+ optional appendix);
end ``dseries_end-1.0``. The ``hash`` of ``dimage-1.0`` cannot be reproduced from the data
and is not checked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stream.blob_framing import frame_blob_problem, frame_lz4_block, unframe_lz4
from stream.detector_metadata import DetectorMetadata
from stream.encoded_frame import DTYPE_OF_BITS, DTYPES, ENCODINGS, ITEMSIZE, EncodedFrame
from stream.stream_messages import BadMessage, ImageMessage, Message, SeriesEnd, SeriesStart

PROTOCOL = "stream1"

#: stream v1 ``encoding`` → (our encoding, element bits or None when any element size fits).
_V1_ENCODINGS = {
    "bs8-lz4<": ("bslz4", 8),
    "bs16-lz4<": ("bslz4", 16),
    "bs32-lz4<": ("bslz4", 32),
    "lz4<": ("lz4", None),
    "<": ("raw", None),
}
_HEADER_DETAILS = ("none", "basic", "all")
#: (descriptor htype, numpy dtype names allowed) of the ``all`` header's array pairs, in order.
_HEADER_ARRAYS = (
    ("dflatfield-1.0", ("float32",)),
    ("dpixelmask-1.0", ("uint32", "uint16", "uint8")),
    ("dcountrate_table-1.0", ("float32",)),
)
_ARRAYITEMSIZE = {"float32": 4, "uint32": 4, "uint16": 2, "uint8": 1}
#: h·c in eV·Å, for photon_energy from the wavelength.
_HC_EV_A = 12398.419843320026


# --------------------------------------------------------------------------- parsing

class _Bad(Exception):
    """Internal: abort parsing with a reason (never escapes :func:`parse_stream1`)."""

    def __init__(self, reason: str, series: int | None = None, frame: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.series = series
        self.frame = frame


def _json(part: memoryview, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(bytes(part))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _Bad(f"{what} is not JSON ({type(exc).__name__}: {exc})"[:300]) from None
    if not isinstance(obj, dict):
        raise _Bad(f"{what} is JSON {type(obj).__name__}, not an object")
    return obj


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _uint(obj: Mapping[str, Any], key: str, what: str) -> int:
    value = obj.get(key)
    if not _is_int(value) or value < 0:
        raise _Bad(f"{what} {key!r} is {value!r}, not a non-negative integer")
    return value


def _optional_ns(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    return value if _is_int(value) else None


def _shape_xy(value: Any) -> tuple[int, int] | None:
    """stream v1 ``shape`` ``[x, y]`` → ``(rows, cols)``, None if not two positive ints."""
    if (isinstance(value, list) and len(value) == 2
            and all(_is_int(v) and v > 0 for v in value)):
        return (value[1], value[0])
    return None


def parse_stream1(parts: Sequence[Any], receive_time: float = 0.0, *, copy_blob: bool = True,
                  check_blocks: bool = True) -> Message:
    """Parse the parts of one stream v1 multipart message; never raises for bad input.

    ``parts`` are bytes-like (``bytes``, ``memoryview`` of ``zmq.Frame.buffer``, ...).
    ``copy_blob=False`` leaves an image's blob as a view of its part (which must then
    stay alive): the caller copies it once, where it is needed (e.g. shared memory). A
    header's parts (and its pixel mask) then stay views too: an EIGER 4M header carries
    36 MB of flatfield and mask, 28–30 ms to copy while the series' first frames wait.
    ``check_blocks=False`` skips the walk over the compressed blocks (see
    :func:`~stream.blob_framing.frame_blob_problem`).
    """
    try:
        views = [memoryview(p).cast("B") for p in parts]
    except (TypeError, ValueError) as exc:
        return BadMessage(f"message parts are not contiguous bytes ({exc})", PROTOCOL,
                          receive_time=receive_time)
    series: int | None = None
    frame: int | None = None
    try:
        if not views:
            raise _Bad("empty multipart message")
        first = _json(views[0], "part 0")
        htype = first.get("htype")
        if _is_int(first.get("series")):
            series = first["series"]
        if _is_int(first.get("frame")):
            frame = first["frame"]
        if not isinstance(htype, str):
            raise _Bad(f"part 0 has no htype (keys: {', '.join(sorted(map(str, first))[:10])})")
        if htype.startswith("dheader-"):
            return _parse_header(first, views, receive_time, copy_blob)
        if htype.startswith("dimage-"):
            return _parse_image(first, views, receive_time, copy_blob, check_blocks)
        if htype.startswith("dseries_end-"):
            return _parse_end(first, views, receive_time)
        raise _Bad(f"unknown htype {htype!r} in part 0; expected dheader-1.0, dimage-1.0 or dseries_end-1.0")
    except _Bad as bad:
        return BadMessage(bad.reason, PROTOCOL,
                          series=bad.series if bad.series is not None else series,
                          frame=bad.frame if bad.frame is not None else frame,
                          receive_time=receive_time)


def _parse_header(first: dict, views: list[memoryview], receive_time: float, copy: bool = True) -> SeriesStart:
    if first["htype"] != "dheader-1.0":
        raise _Bad(f"unsupported header version {first['htype']!r}; expected dheader-1.0")
    series = _uint(first, "series", "dheader-1.0")
    detail = first.get("header_detail")
    if detail not in _HEADER_DETAILS:
        raise _Bad(f"dheader-1.0 header_detail is {detail!r}; expected none, basic or all", series)
    needed = {"none": 1, "basic": 2, "all": 8}[detail]
    if len(views) not in (needed, needed + 1):
        raise _Bad(f"header with header_detail {detail!r} needs {needed} parts ({needed + 1} with an "
                   f"appendix), got {len(views)}", series)
    problems: list[str] = []
    config: dict[str, Any] = {}
    shape: tuple[int, int] | None = None
    dtype: str | None = None
    pixel_mask: np.ndarray | None = None
    parts = tuple(bytes(v) for v in views) if copy else tuple(views)
    if detail != "none":
        config = _json(views[1], "header config (part 1)")
        x, y = config.get("x_pixels_in_detector"), config.get("y_pixels_in_detector")
        if _is_int(x) and _is_int(y) and x > 0 and y > 0:
            shape = (y, x)
        else:
            problems.append(f"config has no usable x/y_pixels_in_detector ({x!r}, {y!r}): frame shape unknown")
        bits = config.get("bit_depth_image")
        dtype = DTYPE_OF_BITS.get(bits) if _is_int(bits) else None
        if dtype is None:
            problems.append(f"config bit_depth_image is {bits!r}, not 8, 16 or 32: pixel type unknown")
    if detail == "all":
        for k, (htype, types) in enumerate(_HEADER_ARRAYS):
            array = _header_array(views, parts, 2 + 2 * k, htype, types, problems)
            if htype == "dpixelmask-1.0" and array is not None:
                if shape is not None and array.shape != shape:
                    problems.append(f"pixel mask is {array.shape[0]}×{array.shape[1]}, detector is "
                                    f"{shape[0]}×{shape[1]}: mask not used")
                else:
                    pixel_mask = array if array.dtype == np.uint32 else array.astype(np.uint32)
    return SeriesStart(protocol=PROTOCOL, series=series, header_detail=detail, shape=shape, dtype=dtype,
                       config=config, pixel_mask=pixel_mask, parts=parts, problems=tuple(problems),
                       receive_time=receive_time)


def _header_array(views, parts, index, htype, types, problems) -> np.ndarray | None:
    """The (descriptor, blob) pair at ``index`` as a (rows, cols) array, or None + a problem."""
    try:
        desc = _json(views[index], f"{htype} descriptor (part {index})")
    except _Bad as bad:
        problems.append(bad.reason)
        return None
    if desc.get("htype") != htype:
        problems.append(f"part {index} has htype {desc.get('htype')!r}, expected {htype}")
        return None
    shape = _shape_xy(desc.get("shape"))
    type_ = desc.get("type")
    if shape is None or type_ not in types:
        problems.append(f"{htype} has shape {desc.get('shape')!r} type {type_!r}; expected [x, y] and "
                        f"one of {', '.join(types)}")
        return None
    need = shape[0] * shape[1] * _ARRAYITEMSIZE[type_]
    blob = parts[index + 1]
    if len(blob) != need:
        problems.append(f"{htype} blob holds {len(blob)} bytes, shape {desc['shape']} {type_} needs {need}"
                        f"{' (truncated)' if len(blob) < need else ''}: not usable")
        return None
    return np.frombuffer(blob, dtype=np.dtype(type_).newbyteorder("<")).reshape(shape)


def _parse_image(first: dict, views: list[memoryview], receive_time: float, copy_blob: bool = True,
                 check_blocks: bool = True) -> ImageMessage:
    if first["htype"] != "dimage-1.0":
        raise _Bad(f"unsupported image version {first['htype']!r}; expected dimage-1.0")
    series = _uint(first, "series", "dimage-1.0")
    frame = _uint(first, "frame", "dimage-1.0")
    if len(views) not in (4, 5):
        raise _Bad(f"image message needs 4 parts (5 with an appendix), got {len(views)}", series, frame)
    d = _json(views[1], "image descriptor (part 1)")
    if d.get("htype") != "dimage_d-1.0":
        raise _Bad(f"part 1 has htype {d.get('htype')!r}, expected dimage_d-1.0", series, frame)
    shape = _shape_xy(d.get("shape"))
    if shape is None:
        raise _Bad(f"dimage_d-1.0 shape is {d.get('shape')!r}, not [x, y] positive integers", series, frame)
    dtype = d.get("type")
    if dtype not in ITEMSIZE:
        raise _Bad(f"dimage_d-1.0 type is {dtype!r}; expected one of {', '.join(DTYPES)}", series, frame)
    v1_encoding = d.get("encoding")
    if v1_encoding not in _V1_ENCODINGS:
        raise _Bad(f"dimage_d-1.0 encoding is {v1_encoding!r}; expected one of "
                   f"{', '.join(_V1_ENCODINGS)}", series, frame)
    encoding, bits = _V1_ENCODINGS[v1_encoding]
    if bits is not None and bits != 8 * ITEMSIZE[dtype]:
        raise _Bad(f"encoding {v1_encoding} ({bits}-bit elements) does not match type {dtype}", series, frame)
    size = d.get("size")
    blob = views[2]
    if not _is_int(size) or size < 0:
        raise _Bad(f"dimage_d-1.0 size is {size!r}, not a non-negative integer", series, frame)
    if len(blob) != size:
        kind = "shorter than" if len(blob) < size else "longer than"
        raise _Bad(f"blob holds {len(blob)} bytes, {kind} the size {size} that dimage_d-1.0 says", series, frame)
    cfg = _json(views[3], "image config (part 3)")
    if cfg.get("htype") != "dconfig-1.0":
        raise _Bad(f"part 3 has htype {cfg.get('htype')!r}, expected dconfig-1.0", series, frame)
    nbytes = shape[0] * shape[1] * ITEMSIZE[dtype]
    if encoding == "lz4" and nbytes > 0xFFFFFFFF:
        raise _Bad(f"lz4< frame of {nbytes} bytes is larger than one LZ4 block can be", series, frame)
    if encoding == "lz4":
        data = frame_lz4_block(blob, nbytes)
    else:
        data = bytes(blob) if copy_blob else blob
    encoded = EncodedFrame(series, frame, encoding, dtype, shape, data, receive_time)
    problem = frame_blob_problem(encoded, walk=check_blocks)
    if problem:
        raise _Bad(problem, series, frame)
    return ImageMessage(protocol=PROTOCOL, frame=encoded,
                        start_time_ns=_optional_ns(cfg, "start_time"),
                        stop_time_ns=_optional_ns(cfg, "stop_time"),
                        real_time_ns=_optional_ns(cfg, "real_time"),
                        appendix=bytes(views[4]) if len(views) == 5 else None)


def _parse_end(first: dict, views: list[memoryview], receive_time: float) -> SeriesEnd:
    if first["htype"] != "dseries_end-1.0":
        raise _Bad(f"unsupported end version {first['htype']!r}; expected dseries_end-1.0")
    series = _uint(first, "series", "dseries_end-1.0")
    if len(views) != 1:
        raise _Bad(f"series end needs 1 part, got {len(views)}", series)
    return SeriesEnd(protocol=PROTOCOL, series=series, parts=(bytes(views[0]),), receive_time=receive_time)


# --------------------------------------------------------------------------- encoding

def _dumps(obj: Mapping[str, Any]) -> bytes:
    """Compact JSON with sorted keys, as the DECTRIS DCU writes it."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _json_int(value) -> int:
    """``value`` for a ``%d`` that writes what ``json.dumps`` would: an int, not a bool (JSON's
    ``true``) or a float (``1.0``), which ``%d`` would turn into a number silently."""
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"expected an integer, got {value!r}")
        value = int(value)
    return value


def _check_series(series: int) -> None:
    if not _is_int(series) or series < 0:
        raise ValueError(f"series must be a non-negative integer, got {series!r}")


def stream1_config(metadata: DetectorMetadata) -> dict[str, Any]:
    """The ``basic`` header's detector config (DECTRIS key names and units) for ``metadata``."""
    if metadata.dtype not in ITEMSIZE:
        raise ValueError(f"metadata dtype {metadata.dtype!r} is not one of {', '.join(DTYPES)}")
    config: dict[str, Any] = {
        "x_pixels_in_detector": int(metadata.x_pixels),
        "y_pixels_in_detector": int(metadata.y_pixels),
        "bit_depth_image": 8 * ITEMSIZE[metadata.dtype],
        "wavelength": float(metadata.wavelength_A),
        "beam_center_x": float(metadata.beam_center_x_px),
        "beam_center_y": float(metadata.beam_center_y_px),
        "detector_distance": float(metadata.detector_distance_m),
        "count_time": float(metadata.count_time_s),
        "frame_time": float(metadata.frame_time_s),
        "nimages": int(metadata.nimages),
        "ntrigger": int(metadata.ntrigger),
        "compression": metadata.compression,
        "description": metadata.description,
        "x_pixel_size": float(metadata.x_pixel_size_m),
        "y_pixel_size": float(metadata.y_pixel_size_m),
    }
    if metadata.wavelength_A > 0:
        config["photon_energy"] = _HC_EV_A / metadata.wavelength_A
    return config


def _countrate_table(rows: int = 4000, step: float = 1125.0, dead_time_s: float = 2.8e-7) -> np.ndarray:
    """A plausible count-rate table like the real one: ``rows`` × (true rate, measured rate)."""
    true = np.arange(rows, dtype=np.float64) * step
    return np.stack([true, true * np.exp(-true * dead_time_s)], axis=1).astype("<f4")


def encode_stream1_start(series: int, metadata: DetectorMetadata, header_detail: str = "basic",
                         appendix: bytes | None = None) -> list[bytes]:
    """The parts of a stream v1 header message.

    ``none``: the ``dheader-1.0`` part; ``basic``: + detector config JSON; ``all``: + the
    flatfield (float32 ones), the pixel mask (``metadata.pixel_mask`` as uint32, zeros if
    None) and a count-rate table, each as JSON descriptor + raw little-endian blob.
    ``appendix`` is sent as one last part.
    """
    _check_series(series)
    if header_detail not in _HEADER_DETAILS:
        raise ValueError(f"header_detail must be one of none, basic, all; got {header_detail!r}")
    parts = [_dumps({"header_detail": header_detail, "htype": "dheader-1.0", "series": series})]
    if header_detail != "none":
        parts.append(_dumps(stream1_config(metadata)))
    if header_detail == "all":
        rows, cols = metadata.shape
        mask = metadata.mask_or_zeros()
        table = _countrate_table()
        xy = [cols, rows]
        parts += [
            _dumps({"htype": "dflatfield-1.0", "shape": xy, "type": "float32"}),
            np.ones((rows, cols), dtype="<f4").tobytes(),
            _dumps({"htype": "dpixelmask-1.0", "shape": xy, "type": "uint32"}),
            np.ascontiguousarray(mask).tobytes(),
            _dumps({"htype": "dcountrate_table-1.0", "shape": [table.shape[1], table.shape[0]],
                    "type": "float32"}),
            table.tobytes(),
        ]
    if appendix is not None:
        parts.append(bytes(appendix))
    return parts


def _blob_part(blob, share: bool) -> bytes | memoryview:
    """``blob`` as a message part: shared (no copy) when asked and possible, else bytes."""
    if share and isinstance(blob, memoryview) and blob.contiguous:
        return blob
    return bytes(blob)


def encode_stream1_image(frame: EncodedFrame, *, start_time_ns: int = 0, stop_time_ns: int = 0,
                         real_time_ns: int = 0, appendix: bytes | None = None,
                         share_blob: bool = False) -> list[bytes | memoryview]:
    """The parts of a stream v1 image message for ``frame`` (no recompression for bslz4/raw).

    ``bslz4`` → ``bs{8·itemsize}-lz4<`` (the blob as is); ``lz4`` → ``lz4<``, one raw LZ4
    block (a single-block chunk is unwrapped, a multi-block one decoded and recompressed);
    ``raw`` → ``<``. The ``hash`` is left empty (receivers must not verify it).

    ``share_blob``: a bslz4 or raw blob that is a buffer (a view of a mapped file) becomes its
    part as it is, not a copy; the caller keeps it unchanged until the message has left.
    """
    if frame.dtype not in ITEMSIZE:
        raise ValueError(f"frame dtype {frame.dtype!r} is not one of {', '.join(DTYPES)}")
    if frame.encoding == "bslz4":
        v1_encoding, blob = f"bs{8 * ITEMSIZE[frame.dtype]}-lz4<", _blob_part(frame.blob, share_blob)
    elif frame.encoding == "lz4":
        v1_encoding, blob = "lz4<", unframe_lz4(frame.blob)
    elif frame.encoding == "raw":
        v1_encoding, blob = "<", _blob_part(frame.blob, share_blob)
    else:
        raise ValueError(f"frame encoding {frame.encoding!r} is not one of {', '.join(ENCODINGS)}")
    rows, cols = frame.shape
    # the three JSON parts as _dumps writes them, formatted directly: json.dumps three times
    # was a third of a replay's Python per frame (the values are ints, the strings plain ASCII)
    parts = [
        b'{"frame":%d,"hash":"","htype":"dimage-1.0","series":%d}' % (_json_int(frame.frame), _json_int(frame.series)),
        b'{"encoding":"%s","htype":"dimage_d-1.0","shape":[%d,%d],"size":%d,"type":"%s"}'
        % (v1_encoding.encode(), _json_int(cols), _json_int(rows), len(blob), frame.dtype.encode()),
        blob,
        b'{"htype":"dconfig-1.0","real_time":%d,"start_time":%d,"stop_time":%d}'
        % (int(real_time_ns), int(start_time_ns), int(stop_time_ns)),
    ]
    if appendix is not None:
        parts.append(bytes(appendix))
    return parts


def encode_stream1_end(series: int) -> list[bytes]:
    """The single part of a stream v1 series end message."""
    _check_series(series)
    return [_dumps({"htype": "dseries_end-1.0", "series": series})]
