"""Progress bars for long work: lively on a terminal, sparse in logs."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int, desc: str, *, enabled: bool = True) -> tqdm:
    """A tqdm bar counting frames; redraws at most every 0.5 s on a terminal, 10 s otherwise."""
    interactive = sys.stderr.isatty()
    return tqdm(total=total, unit="frame", desc=desc, disable=not enabled, dynamic_ncols=True,
                mininterval=0.5 if interactive else 10.0)
