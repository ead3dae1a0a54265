"""A replication link cut by a relay process while both nodes take writes,
then restored: after the heal both nodes hold every acknowledged write,
keys written on both sides are decided by CAS (the higher wins), deletes
made during the cut hold by the tombstone rule (a delete supersedes the
writes whose CAS is at or below the highest CAS its node knew of when it
deleted), and reads were answered throughout.

The nodes are two "hosts", 127.0.0.2 and 127.0.0.3, with the same -X port;
each names as its peer the relay (repl_relay.py, its own process), which
forwards to the other node's replication port. SIGUSR1 makes the relay
close every relayed connection and stop listening; SIGUSR2 brings it back.
"""

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mc_helpers import Server, free_port, ours_path, request
from repl_helpers import (
    gets, gets_on, repl_stats, set_value, wait_linked, wait_role, wait_until,
)

A, B = "127.0.0.2", "127.0.0.3"
RELAY = Path(__file__).with_name("repl_relay.py")


class RelayProcess:
    """repl_relay.py in its own process; each control waits for its line."""

    def __init__(self, routes, record=None):
        args = [f"{l[0]}:{l[1]}={t[0]}:{t[1]}" for l, t in routes]
        if record is not None:
            args.insert(0, f"--record={record}")
        self.proc = subprocess.Popen(
            [sys.executable, str(RELAY), *args],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        )
        self.expect("ready")

    def expect(self, word):
        # The relay answers each signal with one line; a dead relay ends
        # the stream, which fails the test rather than hanging it.
        line = self.proc.stdout.readline()
        assert line.startswith(word), f"relay said {line!r}, wanted {word}"
        return line

    def cut(self, how):
        sig = {"closed": signal.SIGUSR1, "silent": signal.SIGHUP}[how]
        self.proc.send_signal(sig)
        return int(self.expect("cut").split()[1])

    def restore(self):
        self.proc.send_signal(signal.SIGUSR2)
        self.expect("restored")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


class Readers:
    """One thread per node reading a known key in a loop on one connection
    (reconnecting if needed): every read must get a well-formed answer."""

    def __init__(self, nodes, key):
        self.nodes, self.key = nodes, key
        self.stop = threading.Event()
        self.answered = {n.host: 0 for n in nodes}
        self.failures = []
        self.threads = [threading.Thread(target=self.run, args=(n,), daemon=True)
                        for n in nodes]
        for t in self.threads:
            t.start()

    def run(self, node):
        sock = None
        while not self.stop.is_set():
            try:
                if sock is None:
                    sock = node.connect(timeout=5)
                reply = request(sock, f"get {self.key}\r\n".encode(),
                                lambda b: b.endswith(b"END\r\n"), timeout=5)
                if not reply.endswith(b"END\r\n"):
                    self.failures.append((node.host, reply))
                self.answered[node.host] += 1
                # Pacing, not synchronisation: leave the shared CPUs to the
                # nodes.
                time.sleep(0.002)
            except Exception as e:  # any failure to answer is the finding
                self.failures.append((node.host, repr(e)))
                if sock is not None:
                    sock.close()
                sock = None
        if sock is not None:
            sock.close()

    def count(self):
        return dict(self.answered)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)


@pytest.fixture
def world():
    if not ours_path().is_file():
        pytest.fail(f"{ours_path()} not built: run `cargo build`")
    started = {"nodes": [], "relay": None}
    yield started
    for node in started["nodes"]:
        node.kill()
    if started["relay"] is not None:
        started["relay"].stop()


@pytest.mark.parametrize("how", ["closed", "silent"])
def test_a_cut_link_heals_without_losing_an_acknowledged_write(world, how):
    """`closed`: the relay closes the connections (both nodes see it at
    once). `silent`: it stops forwarding, so each node notices only when
    its peer has been silent for 10 s; writes made before that went into a
    link that never delivered them."""
    port = free_port()
    via_a, via_b = free_port(), free_port()
    # A's peer is the relay's first route (to B), B's the second (to A).
    relay = RelayProcess([(("127.0.0.1", via_a), (B, port)),
                          (("127.0.0.1", via_b), (A, port))])
    world["relay"] = relay
    a = Server("ours", ("-x", f"127.0.0.1:{via_a}", "-X", str(port)), host=A)
    world["nodes"].append(a)
    wait_role(a, "master")
    b = Server("ours", ("-x", f"127.0.0.1:{via_b}", "-X", str(port)), host=B)
    world["nodes"].append(b)
    wait_role(b, "replica")
    wait_linked(a, b)

    # Before the cut: keys both nodes hold.
    with a.connect() as s:
        set_value(s, "watched", b"read me")
        for i in range(40):
            set_value(s, f"pre_{i}", f"pre {i}".encode())
    wait_until("the pre-cut keys on b", lambda: gets(b, "pre_39") is not None)
    wait_linked(a, b)
    resyncs = int(repl_stats(b)["repl_resyncs"]) + int(repl_stats(a)["repl_resyncs"])

    readers = Readers([a, b], "watched")
    assert relay.cut(how) >= 1, "the relay had no link to cut"
    expected = {}  # key -> value (None: absent) after the heal
    cas = {}  # (node, key) -> the CAS its own write got

    def write(node, sock, key, value):
        set_value(sock, key, value)
        cas[(node, key)] = gets_on(sock, key)[1]

    # Written at once: while the link is silently cut these go into a link
    # that delivers nothing, and each node still thinks it is paired.
    with a.connect() as sa, b.connect() as sb:
        for i in range(10):
            write("a", sa, f"early_a_{i}", b"ea")
            expected[f"early_a_{i}"] = b"ea"
            write("b", sb, f"early_b_{i}", b"eb")
            expected[f"early_b_{i}"] = b"eb"
    # b loses its master, tries it once more (refused) and takes over; a,
    # master already, is alone. Both serve.
    wait_role(b, "master")
    wait_until("a to see the link down", lambda: repl_stats(a)["repl_connected"] == "0")
    during_cut = readers.count()

    with a.connect() as sa, b.connect() as sb:

        # 50 writes on each side, to keys only that side writes.
        for i in range(50):
            write("a", sa, f"a_{i}", f"a {i}".encode())
            expected[f"a_{i}"] = f"a {i}".encode()
            write("b", sb, f"b_{i}", f"b {i}".encode())
            expected[f"b_{i}"] = f"b {i}".encode()
        # Keys written on both sides: the higher CAS wins.
        for i in range(20):
            write("a", sa, f"both_{i}", f"a wrote {i}".encode())
            write("b", sb, f"both_{i}", f"b wrote {i}".encode())
            winner = "a" if cas[("a", f"both_{i}")] > cas[("b", f"both_{i}")] else "b"
            expected[f"both_{i}"] = f"{winner} wrote {i}".encode()
        # Deletes of keys the other side leaves alone: gone on both.
        for i in range(0, 10):
            assert request(sa, f"delete pre_{i}\r\n".encode()) == b"DELETED\r\n"
            expected[f"pre_{i}"] = None
        for i in range(10, 20):
            assert request(sb, f"delete pre_{i}\r\n".encode()) == b"DELETED\r\n"
            expected[f"pre_{i}"] = None
        # Delete on one side, write on the other: a's counter is pushed far
        # ahead, so a's deletes (pre_20..24) are stamped above b's later
        # writes of the same keys and win, while b's deletes (pre_25..29),
        # stamped low, lose to a's later writes.
        for i in range(200):
            write("a", sa, f"bulk_{i}", b"x")
            expected[f"bulk_{i}"] = b"x"
        def stamp(node):
            # A node's CAS counter since the cut: its own latest write (it
            # wrote after the cut, above all it knew of before).
            return max(c for (n, _), c in cas.items() if n == node)

        a_stamp = stamp("a")
        for i in range(20, 25):
            assert request(sa, f"delete pre_{i}\r\n".encode()) == b"DELETED\r\n"
            write("b", sb, f"pre_{i}", f"b rewrote {i}".encode())
            assert cas[("b", f"pre_{i}")] <= a_stamp
            expected[f"pre_{i}"] = None
        b_stamp = stamp("b")
        for i in range(25, 30):
            assert request(sb, f"delete pre_{i}\r\n".encode()) == b"DELETED\r\n"
            write("a", sa, f"pre_{i}", f"a rewrote {i}".encode())
            assert cas[("a", f"pre_{i}")] > b_stamp
            expected[f"pre_{i}"] = f"a rewrote {i}".encode()
        for i in range(30, 40):
            expected[f"pre_{i}"] = f"pre {i}".encode()
    # Both nodes answered reads while apart.
    after_writes = readers.count()
    assert all(after_writes[h] > during_cut[h] for h in (A, B)), (during_cut, after_writes)

    relay.restore()
    wait_until("one master and one replica again",
               lambda: sorted(repl_stats(n)["repl_role"] for n in (a, b)) == ["master", "replica"])
    wait_linked(a, b)
    healed = readers.count()
    readers.finish()
    assert readers.failures == [], readers.failures[:5]
    assert all(healed[h] > after_writes[h] for h in (A, B))
    after = int(repl_stats(b)["repl_resyncs"]) + int(repl_stats(a)["repl_resyncs"])
    assert after > resyncs, "the pair did not go through a full copy"

    lost = {}
    for node in (a, b):
        with node.connect() as s:
            for key, value in expected.items():
                got = gets_on(s, key)
                if (got[0] if got else None) != value:
                    lost[(node.host, key)] = (got, value)
    assert lost == {}, f"{len(lost)} keys wrong, e.g. {list(lost.items())[:5]}"
    # The same CAS on both nodes, too.
    with a.connect() as sa, b.connect() as sb:
        for key in ("a_0", "b_49", "both_3", "pre_27"):
            assert gets_on(sa, key) == gets_on(sb, key)
