"""Latency from the first frame: a live ``process`` session started, ready, then a scan at a fixed rate.

Each measurement runs in a fresh Python process: the demo config (1M EIGER, 10 × 20 points),
a LiveProcessor with two workers, and a replay of a simulated scan at ``--rate`` frames/s
that starts 0.5 s after the processor says "ready" (as at a beamline: the processor is up
before the scan). ``--empty-numba-cache`` gives the workers an empty numba cache, as on
the first run after an install. Prints median and 95th-percentile latency (receive →
result) per run, then min/median over runs. Informative only, never asserted.

    .venv/bin/python benchmarks/first_frame_latency.py --runs 3 --empty-numba-cache
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def one_run(rate: float) -> dict:
    import threading
    import time
    from pathlib import Path

    from monitor.session.live_processor import LiveOptions, LiveProcessor
    from processors.config import load_config
    from processors.demo_setup import write_demo_config
    from processors.simulate_scan import simulate_scan_file
    from stream.dectris_replay import replay_file
    from stream.stream_sender import StreamSender

    d = Path(tempfile.mkdtemp())
    cfg = load_config(write_demo_config(d / "c", shape=(10, 20)))
    sim = simulate_scan_file(cfg, d / "s" / "scan_master.h5", seed=2)
    sender = StreamSender("tcp://127.0.0.1:*")
    lp = LiveProcessor(cfg, LiveOptions(endpoint=sender.endpoint, out=d / "R.h5", workers=2, status=False,
                                        series=1))

    def scan() -> None:
        lp.ready.wait(300)
        time.sleep(0.5)
        replay_file(sim.master_path, sender, protocol="stream1", rate=rate)

    threading.Thread(target=scan, daemon=True).start()
    try:
        summary = lp.run(threading.Event())
    finally:
        lp.close()
        sender.close(linger_s=0)
    return {"processed": summary.counters.processed, "median_ms": summary.latency_ms[0],
            "p95_ms": summary.latency_ms[1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100.0, help="frames/s of the scan (default 100)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--empty-numba-cache", action="store_true", help="as on the first run after an install")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.rate)))
        return 0
    medians = []
    for k in range(args.runs):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, **({"NUMBA_CACHE_DIR": cache} if args.empty_numba_cache else {}))
            out = subprocess.run([sys.executable, __file__, "--one", "--rate", str(args.rate)], env=env,
                                 capture_output=True, text=True, timeout=900)
        if out.returncode:
            print(out.stderr[-2000:], file=sys.stderr)
            return 1
        r = json.loads(out.stdout.strip().splitlines()[-1])
        medians.append(r["median_ms"])
        print(f"run {k + 1}: {r['processed']} frames, latency median {r['median_ms']:.0f} ms, "
              f"p95 {r['p95_ms']:.0f} ms")
    print(f"latency median over runs: min {min(medians):.0f} ms, median {statistics.median(medians):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
