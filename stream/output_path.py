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
