"""Simulated demo scans shared by the test modules of one session: each is rendered once.

Several modules need the same small scan (the demo config, a shape, a seed); rendering one
costs about 0.2 s per EIGER 1M frame, so each module rendering its own cost minutes per run.
The scan is written under the session's base temporary folder, keyed by what defines it,
and reused by every later module of the session. Users must treat its files as read-only
(copy them to alter them) and write their outputs elsewhere.
"""

from __future__ import annotations

import pickle
import shutil

import pytest

from processors.config import NanomapsConfig, load_config
from processors.demo_setup import write_demo_config
from processors.simulate_scan import SimulatedScan, simulate_scan_file


def demo_scan(tmp_path_factory: pytest.TempPathFactory, shape: tuple[int, int], *, seed: int,
              frames_per_file: int = 100) -> tuple[NanomapsConfig, SimulatedScan]:
    """The demo config with scan ``shape`` and its simulated scan (``seed``), rendered once per session.

    The config is ``<folder>/cfg/demo.toml``, the master ``<folder>/sim/scan_master.h5``.
    """
    folder = tmp_path_factory.getbasetemp() / "shared_scans" / f"demo_{shape[0]}x{shape[1]}_s{seed}_f{frames_per_file}"
    master = folder / "sim" / "scan_master.h5"
    record = folder / "simulated_scan.pickle"  # written last: its presence means the scan is complete
    if not record.exists():
        if folder.exists():  # an earlier attempt of this session failed midway
            shutil.rmtree(folder)
        config = load_config(write_demo_config(folder / "cfg", shape=shape))
        sim = simulate_scan_file(config, master, seed=seed, frames_per_file=frames_per_file)
        record.write_bytes(pickle.dumps(sim))
        return config, sim
    return load_config(folder / "cfg" / "demo.toml"), pickle.loads(record.read_bytes())
