"""Output files checked before any work: a run must not fail at its first write.

A beamline user who mistypes ``--out`` should learn it in the first second, in one line
that names the path and the fix, not after the detector has been armed.
"""

from __future__ import annotations

import os
from pathlib import Path


class OutputPathError(OSError):
    """An output path that cannot be written."""

    def __str__(self) -> str:  # OSError's str() would prefix "[Errno ...]"; ours is already one line
        return self.args[0] if self.args else ""


def check_output_file(path: str | Path, *, what: str = "output file") -> Path:
    """``path`` as a Path, once it is clear that it can be created (its folder exists or can be).

    Raises :class:`OutputPathError` naming ``what``, the path and the fix. Nothing is
    created: a folder that does not exist yet is only checked for the nearest existing
    parent being writable.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{what} {path}: is a folder. Fix: give a file name, e.g. {path / 'results.h5'}")
    parent = path.parent if str(path.parent) else Path(".")
    existing = parent
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"{what} {path}: {existing} is a file, not a folder. Fix: choose another path")
    # /proc and read-only mounts pass os.access for root: probe for real with a temporary file
    probe = existing / f".nanomaps-write-test-{os.getpid()}"
    try:
        with open(probe, "wb"):
            pass
        probe.unlink()
    except OSError as exc:
        raise OutputPathError(f"{what} {path}: cannot write in {existing} ({exc.strerror or exc}). "
                              "Fix: choose a folder you can write to") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{what} {path}: exists and is read-only. Fix: choose another name")
    return path


def _existing(pattern: str | Path) -> list[Path]:
    """The files ``pattern`` names: itself, or what its glob (``*``, ``?``, ``[...]`` in the name) matches."""
    pattern = Path(pattern)
    if not any(c in pattern.name for c in "*?["):
        return [pattern] if pattern.exists() else []
    parent = pattern.parent if str(pattern.parent) else Path(".")
    return sorted(parent.glob(pattern.name)) if parent.is_dir() else []


def refuse_existing(paths_or_globs, what: str, flag: str = "--overwrite") -> None:
    """Raise :class:`OutputPathError` when any of ``paths_or_globs`` exists: nothing is overwritten unasked.

    Each entry is a path or a glob in its file name (e.g. ``out/R_[0-9]*.h5``). The one-line
    message names the first existing file, how many more there are, and ``flag``.
    """
    found: list[Path] = []
    for pattern in paths_or_globs:
        found += [p for p in _existing(pattern) if p not in found]
    if found:
        more = f" (and {len(found) - 1} more of this output)" if len(found) > 1 else ""
        raise OutputPathError(f"{what} {found[0]} already exists{more}. Fix: choose another name, or pass "
                              f"{flag} to replace it")


def results_series_globs(out: str | Path) -> list[Path]:
    """A live session's results files: ``R.h5`` and the later runs' ``R_<n>.h5``."""
    out = Path(out)
    return [out, out.with_name(f"{out.stem}_[0-9]*{out.suffix}")]


def recording_globs(master: str | Path) -> list[Path]:
    """A recording's files: ``RAW_master.h5``, its ``RAW_data_*.h5``, later series' ``RAW_<n>_master.h5``
    and their data files (names as :mod:`stream.dectris_writer` and :mod:`stream.stream_recorder` give them)."""
    master = Path(master)
    stem = master.name.removesuffix("_master.h5").removesuffix(".h5")
    return [master, master.with_name(f"{stem}_data_*.h5"), master.with_name(f"{stem}_[0-9]*_master.h5"),
            master.with_name(f"{stem}_[0-9]*_data_*.h5")]
