"""Helpers shared by the replication tests that run nodes on their own
loopback addresses (test_repl_cmdline.py, test_repl_faults.py): polls on
the `repl_*` stats and on values, and plain ascii helpers."""

import re
import time

import pytest

from mc_helpers import request

SYNC_TIMEOUT = 30.0


def repl_stats(node):
    return {k: v for k, v in node.stats().items() if k.startswith("repl_")}


def wait_until(what, predicate, timeout=SYNC_TIMEOUT):
    """Polls predicate() until it returns something true; fails with `what`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


def wait_role(node, role, timeout=SYNC_TIMEOUT):
    wait_until(f"{node.describe()} to be {role}",
               lambda: repl_stats(node)["repl_role"] == role, timeout)


def wait_linked(*nodes, timeout=SYNC_TIMEOUT):
    """Every node reports the link up and the full copy done, nothing lagging."""
    def linked():
        sts = [repl_stats(n) for n in nodes]
        ok = all(s["repl_connected"] == "1" and s["repl_lag_records"] == "0" for s in sts)
        return ok or sts
    wait_until("the pair to be linked and in sync",
               lambda: linked() is True, timeout)


def set_value(sock, key, value, flags=0, exptime=0):
    cmd = f"set {key} {flags} {exptime} {len(value)}\r\n".encode() + value + b"\r\n"
    assert request(sock, cmd) == b"STORED\r\n"


def gets_on(sock, key):
    """(value, cas) of key over an open connection, or None."""
    reply = request(sock, f"gets {key}\r\n".encode(), lambda b: b.endswith(b"END\r\n"))
    m = re.match(rb"VALUE \S+ \d+ (\d+) (\d+)\r\n", reply)
    if not m:
        assert reply == b"END\r\n", reply
        return None
    start = m.end()
    return reply[start:start + int(m.group(1))], int(m.group(2))


def gets(node, key):
    with node.connect() as s:
        return gets_on(s, key)


def wait_value(node, key, expected, timeout=SYNC_TIMEOUT):
    """Waits until key's value on node is `expected` (None: absent)."""
    def seen():
        got = gets(node, key)
        return (got[0] if got else None) == expected
    wait_until(f"{key} = {expected!r} on {node.describe()}", seen, timeout)
