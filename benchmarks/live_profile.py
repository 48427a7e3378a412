"""Where the live main process spends its CPU, per frame, at a fixed replay rate.

``replay_file(..., rate=HZ)`` (this process) → :class:`LiveProcessor` with 2 workers (a
fresh process). The live process samples, every 0.25 s, the CPU time (utime + stime,
from ``/proc/self/task/<tid>/stat``) of each of its threads (named by ``threading``), of
its worker processes, and the PSS and RSS of itself and of each worker
(``smaps_rollup``). CPU is counted from the moment the workers are warm (the replay
starts then) to the end of the run, and divided by the frames received.

With ``--profile`` the main thread, the receiver thread and the executor's threads each
run under their own ``cProfile.Profile`` (CPython 3.11 profiles per thread); the top
functions by own time are printed. The profiler roughly doubles Python-heavy costs: take
CPU per frame from a run without it, and the split from a run with it.

Example (EIGER 4M uint32, 150 frames/s, 1200 frames)::

    .venv/bin/python benchmarks/live_profile.py --detector 4M --frames 200 --repeat 6 --rate 150

Timings on a shared 2-core machine are noisy: compare runs made one after the other.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from end_to_end_bench import config_for_frames, replay_into  # noqa: E402
from run_bench import DETECTORS, make_file  # noqa: E402

CHILD = r'''
import cProfile, io, json, os, pstats, resource, sys, threading, time
from pathlib import Path
sys.path.insert(0, {repo!r})

TICK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

def cpu_s(path):
    try:
        with open(path) as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
    except (OSError, IndexError, ValueError):
        return None

def mem_kib(pid):
    out = {{}}
    try:
        with open(f"/proc/{{pid}}/smaps_rollup") as fh:
            for line in fh:
                key = line.split(":")[0]
                if key in ("Rss", "Pss", "Pss_Anon", "Pss_Shmem", "Pss_File"):
                    out[key] = int(line.split()[1])
    except OSError:
        pass
    return out

def children(pid):
    out = []
    try:
        for task in os.listdir(f"/proc/{{pid}}/task"):
            with open(f"/proc/{{pid}}/task/{{task}}/children") as fh:
                out += [int(c) for c in fh.read().split()]
    except OSError:
        pass
    return out

THREADS = {{}}   # name -> last CPU seconds
WORKERS = {{}}   # pid -> last CPU seconds
MEMORY = []     # (t, main PSS KiB, main RSS KiB, {{worker pid: PSS KiB}})
MARK = {{}}
ME = os.getpid()

def sample():
    names = {{t.native_id: t.name for t in threading.enumerate()}}
    for tid in os.listdir(f"/proc/{{ME}}/task"):
        name = names.get(int(tid), f"tid-{{tid}}")
        value = cpu_s(f"/proc/{{ME}}/task/{{tid}}/stat")
        if value is not None:
            THREADS[name] = max(value, THREADS.get(name, 0.0))
    for pid in children(ME):
        value = cpu_s(f"/proc/{{pid}}/stat")
        if value is not None:
            WORKERS[pid] = max(value, WORKERS.get(pid, 0.0))

def sampler():
    t0 = time.monotonic()
    next_memory = t0
    while True:
        sample()
        now = time.monotonic()
        if now >= next_memory:  # smaps_rollup walks every mapped page: costly, so once a second
            m = mem_kib(ME)
            MEMORY.append((now - t0, m, {{pid: mem_kib(pid) for pid in children(ME)}}))
            next_memory = now + 1.0
        time.sleep(0.25)

threading.Thread(target=sampler, name="bench-sampler", daemon=True).start()

GIL_LATE = []  # s: how much later than asked a 1 ms sleep resumed (the wait for the GIL, mostly)

def gil_probe():
    while True:
        t = time.perf_counter()
        time.sleep(0.001)
        GIL_LATE.append(time.perf_counter() - t - 0.001)

if {gil_probe!r}:
    threading.Thread(target=gil_probe, name="bench-gil-probe", daemon=True).start()

from processors.config import load_config
from monitor.session.live_processor import LiveOptions, LiveProcessor
import monitor.session.receiver_thread as rt

PROFILE = {profile!r}
PROFILES = []

def profiled(fn, label):
    def wrapper(*args, **kwargs):
        prof = cProfile.Profile(time.thread_time)  # CPU of this thread: waits cost nothing
        PROFILES.append((label, prof))
        prof.enable()
        try:
            return fn(*args, **kwargs)
        finally:
            prof.disable()
    return wrapper

if PROFILE:
    rt.ReceiverThread._loop = profiled(rt.ReceiverThread._loop, "receiver thread")
    import concurrent.futures.process as cfp
    cfp._ExecutorManagerThread.run = profiled(cfp._ExecutorManagerThread.run, "executor manager thread")
    import multiprocessing.queues as mq
    mq.Queue._feed = staticmethod(profiled(mq.Queue._feed, "executor feeder thread"))

if {recent!r} is not None:  # an experiment: how much memory the frame inspector's recent frames hold
    rt.RecentFrames.__init__.__defaults__ = ({recent!r},)
cfg = load_config({config!r})
opts = LiveOptions(endpoint={endpoint!r}, out=Path({out!r}), workers={workers}, status=False)
lp = LiveProcessor(cfg, opts)

def announce():
    lp.ready.wait()
    sample()
    MARK["threads"] = dict(THREADS)
    MARK["workers"] = dict(WORKERS)
    MARK["self"] = resource.getrusage(resource.RUSAGE_SELF)
    MARK["t"] = time.monotonic()
    MEMORY.append(("ready", {{}}, {{}}))
    print("READY", flush=True)

threading.Thread(target=announce, name="bench-announce", daemon=True).start()
run = profiled(lp.run, "main thread") if PROFILE else lp.run
s = run(threading.Event())
t_end = time.monotonic()
sample()
ru = resource.getrusage(resource.RUSAGE_SELF)
c = s.counters
text = {{}}
for label, prof in PROFILES:
    prof.dump_stats(os.path.join({cache!r}, label.replace(" ", "_") + ".prof"))  # for pstats/snakeviz
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("tottime").print_stats(35)
    text[label] = (buf.getvalue(), sum(v[2] for v in st.stats.values()))
before = MARK["self"]
print(json.dumps(dict(
    received=c.received, processed=c.processed, dropped=c.dropped, corrupt=c.corrupt, seconds=t_end - MARK["t"],
    latency_ms=s.latency_ms,
    main_cpu_s=(ru.ru_utime + ru.ru_stime) - (before.ru_utime + before.ru_stime),
    threads={{k: v - MARK["threads"].get(k, 0.0) for k, v in THREADS.items()}},
    workers={{str(k): v - MARK["workers"].get(k, 0.0) for k, v in WORKERS.items()}},
    memory=MEMORY, profiles=text,
    gil_late_ms=[1e3 * float(q) for q in (__import__("numpy").percentile(GIL_LATE, [50, 95, 99]) if GIL_LATE else [])],
    gil_probe_count=len(GIL_LATE))))
'''


def run(master: Path, config: Path, out: Path, rate: float | str, repeat: int, workers: int, profile: bool,
        protocol: str, gil_probe: bool = False, recent: int | None = None, code: Path = REPO) -> dict:
    from stream.stream_sender import StreamSender

    sender = StreamSender("tcp://127.0.0.1:*")
    child = CHILD.format(repo=str(code), profile=profile, cache=str(out.parent), gil_probe=gil_probe, recent=recent, config=str(config), endpoint=sender.endpoint,
                        out=str(out), workers=workers)
    proc = subprocess.Popen([sys.executable, "-c", child], cwd=code, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    start = []  # the sender's CPU from the replay's start (the workers warm up before it)
    stats, result = replay_into(proc, master, sender, protocol, rate, repeat,
                                on_start=lambda: start.append(time.process_time()))
    t0 = start[0]
    stats["replay_fps"] = result["replay"].rate_hz if "replay" in result else float("nan")
    stats["sender_cpu_s"] = time.process_time() - t0
    return stats


def report(st: dict, label: str) -> None:
    n = max(st["received"], 1)
    print(f"\n{label}: received {st['received']}, processed {st['processed']}, skipped {st['dropped']}, "
          f"corrupt {st['corrupt']}; replay {st['replay_fps']:.0f} frames/s; latency median "
          f"{st['latency_ms'][0]:.0f} ms, p95 {st['latency_ms'][1]:.0f} ms; {st['seconds']:.1f} s")
    own = sum(cpu for name, cpu in st["threads"].items() if not name.startswith("bench-"))
    print(f"  main process CPU: {1e3 * own / n:.3f} ms per received frame (its threads but the bench's own; "
          f"getrusage with them: {1e3 * st['main_cpu_s'] / n:.3f})")
    for name, cpu in sorted(st["threads"].items(), key=lambda kv: -kv[1]):
        if cpu > 0:
            print(f"    {name:32s} {1e3 * cpu / n:7.3f} ms/frame")
    for pid, cpu in st["workers"].items():
        print(f"  worker {pid}: {1e3 * cpu / n:.3f} ms per received frame")
    if st.get("gil_late_ms"):
        p50, p95, p99 = st["gil_late_ms"]
        print(f"  GIL probe: a 1 ms sleep resumed late by {p50:.2f} ms median, {p95:.2f} ms p95, {p99:.2f} ms p99 "
              f"({st['gil_probe_count']} samples over the whole session)")
    print(f"  sender (this process, replay thread + sampler): {1e3 * st['sender_cpu_s'] / n:.3f} ms per frame")
    mem = st["memory"]
    ready = next((k for k, m in enumerate(mem) if m[0] == "ready"), None)
    if ready is not None:  # from the replay's start on
        mem = mem[max(0, ready - 1):ready] + mem[ready + 1:]  # the last sample before it, then the run
    if mem:
        marks = [mem[min(len(mem) - 1, int(f * (len(mem) - 1)))] for f in (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)]
        print("  memory, MiB (PSS: shared pages split between the processes mapping them; anon = private heap,\n"
              "  shmem = the frame arena's share, file = libraries; time from the replay's start):")
        print("        t   main: PSS  anon shmem  file   RSS | workers: PSS  anon shmem  file | all PSS")
        t_ready = None
        for t, m, workers in marks:
            w = {k: sum(v.get(k, 0) for v in workers.values()) / 1024 for k in ("Pss", "Pss_Anon", "Pss_Shmem",
                                                                               "Pss_File")}
            mm = {k: m.get(k, 0) / 1024 for k in ("Pss", "Pss_Anon", "Pss_Shmem", "Pss_File", "Rss")}
            t_ready = t if t_ready is None else t_ready
            print(f"    {t - t_ready:5.1f} s  {mm['Pss']:9.0f} {mm['Pss_Anon']:5.0f} {mm['Pss_Shmem']:5.0f} "
                  f"{mm['Pss_File']:5.0f} {mm['Rss']:5.0f} | {w['Pss']:12.0f} {w['Pss_Anon']:5.0f} "
                  f"{w['Pss_Shmem']:5.0f} {w['Pss_File']:5.0f} | {mm['Pss'] + w['Pss']:7.0f}")
    for label, (text, _) in st.get("profiles", {}).items():
        print(f"\n--- cProfile, {label} (by own time) ---")
        print("\n".join(text.splitlines()[:50]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detector", choices=("1M", "4M"), default="4M")
    p.add_argument("--dtype", default="uint32")
    p.add_argument("--frames", type=int, default=200, help="frames in the file (default 200)")
    p.add_argument("--repeat", type=int, default=6, help="the file's frames sent this many times")
    p.add_argument("--rate", default="150", help="replay rate in Hz, or max")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--protocol", default="stream1", choices=("stream1", "stream2"))
    p.add_argument("--profile", action="store_true", help="cProfile the main process's threads")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "nanomaps-live-profile",
                   help="where the rendered test file is kept between runs")
    p.add_argument("--gil-probe", action="store_true",
                   help="a thread that sleeps 1 ms at a time and records how late it resumes (GIL contention)")
    p.add_argument("--recent-frames", type=int, help="frames the frame inspector keeps (default: the code's)")
    p.add_argument("--code", type=Path, default=REPO,
                   help="run the live process from this checkout (e.g. `git archive` of a commit: before/after)")
    p.add_argument("--json", type=Path, help="save the numbers here")
    args = p.parse_args(argv)
    rate = "max" if args.rate == "max" else float(args.rate)
    args.cache.mkdir(parents=True, exist_ok=True)
    name = f"live{args.detector}_{args.dtype}_{args.frames}"
    master = args.cache / f"{name}_master.h5"
    if not master.exists():
        make_file(args.cache, name, DETECTORS[f"EIGER {args.detector}"], args.frames, args.dtype, seed=7)
    # the map has a point per frame sent: frames past the scan would be counted outside_scan and
    # parked for events that never come, which is not the live path being measured
    total = args.frames * args.repeat
    config = config_for_frames(args.cache / f"{name}.toml", total)
    out = args.cache / f"{name}_results.h5"
    out.unlink(missing_ok=True)
    st = run(master, config, out, rate, args.repeat, args.workers, args.profile, args.protocol,
             args.gil_probe, args.recent_frames, args.code.resolve())
    report(st, f"EIGER {args.detector} {args.dtype}, {args.frames * args.repeat} frames at {args.rate} Hz, "
               f"{args.workers} workers{' (cProfile on)' if args.profile else ''}")
    if args.json:
        args.json.write_text(json.dumps(st, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
