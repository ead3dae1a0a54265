#!/usr/bin/env python3
"""The loss bench/soak.py found, reduced (run as root; prints LOST or OK).

Before the fix (04d2fb3 and earlier), with `aof_sync=always`, while a
node's AOF was failing, the records it applied from its peer (and a full
copy it received) were applied in memory but dropped from its file, and
nothing wrote them once the file worked again. Its file was then an older
state: after a kill -9 it recovered that state, and at the heal its stale
items brought back keys the pair deleted (the tombstones that would have
stopped them lived in memory). Now prints OK; the same scenario and its
variants are tests/python/test_repl_aof_faults.py.

Steps: a pair, b's AOF alone on a small tmpfs; `set k` on a (reaches b's
file); b's disk filled (and sets on b until one is refused); `delete k` on a (DELETED; b applies it, its file
does not get it); b's disk freed and its file healthy again; both nodes
killed -9 and restarted with the same command lines; `get k`.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from soak import Node, connect, free_ports, read_until, stats  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.environ.get("MEMCACHED_BINARY", os.path.join(ROOT, "target/release/memcached"))


def cmd(node, line):
    with connect(node) as s:
        s.sendall(line)
        return read_until(s, b"", lambda b: b.endswith(b"\r\n") and (
            not b.startswith(b"VALUE") or b.endswith(b"END\r\n")))


def wait(what, pred, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    sys.exit(f"timed out: {what}")


def in_sync(nodes):
    sts = [stats(n) for n in nodes]
    return all(s["repl_connected"] == "1" and s["repl_lag_records"] == "0" for s in sts)


def main():
    d = tempfile.mkdtemp(prefix="soak-repro-")
    mnt = os.path.join(d, "fs")
    os.mkdir(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt], check=True)
    pa, pb, ra, rb = free_ports(4)
    a = Node("a", BINARY, pa, ra, rb, os.path.join(d, "a.aof"), d)
    b = Node("b", BINARY, pb, rb, ra, os.path.join(mnt, "b.aof"), d)
    try:
        for n in (a, b):
            n.start()
            assert n.wait_listening()
        wait("pair in sync", lambda: in_sync((a, b)))
        assert cmd(a, b"set k 0 0 3\r\nold\r\n") == b"STORED\r\n"
        wait("pair in sync", lambda: in_sync((a, b)))
        filler = os.path.join(mnt, "filler")
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        # b's file may still have room in its last page: writes on b until
        # one is refused puts b's file in its failing state.
        for i in range(10000):
            if cmd(b, b"set pad%d 0 0 100\r\n%s\r\n" % (i, b"p" * 100)) != b"STORED\r\n":
                break
        print("b's AOF with its disk full:", stats(b)["aof_last_write_status"])
        assert cmd(a, b"delete k\r\n") == b"DELETED\r\n"
        wait("pair in sync", lambda: in_sync((a, b)))
        assert cmd(b, b"get k\r\n") == b"END\r\n"
        print("b's AOF after the delete:", stats(b)["aof_last_write_status"])
        os.unlink(filler)
        wait("b's AOF healthy", lambda: cmd(b, b"set probe 0 0 1\r\nx\r\n") == b"STORED\r\n")
        wait("pair in sync", lambda: in_sync((a, b)))
        print("before the kills: a", cmd(a, b"get k\r\n"), "b", cmd(b, b"get k\r\n"))
        for n in (a, b):
            n.kill9()
        for n in (a, b):
            n.start()
            assert n.wait_listening()
        wait("pair in sync", lambda: in_sync((a, b)))
        got = [cmd(n, b"get k\r\n") for n in (a, b)]
        print("after kill -9 and restart of both: a", got[0], "b", got[1])
        lost = any(g != b"END\r\n" for g in got)
        print("LOST: an acknowledged delete came back" if lost else "OK")
        return 1 if lost else 0
    finally:
        for n in (a, b):
            if n.alive():
                n.proc.send_signal(signal.SIGKILL)
                n.proc.wait()
        subprocess.run(["umount", "-l", mnt], check=False)


if __name__ == "__main__":
    socket.setdefaulttimeout(5)
    sys.exit(main())
