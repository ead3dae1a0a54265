"""Replication (repcached-style pairs): two of our servers on loopback,
each naming the other with -x, plus restarts of either.

Every wait is a bounded poll loop on something observable (a stat, a
value on the other node); nothing sleeps for synchronisation.
"""

import re
import signal
import socket
import subprocess
import threading
import time

import pytest

import repl_helpers
from mc_helpers import Server, free_port, ours_path, request
from repl_helpers import repl_stats

SYNC_TIMEOUT = 15.0


def _require_ours():
    if not ours_path().is_file():
        pytest.fail(f"{ours_path()} not built: run `cargo build`")


class Pair:
    """Replication ports for two nodes; starts and restarts them."""

    def __init__(self):
        self.repl_ports = {"a": free_port(), "b": free_port()}
        self.nodes = []

    def args(self, name, *extra):
        other = "b" if name == "a" else "a"
        return (
            "-x", f"127.0.0.1:{self.repl_ports[other]}",
            "--repl-port", str(self.repl_ports[name]),
            *extra,
        )

    def start(self, name, *extra):
        node = Server("ours", self.args(name, *extra))
        self.nodes.append(node)
        return node

    def stop_all(self):
        for node in self.nodes:
            node.kill()


@pytest.fixture
def pair():
    _require_ours()
    p = Pair()
    yield p
    p.stop_all()


def wait_until(what, predicate, timeout=SYNC_TIMEOUT):
    """Polls predicate() until it returns something true; fails with `what`."""
    return repl_helpers.wait_until(what, predicate, timeout)


def wait_role(node, role):
    wait_until(f"{node.describe()} to be {role}",
               lambda: repl_stats(node)["repl_role"] == role)


def wait_linked(*nodes):
    """Both ends report the link up and the full copy done, nothing lagging."""
    def linked():
        sts = [repl_stats(n) for n in nodes]
        ok = all(s["repl_connected"] == "1" and s["repl_lag_records"] == "0" for s in sts)
        return ok or None
    wait_until("the pair to be linked and in sync", linked)


def started_pair(pair):
    a = pair.start("a")
    wait_role(a, "master")
    b = pair.start("b")
    wait_role(b, "replica")
    wait_linked(a, b)
    return a, b


def set_value(sock, key, value, flags=0, exptime=0):
    cmd = f"set {key} {flags} {exptime} {len(value)}\r\n".encode() + value + b"\r\n"
    assert request(sock, cmd) == b"STORED\r\n"


def gets(node, key):
    """(flags, value, cas) of key on node, or None."""
    with node.connect() as s:
        reply = request(s, f"gets {key}\r\n".encode(),
                        lambda b: b.endswith(b"END\r\n"))
    m = re.match(rb"VALUE \S+ (\d+) (\d+) (\d+)\r\n", reply)
    if not m:
        return None
    n = int(m.group(2))
    start = m.end()
    return int(m.group(1)), reply[start:start + n], int(m.group(3))


def wait_value(node, key, expected):
    """Waits until key's value on node is `expected` (None: absent)."""
    def seen():
        got = gets(node, key)
        value = None if got is None else got[1]
        return value == expected or None
    wait_until(f"{key} to be {expected!r} on {node.describe()}", seen)


def dump(node, keys):
    """{key: (flags, value, cas)} for the keys present on node."""
    out = {}
    with node.connect() as s:
        for i in range(0, len(keys), 100):
            batch = keys[i:i + 100]
            reply = request(s, ("gets " + " ".join(batch) + "\r\n").encode(),
                            lambda b: b.endswith(b"END\r\n"))
            pos = 0
            while True:
                m = re.compile(rb"VALUE (\S+) (\d+) (\d+) (\d+)\r\n").match(reply, pos)
                if not m:
                    break
                n = int(m.group(3))
                value = reply[m.end():m.end() + n]
                out[m.group(1).decode()] = (int(m.group(2)), value, int(m.group(4)))
                pos = m.end() + n + 2
    return out


def test_stats_lines_only_with_replication(start_server):
    plain = start_server("ours")
    assert not [k for k in plain.stats() if k.startswith("repl_")]


def test_bad_replication_options_refuse_to_start():
    _require_ours()
    for args, message in (
        (["-x", "host:0"], b'Invalid replication peer "host:0"'),
        (["-x", ":11212"], b'Invalid replication peer ":11212"'),
        (["--repl-port", "70000"], b'Invalid replication port "70000"'),
        (["-o", "repl_port=abc"], b'Invalid replication port "abc"'),
    ):
        out = subprocess.run([str(ours_path()), "-u", "root", *args],
                             capture_output=True, timeout=10)
        assert out.returncode == 64, args
        assert message in out.stderr, (args, out.stderr)


def test_first_node_is_master_second_is_replica(pair):
    a, b = started_pair(pair)
    sa, sb = repl_stats(a), repl_stats(b)
    assert sa["repl_role"] == "master" and sb["repl_role"] == "replica"
    assert sa["repl_peer"] == f"127.0.0.1:{pair.repl_ports['b']}"
    assert sa["repl_resyncs"] == "1" and sb["repl_resyncs"] == "1"


def test_writes_on_either_side_appear_on_the_other_with_the_same_cas(pair):
    a, b = started_pair(pair)
    with a.connect() as sa, b.connect() as sb:
        set_value(sa, "from_a", b"alpha", flags=7)
        set_value(sb, "from_b", b"beta", flags=9)
        request(sa, b"set n 0 0 2\r\n10\r\n")
        assert request(sb, b"incr n 5\r\n") in (b"15\r\n", b"NOT_FOUND\r\n")
    wait_value(b, "from_a", b"alpha")
    wait_value(a, "from_b", b"beta")
    wait_linked(a, b)
    for key in ("from_a", "from_b", "n"):
        assert gets(a, key) == gets(b, key), key
    assert gets(a, "from_a")[0] == 7 and gets(b, "from_b")[0] == 9
    # A CAS read on one node is good for a cas on the other.
    _, _, cas = gets(b, "from_a")
    with a.connect() as sa:
        assert request(sa, f"cas from_a 1 0 3 {cas}\r\nnew\r\n".encode()) == b"STORED\r\n"
    wait_value(b, "from_a", b"new")


def test_a_joining_node_gets_a_full_copy_with_expiry_preserved(pair):
    a = pair.start("a", "-m", "64")
    wait_role(a, "master")
    keys = [f"k{i}" for i in range(20000)]
    with a.connect() as s:
        batch = b"".join(
            f"set {k} {i % 7} {0 if i % 2 else 1000} 20\r\n".encode() + f"{i:020d}".encode() + b"\r\n"
            for i, k in enumerate(keys)
        )
        s.sendall(batch)
        request(s, b"mn\r\n", lambda b: b.endswith(b"MN\r\n"))
        set_value(s, "big", b"x" * 900_000)
    b = pair.start("b", "-m", "64")
    wait_role(b, "replica")
    wait_linked(a, b)
    assert dump(a, keys) == dump(b, keys)
    assert len(dump(b, keys)) == len(keys)
    assert gets(b, "big")[1] == b"x" * 900_000
    # Remaining TTLs agree (to the second the two clocks may differ by).
    with a.connect() as sa, b.connect() as sb:
        ta = int(request(sa, b"mg k0 t\r\n").split()[1][1:])
        tb = int(request(sb, b"mg k0 t\r\n").split()[1][1:])
        assert 990 <= ta <= 1000 and abs(ta - tb) <= 2, (ta, tb)
        assert request(sb, b"mg k1 t\r\n") == b"HD t-1\r\n"


def test_expired_items_expire_on_both_nodes(pair):
    a, b = started_pair(pair)
    with a.connect() as s:
        set_value(s, "short", b"v", exptime=2)
    wait_value(b, "short", b"v")
    wait_value(a, "short", None)
    wait_value(b, "short", None)


def test_deletes_touches_and_flush_all_replicate(pair):
    a, b = started_pair(pair)
    with a.connect() as sa, b.connect() as sb:
        for i in range(50):
            set_value(sa, f"d{i}", b"v")
        wait_value(b, "d49", b"v")
        assert request(sb, b"delete d1\r\n") == b"DELETED\r\n"
        assert request(sa, b"delete d2\r\n") == b"DELETED\r\n"
        assert request(sb, b"touch d3 1000\r\n") == b"TOUCHED\r\n"
        wait_value(a, "d1", None)
        wait_value(b, "d2", None)
        wait_until("the touch to reach a", lambda: request(sa, b"mg d3 t\r\n").startswith(b"HD t9"))
        assert request(sb, b"flush_all\r\n") == b"OK\r\n"
        wait_value(a, "d49", None)
        set_value(sa, "after", b"flush")
    wait_value(b, "after", b"flush")
    wait_linked(a, b)
    keys = [f"d{i}" for i in range(50)] + ["after"]
    assert dump(a, keys) == dump(b, keys) == {"after": dump(a, ["after"])["after"]}


def test_concurrent_writes_to_one_key_converge_to_the_higher_cas(pair):
    """The conflict rule: both nodes end with the same value and CAS for
    every key written on both at once, and it is the write with the higher
    CAS."""
    a, b = started_pair(pair)
    keys = [f"c{i}" for i in range(300)]

    def writer(node, tag):
        with node.connect() as s:
            s.sendall(b"".join(
                f"set {k} 0 0 {len(tag)}\r\n{tag}\r\n".encode() for k in keys))
            request(s, b"mn\r\n", lambda b: b.endswith(b"MN\r\n"))

    threads = [threading.Thread(target=writer, args=(n, t)) for n, t in ((a, "AAAA"), (b, "BB"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    wait_linked(a, b)
    wait_until("both nodes to agree", lambda: dump(a, keys) == dump(b, keys))
    final = dump(a, keys)
    assert len(final) == len(keys)
    for k, (_, value, cas) in final.items():
        # Master CAS values are odd, replica ones even.
        assert (value == b"AAAA") == (cas % 2 == 1), (k, value, cas)


def test_kill_the_master_during_writes_replica_takes_over_and_old_master_catches_up(pair):
    a, b = started_pair(pair)
    acked = {}
    stop = threading.Event()
    errors = []

    def writer():
        i = 0
        try:
            with b.connect() as s:
                while not stop.is_set():
                    key, value = f"w{i}", f"value-{i}".encode()
                    set_value(s, key, value)
                    acked[key] = value
                    i += 1
        except Exception as e:  # noqa: BLE001 -- reported below
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    wait_until("some writes", lambda: len(acked) > 500)
    a.kill()
    wait_role(b, "master")
    wait_until("writes after the failover", lambda: len(acked) > 2500)
    a2 = pair.start("a")
    wait_role(a2, "replica")
    wait_until("more writes while a2 syncs", lambda: len(acked) > 4000)
    stop.set()
    t.join(10)
    assert not errors, errors
    wait_linked(a2, b)
    keys = list(acked)
    on_a2 = dump(a2, keys)
    missing = [k for k in keys if on_a2.get(k, (0, None))[1] != acked[k]]
    assert not missing, f"{len(missing)} acknowledged writes missing on the rejoined node"
    assert dump(b, keys) == on_a2
    assert repl_stats(b)["repl_role"] == "master"


def test_kill_the_replica_during_writes_restart_it_and_it_catches_up(pair):
    a, b = started_pair(pair)
    acked = {}
    stop = threading.Event()
    errors = []

    def writer():
        i = 0
        try:
            with a.connect() as s:
                while not stop.is_set():
                    key = f"r{i}"
                    set_value(s, key, f"v{i}".encode())
                    acked[key] = f"v{i}".encode()
                    if i % 100 == 99:
                        deleted = f"r{i - 50}"
                        assert request(s, f"delete {deleted}\r\n".encode()) == b"DELETED\r\n"
                        del acked[deleted]
                    i += 1
        except Exception as e:  # noqa: BLE001 -- reported below
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    wait_until("some writes", lambda: len(acked) > 500)
    b.signal(signal.SIGKILL)
    wait_until("a to notice", lambda: repl_stats(a)["repl_connected"] == "0")
    wait_until("writes while b is down", lambda: len(acked) > 1500)
    b2 = pair.start("b")
    wait_role(b2, "replica")
    wait_until("writes while b2 syncs", lambda: len(acked) > 2500)
    stop.set()
    t.join(10)
    assert not errors, errors
    assert repl_stats(a)["repl_role"] == "master"
    wait_linked(a, b2)
    keys = [f"r{i}" for i in range(max(int(k[1:]) for k in acked) + 1)]
    got = dump(b2, keys)
    assert {k: v for k, (_, v, _) in got.items()} == acked
    assert got == dump(a, keys)


def test_a_replica_too_far_behind_is_resynced_from_a_fresh_copy(pair):
    a, b = started_pair(pair)
    before = int(repl_stats(a)["repl_resyncs"])
    b.signal(signal.SIGSTOP)
    try:
        value = b"z" * 500_000
        with a.connect() as s:
            # 120 MB of changes while the replica reads nothing: well over
            # the 64 MB bound plus what the kernel's socket buffers hold.
            for i in range(240):
                set_value(s, f"big{i % 8}", value + str(i).encode())
        wait_until("a resync", lambda: int(repl_stats(a)["repl_resyncs"]) > before)
        # What the stopped replica has not acknowledged shows as lag.
        assert int(repl_stats(a)["repl_lag_records"]) > 0
        # Memory stays bounded: the backlog was dropped, not kept.
        assert a.rss_kb() < 200_000
    finally:
        b.signal(signal.SIGCONT)
    wait_linked(a, b)
    keys = [f"big{i}" for i in range(8)]
    assert dump(a, keys) == dump(b, keys)
    assert dump(b, ["big7"])["big7"][1] == value + b"239"


def test_two_nodes_started_at_once_settle_into_one_master_and_one_replica(pair):
    # Started together: whichever way the race goes (one finds the other
    # listening, or both find nothing, become masters and pair up through
    # their jittered retries), they end as one pair.
    started = {}
    threads = [threading.Thread(target=lambda n=n: started.__setitem__(n, pair.start(n)))
               for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    a, b = started["a"], started["b"]
    wait_until("one master and one replica", lambda: sorted(
        (repl_stats(a)["repl_role"], repl_stats(b)["repl_role"])) == ["master", "replica"])
    wait_linked(a, b)
    with a.connect() as s:
        set_value(s, "x", b"1")
    wait_value(b, "x", b"1")


def test_stats_settings_show_the_replication_options(pair):
    a = pair.start("a")
    st = a.stats("settings")
    assert st["repl_peer"] == f"127.0.0.1:{pair.repl_ports['b']}"
    assert st["repl_port"] == str(pair.repl_ports["a"])


class CuttableLink:
    """A TCP relay standing in for the network between two nodes: `cut()`
    closes every relayed connection and refuses new ones."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.socks = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                return
            with self.lock:
                self.socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        # shutdown() wakes the thread blocked in accept(); close() alone
        # would leave the socket listening until accept returns.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for s in self.socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


def test_a_cut_link_leaves_two_masters_that_pair_up_again_by_retrying(pair):
    # b reaches a through a relay; a reaches b directly.
    a = pair.start("a")
    wait_role(a, "master")
    relay = CuttableLink(pair.repl_ports["a"])
    b = Server("ours", ("-x", f"127.0.0.1:{relay.port}",
                        "--repl-port", str(pair.repl_ports["b"])))
    pair.nodes.append(b)
    wait_role(b, "replica")
    wait_linked(a, b)
    with a.connect() as s:
        set_value(s, "before", b"cut")
    wait_value(b, "before", b"cut")
    relay.cut()
    # b cannot reach a any more and takes over; a, alone, keeps retrying b
    # and finds it listening: a becomes b's replica and gets b's data.
    wait_until("a to rejoin as b's replica",
               lambda: repl_stats(a)["repl_role"] == "replica"
               and repl_stats(b)["repl_role"] == "master")
    with b.connect() as s:
        set_value(s, "after", b"heal")
    wait_linked(a, b)
    wait_value(a, "after", b"heal")
    assert gets(a, "before") == gets(b, "before")
    assert int(repl_stats(a)["repl_resyncs"]) >= 2


def test_binary_protocol_writes_replicate_too(pair):
    pylibmc = pytest.importorskip("pylibmc", reason="pylibmc not installed")
    a, b = started_pair(pair)
    c = pylibmc.Client([f"127.0.0.1:{a.port}"], binary=True)
    assert c.set("bin", b"one")
    assert c.append("bin", b"+two")
    assert c.set("num", b"10")
    assert c.incr("num", 5) == 15
    assert c.set("gone", b"x")
    assert c.delete("gone")
    wait_linked(a, b)
    wait_value(b, "bin", b"one+two")
    wait_value(b, "num", b"15")
    wait_value(b, "gone", None)
    assert gets(a, "num") == gets(b, "num")


def test_a_write_just_before_sigterm_reaches_the_peer(pair):
    a, b = started_pair(pair)
    with a.connect() as s:
        set_value(s, "last", b"words")
        a.signal(signal.SIGTERM)
    a.proc.wait(10)
    wait_value(b, "last", b"words")
    wait_role(b, "master")


def test_with_the_aof_a_replica_logs_what_it_receives(pair, tmp_path):
    """A replica with its own append-only file logs the records it applies
    from the master: restarted alone (its peer down), it comes back as
    master with the data."""
    a = pair.start("a")
    wait_role(a, "master")
    aof = tmp_path / "b.aof"
    b = pair.start("b", "--aof-file", str(aof), "-o", "aof_sync=always")
    wait_role(b, "replica")
    wait_linked(a, b)
    with a.connect() as s:
        for i in range(100):
            set_value(s, f"p{i}", f"v{i}".encode())
    wait_value(b, "p99", b"v99")
    a.kill()
    b.kill()
    b2 = pair.start("b", "--aof-file", str(aof))
    wait_role(b2, "master")
    assert gets(b2, "p0")[1] == b"v0" and gets(b2, "p99")[1] == b"v99"


def test_udp_writes_replicate_with_the_aof_on(pair, tmp_path):
    """A UDP request's record is written to the AOF before its datagram
    reply, in the middle of a loop turn; replication still gets it."""
    a = pair.start("a", "--aof-file", str(tmp_path / "a.aof"), "-U", str(free_port()))
    udp_port = int(a.args[a.args.index("-U", a.args.index("--aof-file")) + 1])
    wait_role(a, "master")
    b = pair.start("b")
    wait_role(b, "replica")
    wait_linked(a, b)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(5)
        header = (7).to_bytes(2, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big") + bytes(2)
        u.sendto(header + b"set viaudp 0 0 3\r\nudp\r\n", ("127.0.0.1", udp_port))
        reply, _ = u.recvfrom(2048)
        assert reply[8:] == b"STORED\r\n"
    wait_value(b, "viaudp", b"udp")


# ---------------------------------------------------------------------------
# -Y: the replication link is gated by the authfile too
# ---------------------------------------------------------------------------

def _crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _put_record(key, value):
    """A well-formed PUT record (persist/record.rs): len, crc, body."""
    import struct
    body = (bytes([1]) + struct.pack("<Q", int(time.time()))
            + struct.pack("<IQQB", 0, 0, 1, 0) + bytes([len(key)]) + key + value)
    return struct.pack("<II", len(body), _crc32c(body)) + body


def _authed(node, payload, done):
    with node.connect() as s:
        assert request(s, b"set x 0 0 3\r\nu p\r\n") == b"STORED\r\n"
        return request(s, payload, done)


def _authed_stats(node):
    reply = _authed(node, b"stats\r\n", lambda b: b.endswith(b"END\r\n"))
    return dict(line.split(" ", 2)[1:] for line in reply.decode().split("\r\n")
                if line.startswith("STAT repl_"))


def _authed_get(node, key):
    reply = _authed(node, b"get " + key + b"\r\n", lambda b: b.endswith(b"END\r\n"))
    m = re.match(rb"VALUE \S+ \d+ (\d+)\r\n", reply)
    return None if m is None else reply[m.end():m.end() + int(m.group(1))]


def _wait_stat(node, name, value):
    wait_until(f"{name} {value} on {node.describe()}",
               lambda: _authed_stats(node).get(name) == value)


def _started_pair_under_Y(pair, tmp_path):
    """Both nodes given the same authfile (`u:p`), linked."""
    auth = tmp_path / "auth"
    auth.write_text("u:p\n")
    a = pair.start("a", "-Y", str(auth))
    _wait_stat(a, "repl_role", "master")
    b = pair.start("b", "-Y", str(auth))
    _wait_stat(b, "repl_role", "replica")
    _wait_stat(a, "repl_connected", "1")
    return a, b


def test_under_Y_a_pair_with_the_same_authfile_replicates(pair, tmp_path):
    a, b = _started_pair_under_Y(pair, tmp_path)
    assert _authed(a, b"set k 0 0 2\r\nhi\r\n", lambda r: r.endswith(b"\r\n")) == b"STORED\r\n"
    wait_until("k on the replica", lambda: _authed_get(b, b"k") == b"hi")


def test_under_Y_a_stranger_on_the_replication_port_is_not_heard(pair, tmp_path):
    auth = tmp_path / "auth"
    auth.write_text("u:p\n")
    a = pair.start("a", "-Y", str(auth))
    _wait_stat(a, "repl_role", "master")
    with socket.create_connection(("127.0.0.1", pair.repl_ports["a"]), timeout=5) as s:
        s.sendall(_put_record(b"forged", b"evil"))
        # The master closes the link at the first frame that is not AUTH.
        deadline = time.monotonic() + SYNC_TIMEOUT
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                closed = s.recv(65536) == b""
            except ConnectionResetError:
                closed = True
        assert closed, "the master kept a link that never authenticated"
    assert _authed_get(a, b"forged") is None
    _wait_stat(a, "repl_connected", "0")


def test_under_Y_a_node_with_another_authfile_does_not_pair(pair, tmp_path):
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    mine.write_text("u:p\n")
    theirs.write_text("u:p\nother:secret\n")
    a = pair.start("a", "-Y", str(mine))
    _wait_stat(a, "repl_role", "master")
    b = pair.start("b", "-Y", str(theirs))
    # Refused by a, b gives up on it and serves alone.
    _wait_stat(b, "repl_role", "master")
    assert _authed(a, b"set k 0 0 2\r\nhi\r\n", lambda r: r.endswith(b"\r\n")) == b"STORED\r\n"
    # b retries a now and then (and is refused again); nothing ever flows.
    assert _authed_get(b, b"k") is None


def _control_frame(kind, value):
    """A well-formed link-control frame (repl/link.rs): kind, a zero
    timestamp, a 64-bit value."""
    import struct
    body = bytes([kind]) + struct.pack("<QQ", 0, value)
    return struct.pack("<II", len(body), _crc32c(body)) + body


def _closed_by_peer(sock, timeout=SYNC_TIMEOUT):
    """Reads until the other end closes; True if it did within timeout."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except socket.timeout:
            continue
        except ConnectionResetError:
            return True
    return False


def _still_paired(a, b, resyncs_before, tag):
    """The link is the same one: writes flow both ways, nobody resynced."""
    with a.connect() as s:
        set_value(s, f"from_a_{tag}", b"1")
    with b.connect() as s:
        set_value(s, f"from_b_{tag}", b"2")
    wait_value(b, f"from_a_{tag}", b"1")
    wait_value(a, f"from_b_{tag}", b"2")
    assert repl_stats(b)["repl_resyncs"] == resyncs_before
    assert repl_stats(a)["repl_connected"] == repl_stats(b)["repl_connected"] == "1"


def test_strangers_on_the_replication_port_do_not_cut_a_live_link(pair):
    a, b = started_pair(pair)
    resyncs = repl_stats(b)["repl_resyncs"]
    port = pair.repl_ports["a"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as junk, \
            socket.create_connection(("127.0.0.1", port), timeout=5) as silent, \
            socket.create_connection(("127.0.0.1", port), timeout=5) as forger:
        junk.sendall(b"GET / HTTP/1.0\r\n\r\n")
        # A well-formed record is still not what a joining peer sends first.
        forger.sendall(_put_record(b"forged", b"evil"))
        assert _closed_by_peer(junk), "the master kept a connection sending junk"
        assert _closed_by_peer(forger), "the master kept a connection sending records"
        _still_paired(a, b, resyncs, "during")
        # One that says nothing is let go after the connect timeout (3 s).
        assert _closed_by_peer(silent), "the master kept a silent connection"
    assert gets(a, "forged") is None and gets(b, "forged") is None
    _still_paired(a, b, resyncs, "after")


def test_a_peer_that_proves_itself_replaces_a_live_link(pair):
    """A restarted peer may connect before the old link has timed out: its
    HELLO (the first thing a joining node sends) wins the link."""
    a, b = started_pair(pair)
    with a.connect() as s:
        set_value(s, "kept", b"yes")
    # 0x81 is HELLO (the value is the sender's node id); 0x86 UPLOADED ends
    # what a joining node holds (nothing, here).
    with socket.create_connection(("127.0.0.1", pair.repl_ports["a"]), timeout=5) as s:
        s.sendall(_control_frame(0x81, 12345) + _control_frame(0x86, 0))
        # The master takes the new link and starts a full copy on it: the
        # first frame other than an ACK (0x84) is RESYNC (0x82). (b, cut
        # off, reconnects at once and takes the link back the same way, so
        # what follows may be cut.)
        got = b""
        s.settimeout(SYNC_TIMEOUT)
        while len(got) < 9 or got[8] == 0x84:
            if len(got) >= 9:
                got = got[8 + int.from_bytes(got[:4], "little"):]
                continue
            chunk = s.recv(65536)
            assert chunk, f"the master closed a link that sent HELLO (got {got!r})"
            got += chunk
        assert got[8] == 0x82, got
    # b lost its link, comes back and pairs again.
    wait_linked(a, b)
    assert int(repl_stats(b)["repl_resyncs"]) >= 2
    wait_value(b, "kept", b"yes")


def test_under_Y_a_stranger_with_a_wrong_proof_does_not_cut_a_live_link(pair, tmp_path):
    a, b = _started_pair_under_Y(pair, tmp_path)
    resyncs = _authed_stats(b)["repl_resyncs"]
    with socket.create_connection(("127.0.0.1", pair.repl_ports["a"]), timeout=5) as s:
        # 0x85 is the authfile proof; HELLO without it is refused as well.
        s.sendall(_control_frame(0x85, 0xDEADBEEF) + _control_frame(0x81, 1))
        assert _closed_by_peer(s), "the master kept a connection with a wrong proof"
    assert _authed(a, b"set k 0 0 2\r\nhi\r\n", lambda r: r.endswith(b"\r\n")) == b"STORED\r\n"
    wait_until("k on the replica", lambda: _authed_get(b, b"k") == b"hi")
    assert _authed_stats(b)["repl_resyncs"] == resyncs
    assert _authed_stats(a)["repl_connected"] == "1"
