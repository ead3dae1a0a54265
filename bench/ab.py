#!/usr/bin/env python3
"""Two builds compared on a busy machine: server CPU per request, paired.

    python3 bench/ab.py OLD_BINARY NEW_BINARY [--rounds 8] [--workloads pipelined,mget10,get]
        [--duration 3]

`make bench` compares whole runs, which a shared machine's load moves by
10-20% between runs. This script interleaves the two builds instead:
each round runs each workload once on each build, back to back (the
order alternating between rounds), and divides the new build's server
CPU per request by the old one's. Load that comes and goes mostly hits
both halves of a pair, so the median of those ratios says which build
is cheaper even when the absolute figures drift; the per-round ratios
are printed so the spread is visible. Same set-up as `bench/run.py`: the
server (`-t 1 -m 1024`) pinned to core 0, the load generator to core 1,
50 connections, 100,000 keys of 11 bytes, 100-byte values, preloaded.
Nothing asserts on the figures.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from run import free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADGEN = os.path.join(ROOT, "bench", "loadgen", "target", "release", "loadgen")
COMMON = ["--keys", "100000", "--value-size", "100", "--get-ratio", "1.0"]
WORKLOADS = {
    "get": COMMON + ["--multiget", "1", "--pipeline", "1"],
    "mget10": COMMON + ["--multiget", "10", "--pipeline", "1"],
    "pipelined": COMMON + ["--multiget", "1", "--pipeline", "16"],
}


def cpu_per_request(binary, opts, duration):
    port = free_port()
    cmd = ["taskset", "-c", "0", binary, "-t", "1", "-m", "1024", "-l", "127.0.0.1",
           "-p", str(port), "-U", "0"]
    if os.geteuid() == 0:
        cmd += ["-u", "root"]
    srv = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, srv)
        out = subprocess.run(
            ["taskset", "-c", "1", LOADGEN, "run", "--server", f"127.0.0.1:{port}",
             "--conns", "50", "--duration", str(duration), "--warmup", "1", "--key-size", "11",
             "--preload", "--server-pid", str(srv.pid)] + opts,
            capture_output=True, text=True, timeout=duration + 120).stdout
    finally:
        srv.terminate()
        srv.wait()
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])["server_cpu_us_per_req"]
    raise RuntimeError("the load generator printed no RESULT")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--workloads", default="pipelined,mget10,get")
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds per run")
    args = ap.parse_args()
    if not os.path.exists(LOADGEN):
        sys.exit(f"{LOADGEN} missing: cargo build --release --manifest-path bench/loadgen/Cargo.toml")
    names = args.workloads.split(",")
    builds = [args.old, args.new]
    cpu = {(b, w): [] for b in builds for w in names}
    for r in range(args.rounds):
        for w in names:
            for b in builds if r % 2 == 0 else builds[::-1]:
                cpu[(b, w)].append(cpu_per_request(b, WORKLOADS[w], args.duration))
    print("| workload | old CPU µs/req | new CPU µs/req | new / old, median of pairs | pairs |")
    print("|---|---:|---:|---:|---|")
    for w in names:
        old, new = cpu[(args.old, w)], cpu[(args.new, w)]
        pairs = [n / o for o, n in zip(old, new)]
        print(f"| {w} | {statistics.median(old):.3f} | {statistics.median(new):.3f} | "
              f"{statistics.median(pairs):.3f} | {' '.join(f'{p:.2f}' for p in pairs)} |")


if __name__ == "__main__":
    main()
