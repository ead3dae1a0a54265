#!/usr/bin/env python3
"""Stripped binary size and idle RSS, ours against Debian's memcached:
each server started ROUNDS times as `BIN -u root -p PORT -l 127.0.0.1 -m 64`,
VmRSS read from /proc/PID/status once it accepts a connection; medians.

    python3 bench/idle.py [OURS [ORACLE]]   (defaults: target/release/memcached,
                                             /usr/bin/memcached)
"""

import os
import socket
import statistics
import subprocess
import sys
import time

ROUNDS = 5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def idle_rss_kb(binary):
    port = free_port()
    proc = subprocess.Popen(
        [binary, "-u", "root", "-p", str(port), "-l", "127.0.0.1", "-m", "64"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{binary} did not start")
                time.sleep(0.01)
        with open(f"/proc/{proc.pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    finally:
        proc.kill()
        proc.wait()


def main():
    ours = sys.argv[1] if len(sys.argv) > 1 else "target/release/memcached"
    oracle = sys.argv[2] if len(sys.argv) > 2 else "/usr/bin/memcached"
    for name, binary in (("memcached", oracle), ("ours", ours)):
        size = os.path.getsize(binary)
        rss = statistics.median(idle_rss_kb(binary) for _ in range(ROUNDS))
        print(f"{name:10} {binary}: {size:,} bytes, idle VmRSS {rss / 1024:.1f} MB ({rss:.0f} kB)")


if __name__ == "__main__":
    main()
