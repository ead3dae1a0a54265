#!/usr/bin/env python3
"""AOF benchmark: set throughput with the append-only file off and with
each sync policy, and how long recovery of 1,000,000 items takes.

Run by hand through `make bench-aof` (which builds the server and the load
generator first). Same method as run.py: our server pinned to core 0, the
load generator to core 1, a fresh server per run, `--rounds` rounds with
the modes rotating, medians. The file lives under target/bench/ (on the
repository's disk, not a tmpfs, so fdatasync costs what it costs there).

Everything started here is stopped here, by PID. Only 127.0.0.1.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as base  # noqa: E402  (the shared helpers of the main driver)

WORKDIR = os.path.join(base.ROOT, "target", "bench", "aof")
MODES = ["off", "no", "everysec", "always"]
WORKLOADS = [
    ("set, 100 B", dict(keys=100_000, value_size=100, get_ratio=0.0, multiget=1, pipeline=1)),
    ("pipelined set x16, 100 B",
     dict(keys=100_000, value_size=100, get_ratio=0.0, multiget=1, pipeline=16)),
]


def start(port, mode, path, mem=1024, extra=()):
    cmd = [base.OURS, "-m", str(mem), "-l", "127.0.0.1", "-p", str(port)]
    cmd += base.as_root_args()
    if mode != "off":
        # No automatic rewrite during a run: it measures the write path.
        cmd += ["-o", f"aof={path},aof_sync={mode},aof_rewrite_pct=0"]
    cmd += list(extra)
    proc = subprocess.Popen(["taskset", "-c", base.SERVER_CORE] + cmd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base.started.append(proc)
    base.wait_port(port, proc, timeout=300)
    return proc


def throughput(args, log):
    results = {}
    for rnd in range(args.rounds):
        for wname, opts in WORKLOADS:
            order = MODES[rnd % len(MODES):] + MODES[:rnd % len(MODES)]
            for mode in order:
                base.wait_quiet(log)
                path = os.path.join(WORKDIR, f"bench-{mode}.aof")
                if os.path.exists(path):
                    os.remove(path)
                port = base.free_port()
                proc = start(port, mode, path)
                try:
                    r = base.loadgen(port, proc.pid, opts, args)
                finally:
                    base.stop(proc)
                size = os.path.getsize(path) if os.path.exists(path) else 0
                log(f"round {rnd + 1} {wname:26} {mode:9} {r['ops_per_sec']:>10,.0f} ops/s "
                    f"p99 {r['p99_us']:.0f} us  file {size / 1e6:.0f} MB")
                results.setdefault((wname, mode), []).append(r)
    return results


def recovery(args, log):
    """Loads N 100-byte items with aof_sync=no, stops the server, and
    times restarts until the port accepts connections (the replay happens
    before listening)."""
    path = os.path.join(WORKDIR, "recovery.aof")
    if os.path.exists(path):
        os.remove(path)
    port = base.free_port()
    proc = start(port, "no", path)
    try:
        opts = dict(keys=args.items, value_size=100, get_ratio=1.0, multiget=1, pipeline=1)
        base.loadgen(port, proc.pid, opts, argparse.Namespace(
            conns=args.conns, duration=0, warmup=0))
        items = int(base.stat_value(port, "curr_items"))
    finally:
        base.stop(proc)
    size = os.path.getsize(path)
    times = []
    for _ in range(args.rounds):
        base.wait_quiet(log)
        port = base.free_port()
        t0 = time.monotonic()
        proc = start(port, "no", path, extra=["-v"])
        took = time.monotonic() - t0
        try:
            recovered = int(base.stat_value(port, "aof_recovered_items"))
        finally:
            base.stop(proc)
        err = proc.stderr.read()
        replay = re.search(r"in (\d+) ms", err)
        times.append((took, int(replay.group(1)) if replay else None))
        log(f"recovery: {recovered:,} of {items:,} items, {size / 1e6:.0f} MB file, "
            f"ready after {took:.2f} s (replay {times[-1][1]} ms)")
    return items, size, times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    os.makedirs(WORKDIR, exist_ok=True)
    # Run as root, the server drops to nobody, which must create the files.
    os.chmod(WORKDIR, 0o1777)

    def log(msg):
        print(msg, flush=True)

    try:
        results = {} if args.skip_throughput else throughput(args, log)
        items, size, times = recovery(args, log)
    finally:
        base.stop_all()
        shutil.rmtree(WORKDIR, ignore_errors=True)
    print()
    if results:
        print("| workload | " + " | ".join(f"aof {m}" if m != "off" else "aof off"
                                         for m in MODES) + " |")
        print("|---|" + "---:|" * len(MODES))
        for wname, _ in WORKLOADS:
            cells = []
            for m in MODES:
                rs = results[(wname, m)]
                ops = statistics.median(r["ops_per_sec"] for r in rs)
                p99 = statistics.median(r["p99_us"] for r in rs)
                cells.append(f"{ops:,.0f} ops/s (p99 {p99:,.0f} µs)")
            print(f"| {wname} | " + " | ".join(cells) + " |")
        print()
    ready = statistics.median(t for t, _ in times)
    replays = [r for _, r in times if r is not None]
    replay = statistics.median(replays) if replays else float("nan")
    print(f"Recovery of {items:,} items of 100 B ({size / 1e6:.0f} MB file): "
          f"ready to serve after {ready:.2f} s (median of {len(times)}), "
          f"of which replay {replay:,.0f} ms.")


if __name__ == "__main__":
    main()
