"""The embedded default: demo config and PONI files shipped inside the package."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

#: detector name → embedded PONI file (same peaks and windows for both)
DEMO_DETECTORS = {"Eiger1M": "eiger1m_demo.poni", "Eiger4M": "p10_eiger4m.poni"}


def write_demo_config(folder: str | Path, *, detector: str = "Eiger1M", shape: tuple[int, int] | None = None) -> Path:
    """Write the demo config (and its PONI) into ``folder``; returns the config path.

    ``detector`` picks the geometry (EIGER 1M at 0.1 m, or the P10-like EIGER X 4M at
    0.2 m); ``shape`` overrides the scan's ``[rows, cols]``.
    """
    if detector not in DEMO_DETECTORS:
        raise ValueError(f"detector {detector!r}: choose one of {', '.join(DEMO_DETECTORS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = resources.files("processors") / "demo_data"
    poni = DEMO_DETECTORS[detector]
    with resources.as_file(data / poni) as src:
        shutil.copyfile(src, folder / poni)
    text = (data / "demo.toml").read_text()
    text = text.replace('poni = "eiger1m_demo.poni"', f'poni = "{poni}"')
    if shape is not None:
        text = text.replace("shape = [24, 32]", f"shape = [{int(shape[0])}, {int(shape[1])}]")
    path = folder / "demo.toml"
    path.write_text(text)
    return path
