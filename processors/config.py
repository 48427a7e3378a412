"""The TOML configuration: typed, frozen, validated at start-up.

Every error names the file, the key and the fix; unknown keys are errors (a typo must
not silently fall back on a default). Checks that need the detector geometry (windows
outside the detector's q/χ coverage) happen when the polar lookup table is built.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream.raster_scan import RasterScan


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says where and how to fix it."""


_MISSING = object()


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool) that a float can hold: TOML integers may have any size."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float's range
        return False


class _Table:
    """Reads one TOML table, checking types and remembering which keys were used."""

    def __init__(self, data: Any, where: str, source: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: {where} must be a table, got {type(data).__name__}")
        self.data, self.where, self.source, self.used = data, where, source, set()

    def error(self, key: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.where} key '{key}': {problem}. Fix: {fix}")

    def get(self, key: str, kind: str, default: Any = _MISSING, fix: str = "") -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is _MISSING:
                raise ConfigError(f"{self.source}: {self.where} is missing required key '{key}'. "
                                  f"Fix: add {fix or key + ' = ...'}")
            return default
        value = self.data[key]
        checks = {
            "str": lambda v: isinstance(v, str),
            "bool": lambda v: isinstance(v, bool),
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "float": _is_number,
            "pair": lambda v: isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v),
            "intpair": lambda v: isinstance(v, list) and len(v) == 2 and all(
                isinstance(x, int) and not isinstance(x, bool) for x in v),
            "ints": lambda v: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
            "strs": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
            "table": lambda v: isinstance(v, dict),
        }
        if not checks[kind](value):
            expected = {"pair": "a list of two numbers", "intpair": "a list of two integers",
                        "ints": "a list of integers", "strs": "a list of strings",
                        "float": "a finite number"}.get(kind, f"a {kind}")
            raise self.error(key, f"expected {expected}, got {value!r}", fix or f"write {key} as {expected}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            known = ", ".join(sorted(self.used))
            raise ConfigError(f"{self.source}: {self.where} has unknown key(s) {', '.join(map(repr, unknown))}. "
                              f"Fix: remove or correct them (known keys: {known})")


@dataclass(frozen=True)
class GeometryConfig:
    """``[geometry]``: pyFAI PONI file and optional user mask (.npy, nonzero = bad)."""

    poni: Path
    mask: Path | None = None


@dataclass(frozen=True)
class PeakConfig:
    """One ``[[peak]]``: a Bragg (``hkl``) or superlattice spot and its polar window.

    ``q`` in 1/Å, ``chi`` in degrees (pyFAI χ; bounds may lie outside (−180, 180]),
    ``bins`` = (q bins, χ bins) or None to choose from the pixel resolution:
    ``pixels_per_bin`` detector pixels per bin along each axis (1 for narrow SAXS spots).
    """

    name: str
    q: tuple[float, float]
    chi: tuple[float, float]
    hkl: tuple[int, int, int] | None = None
    superlattice: tuple[int, int] | None = None
    bins: tuple[int, int] | None = None
    pixels_per_bin: float = 2.0


@dataclass(frozen=True)
class FitConfig:
    """``[fit]``: when a window holds a peak worth fitting, and how long to try."""

    min_bins: int = 30
    min_snr: float = 5.0
    max_iterations: int = 60
    #: Outlier rule threshold (Poisson standard deviations above the model; 0 = off).
    outlier_sigma: float = 7.0


@dataclass(frozen=True)
class DerivedConfig:
    """``[derived]``: Scherrer constant, Williamson–Hall peaks, reference d-spacings (Å), and the
    supercrystal mask: points with at least ``supercrystal_min_peaks`` fitted Bragg spots (None:
    two, or one when only one Bragg peak is configured) whose summed spot volume is at least
    ``supercrystal_threshold`` (counts/pixel · 1/Å · degrees; processors.supercrystal_mask)."""

    scherrer_k: float = 0.85
    williamson_hall: tuple[str, ...] | None = None
    d_ref: dict[str, float] = field(default_factory=dict)
    supercrystal_threshold: float = 0.0
    supercrystal_min_peaks: int | None = None


@dataclass(frozen=True)
class ExecutorConfig:
    """``[executor]``: local worker processes or a Dask scheduler, and batching."""

    workers: int | None = None
    scheduler: str | None = None
    batch_size: int = 16


@dataclass(frozen=True)
class StreamConfig:
    """``[stream]``: where frames come from and which threshold channel to use."""

    connect: str | None = None
    protocol: str = "auto"
    channel: str = "threshold_1"
    socket: str = "pull"
    batch_timeout_s: float = 0.1      # a batch leaves after this long even if not full
    max_backlog_mb: float = 512.0     # compressed frames waiting or in flight; beyond: skipped (counted)


@dataclass(frozen=True)
class MonitorConfig:
    """``[monitor]``: results flushing and map-snapshot publishing."""

    flush_interval_s: float = 1.0
    publish: str = "tcp://127.0.0.1:5557"


@dataclass(frozen=True)
class RescanConfig:
    """``[rescan]``: which plans may be submitted and the motor limits they must respect."""

    allowed_plans: tuple[str, ...] = ("grid_scan",)
    limits: dict[str, tuple[float, float]] = field(default_factory=dict)


DEFAULT_DETECTOR = "eiger"  # the simulated EIGER's ophyd name in the demo (monitor/sim/demo_session)


@dataclass(frozen=True)
class BlueskyConfig:
    """``[bluesky]``: the ophyd name of the detector whose stream is processed; a run whose start
    document lists ``detectors`` without it opens no map and takes no series.

    ``queue_server_public_key``: the queue server's public 0MQ CURVE key (z85, 40
    characters) when its control socket is encrypted; None when it is not."""

    detector: str = DEFAULT_DETECTOR
    queue_server_public_key: str | None = None


#: The z85 alphabet (ZeroMQ RFC 32): CURVE keys are 32 bytes written as 40 of these characters.
_Z85 = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")


def check_z85_key(key: str) -> str:
    """Why ``key`` is not a 0MQ CURVE key in z85 text ("" when it is one)."""
    if len(key) != 40:
        return f"{len(key)} characters; a 0MQ key in z85 has 40 (qserver-zmq-keys prints a pair)"
    bad = sorted(set(key) - _Z85)
    if bad:
        return f"characters {''.join(bad)!r} are not z85; copy the key as qserver-zmq-keys printed it"
    return ""


@dataclass(frozen=True)
class NanomapsConfig:
    """A whole validated configuration; ``text`` is the file as written (for provenance)."""

    path: Path
    text: str
    geometry: GeometryConfig
    scan: RasterScan  # [scan]: shape [rows (slow), cols (fast)], snake, optional motor grid (µm)
    peaks: tuple[PeakConfig, ...]
    fit: FitConfig = FitConfig()
    derived: DerivedConfig = DerivedConfig()
    executor: ExecutorConfig = ExecutorConfig()
    stream: StreamConfig = StreamConfig()
    monitor: MonitorConfig = MonitorConfig()
    rescan: RescanConfig = RescanConfig()
    bluesky: BlueskyConfig = BlueskyConfig()

    @property
    def williamson_hall_peaks(self) -> tuple[str, ...]:
        """Peaks entering Williamson–Hall: configured, else every h00/0k0/hh0 peak."""
        if self.derived.williamson_hall is not None:
            return self.derived.williamson_hall
        names = []
        for p in self.peaks:
            if p.hkl is None:
                continue
            h, k, l = p.hkl  # noqa: E741 (the Miller index is called l)
            if l == 0 and (h == 0 or k == 0 or h == k) and (h, k) != (0, 0):
                names.append(p.name)
        return tuple(names)


def _is_file(path: Path) -> bool:
    """``path`` is a file; False also for a path the system refuses (name too long, ...)."""
    try:
        return path.is_file()
    except OSError:
        return False


_TABLES = ("geometry", "scan", "peak", "fit", "derived", "executor", "stream", "monitor", "rescan", "bluesky")


def _parse_peak(raw: Any, number: int, source: str) -> PeakConfig:
    t = _Table(raw, f"[[peak]] #{number}", source)
    name = t.get("name", "str", fix='name = "100"')
    t.where = f"[[peak]] '{name}'"
    q = t.get("q", "pair", fix="q = [low, high] in 1/Å")
    chi = t.get("chi", "pair", fix="chi = [low, high] in degrees")
    hkl = t.get("hkl", "ints", None)
    sl = t.get("superlattice", "intpair", None)
    bins = t.get("bins", "intpair", None)
    ppb = float(t.get("pixels_per_bin", "float", 2.0))
    t.finish()
    if (hkl is None) == (sl is None):
        raise t.error("hkl", "a peak needs exactly one of 'hkl' (Bragg spot) or 'superlattice' (SAXS spot)",
                      "add hkl = [1, 0, 0] or superlattice = [1, 0]")
    if hkl is not None and (len(hkl) != 3 or hkl == [0, 0, 0]):
        raise t.error("hkl", f"expected three Miller indices, not all zero, got {hkl}", "write hkl = [h, k, l]")
    if sl is not None and sorted(map(abs, sl)) != [0, 1]:
        raise t.error("superlattice", f"only the first-order spots [1, 0] and [0, 1] are used, got {sl}",
                      "write superlattice = [1, 0] or [0, 1]")
    if not 0 < q[0] < q[1]:
        raise t.error("q", f"window {q} must satisfy 0 < low < high (1/Å)", "write q = [low, high] with low < high")
    if not chi[0] < chi[1]:
        raise t.error("chi", f"window {chi} is inverted or empty", "write chi = [low, high] with low < high")
    if chi[1] - chi[0] >= 360:
        raise t.error("chi", f"window {chi} is {chi[1] - chi[0]}° wide", "keep the χ window narrower than 360°")
    if not 1.0 <= ppb <= 16.0:
        raise t.error("pixels_per_bin", f"{ppb} is outside 1–16",
                      "use 1 for narrow spots (SAXS), 2 (the default) otherwise")
    if bins is not None and min(bins) < 4:
        raise t.error("bins", f"{bins} is too coarse for a 2-D fit", "use at least 4 bins per axis, or omit bins")
    return PeakConfig(name=name, q=(float(q[0]), float(q[1])), chi=(float(chi[0]), float(chi[1])),
                      hkl=tuple(hkl) if hkl is not None else None,
                      superlattice=tuple(sl) if sl is not None else None,
                      bins=tuple(bins) if bins is not None else None, pixels_per_bin=ppb)


def parse_config(text: str, path: str | Path = "<config>") -> NanomapsConfig:
    """Parse and validate config ``text``; relative paths resolve against ``path``'s folder."""
    path = Path(path)
    source = str(path)
    try:
        data = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError; an integer of more than 4300 digits
        raise ConfigError(f"{source}: not valid TOML ({exc}). Fix: check the syntax at that line") from exc
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError(f"{source}: not valid TOML (arrays or tables nested too deeply). "
                          "Fix: write the config as plain tables and flat lists") from None
    unknown = sorted(set(data) - set(_TABLES))
    if unknown:
        raise ConfigError(f"{source}: unknown table(s) {', '.join(unknown)}. "
                          f"Fix: use only {', '.join('[' + t + ']' for t in _TABLES)}")
    base = path.parent

    if "geometry" not in data:
        raise ConfigError(f"{source}: missing [geometry] table. Fix: add [geometry] with poni = \"file.poni\"")
    g = _Table(data["geometry"], "[geometry]", source)
    poni = base / g.get("poni", "str", fix='poni = "geometry.poni"')
    mask = g.get("mask", "str", None)
    g.finish()
    if not _is_file(poni):
        raise ConfigError(f"{source}: [geometry] key 'poni': file {poni} not found. "
                          "Fix: give the PONI path relative to the config file")
    mask_path = base / mask if mask else None
    if mask_path is not None and not _is_file(mask_path):
        raise ConfigError(f"{source}: [geometry] key 'mask': file {mask_path} not found. "
                          "Fix: give a .npy mask path relative to the config file, or remove the key")
    geometry = GeometryConfig(poni=poni, mask=mask_path)

    if "scan" not in data:
        raise ConfigError(f"{source}: missing [scan] table. Fix: add [scan] with shape = [rows, cols]")
    s = _Table(data["scan"], "[scan]", source)
    shape = s.get("shape", "intpair", fix="shape = [rows, cols]")
    snake = s.get("snake", "bool", False)
    fpp = s.get("frames_per_point", "int", 1)
    step = s.get("step", "pair", None)
    origin = s.get("origin", "pair", [0.0, 0.0])
    motors = s.get("motors", "strs", ["y", "x"])
    s.finish()
    if min(shape) < 1:
        raise s.error("shape", f"{shape} has a non-positive size", "give shape = [rows, cols] with both >= 1")
    if fpp < 1:
        raise s.error("frames_per_point", f"{fpp} < 1", "use frames_per_point = 1 or more")
    if len(motors) != 2:
        raise s.error("motors", f"expected two names (slow, fast), got {motors}", 'write motors = ["y", "x"]')
    if step is not None and 0 in step:
        raise s.error("step", f"{step} has a zero step", "give the step per row and column in µm")
    scan = RasterScan(shape=(shape[0], shape[1]), snake=snake, frames_per_point=fpp,
                      step=(float(step[0]), float(step[1])) if step else None,
                      origin=(float(origin[0]), float(origin[1])), motors=(motors[0], motors[1]))

    raw_peaks = data.get("peak")
    if not isinstance(raw_peaks, list) or not raw_peaks:
        raise ConfigError(f"{source}: no [[peak]] tables. Fix: add at least one [[peak]] with name, hkl, q and chi")
    peaks = tuple(_parse_peak(p, i + 1, source) for i, p in enumerate(raw_peaks))
    names = [p.name for p in peaks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{source}: [[peak]] names {dupes} are used twice. Fix: give each peak its own name")

    f = _Table(data.get("fit", {}), "[fit]", source)
    fit = FitConfig(min_bins=f.get("min_bins", "int", FitConfig.min_bins),
                    min_snr=float(f.get("min_snr", "float", FitConfig.min_snr)),
                    max_iterations=f.get("max_iterations", "int", FitConfig.max_iterations),
                    outlier_sigma=float(f.get("outlier_sigma", "float", FitConfig.outlier_sigma)))
    f.finish()
    if fit.min_bins < 9:
        raise f.error("min_bins", f"{fit.min_bins} cannot constrain 8 parameters", "use min_bins >= 9")
    if not (fit.outlier_sigma == 0.0 or 3.0 <= fit.outlier_sigma < math.inf):
        raise f.error("outlier_sigma", f"{fit.outlier_sigma} is below 3 (ordinary Poisson noise would be cut)",
                      "use outlier_sigma = 7 (the default), a value >= 3, or 0 to turn the rule off")
    if fit.max_iterations < 1:
        raise f.error("max_iterations", f"{fit.max_iterations} < 1", "use max_iterations >= 1")

    d = _Table(data.get("derived", {}), "[derived]", source)
    k = float(d.get("scherrer_k", "float", 0.85))
    wh = d.get("williamson_hall", "strs", None)
    d_ref_raw = d.get("d_ref", "table", {})
    sc_threshold = float(d.get("supercrystal_threshold", "float", 0.0))
    sc_min_peaks = d.get("supercrystal_min_peaks", "int", None)
    d.finish()
    if sc_threshold < 0:
        raise d.error("supercrystal_threshold", f"{sc_threshold} is negative",
                      "use 0 (any fitted Bragg spot) or a positive spot volume (counts/pixel · 1/Å · degrees)")
    n_bragg = sum(p.hkl is not None for p in peaks)
    if sc_min_peaks is not None and not 1 <= sc_min_peaks <= max(n_bragg, 1):
        raise d.error("supercrystal_min_peaks", f"{sc_min_peaks} is outside 1..{n_bragg} (the Bragg peaks configured)",
                      f"use a number from 1 to {n_bragg}, or omit it (default: min(2, {n_bragg}))")
    if not 0 < k <= 2:
        raise d.error("scherrer_k", f"{k} is not a plausible Scherrer constant", "use about 0.85–1.0")
    for name in (wh or []):
        if name not in names:
            raise d.error("williamson_hall", f"peak '{name}' is not configured", f"use names from {names}")
    if wh is not None and len(wh) < 2:
        raise d.error("williamson_hall", "a straight line needs at least two peaks", "list two or more peak names")
    d_ref = {}
    for name, value in d_ref_raw.items():
        if name not in names:
            raise d.error("d_ref", f"peak '{name}' is not configured", f"use names from {names}")
        if not _is_number(value) or value <= 0:
            raise d.error("d_ref", f"'{name}' = {value!r} is not a positive d-spacing", "give d in Å")
        d_ref[name] = float(value)
    derived = DerivedConfig(scherrer_k=k, williamson_hall=tuple(wh) if wh is not None else None, d_ref=d_ref,
                            supercrystal_threshold=sc_threshold, supercrystal_min_peaks=sc_min_peaks)

    e = _Table(data.get("executor", {}), "[executor]", source)
    executor = ExecutorConfig(workers=e.get("workers", "int", None), scheduler=e.get("scheduler", "str", None),
                              batch_size=e.get("batch_size", "int", ExecutorConfig.batch_size))
    e.finish()
    if executor.workers is not None and executor.workers < 1:
        raise e.error("workers", f"{executor.workers} < 1", "use workers >= 1, or omit it for one per core")
    if executor.batch_size < 1:
        raise e.error("batch_size", f"{executor.batch_size} < 1", "use batch_size >= 1")

    st = _Table(data.get("stream", {}), "[stream]", source)
    stream = StreamConfig(connect=st.get("connect", "str", None), protocol=st.get("protocol", "str", "auto"),
                          channel=st.get("channel", "str", "threshold_1"), socket=st.get("socket", "str", "pull"),
                          batch_timeout_s=float(st.get("batch_timeout_s", "float", StreamConfig.batch_timeout_s)),
                          max_backlog_mb=float(st.get("max_backlog_mb", "float", StreamConfig.max_backlog_mb)))
    st.finish()
    if not 0 < stream.batch_timeout_s <= 10:
        raise st.error("batch_timeout_s", f"{stream.batch_timeout_s} s", "use a value in (0, 10] seconds")
    if not stream.max_backlog_mb > 0:
        raise st.error("max_backlog_mb", f"{stream.max_backlog_mb}", "use a positive size in MB")
    if stream.protocol not in ("auto", "stream1", "stream2"):
        raise st.error("protocol", f"{stream.protocol!r} is unknown", 'use "auto", "stream1" or "stream2"')
    if stream.socket not in ("pull", "sub"):
        raise st.error("socket", f"{stream.socket!r} is unknown", 'use "pull" or "sub"')

    m = _Table(data.get("monitor", {}), "[monitor]", source)
    monitor = MonitorConfig(flush_interval_s=float(m.get("flush_interval_s", "float", 1.0)),
                            publish=m.get("publish", "str", MonitorConfig.publish))
    m.finish()
    if not 0 < monitor.flush_interval_s <= 1.0:
        raise m.error("flush_interval_s", f"{monitor.flush_interval_s} s", "flush at least once per second (0 < value <= 1)")

    r = _Table(data.get("rescan", {}), "[rescan]", source)
    plans = r.get("allowed_plans", "strs", ["grid_scan"])
    limits_raw = r.get("limits", "table", {})
    r.finish()
    limits = {}
    for motor, lim in limits_raw.items():
        if not (isinstance(lim, list) and len(lim) == 2 and all(_is_number(x) for x in lim) and lim[0] < lim[1]):
            raise r.error("limits", f"motor '{motor}' limits {lim!r} are not [low, high] with low < high",
                          f"write {motor} = [low, high]")
        limits[motor] = (float(lim[0]), float(lim[1]))
    rescan = RescanConfig(allowed_plans=tuple(plans), limits=limits)

    b = _Table(data.get("bluesky", {}), "[bluesky]", source)
    bluesky = BlueskyConfig(detector=b.get("detector", "str", DEFAULT_DETECTOR,
                                           fix=f'detector = "{DEFAULT_DETECTOR}" (the ophyd name in start documents)'),
                            queue_server_public_key=b.get("queue_server_public_key", "str", None,
                                                          fix='queue_server_public_key = "<40 z85 characters>"'))
    b.finish()
    if bluesky.queue_server_public_key is not None:
        problem = check_z85_key(bluesky.queue_server_public_key)
        if problem:
            raise b.error("queue_server_public_key", problem, "give the public key the queue server's "
                          "administrator got from qserver-zmq-keys (never the private one)")
    if not bluesky.detector.strip():
        raise b.error("detector", "empty name", "give the detector's ophyd name as start documents list it, "
                      f'e.g. detector = "{DEFAULT_DETECTOR}"')

    return NanomapsConfig(path=path, text=text, geometry=geometry, scan=scan, peaks=peaks, fit=fit,
                          derived=derived, executor=executor, stream=stream, monitor=monitor, rescan=rescan,
                          bluesky=bluesky)


def load_config(path: str | Path) -> NanomapsConfig:
    """Read and validate a TOML config file (see :func:`parse_config`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")  # TOML is UTF-8
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found. Fix: check the --config path") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc}). Fix: save the config as UTF-8 TOML") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from exc
    return parse_config(text, path)
