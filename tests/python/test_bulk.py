"""Big pipelines and big values."""

import hashlib

import memcache
from pymemcache.client import base

from mc_helpers import get, get_reply_done, parse_values, recv_until, request, stats_over


def value_for(i):
    return hashlib.sha256(b"%d" % i).hexdigest().encode() * (1 + i % 3)


def test_pipelined_10000_noreply_sets_then_get(start_server, kind):
    srv = start_server(kind)
    n = 10000
    payload = bytearray()
    for i in range(n):
        v = value_for(i)
        payload += b"set p%d %d 0 %d noreply\r\n%s\r\n" % (i, i, len(v), v)
    picks = [0, 1, 2, 999, 5000, 7777, n - 2, n - 1]
    payload += b"get " + b" ".join(b"p%d" % i for i in picks) + b" nothere\r\n"
    with srv.connect(timeout=30) as s:
        s.sendall(payload)
        reply = recv_until(s, get_reply_done(), timeout=30)
        values = parse_values(reply)
        assert values == {b"p%d" % i: (i, value_for(i)) for i in picks}
        st = stats_over(s)
        assert int(st["curr_items"]) == n, st
        assert int(st["cmd_set"]) == n, st
        # Nothing else was sent back: the next reply starts cleanly.
        assert request(s, b"version\r\n").startswith(b"VERSION ")


def pattern(n):
    block = bytes(range(256))
    return (block * (n // 256 + 1))[:n]


def send_in_pieces(sock, data, piece):
    for off in range(0, len(data), piece):
        sock.sendall(data[off: off + piece])


def check_big_value(srv, size, extra_mc_kwargs=None):
    value = pattern(size)
    with srv.connect(timeout=30) as s:
        send_in_pieces(s, b"set big 0 0 %d\r\n" % size + value + b"\r\n", 997)
        assert recv_until(s, lambda b: b.endswith(b"\r\n")) == b"STORED\r\n"
        assert get(s, b"big", timeout=30) == {b"big": (0, value)}

    pc = base.Client(srv.addr, default_noreply=False, timeout=30)
    try:
        assert pc.get("big") == value
        # And a round trip through pymemcache's own set.
        assert pc.set("big2", value) is True
        assert pc.get("big2") == value
    finally:
        pc.close()

    mc = memcache.Client(["127.0.0.1:%d" % srv.port], socket_timeout=30,
                         **(extra_mc_kwargs or {}))
    try:
        got = mc.get("big")
        assert got == value, (
            f"python-memcached got {type(got).__name__} of length "
            f"{len(got) if got is not None else None}"
        )
    finally:
        mc.disconnect_all()


def test_1mb_value_in_997_byte_pieces(start_server, kind):
    check_big_value(start_server(kind), 1000000)


def test_2mb_value_with_I_2m(start_server, kind):
    check_big_value(start_server(kind, "-I", "2m"), 2000000,
                    {"server_max_value_length": 4 * 1024 * 1024})


def test_too_large_value_rejected(start_server, kind):
    """Default -I 1m: 1048577 bytes do not fit; the data is swallowed and the
    connection stays usable."""
    srv = start_server(kind)
    size = 1024 * 1024 + 1
    with srv.connect(timeout=30) as s:
        send_in_pieces(s, b"set huge 0 0 %d\r\n" % size + pattern(size) + b"\r\n", 65536)
        got = recv_until(s, lambda b: b.endswith(b"\r\n"))
        assert got == b"SERVER_ERROR object too large for cache\r\n"
        assert get(s, b"huge") == {}
        assert request(s, b"version\r\n").startswith(b"VERSION ")


def test_64mb_value_with_I_128m(start_server, kind):
    """-I accepts up to 1024m; a value far larger than a slab page is stored
    over many chunks inside the -m arena and reads back intact."""
    srv = start_server(kind, "-I", "128m", "-m", "512")
    size = 64 * 1024 * 1024
    value = pattern(size)
    with srv.connect(timeout=60) as s:
        s.sendall(b"set huge 7 0 %d\r\n" % size + value + b"\r\n")
        assert recv_until(s, lambda b: b.endswith(b"\r\n"), timeout=60) == b"STORED\r\n"
        assert get(s, b"huge", timeout=60) == {b"huge": (7, value)}


def test_idle_rss_independent_of_m(start_server):
    small = start_server("ours", "-m", "16")
    large = start_server("ours", "-m", "2048")
    # Both have served one request, so both have run their loop.
    for srv in (small, large):
        with srv.connect() as s:
            s.sendall(b"version\r\n")
            recv_until(s, lambda b: b.endswith(b"\r\n"))
    assert large.rss_kb() < small.rss_kb() + 4096, (small.rss_kb(), large.rss_kb())
    assert large.rss_kb() < 32 * 1024
