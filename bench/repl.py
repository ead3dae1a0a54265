#!/usr/bin/env python3
"""Set throughput with and without a replica attached.

Three setups of our release server (`-m 1024 -t 1`, pinned to core 0):
`alone` (no replication), `no-replica` (`-x` given, but no peer: the
mutation feed is on and its records are dropped) and `replica` (a second
server, pinned to core 1 with the load generator, attached and in sync
before the measurement). Each run: `loadgen run --preload`, 50 connections,
100-byte sets over 100,000 keys, 1 s warm-up, 4 s measured. Rounds rotate
the order; medians are printed as a Markdown table.

    make build && cargo build --release --manifest-path bench/loadgen/Cargo.toml
    python3 bench/repl.py [--rounds 3]
"""

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "target" / "release" / "memcached"
LOADGEN = ROOT / "bench" / "loadgen" / "target" / "release" / "loadgen"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stats(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"stats\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    out = {}
    for line in buf.decode().split("\r\n"):
        if line.startswith("STAT "):
            _, k, v = line.split(" ", 2)
            out[k] = v
    return out


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def start(core, port, *extra):
    args = ["taskset", "-c", str(core), str(SERVER), "-u", "root", "-l", "127.0.0.1",
            "-p", str(port), "-m", "1024", "-t", "1", *extra]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_until(lambda: stats(port) is not None):
        proc.kill()
        raise RuntimeError(f"{args} did not start")
    return proc


def run(setup):
    port, peer_port = free_port(), free_port()
    repl_a, repl_b = free_port(), free_port()
    procs = []
    try:
        extra = [] if setup == "alone" else ["-x", f"127.0.0.1:{repl_b}", "--repl-port", str(repl_a)]
        master = start(0, port, *extra)
        procs.append(master)
        if setup == "replica":
            procs.append(start(1, peer_port, "-x", f"127.0.0.1:{repl_a}", "--repl-port", str(repl_b)))
            if not wait_until(lambda: stats(port).get("repl_connected") == "1"):
                raise RuntimeError("the replica did not attach")
        out = subprocess.run(
            ["taskset", "-c", "1", str(LOADGEN), "run", "--server", f"127.0.0.1:{port}",
             "--conns", "50", "--duration", "4", "--warmup", "1", "--get-ratio", "0",
             "--value-size", "100", "--preload", "--server-pid", str(master.pid)],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout
        line = next(l for l in out.splitlines() if l.startswith("RESULT "))
        result, _ = json.JSONDecoder().raw_decode(line[len("RESULT "):])
        st = stats(port)
        result["repl_lag_records"] = int(st.get("repl_lag_records", 0))
        if setup == "replica":
            # Everything the master took reached the replica.
            wait_until(lambda: stats(port).get("repl_lag_records") == "0")
            a, b = stats(port)["curr_items"], stats(peer_port)["curr_items"]
            result["items_equal"] = a == b
        return result
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    setups = ["alone", "no-replica", "replica"]
    results = {s: [] for s in setups}
    for r in range(args.rounds):
        order = setups[r % 3:] + setups[:r % 3]
        for setup in order:
            res = run(setup)
            results[setup].append(res)
            print(f"round {r + 1} {setup}: {res['ops_per_sec']:.0f} ops/s, "
                  f"{res['server_cpu_us_per_req']:.2f} us/req, p99 {res['p99_us']:.0f} us, "
                  f"errors {res['errors']}, lag at end {res['repl_lag_records']}"
                  + (f", items equal {res['items_equal']}" if "items_equal" in res else ""),
                  file=sys.stderr)
    print("| setup | set ops/s | server CPU us/req | p50 / p99 us |")
    print("|---|---:|---:|---:|")
    for setup in setups:
        rs = results[setup]
        med = lambda k: statistics.median(x[k] for x in rs)
        print(f"| {setup} | {med('ops_per_sec'):,.0f} | {med('server_cpu_us_per_req'):.2f} | "
              f"{med('p50_us'):.0f} / {med('p99_us'):.0f} |")


if __name__ == "__main__":
    main()
