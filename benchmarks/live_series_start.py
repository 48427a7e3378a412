"""What a live series' start costs: the live 4M run of ``make bench`` with a cold and a warm start.

One fresh live process (2 workers) per run, fed by ``replay_file`` from this process at
``--rate`` frames/s, over loopback, as ``make bench`` does. ``cold``: the 3600-frame series is
the session's first, so the workers build that header's tables (its mask) while its frames
arrive, as in ``make bench``. ``warm``: a 200-frame series with the same header goes first,
then 1 s of pause; the 3600-frame series then finds the tables built. The difference is what
the start costs. Prints, per run, the first result's delay after the first frame, p50 / p95
latency (receive → result, from the results file) and the frames over 250 ms; runs of the
two kinds alternate. Informative only, never asserted.

    .venv/bin/python benchmarks/live_series_start.py --runs 3 [--code /tmp/nm_base]

``--code DIR`` runs the live process from another checkout (``git archive <commit> | tar -x -C DIR``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from end_to_end_bench import LIVE_4M_FRAMES, LIVE_4M_P95_MS, LIVE_4M_RATE_HZ, REPO, config_for_frames  # noqa: E402
from run_bench import DETECTORS, make_file  # noqa: E402

FILE_FRAMES = 200


def one_run(folder: Path, master: Path, config: Path, warm: bool, rate: float, code: Path) -> dict:
    """One live process; a warm-up series first when ``warm``; the last series' latencies."""
    from stream.dectris_replay import replay_file
    from stream.stream_sender import StreamSender

    out = folder / f"results_{'warm' if warm else 'cold'}_{time.monotonic_ns()}.h5"
    sender = StreamSender("tcp://127.0.0.1:*")
    script = (
        "import json, threading\n"
        "from pathlib import Path\n"
        "from processors.config import load_config\n"
        "from monitor.session.live_processor import LiveOptions, LiveProcessor\n"
        f"opts = LiveOptions(endpoint={sender.endpoint!r}, out=Path({str(out)!r}), workers=2, status=False, "
        f"series={2 if warm else 1})\n"
        f"lp = LiveProcessor(load_config({str(config)!r}), opts)\n"
        "threading.Thread(target=lambda: (lp.ready.wait(), print('READY', flush=True)), daemon=True).start()\n"
        "s = lp.run(threading.Event())\n"
        "print(json.dumps([str(p) for p in s.results]))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=code, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()
        if "READY" not in line:
            raise RuntimeError(f"live process did not get ready: {line} {proc.stderr.read()[-2000:]}")

        def send() -> None:
            if warm:
                replay_file(master, sender, rate=rate, series=1, repeat=1)
                time.sleep(1.0)
            replay_file(master, sender, rate=rate, series=2, repeat=-(-LIVE_4M_FRAMES // FILE_FRAMES))

        sending = threading.Thread(target=send, daemon=True)
        sending.start()
        text, err = proc.communicate(timeout=600)
        sending.join(60)
    finally:
        sender.close()
        if proc.poll() is None:
            proc.kill()
    if proc.returncode != 0:
        raise RuntimeError(err[-2000:])
    last = json.loads(text.strip().splitlines()[-1])[-1]
    with h5py.File(last, "r") as f:
        frames = f["entry/results/frames"][()]
    for path in folder.glob("results_*.h5"):
        path.unlink()
    ok = frames["status"] == 0
    latency = (frames["done_time"] - frames["receive_time"])[ok]
    return dict(first_ms=1e3 * (frames["done_time"][ok].min() - frames["receive_time"].min()),
                processed=int(ok.sum()), p50_ms=1e3 * float(np.median(latency)),
                p95_ms=1e3 * float(np.percentile(latency, 95)),
                over=int(np.count_nonzero(latency > LIVE_4M_P95_MS / 1e3)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each kind (default 3)")
    parser.add_argument("--rate", type=float, default=LIVE_4M_RATE_HZ, help="frames/s sent (default 560)")
    parser.add_argument("--code", type=Path, default=REPO, help="checkout the live process runs from")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nm_start_") as tmp:
        folder = Path(tmp)
        config, master, _ = make_file(folder, "live", DETECTORS["EIGER 4M"], FILE_FRAMES, "uint32", seed=7)
        toml = config_for_frames(folder / "live.toml", LIVE_4M_FRAMES)
        for run in range(args.runs):
            for warm in (False, True):
                r = one_run(folder, master, toml, warm, args.rate, args.code)
                print(f"run {run + 1} {'warm' if warm else 'cold'}: first result {r['first_ms']:.0f} ms after the "
                      f"first frame, {r['processed']} processed, latency p50 {r['p50_ms']:.0f} / p95 "
                      f"{r['p95_ms']:.0f} ms, {r['over']} frames over {LIVE_4M_P95_MS:.0f} ms", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
