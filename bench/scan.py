#!/usr/bin/env python3
"""Scan resistance: a cache-aside hot set while a batch job writes one-hit
keys worth several times the cache.

Each server (Debian's memcached `-t 1`, ours with its defaults, and ours
with a flat LRU, `-o no_lru_maintainer`) gets `-m 32` and the same trace
of 1 KB values, generated from a fixed seed:

- a hot set of `--hot` keys, read through (a `get`; on a miss, a `set`,
  as a cache-aside client does);
- one-hit keys written by a batch job (`set`, never read again),
  `--scan` of them: about four times what `-m 32` holds;
- `--reads` (1) hot read(s) for each batch write, the keys of the reads
  uniform over the hot set, interleaved at random.

Requests go in pipelined batches of `--batch` (a miss's fill goes out with
the next batch). After a warm-up (the first `--warmup` operations, during
which the hot set is first loaded), the hot reads' hit ratio is counted.
Reported: each server's hit ratio and ours against memcached's.

Run alone (`python3 bench/scan.py`) or as part of `bench/run.py`. Only
127.0.0.1; every server started here is stopped here, by PID.
"""

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = os.path.join(ROOT, "target", "release", "memcached")
DEBIAN = "/usr/bin/memcached"
VALUE = b"v" * 1024

# (label, binary, extra options)
SERVERS = [
    ("memcached", DEBIAN, []),
    ("ours", OURS, []),
    ("ours, flat LRU", OURS, ["-o", "no_lru_maintainer"]),
]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(binary, extra, port, mem, core):
    cmd = [binary, "-t", "1", "-m", str(mem), "-l", "127.0.0.1", "-p", str(port)] + extra
    if os.geteuid() == 0:
        cmd += ["-u", "nobody"]
    if core is not None:
        cmd = ["taskset", "-c", core] + cmd
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.time() + 10
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{binary} exited with {proc.returncode}")
        try:
            return proc, socket.create_connection(("127.0.0.1", port), timeout=30)
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"{binary} did not come up on {port}")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def trace(args):
    """The operations, the same for every server: ("get", hot index) or
    ("set", scan index)."""
    rng = random.Random(args.seed)
    ops = [("get", i) for i in range(args.hot)]  # the hot set's first load
    scan = 0
    while scan < args.scan:
        if rng.random() < args.reads / (args.reads + 1):
            ops.append(("get", rng.randrange(args.hot)))
        else:
            ops.append(("set", scan))
            scan += 1
    return ops


def hot_key(i):
    return b"hot:%07d" % i


def set_cmd(key):
    return b"set %s 0 0 %d noreply\r\n%s\r\n" % (key, len(VALUE), VALUE)


class Replies:
    """Reads `get` replies (the sets are noreply) off a socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise RuntimeError("server closed the connection")
        self.buf += chunk

    def line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill()

    def skip(self, n):
        while len(self.buf) < n:
            self._fill()
        self.buf = self.buf[n:]

    def get_hit(self):
        line = self.line()
        if line == b"END":
            return False
        parts = line.split()
        if parts[0] != b"VALUE":
            raise RuntimeError(f"unexpected reply {line!r}")
        self.skip(int(parts[3]) + 2)
        if self.line() != b"END":
            raise RuntimeError("no END after a value")
        return True


def run_one(binary, extra, ops, args):
    port = free_port()
    proc, sock = start(binary, extra, port, args.mem, args.core)
    try:
        replies = Replies(sock)
        hits = reads = 0
        fills = []
        t0 = time.time()
        for at in range(0, len(ops), args.batch):
            batch = ops[at:at + args.batch]
            out = [set_cmd(k) for k in fills]
            fills = []
            for op, i in batch:
                if op == "get":
                    out.append(b"get %s\r\n" % hot_key(i))
                else:
                    out.append(set_cmd(b"scan:%08d" % i))
            sock.sendall(b"".join(out))
            for n, (op, i) in enumerate(batch):
                if op != "get":
                    continue
                hit = replies.get_hit()
                if not hit:
                    fills.append(hot_key(i))
                if at + n >= args.warmup:
                    reads += 1
                    hits += hit
        secs = time.time() - t0
        sock.sendall(b"stats\r\n")
        st = {}
        while True:
            line = replies.line()
            if line == b"END":
                break
            _, name, value = line.decode().split(" ", 2)
            st[name] = value
    finally:
        sock.close()
        stop(proc)
    return {
        "hit_ratio": hits / reads if reads else float("nan"),
        "reads": reads,
        "secs": secs,
        "evictions": int(st.get("evictions", 0)),
        "moves_to_warm": int(st.get("moves_to_warm", 0)),
        "moves_to_cold": int(st.get("moves_to_cold", 0)),
    }


def run_scan(args, log=print):
    ops = trace(args)
    results = {}
    for label, binary, extra in SERVERS:
        r = run_one(binary, extra, ops, args)
        results[label] = r
        log(f"scan {label:15} hit ratio {r['hit_ratio']:.4f} over {r['reads']} reads "
            f"({r['secs']:.1f} s; evictions {r['evictions']}, moves_to_warm "
            f"{r['moves_to_warm']}, moves_to_cold {r['moves_to_cold']})")
    return results


def report_lines(args, results):
    mc = results["memcached"]["hit_ratio"]
    lines = [
        f"Scan resistance (`-m {args.mem}`, 1 KB values; hot set of {args.hot:,} keys read "
        f"through, {args.scan:,} one-hit keys written, hot reads per write: {args.reads:g}, "
        f"batches of {args.batch}; hit ratio of the hot reads after the first {args.warmup:,} operations):",
        "",
        "| server | hot-set hit ratio | against memcached |",
        "|---|---:|---:|",
    ]
    for label, _, _ in SERVERS:
        r = results[label]["hit_ratio"]
        lines.append(f"| {label} | {r:.4f} | {r / mc:.3f} |")
    return lines


def parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mem", type=int, default=32, help="-m for every server")
    ap.add_argument("--hot", type=int, default=10_000, help="hot keys")
    ap.add_argument("--scan", type=int, default=120_000, help="one-hit keys written")
    ap.add_argument("--reads", type=float, default=1.0, help="hot reads per one-hit write")
    ap.add_argument("--batch", type=int, default=64, help="requests per pipelined batch")
    ap.add_argument("--warmup", type=int, default=30_000, help="operations not counted")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--core", default="0", help="core the servers are pinned to ('' for none)")
    ap.add_argument("--json", help="write the results here")
    return ap


def main():
    args = parser().parse_args()
    args.core = args.core or None
    results = run_scan(args)
    print()
    print("\n".join(report_lines(args, results)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
