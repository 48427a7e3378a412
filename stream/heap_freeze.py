"""Keep a long-running process's start-up objects out of the cyclic garbage collector's walks.

A worker or live process imports numba, pyFAI, scipy and h5py and builds its tables once: some
70 000 or more container objects that live as long as the process. Every full collection walks
all of them (10–16 ms each, measured on the 2-core bench machine), and the few objects each frame
allocates trigger one every so often: about 0.1 ms per frame in each worker and in the live
main process (``perf`` over a live EIGER 4M run at 300 Hz, docs/live_path.md). Frozen objects
are never collected, so this is called once start-up is over, not per frame.
"""

from __future__ import annotations

import gc


def freeze_long_lived() -> None:
    """Collect what start-up left as garbage, then move every object the cyclic collector
    tracks into its permanent generation (:func:`gc.freeze`). Objects made later are
    collected as usual. Call it once a long-lived structure is built, never per frame:
    even :func:`gc.get_freeze_count` walks every frozen object (≈ 100 000 after start-up)."""
    gc.collect()
    gc.freeze()
