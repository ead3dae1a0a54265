"""UDP (-U): memcached's 8-byte frame header, request ids echoed, one
message per response split every 1392 bytes, multi-datagram requests
dropped. Datagrams are compared byte for byte with the oracle's.

A request's replies are collected up to a sentinel request (`version`
under another id) sent right after it: both go over loopback to one
socket served in order, so when the sentinel's reply arrives everything
the request produced has arrived (or was never sent), with no timing
guesses.
"""

import socket
import struct

import pytest

from mc_helpers import IO_TIMEOUT, normalise_trace, request, stats_over

SENTINEL_ID = 0xFFFF
# One worker thread: the oracle's threads each read the socket, so with
# several a sentinel could be answered before the request it follows.
UDP_OPTS = ("-U", "{port}", "-t", "1")
UDP_DATA_SIZE = 1392


def frame(request_id, payload, seq=0, total=1, reserved=0):
    return struct.pack(">HHHH", request_id, seq, total, reserved) + payload


class UdpClient:
    def __init__(self, port):
        self.addr = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Room for a large reply's burst of datagrams (SO_RCVBUFFORCE
        # needs root; the plain option is capped by rmem_max).
        for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
                break
            except OSError:
                continue
        self.sock.settimeout(IO_TIMEOUT)

    def exchange(self, datagram):
        """Sends one datagram and returns every datagram it produced."""
        self.sock.sendto(datagram, self.addr)
        self.sock.sendto(frame(SENTINEL_ID, b"version\r\n"), self.addr)
        got = []
        while True:
            data, _ = self.sock.recvfrom(65536)
            if data[:2] == struct.pack(">H", SENTINEL_ID):
                return got
            got.append(data)

    def close(self):
        self.sock.close()


def headers(datagrams):
    return [struct.unpack(">HHHH", d[:8]) for d in datagrams]


@pytest.fixture
def udp_pair(start_server):
    servers = [start_server(kind, *UDP_OPTS) for kind in ("oracle", "ours")]
    clients = [UdpClient(s.port) for s in servers]
    yield servers, clients
    for c in clients:
        c.close()


BIG = b"v" * 100_000

# (name, datagram): deterministic requests, in order, on fresh servers.
SCRIPT = [
    ("set", frame(1, b"set a 0 0 3\r\nabc\r\n")),
    ("get hit", frame(2, b"get a\r\n")),
    ("get miss", frame(3, b"get nope\r\n")),
    ("multi-get hit miss hit", frame(4, b"get a nope a\r\n")),
    ("multi-get ending in a miss", frame(5, b"get a nope\r\n")),
    ("gets and gat", frame(6, b"gets a\r\ngat 0 a nope a\r\n")),
    ("several commands", frame(7, b"version\r\nset b 5 0 2\r\nhi\r\nget b\r\n")),
    ("noreply", frame(8, b"set q 0 0 1 noreply\r\nx\r\nget q\r\n")),
    ("meta", frame(9, b"mg a v k\r\nmg nope v q\r\nmn\r\n")),
    ("errors", frame(10, b"bogus\r\n\r\nget " + b"k" * 251 + b"\r\n")),
    ("id echoed, seq and reserved ignored", frame(0xBEEF, b"version\r\n", seq=3, reserved=9)),
    ("multi-packet request dropped", frame(12, b"version\r\n", total=2)),
    ("header only dropped", frame(13, b"")),
    ("line without newline dropped", frame(14, b"get a")),
    ("incr decr delete", frame(15, b"set n 0 0 1\r\n5\r\nincr n 10\r\ndecr n 3\r\ndelete n\r\n")),
    ("stats detail dump", frame(16, b"stats detail dump\r\n")),
    # A missed key first in line: memcached sends a bare header (total 0).
    ("miss first", frame(18, b"get nope a\r\n")),
    ("misses first", frame(19, b"get nope nope2 a\r\n")),
    ("miss between hits", frame(20, b"get nope a nope a\r\n")),
    ("miss after a reply", frame(21, b"version\r\nget nope a\r\n")),
    ("miss after noreply", frame(22, b"set q 0 0 1 noreply\r\nx\r\ngats 0 nope a\r\n")),
    ("quiet meta", frame(23, b"mg nope v q\r\nmg a v\r\nmn\r\n")),
]

# Last: after a `quit`, memcached 1.6.18's UDP connection keeps its
# close-after-write flag, and cuts every later datagram short after its
# first write (a bug this server does not copy).
QUIT = ("quit after a get", frame(24, b"get a\r\nquit\r\nversion\r\n"))


def test_udp_datagrams_match_oracle(udp_pair):
    servers, clients = udp_pair
    # The 100 KB value goes in over TCP (a request must fit a datagram).
    for s in servers:
        with s.connect() as c:
            reply = request(c, b"set big 7 0 100000\r\n" + BIG + b"\r\n")
            assert reply == b"STORED\r\n"
    script = SCRIPT + [("big get", frame(17, b"get big a\r\n")), QUIT]
    for name, datagram in script:
        oracle, ours = (c.exchange(datagram) for c in clients)
        assert ours == oracle, f"{name}: {headers(ours)} vs {headers(oracle)}"


def test_large_value_split_in_sequence(start_server, kind):
    srv = start_server(kind, *UDP_OPTS)
    with srv.connect() as c:
        assert request(c, b"set big 0 0 100000\r\n" + BIG + b"\r\n") == b"STORED\r\n"
    client = UdpClient(srv.port)
    try:
        got = client.exchange(frame(0x4242, b"get big\r\n"))
    finally:
        client.close()
    body = b"VALUE big 0 100000\r\n" + BIG + b"\r\nEND\r\n"
    total = -(-len(body) // UDP_DATA_SIZE)
    assert total > 1
    assert headers(got) == [(0x4242, seq, total, 0) for seq in range(total)]
    assert all(len(d) == 1400 for d in got[:-1])
    assert b"".join(d[8:] for d in got) == body


def test_request_ids_echoed(start_server, kind):
    srv = start_server(kind, *UDP_OPTS)
    client = UdpClient(srv.port)
    try:
        for rid in (0, 1, 0x1234, 0xFFFE):
            got = client.exchange(frame(rid, b"version\r\n"))
            assert headers(got) == [(rid, 0, 1, 0)]
            assert got[0][8:].startswith(b"VERSION ")
    finally:
        client.close()


def test_udp_and_tcp_share_items(start_server, kind):
    srv = start_server(kind, *UDP_OPTS)
    client = UdpClient(srv.port)
    try:
        assert client.exchange(frame(1, b"set k 0 0 2\r\nhi\r\n"))[0][8:] == b"STORED\r\n"
    finally:
        client.close()
    with srv.connect() as c:
        assert request(c, b"get k\r\n") == b"VALUE k 0 2\r\nhi\r\nEND\r\n"


UDP_STATS = [
    "curr_connections", "total_connections", "connection_structures",
    "bytes_read", "bytes_written", "cmd_get", "get_hits", "get_misses",
]


def test_udp_stats_match_oracle(udp_pair):
    servers, clients = udp_pair
    for c in clients:
        c.exchange(frame(1, b"set a 0 0 1\r\nx\r\nget a b\r\n"))
        # Keys before a too-long one are still looked up (and counted).
        c.exchange(frame(3, b"get a nope " + b"k" * 251 + b" a\r\n"))
        c.exchange(frame(2, b"version\r\n", total=3))
    stats = [s.stats() for s in servers]
    for name in UDP_STATS:
        assert stats[1][name] == stats[0][name], name
    settings = [s.stats("settings") for s in servers]
    for srv, st in zip(servers, settings):
        assert st["udpport"] == st["tcpport"] == str(srv.port)
    for name in ("inter", "num_threads_per_udp"):
        assert settings[1][name] == settings[0][name], name


def conns_shape(srv):
    """`stats conns` with descriptor numbers and client ports taken out."""
    with srv.connect() as c:
        reply = request(c, b"stats conns\r\n", done=lambda b: b.endswith(b"END\r\n"))
    stats = [line[5:].split(" ", 1) for line in reply.decode().splitlines()
             if line.startswith("STAT ")]
    # Clients are left out: the readiness probe's may not be closed yet.
    clients = {key.split(":")[0] for key, _ in stats if key.endswith(":listen_addr")}
    return [
        f"{key.split(':', 1)[1]} {value.replace(str(srv.port), 'PORT')}"
        for key, value in stats
        if key.split(":")[0] not in clients
    ]


@pytest.mark.parametrize("threads", ["1", "4"])
def test_udp_stats_conns_match_oracle(start_server, threads):
    shapes = [
        conns_shape(start_server(kind, "-U", "{port}", "-t", threads))
        for kind in ("oracle", "ours")
    ]
    assert shapes[1] == shapes[0]
    assert shapes[0].count("UDP UDP") == int(threads)


def startup_trace(srv, udp_conns):
    assert srv.stderr.wait_for(
        lambda ls: sum(b"server listening (udp)" in l for l in ls) >= udp_conns, 10
    ), srv.stderr.text()
    return sorted(
        normalise_trace(l) for l in srv.stderr.lines()
        if b"listening" in l or b"send buffer" in l
    )


@pytest.mark.parametrize("threads", [1, 4])
def test_udp_vv_startup_trace_matches_oracle(start_server, threads):
    """-vv: the send buffer line and one `server listening (udp)` per
    worker descriptor (memcached dups the socket per thread)."""
    opts = ("-U", "{port}", "-vv", "-t", str(threads))
    servers = [start_server(kind, *opts) for kind in ("oracle", "ours")]
    traces = [startup_trace(s, threads) for s in servers]
    assert traces[1] == traces[0]
    assert sum(b"(udp)" in l for l in traces[1]) == threads


def test_udp_vv_command_trace_matches_oracle(start_server):
    """The same command trace for UDP requests. One worker thread, so the
    oracle's trace is in order (its threads would interleave theirs)."""
    servers = [start_server(kind, "-U", "{port}", "-vv", "-t", "1") for kind in ("oracle", "ours")]
    for s in servers:
        client = UdpClient(s.port)
        try:
            client.exchange(frame(1, b"set a 0 0 1\r\nx\r\nget a nope\r\n"))
        finally:
            client.close()
    tails = []
    for s in servers:
        # The reply's line, the trace's last: the request's line comes
        # first, and a read between the two would see half the trace.
        assert s.stderr.wait_for(lambda ls: any(b" VERSION " in l for l in ls), 10)
        lines = [normalise_trace(l) for l in s.stderr.lines()]
        start = next(i for i, l in enumerate(lines) if l == b"<FD set a 0 0 1")
        tails.append(lines[start:start + 7])
    assert tails[1] == tails[0]
    assert tails[1][-2:] == [b"<FD version", b">FD VERSION 1.6.18"]


YIELD_DATAGRAMS = [
    b"version\r\n" * n for n in (1, 2, 3, 4, 5, 6, 11, 25)
] + [
    b"get a\r\n" * 3, b"get a\r\n" * 6, b"mn\r\n" * 2, b"version\r\nget a\r\nversion\r\n",
    b"get a\r\nversion\r\nversion\r\n", b"set a 0 0 1\r\nx\r\n" * 4,
]


@pytest.mark.parametrize("reqs", ["2", "5"])
def test_conn_yields_match_oracle(start_server, reqs):
    """-R over UDP: a datagram of many commands yields (and counts
    conn_yields) exactly where memcached's request budget runs out. (With
    -R 1 the TCP `stats` used to read the count yields too in memcached.)"""
    counts = []
    for kind in ("oracle", "ours"):
        srv = start_server(kind, *UDP_OPTS, "-R", reqs)
        client = UdpClient(srv.port)
        got = []
        try:
            with srv.connect() as tcp:
                for rid, payload in enumerate(YIELD_DATAGRAMS):
                    before = int(stats_over(tcp)["conn_yields"])
                    client.exchange(frame(rid, payload))
                    got.append(int(stats_over(tcp)["conn_yields"]) - before)
        finally:
            client.close()
        counts.append(got)
    assert counts[1] == counts[0]
    assert any(counts[1])


def test_quit_alone_sends_a_bare_header(udp_pair):
    """`quit` has no reply, yet memcached sends its empty response as a
    bare header (sequence 0, total 0), and ignores the rest of the
    datagram."""
    _, clients = udp_pair
    got = [c.exchange(frame(9, b"quit\r\nversion\r\n")) for c in clients]
    assert got[1] == got[0] == [frame(9, b"", total=0)]


def test_stats_conns_over_udp_matches_oracle(udp_pair):
    """Asked over UDP, `stats conns` shows the asking port serving its
    client."""
    _, clients = udp_pair
    shapes = []
    for c in clients:
        reply = b"".join(d[8:] for d in c.exchange(frame(3, b"stats conns\r\n")))
        lines = [l.split(b" ", 2) for l in reply.split(b"\r\n") if l.startswith(b"STAT ")]
        shapes.append([(k.split(b":")[1], v.rsplit(b":", 1)[0]) for _, k, v in lines])
    assert shapes[1] == shapes[0]
    assert (b"state", b"conn_parse_cmd") in shapes[1]


VVV_DATAGRAMS = [
    b"set a 0 0 1\r\nx\r\n", b"get a nope\r\n", b"version\r\nversion\r\n",
    b"set b 0 0 1\r\nxy\r\n", b"bogus\r\n", b"set c 0 0 1 noreply\r\nx\r\n",
    b"mg a v\r\nmn\r\n", b"x" * 3000, b"get a\r\nset d 0 0 1 noreply\r\ny\r\n",
    b"get a nope " + b"k" * 251 + b" a\r\n",
]
# Not here: `quit` (see QUIT).


def udp_trace(srv):
    """The -vvv lines of the UDP port's descriptor, numbers normalised."""
    lines = srv.stderr.lines()
    fd = next(l.split()[0][1:] for l in lines if l.endswith(b"server listening (udp)"))
    mine = [l for l in lines if l.startswith((b"<" + fd + b" ", b">" + fd + b" ", fd + b":"))]
    return [normalise_trace(l) for l in mine]


def test_udp_vvv_trace_matches_oracle(start_server):
    """-vvv: every state change of the UDP port's connection, as memcached
    makes them (one worker thread, so there is one such connection)."""
    traces = []
    for kind in ("oracle", "ours"):
        srv = start_server(kind, *UDP_OPTS, "-vvv")
        client = UdpClient(srv.port)
        try:
            for rid, payload in enumerate(VVV_DATAGRAMS):
                client.exchange(frame(rid, payload))
        finally:
            client.close()
        # The last sentinel's trace ends in conn_read; wait for it.
        def finished(_lines):
            mine = udp_trace(srv)
            sentinels = sum(l.endswith(b" VERSION 1.6.18") for l in mine)
            expected = len(VVV_DATAGRAMS) + sum(p.count(b"version") for p in VVV_DATAGRAMS)
            return sentinels >= expected and mine[-1].endswith(b"to conn_read")
        assert srv.stderr.wait_for(finished, 10), srv.stderr.text()[-2000:]
        traces.append(udp_trace(srv))
    assert any(b"going from conn_waiting to conn_read" in l for l in traces[1])
    assert traces[1] == traces[0]


def binary_request(opcode, key=b"", extras=b"", value=b"", opaque=0, cas=0):
    body = extras + key + value
    return struct.pack(">BBHBBHIIQ", 0x80, opcode, len(key), len(extras), 0, 0,
                       len(body), opaque, cas) + body


SET_EXTRAS = struct.pack(">II", 7, 0)
BINARY_SCRIPT = [
    ("set", binary_request(0x01, b"a", SET_EXTRAS, b"hello", opaque=1)),
    ("get hit", binary_request(0x00, b"a", opaque=2)),
    ("get miss", binary_request(0x00, b"nope", opaque=3)),
    ("getq miss, getq hit, noop", binary_request(0x09, b"nope", opaque=4)
     + binary_request(0x09, b"a", opaque=5) + binary_request(0x0A, opaque=6)),
    ("getk then get", binary_request(0x0C, b"a", opaque=7) + binary_request(0x00, b"a", opaque=8)),
    ("version", binary_request(0x0B, opaque=9)),
    ("big set", binary_request(0x01, b"big", SET_EXTRAS, b"z" * 5000, opaque=10)),
    ("big get (4 datagrams)", binary_request(0x00, b"big", opaque=11)),
    ("setq alone: a bare header", binary_request(0x11, b"q", SET_EXTRAS, b"v")),
    ("setq then noop", binary_request(0x11, b"q", SET_EXTRAS, b"v") + binary_request(0x0A)),
    ("deleteq miss: an error, sent", binary_request(0x14, b"nope", opaque=12)),
    ("deleteq hit", binary_request(0x14, b"q", opaque=13)),
    ("incrementq creating", binary_request(0x15, b"n", struct.pack(">QQI", 1, 5, 0))),
    ("getkq misses then get", binary_request(0x0D, b"x") + binary_request(0x0D, b"y")
     + binary_request(0x00, b"n")),
    ("get then getkq miss", binary_request(0x00, b"n") + binary_request(0x0D, b"x")),
    ("touch", binary_request(0x1C, b"n", struct.pack(">I", 100))),
    ("gatq miss", binary_request(0x1E, b"nope", struct.pack(">I", 100))),
    # (With a body, memcached would go on to discard the next datagram.)
    ("unknown opcode", binary_request(0x55, opaque=14)),
    ("short frame", b"\x80\x00\x00"),
    ("quit then version", binary_request(0x07, opaque=15) + binary_request(0x0B)),
]


def test_binary_over_udp_matches_oracle(udp_pair):
    """A datagram starting with 0x80 is binary: each request one response,
    quiet successes as bare headers when first in line."""
    _, clients = udp_pair
    for rid, (name, payload) in enumerate(BINARY_SCRIPT):
        oracle, ours = (c.exchange(frame(rid, payload)) for c in clients)
        assert ours == oracle, f"{name}: {headers(ours)} vs {headers(oracle)}"
