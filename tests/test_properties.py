"""Property-based tests (hypothesis): what comes from outside never raises where the contract says it won't.

* a bluesky start document of any shape gives a valid map geometry or None (a strip), and the
  run router fed it, a series header and frames raises nothing;
* any bytes, any multipart message, any CBOR item and any mutation of the real captures parse
  to a message or a :class:`BadMessage` (and protocol detection answers);
* any TOML-able configuration loads or raises :class:`ConfigError`, nothing else.
"""

from __future__ import annotations

import json
import math
import struct
import tempfile
from functools import lru_cache
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.session.run_router import RunRouter
from monitor.session.start_geometry import MAX_MAP_POINTS, MAX_MAP_SIDE, geometry_from_start
from processors.config import ConfigError, NanomapsConfig, load_config
from stream.raster_scan import RasterScan
from stream.stream1_codec import parse_stream1
from stream.stream2_codec import parse_stream2
from stream.stream_messages import BadMessage, ImageMessage, SeriesEnd, SeriesStart
from stream.stream_receiver import looks_like, protocol_of

from conftest import real_capture

FAST = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example])
MESSAGE_TYPES = (SeriesStart, ImageMessage, SeriesEnd, BadMessage)

# --------------------------------------------------------------------------- JSON-like values

ODD_NUMBERS = st.sampled_from([0, -1, 1, 2, 10**30, -10**30, 2**63, 1e308, -1e308, 0.5, 3.0,
                               float("nan"), float("inf"), -float("inf"), True, False])
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | ODD_NUMBERS)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
SMALL_INTS = st.integers(-3, 12) | ODD_NUMBERS
PAIRS = st.lists(SMALL_INTS | JSON, min_size=0, max_size=3)


def _near(valid):
    """Values near ``valid`` (the right key with any value): the valid one, odd numbers, pairs, any JSON."""
    return st.just(valid) | PAIRS | JSON | st.lists(PAIRS | JSON, max_size=3)


START_KEYS = {
    "uid": st.text(max_size=6) | JSON,
    "parent_uid": st.text(max_size=6) | JSON,
    "plan_name": st.sampled_from(["grid_scan", "rel_grid_scan", "list_grid_scan", "count", "scan"]) | JSON,
    "shape": _near([3, 4]) | st.tuples(SMALL_INTS, SMALL_INTS).map(list),
    "extents": _near([[0.0, 1.0], [0.0, 1.5]]),
    "snaking": _near([False, True]),
    "snake_axes": _near("True") | st.just("[EpicsMotor(prefix='', name='x')]"),
    "motors": _near(["y", "x"]),
    "plan_args": _near({"args": ["y", [0.0, 1.0, 2.0], "x", [0.0, 0.5], True]})
    | st.fixed_dictionaries({"args": st.lists(PAIRS | JSON | st.lists(st.floats(), max_size=4), max_size=5)}),
    "num_points": _near(12) | SMALL_INTS,
}
START_DOCUMENTS = st.builds(lambda extra, real: {**extra, **real},
                            st.dictionaries(st.text(max_size=8), JSON, max_size=3),
                            st.fixed_dictionaries({}, optional=START_KEYS))


def _check_scan(scan: RasterScan) -> None:
    rows, cols = scan.shape
    assert isinstance(rows, int) and isinstance(cols, int) and rows >= 1 and cols >= 1
    assert all(isinstance(m, str) for m in scan.motors) and len(scan.motors) == 2
    if scan.step is not None:
        assert all(math.isfinite(v) for v in scan.step + scan.origin)


@FAST
@given(START_DOCUMENTS)
def test_geometry_from_any_start_document_is_none_or_a_grid_within_the_cap(doc):
    scan = geometry_from_start(doc)
    if scan is not None:
        _check_scan(scan)
        assert max(scan.shape) <= MAX_MAP_SIDE and scan.n_points <= MAX_MAP_POINTS


@FAST
@given(JSON)
def test_geometry_from_anything_at_all_is_none_or_a_grid(doc):
    scan = geometry_from_start(doc)
    assert scan is None or isinstance(scan, RasterScan)


@FAST
@given(doc=START_DOCUMENTS, stop=JSON | START_DOCUMENTS, expect=st.booleans(), document_first=st.booleans(),
       config=st.dictionaries(st.sampled_from(["nimages", "ntrigger", "number_of_images"]), JSON, max_size=3),
       frames=st.lists(st.integers(0, 2**40) | st.integers(0, 30), max_size=8))
def test_the_router_takes_any_start_document_header_and_frames(doc, stop, expect, document_first, config, frames):
    r = RunRouter(RasterScan((2, 3)), Path("/nowhere/R.h5"), expect_documents=expect, document_wait_s=1.0)
    header = SeriesStart(protocol="stream1", series=1, config=config)
    if document_first:
        r.start_document(doc)
        r.series_start(header, now=0.0)
    else:
        r.series_start(header, now=0.0)
        r.start_document(doc)
    for k in frames:
        route = r.frame(1, k)
        if route.run is not None:
            assert route.run.n_frames <= max(MAX_MAP_POINTS, route.run.scan.n_frames)
        r.records(1, [k])
    r.series_end(1)
    r.stop_document(stop)
    r.expire(10.0, force=True)
    r.ensure_run()
    for run in r.runs.values():
        _check_scan(run.scan)
        assert run.n_frames == run.scan.n_frames


# --------------------------------------------------------------------------- stream messages

def _parse_any(parts: list[bytes]) -> None:
    """Every entry point a received message goes through: detection, both parsers, the hint."""
    assert protocol_of(parts) in ("stream1", "stream2")
    for protocol in ("stream1", "stream2"):
        assert isinstance(looks_like(parts, protocol), bool)
    assert isinstance(parse_stream1(parts), MESSAGE_TYPES)
    assert isinstance(parse_stream1(parts, copy_blob=False, check_blocks=False), MESSAGE_TYPES)
    if len(parts) == 1:
        for check in (True, False):
            assert isinstance(parse_stream2(parts[0], check_blocks=check), MESSAGE_TYPES)


@FAST
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=9))
def test_any_bytes_parse_to_a_message(parts):
    _parse_any(parts)


V1_HTYPES = st.sampled_from(["dheader-1.0", "dimage-1.0", "dimage_d-1.0", "dconfig-1.0", "dseries_end-1.0",
                             "dflatfield-1.0", "dpixelmask-1.0", "dcountrate_table-1.0", "dheader-2.0"])
V1_FIELDS = {"htype": V1_HTYPES | JSON, "series": SMALL_INTS | JSON, "frame": SMALL_INTS | JSON,
             "header_detail": st.sampled_from(["none", "basic", "all"]) | JSON,
             "shape": _near([2, 2]), "type": st.sampled_from(["uint8", "uint16", "uint32", "float32"]) | JSON,
             "encoding": st.sampled_from(["<", "lz4<", "bs8-lz4<", "bs16-lz4<", "bs32-lz4<"]) | JSON,
             "size": SMALL_INTS | JSON, "x_pixels_in_detector": SMALL_INTS, "y_pixels_in_detector": SMALL_INTS,
             "bit_depth_image": st.sampled_from([8, 16, 32]) | JSON, "start_time": JSON}
V1_PARTS = (st.fixed_dictionaries({}, optional=V1_FIELDS).map(lambda d: json.dumps(d).encode())
            | st.binary(max_size=40) | JSON.map(lambda v: json.dumps(v).encode()))


@FAST
@given(st.lists(V1_PARTS, min_size=1, max_size=9))
def test_any_json_multipart_parses_to_a_message(parts):
    _parse_any(parts)


def _tagged(inner):
    tags = st.sampled_from([40, 55799, 56500, 64, 65, 68, 69, 70, 71, 72, 76, 83, 85, 86, 87, 1, 2, 3, 4, 5, 30,
                            258, 1000])
    return st.builds(cbor2.CBORTag, tags, inner)


CBOR_SCALARS = SCALARS | st.binary(max_size=24)
CBOR = st.recursive(CBOR_SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4) | _tagged(inner),
                    max_leaves=14)
ARRAY = st.builds(lambda dims, tag, payload: cbor2.CBORTag(40, [dims, cbor2.CBORTag(tag, payload)]),
                  _near([2, 2]), st.sampled_from([64, 69, 70, 65, 85, 71, 76]),
                  st.binary(max_size=24) | st.builds(lambda name, size, blob: cbor2.CBORTag(56500, [name, size, blob]),
                                                     st.sampled_from(["bslz4", "lz4", "zstd"]) | CBOR,
                                                     st.sampled_from([1, 2, 4]) | CBOR, st.binary(max_size=40))
                  | CBOR)
S2_FIELDS = {"type": st.sampled_from(["start", "image", "end"]) | CBOR, "series_id": SMALL_INTS | CBOR,
             "image_id": SMALL_INTS | CBOR, "series_unique_id": st.text(max_size=4) | CBOR,
             "channels": st.lists(st.sampled_from(["threshold_1", "threshold_2"]) | CBOR, max_size=3) | CBOR,
             "image_size_x": SMALL_INTS, "image_size_y": SMALL_INTS, "bit_depth_image": SMALL_INTS | CBOR,
             "data": st.dictionaries(st.sampled_from(["threshold_1", "x"]), ARRAY, max_size=2) | CBOR,
             "pixel_mask": st.dictionaries(st.sampled_from(["threshold_1", "x"]), ARRAY, max_size=2) | CBOR,
             "flatfield": st.dictionaries(st.sampled_from(["threshold_1"]), ARRAY, max_size=1) | CBOR,
             "start_time": st.lists(SMALL_INTS, max_size=3) | CBOR, "real_time": CBOR}
STREAM2 = st.fixed_dictionaries({}, optional=S2_FIELDS) | CBOR


@FAST
@given(STREAM2, st.booleans())
def test_any_cbor_item_parses_to_a_message(item, self_describe):
    try:
        data = cbor2.dumps(cbor2.CBORTag(55799, item) if self_describe else item)
    except (ValueError, TypeError, OverflowError):  # not encodable (e.g. a tag holding an odd value)
        return
    _parse_any([data])


@lru_cache(maxsize=None)
def _capture(name: str) -> tuple[tuple[bytes, ...], ...]:
    return tuple(tuple(parts) for parts in real_capture(name))


CAPTURES = ["eiger1m_stream1_all", "eiger1m_stream2", "eiger2_16m_stream2", "eiger2_9m_stream1_truncated"]


def _position(data, size: int) -> int:
    """A position in a part of ``size`` bytes: mostly near its start (the JSON / CBOR structure)."""
    if size == 0:
        return 0
    return data.draw(st.integers(0, min(size, 256) - 1) | st.integers(0, size - 1) | st.just(size - 1))


def _mutate(data, parts: list[bytes]) -> list[bytes]:
    parts = [bytearray(p) for p in parts]
    for _ in range(data.draw(st.integers(1, 4))):
        k = data.draw(st.integers(0, len(parts) - 1))
        op = data.draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "drop_part", "dup_part"]))
        part = parts[k]
        if op == "flip" and part:
            part[_position(data, len(part))] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and part:
            part[_position(data, len(part))] = data.draw(st.integers(0, 255))
        elif op == "truncate":
            del part[_position(data, len(part)):]
        elif op == "insert":
            at = _position(data, len(part))
            part[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and part:
            at = _position(data, len(part))
            del part[at:at + data.draw(st.integers(1, 8))]
        elif op == "drop_part" and len(parts) > 1:
            del parts[k]
        elif op == "dup_part":
            parts.insert(k, bytearray(part))
    return [bytes(p) for p in parts]


@pytest.mark.parametrize("name", CAPTURES)
def test_mutations_of_real_captures_parse_to_a_message(name):
    messages = _capture(name)

    @settings(FAST, max_examples=150)
    @given(st.data())
    def mutated(data):
        original = messages[data.draw(st.integers(0, len(messages) - 1))]
        _parse_any(_mutate(data, list(original)))

    mutated()


@pytest.mark.parametrize("name", CAPTURES)
def test_real_captures_parse_unmutated(name):
    for parts in _capture(name):
        _parse_any(list(parts))
        if len(parts) > 1 or protocol_of(list(parts)) == "stream1":
            assert not isinstance(parse_stream1(list(parts)), BadMessage) or "truncated" in name


# --------------------------------------------------------------------------- configuration

def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(doc: dict) -> str:
    """A tiny TOML writer: top-level scalars, then ``[table]`` and ``[[array of tables]]`` sections."""
    lines = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in doc.items()
             if not isinstance(v, dict) and not (isinstance(v, list) and v and all(isinstance(t, dict) for t in v))]
    for key, value in doc.items():
        if isinstance(value, dict):
            lines.append(f"[{json.dumps(key)}]")
            lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and all(isinstance(t, dict) for t in value):
            for table in value:
                lines.append(f"[[{json.dumps(key)}]]")
                lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


TOML_SCALARS = (st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
                | st.sampled_from([0, -1, 10**30, 2**64, 1e308, float("nan"), float("inf"), 0.0, -0.5]))
TOML = st.recursive(TOML_SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=10)

VALID = {
    "geometry": {"poni": "g.poni", "mask": "m.npy"},
    "scan": {"shape": [3, 4], "snake": True, "frames_per_point": 1, "step": [0.5, 0.5], "origin": [0.0, 0.0],
             "motors": ["y", "x"]},
    "peak": [{"name": "100", "hkl": [1, 0, 0], "q": [0.9, 1.2], "chi": [-5.0, 45.0], "bins": [10, 12]},
             {"name": "110", "hkl": [1, 1, 0], "q": [1.3, 1.6], "chi": [40.0, 90.0]},
             {"name": "sl", "superlattice": [1, 0], "q": [0.1, 0.2], "chi": [0.0, 10.0]}],
    "fit": {"min_bins": 30, "min_snr": 5.0, "max_iterations": 60},
    "derived": {"scherrer_k": 0.9, "williamson_hall": ["100", "110"], "d_ref": {"100": 5.8}},
    "executor": {"workers": 2, "scheduler": "tcp://127.0.0.1:8786", "batch_size": 16},
    "stream": {"connect": "tcp://127.0.0.1:9999", "protocol": "auto", "channel": "threshold_1", "socket": "pull",
               "batch_timeout_s": 0.1, "max_backlog_mb": 512.0},
    "monitor": {"flush_interval_s": 1.0, "publish": "tcp://127.0.0.1:5557"},
    "rescan": {"allowed_plans": ["grid_scan"], "limits": {"y": [0.0, 30.0], "x": [0.0, 40.0]}},
}


def _near_toml(valid):
    near = [st.just(valid), TOML]
    if isinstance(valid, list):
        near.append(st.lists(TOML_SCALARS, min_size=len(valid), max_size=len(valid)))
    if isinstance(valid, dict):
        near.append(st.dictionaries(st.sampled_from(sorted(valid) or ["k"]) | st.text(max_size=4), TOML, max_size=3))
    return st.one_of(near)


def _table(valid: dict):
    """The table with each key kept, dropped or given another value, and maybe an unknown key."""
    return st.builds(lambda kept, extra: {**kept, **extra},
                     st.fixed_dictionaries({}, optional={k: _near_toml(v) for k, v in valid.items()}),
                     st.dictionaries(st.text(max_size=6), TOML, max_size=1))


CONFIGS = st.fixed_dictionaries(
    {name: _table(VALID[name]) for name in ("geometry", "scan")},
    optional={**{name: _table(table) | TOML for name, table in VALID.items()
                 if name not in ("peak", "geometry", "scan")},
              "peak": st.lists(st.sampled_from(VALID["peak"]).flatmap(_table), max_size=3) | TOML,
              "unknown": TOML})


@pytest.fixture(scope="module")
def config_dir():
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        (path / "g.poni").write_text("")
        (path / "m.npy").write_bytes(b"")
        yield path


def _load(path: Path) -> NanomapsConfig | None:
    try:
        return load_config(path)
    except ConfigError:
        return None


def test_the_valid_config_loads(config_dir):
    (config_dir / "valid.toml").write_text(to_toml(VALID))
    assert isinstance(load_config(config_dir / "valid.toml"), NanomapsConfig)


@FAST
@given(CONFIGS)
def test_any_toml_config_loads_or_raises_config_error(config_dir, doc):
    path = config_dir / "c.toml"
    path.write_text(to_toml(doc), encoding="utf-8")
    config = _load(path)
    if config is not None:
        assert config.scan.n_points >= 1 and config.peaks


@FAST
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
       | st.integers(1, 3000).map(lambda n: b"a = " + b"[" * n + b"]" * n))
def test_any_bytes_as_a_config_file_load_or_raise_config_error(config_dir, data):
    path = config_dir / "b.toml"
    path.write_bytes(data)
    _load(path)


@pytest.mark.parametrize("edit", [
    ("geometry", "poni", "x" * 5000),          # OSError (file name too long) escaped
    ("geometry", "mask", "x" * 5000),
    ("geometry", "poni", "a\x00b"),
    ("fit", "min_snr", 10**400),               # OverflowError in math.isfinite escaped
    ("scan", "step", [10**400, 1]),
    ("derived", "d_ref", {"100": 10**400}),
    ("derived", "d_ref", {"100": float("nan")}),  # was accepted as a d-spacing
    ("rescan", "limits", {"y": [10**400, 10**401]}),
], ids=lambda e: f"{e[0]}.{e[1]}")
def test_config_escapes_found_are_config_errors(config_dir, edit):
    table, key, value = edit
    doc = json.loads(json.dumps(VALID))
    doc[table][key] = value
    (config_dir / "e.toml").write_text(to_toml(doc), encoding="utf-8")
    with pytest.raises(ConfigError):
        load_config(config_dir / "e.toml")


@pytest.mark.parametrize("data", [b"\x80", b"a = " + b"[" * 3000 + b"]" * 3000, b"a = 1" + b"0" * 5000],
                         ids=["not-utf8", "deep-nesting", "huge-int"])
def test_config_file_escapes_found_are_config_errors(config_dir, data):
    (config_dir / "f.toml").write_bytes(data)
    with pytest.raises(ConfigError):
        load_config(config_dir / "f.toml")


def test_a_start_message_declaring_a_huge_pixel_mask_is_refused_before_decoding():
    """Found by review of the fuzzed paths: a compressed pixel mask whose header declares 256 GiB
    (dims [2**18, 2**18] uint32, image size not sent) was decompressed, and MemoryError escaped."""
    blob = struct.pack(">QI", (1 << 36) * 4, 8192) + bytes(16)
    mask = cbor2.CBORTag(40, [[1 << 18, 1 << 18], cbor2.CBORTag(70, cbor2.CBORTag(56500, ["bslz4", 4, blob]))])
    msg = parse_stream2(cbor2.dumps({"type": "start", "series_id": 1, "pixel_mask": {"threshold_1": mask}}))
    assert isinstance(msg, SeriesStart) and msg.pixel_mask is None
    assert any("more than" in p for p in msg.problems)
