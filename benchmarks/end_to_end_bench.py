"""``make bench``'s end-to-end part: ``reprocess`` with two workers and the live targets
(``replay`` → ``process`` over loopback), each in a fresh process, with the peak memory of
the process tree sampled from /proc. Called by ``run_bench.main``; ``live_profile.py`` uses
:func:`replay_into` and :func:`config_for_frames`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
from run_bench import DETECTORS, REPO, make_file

_MEMORY_SAMPLER = """
import os, threading, time

def _stat_cpu_s(path):
    # utime + stime of a thread or process, from /proc (clock ticks)
    try:
        with open(path) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0

def _comm(tid):
    try:
        with open(f"/proc/self/task/{tid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""

_CPU = {}  # ("thread", tid) or ("process", pid) -> (part, CPU seconds when last seen)

def _sample_cpu():
    # the parts: 'receive' (the receiver thread and libzmq's I/O thread copying from TCP),
    # 'collect' (the main thread: route, batch, submit, collect results into the map), 'results
    # file' (the writer thread), 'bench sampling' (these samplers), 'other' threads (the
    # executor's), 'native threads' (neither Python's nor libzmq's: OpenMP's, if a library
    # started them), 'workers' (the child processes). A thread or worker that has
    # ended keeps the value it was last seen with.
    names = {t.native_id: t.name for t in threading.enumerate()}
    for tid in os.listdir("/proc/self/task"):
        name = names.get(int(tid))
        if name is None:  # a thread Python did not start: libzmq's, or another library's (OpenMP)
            part = "receive" if _comm(tid).startswith("ZMQbg") else "native threads"
        else:
            part = ("receive" if name == "nanomaps-receiver" else "collect" if name == "MainThread"
                    else "results file" if name == "results-writer" else "bench sampling" if name.startswith("bench-")
                    else "other")
        value = _stat_cpu_s(f"/proc/self/task/{tid}/stat")
        if value:
            _CPU[("thread", tid)] = (part, value)
    for pid in _descendants(os.getpid()):
        value = _stat_cpu_s(f"/proc/{pid}/stat")
        if value:
            _CPU[("process", pid)] = ("workers", value)

# the whole machine's CPU time by kind (the first line of /proc/stat, clock ticks summed over
# the cores): 'steal' is time the hypervisor gave the cores to other guests
MACHINE_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")

def _machine_ticks():
    with open("/proc/stat") as fh:
        return [int(x) for x in fh.readline().split()[1:1 + len(MACHINE_FIELDS)]]

def _cpu_by_part():
    _sample_cpu()
    parts = {}
    for part, value in list(_CPU.values()):
        parts[part] = parts.get(part, 0.0) + value
    return parts

def _rss_kib(pid):
    # PSS: shared pages (the frame arena, libraries) are split between the processes
    # that map them, so the tree's sum is the memory actually used
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0

def _descendants(pid):
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                for child in fh.read().split():
                    out.append(int(child))
                    out.extend(_descendants(int(child)))
    except OSError:
        pass
    return out

PEAK = {"main": 0, "tree": 0}
MEMORY = []  # (seconds since T0, main KiB, main + workers KiB)
T0 = time.monotonic()
SAMPLE_S = globals().get("SAMPLE_S", 1.0)  # seconds between samples (a run may set it first)

def _sample():
    me = os.getpid()
    while True:
        main = _rss_kib(me)
        tree = main + sum(_rss_kib(c) for c in _descendants(me))
        PEAK["main"] = max(PEAK["main"], main)
        PEAK["tree"] = max(PEAK["tree"], tree)
        MEMORY.append((time.monotonic() - T0, main, tree))
        # reading smaps_rollup walks every mapped page: at 50 samples a second it took ~0.6 ms
        # of CPU per live 4M frame from the process being measured (the arena is 512 MB,
        # mapped by the main process and every worker), 0.2 ms at 4 a second
        time.sleep(SAMPLE_S)

threading.Thread(target=_sample, name="bench-memory", daemon=True).start()
"""


def run_reprocess(master: Path, config: Path, out: Path, frames: int, workers: int) -> dict:
    """Run ``reprocess`` in a fresh process; wall time, steady-state rate and memory.

    Memory (PSS) is sampled from /proc 4 times a second (no frame arena here, so a sample is
    cheap): the main process and the whole process tree (main + workers), the peak of the
    whole run and the peak while frames are processed (from the first frame done on: the
    start-up builds the geometry and tables, a transient of ≈ 150 MiB in the main process
    that says nothing about growth with the number of frames). ``ru_maxrss`` is not used:
    Linux carries it across exec, so a child would inherit the parent's peak.
    """
    code = "SAMPLE_S = 0.25\n" + _MEMORY_SAMPLER + (
        "import json\n"
        "from processors.config import load_config\n"
        "from monitor.session.reprocess import reprocess\n"
        f"cfg = load_config({str(config)!r})\n"
        "START = time.time() - (time.monotonic() - T0)\n"
        "t = time.perf_counter()\n"
        f"s = reprocess([{str(master)!r}], cfg, {str(out)!r}, workers={workers}, progress=False)\n"
        "wall = time.perf_counter() - t\n"
        "print(json.dumps(dict(wall=wall, processed=s.counters.processed, start=START,\n"
        "    main_mib=PEAK['main'] / 1024, tree_mib=PEAK['tree'] / 1024, memory=MEMORY)))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    stats = json.loads(res.stdout.strip().splitlines()[-1])
    assert stats["processed"] == frames, stats
    with h5py.File(out, "r") as f:
        done = np.sort(f["entry/results/frames"]["done_time"])
    # memory while frames are processed: samples from the first frame done on
    first = done[0] - stats.pop("start")
    busy = [(m, t) for s, m, t in stats.pop("memory") if s >= first] or [(0, 0)]
    stats["busy_main_mib"] = max(m for m, _ in busy) / 1024
    stats["busy_tree_mib"] = max(t for _, t in busy) / 1024
    # the middle half: start-up (worker spawn, geometry, JIT cache load, one worker still
    # warming while the other runs) and the end (the last batches, one worker idle) left out
    q = len(done) // 4
    stats["steady_fps"] = (len(done) - 1 - 2 * q) / (done[-1 - q] - done[q])
    return stats


def bench_reprocess(folder: Path, n_frames: int, baseline_ms: float) -> dict:
    results = {}
    for n in (n_frames, 2 * n_frames):
        _, master, _ = make_file(folder, f"rep{n}", DETECTORS["EIGER 4M"], n, "uint32", seed=5)
        st = run_reprocess(master, folder / f"rep{n}.toml", folder / f"rep{n}_results.h5", n, 2)
        results[n] = st
        print(f"  reprocess {n} EIGER 4M uint32 frames, 2 workers: {st['wall']:.2f} s in all, steady state "
              f"{st['steady_fps']:.0f} frames/s; peak PSS main {st['main_mib']:.0f} MiB, "
              f"main + workers {st['tree_mib']:.0f} MiB", flush=True)
        # the run's files go now: left on disk, their ≈ 1–2 GB still to be written back would be
        # written during the live runs that follow, and cost them ≈ 0.3–0.4 ms of CPU per 4M frame
        # (docs/live_path.md, "The slow phase: after the bench's reprocess part")
        for path in folder.glob(f"rep{n}_*.h5"):
            path.unlink()
    st = results[2 * n_frames]
    per_frame_ms = 1e3 / st["steady_fps"]
    ratio = baseline_ms / per_frame_ms
    twice = per_frame_ms <= REPROCESS_BEFORE_MS / 2
    ok = ratio >= REPROCESS_RATIO and twice
    # the "≈ 60x the baseline" restates its 2x for the baseline of its day (≈ 90 ms per
    # frame); with the baseline measured here 2x is a smaller ratio: both verdicts are printed
    print(f"  steady-state reprocess: {per_frame_ms:.2f} ms per frame = {ratio:.1f}x the single-core baseline "
          f"({baseline_ms:.1f} ms per frame) — target <= {REPROCESS_BEFORE_MS / 2:.1f} ms (2x the "
          f"{REPROCESS_BEFORE_MS:.1f} ms before issue 11): {'met' if twice else 'NOT met'}; >= {REPROCESS_RATIO:.0f}x "
          f"the baseline (2x is {2 * baseline_ms / REPROCESS_BEFORE_MS:.0f}x with this baseline): "
          f"{'met' if ratio >= REPROCESS_RATIO else 'NOT met'}")
    small, large = results[n_frames], results[2 * n_frames]
    print(f"  peak memory for {n_frames} → {2 * n_frames} frames: main {small['main_mib']:.0f} → "
          f"{large['main_mib']:.0f} MiB, main + workers {small['tree_mib']:.0f} → {large['tree_mib']:.0f} MiB; "
          f"while frames are processed (start-up left out): main {small['busy_main_mib']:.0f} → "
          f"{large['busy_main_mib']:.0f} MiB, main + workers {small['busy_tree_mib']:.0f} → "
          f"{large['busy_tree_mib']:.0f} MiB (target: independent of the number of frames)")
    return dict(per_frame_ms=per_frame_ms, ratio=ratio, target_met=bool(ok), twice_before_met=bool(twice),
                runs={str(k): v for k, v in results.items()})


def replay_into(proc: subprocess.Popen, master: Path, sender, protocol: str, rate: float | str,
                repeat: int, on_start=None) -> tuple[dict, dict]:
    """Once the live process ``proc`` prints READY (workers warm, as when a scan is being armed),
    replay ``master`` through ``sender`` from a thread of this process (``on_start()`` is called
    just before); returns the JSON stats the live process prints last and ``{"replay":
    ReplayStats}``. Closes ``sender``."""
    import threading

    from stream.dectris_replay import replay_file
    from stream.heap_freeze import freeze_long_lived

    line = proc.stdout.readline()
    if "READY" not in line:
        raise RuntimeError(f"live process did not get ready: {line} {proc.stderr.read()[-3000:]}")
    result: dict = {}
    replayer = threading.Thread(target=lambda: result.setdefault(
        "replay", replay_file(master, sender, protocol=protocol, rate=rate, repeat=repeat)), daemon=True)
    freeze_long_lived()  # as `nanomaps replay` does before sending
    if on_start is not None:
        on_start()
    replayer.start()
    out_text, err = proc.communicate(timeout=1800)
    replayer.join(60)
    sender.close()
    if proc.returncode != 0:
        raise RuntimeError(err[-3000:])
    return json.loads(out_text.strip().splitlines()[-1]), result


def run_live(master: Path, config: Path, out: Path, repeat: int, workers: int = 2,
             protocol: str = "stream1", rate: float | str = "max") -> dict:
    """``replay --rate RATE`` (this process) → ``process --workers N`` (a fresh process) over loopback."""

    from stream.stream_sender import StreamSender

    sender = StreamSender("tcp://127.0.0.1:*")
    # PSS every 2 s: each smaps_rollup pass walks the 512 MB arena's pages in all three
    # processes, ~35 ms of CPU (measured at 1 s: 0.06 ms per live 4M frame taken from the run)
    code = "SAMPLE_S = 2.0\n" + _MEMORY_SAMPLER + (
        "import json, threading\n"
        "from pathlib import Path\n"
        "from processors.config import load_config\n"
        "from monitor.session.live_processor import LiveOptions, LiveProcessor\n"
        "SAMPLES = []\n"
        "def _trace():\n"
        "    t0 = time.monotonic()\n"
        "    while True:\n"
        "        SAMPLES.append((time.monotonic() - t0, PEAK['main'] / 1024, PEAK['tree'] / 1024))\n"
        "        _sample_cpu()\n"
        # once a second: each pass reads ~20 /proc files, CPU the live process would otherwise use
        "        time.sleep(1.0)\n"
        "threading.Thread(target=_trace, name='bench-trace', daemon=True).start()\n"
        f"cfg = load_config({str(config)!r})\n"
        f"opts = LiveOptions(endpoint={sender.endpoint!r}, out=Path({str(out)!r}), workers={workers}, status=False)\n"
        "lp = LiveProcessor(cfg, opts)\n"
        "CPU0 = {}\n"
        "STAT0 = []\n"
        "def _announce():\n"
        "    lp.ready.wait()\n"
        "    CPU0.update(_cpu_by_part())\n"
        "    STAT0.extend(_machine_ticks())\n"
        "    print('READY', flush=True)\n"
        "threading.Thread(target=_announce, daemon=True).start()\n"
        "s = lp.run(threading.Event())\n"
        "CPU1 = _cpu_by_part()\n"
        "STAT1 = _machine_ticks()\n"
        "c = s.counters\n"
        "print(json.dumps(dict(received=c.received, processed=c.processed, dropped=c.dropped, corrupt=c.corrupt,\n"
        "    seconds=s.seconds, latency_ms=s.latency_ms, main_mib=PEAK['main'] / 1024,\n"
        "    tree_mib=PEAK['tree'] / 1024, samples=SAMPLES,\n"
        "    cpu_s={k: CPU1.get(k, 0.0) - CPU0.get(k, 0.0) for k in CPU1},\n"
        "    machine_ticks={k: b - a for k, a, b in zip(MACHINE_FIELDS, STAT0, STAT1)})))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    # the sender's CPU: this process while it replays (the replay thread and libzmq's I/O thread
    # writing to TCP; the main thread only waits), on the same two cores as the live process
    sender_cpu = []
    stats, result = replay_into(proc, master, sender, protocol, rate, repeat,
                                on_start=lambda: sender_cpu.append(time.process_time()))
    stats["sender_cpu_s"] = time.process_time() - sender_cpu[0]
    with h5py.File(out, "r") as f:
        frames = f["entry/results/frames"][()]
    done = np.sort(frames["done_time"][frames["status"] == 0])
    recv = np.sort(frames["receive_time"])
    skip = len(done) // 5
    stats["steady_fps"] = (len(done) - 1 - skip) / (done[-1] - done[skip])
    stats["receive_fps"] = (len(recv) - 1 - skip) / (recv[-1] - recv[skip])
    stats["replay_fps"] = result["replay"].rate_hz if "replay" in result else float("nan")
    return stats


#: Issue 11's reprocess target: twice the throughput measured before it (3.0 ms per 4M uint32
#: frame per machine, 2 workers), about 60x the single-core pyFAI + scipy baseline.
REPROCESS_BEFORE_MS = 3.0
REPROCESS_RATIO = 60.0
#: Issue 11's live targets on this 2-core machine, the sender on the same cores.
LIVE_4M_RATE_HZ = 560.0       # EIGER2 X 4M full frame rate
LIVE_4M_FRAMES = 3600
LIVE_4M_P95_MS = 250.0
LIVE_1M_FPS = 2000.0


def config_for_frames(config: Path, total: int) -> Path:
    """A copy of ``config`` whose map has a point per frame sent (``total``, 8 columns): frames past
    the scan would be set aside as outside it (waiting for events that never come), which is not
    the live path being measured."""
    text = re.sub(r"shape = \[\d+, \d+\]", f"shape = [{max(1, -(-total // 8))}, 8]", config.read_text(), count=1)
    out = config.with_name(f"{config.stem}_x{total}.toml")
    out.write_text(text)
    return out


def bench_live_targets(folder: Path, n_frames: int) -> dict:
    """The live targets: 4M uint32 at 560 frames/s for 3600 frames (every frame processed, p95
    latency), and 1M uint32 at 2000 frames/s for 4000 frames (every frame processed); then 1M
    uint32 sent as fast as the sender can (frames/s processed, informative)."""
    out = {}
    _, master, _ = make_file(folder, "live4m", DETECTORS["EIGER 4M"], n_frames, "uint32", seed=7)
    repeat = -(-LIVE_4M_FRAMES // n_frames)
    total = n_frames * repeat
    st = run_live(master, config_for_frames(folder / "live4m.toml", total), folder / "live4m_results.h5", repeat,
                  rate=LIVE_4M_RATE_HZ)
    p95 = st["latency_ms"][1]
    ok = st["processed"] == total and st["dropped"] == 0 and p95 < LIVE_4M_P95_MS
    print(f"  live 4M uint32: replay --rate {LIVE_4M_RATE_HZ:.0f} ({st['replay_fps']:.0f} frames/s sent) → process "
          f"--workers 2, {total} frames: processed {st['processed']}, skipped {st['dropped']}, latency "
          f"{st['latency_ms'][0]:.0f} ms median, {p95:.0f} ms p95 — target: all processed, p95 < "
          f"{LIVE_4M_P95_MS:.0f} ms: {'met' if ok else 'NOT met'}", flush=True)
    _print_cpu(st, LIVE_4M_RATE_HZ)
    _print_memory(st)
    out["4M_uint32_560Hz"] = dict(st, target_met=bool(ok), frames=total)
    _, master, _ = make_file(folder, "live1m", DETECTORS["EIGER 1M"], n_frames, "uint32", seed=7)
    repeat = -(-4000 // n_frames)
    total = n_frames * repeat
    config = config_for_frames(folder / "live1m.toml", total)
    # the target: a detector sending 2000 frames/s, every frame processed (a live tool cannot slow
    # a detector down: what it does not keep up with, it skips)
    st = run_live(master, config, folder / "live1m_results.h5", repeat, rate=LIVE_1M_FPS)
    ok = st["processed"] == total and st["dropped"] == 0 and st["replay_fps"] >= 0.98 * LIVE_1M_FPS
    print(f"  live 1M uint32: replay --rate {LIVE_1M_FPS:.0f} ({st['replay_fps']:.0f} frames/s sent) → process "
          f"--workers 2, {total} frames: processed {st['processed']}, skipped {st['dropped']}, latency "
          f"{st['latency_ms'][0]:.0f} ms median, {st['latency_ms'][1]:.0f} ms p95 — target: {LIVE_1M_FPS:.0f} "
          f"frames/s sent, every frame processed: {'met' if ok else 'NOT met'}", flush=True)
    _print_cpu(st, LIVE_1M_FPS)
    _print_memory(st)
    out["1M_uint32_2000Hz"] = dict(st, target_met=bool(ok), frames=total)
    # and how fast it goes when the sender goes as fast as it can (faster than the workers:
    # frames are then skipped once the backlog bound is reached; informative, no target)
    st = run_live(master, config, folder / "live1m_max_results.h5", repeat, rate="max")
    print(f"  live 1M uint32, replay --rate max ({st['replay_fps']:.0f} frames/s sent): {st['steady_fps']:.0f} "
          f"frames/s processed, {st['processed']} of {total} (skipped {st['dropped']})", flush=True)
    out["1M_uint32_max"] = dict(st, frames=total)
    return out


def _print_memory(st: dict) -> None:
    samples = st.pop("samples", [])
    if samples:
        marks = [samples[min(len(samples) - 1, int(f * (len(samples) - 1)))] for f in (0.25, 0.5, 0.75, 1.0)]
        print("    memory over the run (peak so far, main + workers): " +
              ", ".join(f"{t:.0f} s: {tree:.0f} MiB" for t, _main, tree in marks) + " (target: flat)")


def _print_cpu(st: dict, rate_hz: float) -> None:
    """CPU ms per received frame of the live process's parts (from /proc, 10 ms ticks, sampled
    every 1 s: from the moment the workers were ready to the end of the run, less up to 1 s of
    a thread or worker that ended before the last sample), of the sender, and their sum against
    what the machine's cores give per frame at ``rate_hz``: a sum near that is a saturated machine."""
    cpu, n = st.get("cpu_s", {}), max(st.get("received", 0), 1)
    order = ("receive", "collect", "results file", "other", "native threads", "workers", "bench sampling")
    print("    CPU per received frame: " + ", ".join(f"{k} {1e3 * cpu[k] / n:.2f} ms" for k in order if k in cpu)
          + " (receive: receiver thread + libzmq's TCP copy; collect: the main thread; native threads: neither "
          "Python's nor libzmq's, e.g. OpenMP)")
    if "sender_cpu_s" in st:
        sender = 1e3 * st["sender_cpu_s"] / n
        total = sender + sum(1e3 * v / n for v in cpu.values())
        cores = os.cpu_count() or 1
        sent = st.get("replay_fps", float("nan"))
        rate = sent if np.isfinite(sent) and sent > 0 else rate_hz  # the rate achieved, if known
        print(f"    with the sender (replay in the bench process, its TCP writes included) {sender:.2f} ms: "
              f"{total:.2f} ms of CPU per frame, of the {1e3 * cores / rate:.2f} ms {cores} cores give per "
              f"frame at {rate:.0f} frames/s ({100 * total * rate / (1e3 * cores):.0f} % busy)")
    ticks = st.get("machine_ticks", {})
    if sum(ticks.values()) > 0:
        # where the cores' time went while the frames came, whoever used it: a slow phase with idle
        # cores points at the pipeline, one with steal at the hypervisor
        share = {k: 100 * v / sum(ticks.values()) for k, v in ticks.items()}
        print(f"    the machine meanwhile (/proc/stat, all cores): user {share['user'] + share['nice']:.0f} %, system "
              f"{share['system'] + share['irq'] + share['softirq']:.0f} %, idle {share['idle'] + share['iowait']:.0f} %, "
              f"stolen by the hypervisor {share['steal']:.0f} %")
