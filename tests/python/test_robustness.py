"""Misbehaving clients and signals: disconnects in the middle of a value, a
client that never reads its replies, clients that vanish while a big reply
is being written (SIGPIPE), and SIGTERM."""

import signal
import socket
import struct
import time

from mc_helpers import (
    get,
    first_reply_end,
    pick,
    recv_until,
    request,
    settle_conns,
    stats_over,
    wait_exit,
    wait_stat,
)


def test_disconnect_mid_value(start_server, kind):
    srv = start_server(kind)
    ctl = srv.connect()
    assert request(ctl, b"set keep 0 0 5\r\nhello\r\n") == b"STORED\r\n"
    base_items = int(stats_over(ctl)["curr_items"])
    assert base_items == 1
    base_conns = settle_conns(ctl)

    value = b"v" * 100000

    def abandon():
        s = srv.connect()
        s.sendall(b"set k 0 0 100000\r\n" + value[:50000])
        s.close()

    # Warm up (first use of the slab class allocates its page), then measure.
    for _ in range(10):
        abandon()
    wait_stat(srv, "curr_connections", lambda v: v == base_conns, sock=ctl)
    rss0 = srv.rss_kb()
    for _ in range(200):
        abandon()
    # Every abandoned connection is gone (so its partial item is released).
    st = wait_stat(srv, "curr_connections", lambda v: v == base_conns, sock=ctl)
    rss1 = srv.rss_kb()

    # Collect every problem, so one failure does not hide the others.
    problems = []
    if not srv.alive():
        problems.append(f"server died: rc={srv.proc.returncode}")
    if int(st["curr_connections"]) != base_conns:
        problems.append(
            f"abandoned connections not closed: curr_connections "
            f"{st['curr_connections']} (expected {base_conns}; total_connections "
            f"{st['total_connections']})")
    if get(ctl, b"k") != {}:
        problems.append("get k hit: a half-sent value was stored")
    if get(ctl, b"keep") != {b"keep": (0, b"hello")}:
        problems.append("get keep lost its value")
    st = stats_over(ctl)
    if int(st["curr_items"]) != base_items:
        problems.append(f"curr_items {st['curr_items']} != {base_items}")
    # A fresh connection gets normal service, including a 100000-byte value.
    with srv.connect() as s:
        r = request(s, b"set k 0 0 100000\r\n" + value + b"\r\n")
        if r != b"STORED\r\n":
            problems.append(f"fresh set k -> {r!r}")
        elif get(s, b"k") != {b"k": (0, value)}:
            problems.append("fresh get k wrong")
    # 210 abandoned 100 KB items would be ~20 MB if they leaked.
    if rss1 - rss0 >= 4096:
        problems.append(f"VmRSS grew {rss0} kB -> {rss1} kB over 200 abandoned sets")
    ctl.close()
    assert not problems, f"{srv.describe()}:\n" + "\n".join(problems)


def test_client_that_never_reads(start_server, kind):
    srv = start_server(kind)
    value = bytes(range(256)) * 400  # 102400 bytes
    keys = [b"k%d" % i for i in range(100)]
    with srv.connect() as s:
        payload = b"".join(b"set %s 0 0 %d noreply\r\n%s\r\n" % (k, len(value), value) for k in keys)
        s.sendall(payload)
        assert request(s, b"version\r\n").startswith(b"VERSION ")
        assert int(stats_over(s)["curr_items"]) == 100

    good = srv.connect()
    base_conns = settle_conns(good)
    rss0 = srv.rss_kb()

    bad = socket.create_connection(srv.addr, timeout=10)
    get_line = b"get " + b" ".join(keys) + b"\r\n"
    # 50 pipelined gets = 50 x 10 MB of replies requested; never read.
    bad.sendall(get_line * 50)

    # Meanwhile another client gets normal service.
    worst = 0.0
    for i in range(30):
        t0 = time.monotonic()
        assert request(good, b"set g%d 0 0 3\r\nabc\r\n" % i, timeout=5) == b"STORED\r\n"
        assert get(good, b"g%d" % i, timeout=5) == {b"g%d" % i: (0, b"abc")}
        worst = max(worst, time.monotonic() - t0)
    assert worst < 1.0, f"{srv.describe()}: slowest round trip {worst:.3f}s"
    # A big value is served to the good client too.
    assert get(good, b"k7") == {b"k7": (0, value)}

    rss1 = srv.rss_kb()
    assert srv.alive()
    assert rss1 - rss0 < 64 * 1024, (
        f"{srv.describe()}: VmRSS grew {rss0} kB -> {rss1} kB with a non-reading client"
    )

    # The replies held back are intact: read the whole first one.
    first = recv_until(bad, lambda b: first_reply_end(b) >= 0, timeout=30)
    want_first = b"".join(b"VALUE %s 0 %d\r\n%s\r\n" % (k, len(value), value) for k in keys) + b"END\r\n"
    assert first[: len(want_first)] == want_first, "first reply to the non-reading client is wrong"

    bad.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    bad.close()
    st = wait_stat(srv, "curr_connections", lambda v: v == base_conns, sock=good)
    assert int(st["curr_connections"]) == base_conns, pick(st, "curr_connections", "total_connections")
    assert get(good, b"k99", b"g0") == {b"k99": (0, value), b"g0": (0, b"abc")}
    with srv.connect() as s:
        assert request(s, b"version\r\n").startswith(b"VERSION ")
    assert srv.alive()
    good.close()


def test_sigpipe_client_closes_during_big_reply(start_server, kind):
    srv = start_server(kind)
    value = b"z" * 1000000
    ctl = srv.connect()
    assert request(ctl, b"set big 0 0 %d\r\n%s\r\n" % (len(value), value)) == b"STORED\r\n"
    base_conns = settle_conns(ctl)
    for i in range(100):
        s = socket.create_connection(srv.addr, timeout=10)
        s.sendall(b"get big big big big big big big big\r\n")
        if i % 2:
            # Reset right away (close with unread data / linger 0).
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            # Read a little of the reply, then close with the rest unread.
            s.recv(1000)
        s.close()
    st = wait_stat(srv, "curr_connections", lambda v: v == base_conns, sock=ctl)
    assert srv.alive(), f"{srv.describe()} died: rc={srv.proc.returncode}"
    assert int(st["curr_connections"]) == base_conns, pick(st, "curr_connections", "total_connections")
    assert get(ctl, b"big") == {b"big": (0, value)}
    ctl.close()


def test_sigterm_exits_zero(start_server, kind):
    srv = start_server(kind)
    with srv.connect() as s:
        assert request(s, b"set a 0 0 1\r\nx\r\n") == b"STORED\r\n"
        idle = srv.connect()  # an open idle client must not block shutdown
        srv.signal(signal.SIGTERM)
        rc = wait_exit(srv.proc, 5)
        idle.close()
    assert rc == 0, f"{srv.describe()}: exit code {rc} after SIGTERM (None = still running after 5 s)"


def test_sigterm_output_matches_oracle(start_server):
    """With -v, memcached prints `Exiting normally` on stderr when it stops on
    SIGTERM, and nothing on stdout."""
    outs = {}
    for k in ("ours", "oracle"):
        srv = start_server(k, "-v", stdout=True)
        srv.signal(signal.SIGTERM)
        rc = wait_exit(srv.proc, 5)
        srv.stderr.wait_eof(5)
        stdout = srv.proc.stdout.read()
        outs[k] = (rc, stdout, srv.stderr.lines())
    assert outs["ours"] == outs["oracle"]
