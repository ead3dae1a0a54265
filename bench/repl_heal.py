#!/usr/bin/env python3
"""How long a pair takes to heal after a cut, and what it costs.

Two release servers (`-m 1024`) on 127.0.0.2 and 127.0.0.3 with the same
`-X` port, each reaching the other through tests/python/repl_relay.py. The
link is cut (SIGUSR1), each node is then loaded with N distinct items of
100 bytes (pipelined sets over one connection), plus N/10 keys written on
both sides and N/100 deletes of keys both held; the relay is restored and
the script times, by polling `stats` every 10 ms, the wait for the first
retry (backoff) and then, from the moment a node is replica, how long
until both report the link up with nothing lagging (`repl_connected 1`,
`repl_lag_records 0`); then it checks that both hold every key (the
deleted ones gone).

    cargo build --release
    python3 bench/repl_heal.py [--items 100000] [--rounds 3]
"""

import argparse
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "target" / "release" / "memcached"
RELAY = ROOT / "tests" / "python" / "repl_relay.py"
A, B = "127.0.0.2", "127.0.0.3"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(host, port):
    deadline = time.monotonic() + 10
    while True:
        try:
            return socket.create_connection((host, port), timeout=30)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def command(sock, data, end):
    sock.sendall(data)
    buf = b""
    while not buf.endswith(end):
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise RuntimeError("closed")
        buf += chunk
    return buf


def stats(host, port):
    with connect(host, port) as s:
        reply = command(s, b"stats\r\n", b"END\r\n").decode()
    return dict(line.split(" ", 2)[1:] for line in reply.splitlines() if line.startswith("STAT "))


def pipelined(host, port, lines, expect):
    """Sends the commands in batches, checks each reply is `expect`."""
    with connect(host, port) as s:
        for i in range(0, len(lines), 1000):
            batch = lines[i:i + 1000]
            s.sendall(b"".join(batch))
            reply = b""
            while reply.count(b"\r\n") < len(batch):
                chunk = s.recv(1 << 16)
                if not chunk:
                    raise RuntimeError("closed")
                reply += chunk
            assert reply == expect * len(batch), reply[:200]


def linked(nodes):
    sts = [stats(*n) for n in nodes]
    return all(st["repl_connected"] == "1" and st["repl_lag_records"] == "0" for st in sts)


def wait(what, pred, timeout=300):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out: {what}")
        time.sleep(0.01)


def one_round(n):
    port, via_a, via_b = free_port(), free_port(), free_port()
    pa, pb = free_port(), free_port()
    relay = subprocess.Popen(
        [sys.executable, str(RELAY), f"127.0.0.1:{via_a}={B}:{port}",
         f"127.0.0.1:{via_b}={A}:{port}"],
        stdout=subprocess.PIPE, text=True)
    assert relay.stdout.readline().startswith("ready")
    procs = []
    try:
        for host, p, via in ((A, pa, via_a), (B, pb, via_b)):
            procs.append(subprocess.Popen(
                [str(SERVER), "-u", "root", "-m", "1024", "-l", host, "-p", str(p),
                 "-U", "0", "-x", f"127.0.0.1:{via}", "-X", str(port)],
                stderr=subprocess.DEVNULL))
            connect(host, p).close()
            if host == A:
                wait("a master", lambda: stats(A, pa)["repl_role"] == "master")
        nodes = [(A, pa), (B, pb)]
        wait("linked", lambda: linked(nodes))
        shared = [f"set shared_{i} 0 0 100\r\n".encode() + b"s" * 100 + b"\r\n"
                  for i in range(n // 100)]
        pipelined(A, pa, shared, b"STORED\r\n")
        wait("linked", lambda: linked(nodes))
        relay.send_signal(signal.SIGUSR1)
        assert relay.stdout.readline().startswith("cut")
        wait("b master", lambda: stats(B, pb)["repl_role"] == "master")
        for name, (host, p) in zip("ab", nodes):
            lines = [f"set {name}_{i} 0 0 100\r\n".encode() + b"v" * 100 + b"\r\n"
                     for i in range(n)]
            lines += [f"set both_{i} 0 0 100\r\n".encode() + name.encode() * 100 + b"\r\n"
                      for i in range(n // 10)]
            pipelined(host, p, lines, b"STORED\r\n")
        deletes = [f"delete shared_{i}\r\n".encode() for i in range(n // 100)]
        pipelined(A, pa, deletes, b"DELETED\r\n")
        before = [int(stats(h, p)["curr_items"]) for h, p in nodes]
        relay.send_signal(signal.SIGUSR2)
        assert relay.stdout.readline().startswith("restored")
        t0 = time.monotonic()
        # The first retry after the restore comes when its backoff says;
        # the heal itself is timed from the moment a node is replica.
        wait("a replica", lambda: any(stats(*nd)["repl_role"] == "replica" for nd in nodes))
        t1 = time.monotonic()
        wait("healed", lambda: linked(nodes))
        t2 = time.monotonic()
        after = [int(stats(h, p)["curr_items"]) for h, p in nodes]
        want = 2 * n + n // 10
        assert after == [want, want], (before, after, want)
        return t1 - t0, t2 - t1, before, after
    finally:
        for p in procs:
            p.kill()
            p.wait()
        relay.kill()
        relay.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    times = []
    for r in range(args.rounds):
        retry, healed, before, after = one_round(args.items)
        times.append(healed)
        print(f"round {r + 1}: items before {before}, after {after}; "
              f"first retry {retry:.2f} s after the restore, "
              f"then in sync in {healed:.2f} s", flush=True)
    print(f"heal (replica to in sync): median {statistics.median(times):.2f} s "
          f"(min {min(times):.2f}, max {max(times):.2f})")


if __name__ == "__main__":
    main()
