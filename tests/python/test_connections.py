"""Many simultaneous connections, and the -c connection limit."""

import socket

import pytest

from mc_helpers import (
    Closed,
    get,
    recv_all_until_close,
    recv_until,
    pick,
    request,
    settle_conns,
    stats_over,
    wait_stat,
)

N_CLIENTS = 1200


def many_clients(srv):
    """Opens N_CLIENTS sockets, a set and a get of a distinct key on each
    (all kept open); returns (sockets, stats seen from a control socket)."""
    ctl = srv.connect()
    # Let the readiness probe's close be processed: only ctl remains.
    settle_conns(ctl)
    socks = []
    try:
        for i in range(N_CLIENTS):
            s = socket.create_connection(srv.addr, timeout=10)
            socks.append(s)
            s.sendall(b"set key%d 0 0 %d\r\nval%d\r\n" % (i, len(b"val%d" % i), i))
        for i, s in enumerate(socks):
            assert recv_until(s, lambda b: b.endswith(b"\r\n")) == b"STORED\r\n", i
        for i, s in enumerate(socks):
            s.sendall(b"get key%d\r\n" % i)
        for i, s in enumerate(socks):
            want = b"VALUE key%d 0 %d\r\nval%d\r\nEND\r\n" % (i, len(b"val%d" % i), i)
            assert recv_until(s, lambda b: b.endswith(b"END\r\n")) == want, i
        st = stats_over(ctl)
        assert int(st["curr_items"]) == N_CLIENTS
        return socks, ctl, st
    except BaseException:
        for s in socks:
            s.close()
        ctl.close()
        raise


@pytest.fixture
def big_server(start_server, many_fds):
    def start(kind):
        return start_server(kind, "-c", "2048")
    return start


def test_1200_simultaneous_connections(big_server, kind):
    srv = big_server(kind)
    socks, ctl, st = many_clients(srv)
    try:
        # memcached's curr_connections = open connections + listeners - 1;
        # here: 1200 clients + the control connection + 1 listener - 1.
        conn_stats = pick(st, "curr_connections", "max_connections", "rejected_connections")
        assert conn_stats == {"curr_connections": str(N_CLIENTS + 1), "max_connections": "2048",
                              "rejected_connections": "0"}
        # Close half of them: the count follows.
        for s in socks[: N_CLIENTS // 2]:
            s.close()
        st = wait_stat(srv, "curr_connections", lambda v: v == N_CLIENTS // 2 + 1, sock=ctl)
        assert int(st["curr_connections"]) == N_CLIENTS // 2 + 1, pick(st, "curr_connections")
        assert get(socks[-1], b"key0", b"key%d" % (N_CLIENTS - 1)) == {
            b"key0": (0, b"val0"),
            b"key%d" % (N_CLIENTS - 1): (0, b"val%d" % (N_CLIENTS - 1)),
        }
    finally:
        for s in socks:
            s.close()
        ctl.close()


def test_1200_connections_stats_same_as_oracle(big_server):
    seen = {}
    for k in ("ours", "oracle"):
        srv = big_server(k)
        socks, ctl, st = many_clients(srv)
        for s in socks:
            s.close()
        ctl.close()
        seen[k] = {n: st[n] for n in ("curr_connections", "rejected_connections", "curr_items",
                                      "max_connections")}
        srv.kill()
    assert seen["ours"] == seen["oracle"]


# ---------------------------------------------------------------------------
# -c limit
# ---------------------------------------------------------------------------

# memcached 1.6.18 sets RLIMIT_NOFILE to -c and refuses a connection when
# (open connections incl. the listener) + reserved_fds (20) >= maxconns - 1,
# i.e. with one listener it admits maxconns - 24 clients. Below -c 26 it runs
# out of descriptors itself (before or at accept), so 30 is a safe small value.
MAXCONN = 30
REFUSAL = b"ERROR Too many open connections\r\n"


def probe(srv):
    """Opens one connection and says `version`. Returns (socket, None) when
    it is admitted, (None, bytes received before close) when refused."""
    s = socket.create_connection(srv.addr, timeout=10)
    s.sendall(b"version\r\n")
    try:
        reply = recv_until(s, lambda b: b.endswith(b"\r\n"))
    except Closed as e:
        s.close()
        return None, e.got
    if reply.startswith(b"VERSION "):
        return s, None
    rest, _how = recv_all_until_close(s)  # EOF or RST (unread 'version')
    s.close()
    return None, reply + rest


def fill_to_limit(srv):
    ctl = srv.connect()
    settle_conns(ctl)
    admitted = [ctl]
    refused = None
    for _ in range(MAXCONN + 5):
        s, got = probe(srv)
        if s is None:
            refused = got
            break
        admitted.append(s)
    return ctl, admitted, refused


def test_connection_limit_same_as_oracle(start_server):
    results = {}
    for k in ("oracle", "ours"):
        srv = start_server(k, "-c", str(MAXCONN))
        ctl, admitted, refused = fill_to_limit(srv)
        try:
            st = stats_over(ctl)
            results[k] = {
                "admitted": len(admitted),
                "refused_bytes": refused,
                "curr_connections": st["curr_connections"],
                "rejected_connections": st["rejected_connections"],
                "max_connections": st["max_connections"],
            }
        finally:
            for s in admitted:
                s.close()
            srv.kill()
    assert results["oracle"]["refused_bytes"] == REFUSAL
    assert results["oracle"]["admitted"] == MAXCONN - 24
    assert results["ours"] == results["oracle"]


def test_connection_limit_recovers(start_server, kind):
    srv = start_server(kind, "-c", str(MAXCONN))
    ctl, admitted, refused = fill_to_limit(srv)
    try:
        assert refused == REFUSAL, f"{srv.describe()}: refused client got {refused!r}"
        assert len(admitted) == MAXCONN - 24, (
            f"{srv.describe()}: admitted {len(admitted)} clients (incl. the control one), "
            f"memcached admits {MAXCONN - 24}")
        st = stats_over(ctl)
        assert int(st["rejected_connections"]) == 1, pick(st, "rejected_connections")
        assert srv.alive()
        # Admitted clients still work.
        assert request(admitted[-1], b"set a 0 0 1\r\n1\r\n") == b"STORED\r\n"
        # Free two slots; once the server has seen the closes, two new clients
        # get in and the next one is refused again.
        for s in admitted[-2:]:
            s.close()
        admitted = admitted[:-2]
        n_expected = len(admitted)
        st = wait_stat(srv, "curr_connections", lambda v: v == n_expected, sock=ctl)
        assert int(st["curr_connections"]) == n_expected, pick(st, "curr_connections")
        for _ in range(2):
            s, got = probe(srv)
            assert s is not None, f"{srv.describe()}: refused after slots were freed: {got!r}"
            admitted.append(s)
        s, got = probe(srv)
        assert s is None and got == REFUSAL, got
        st = stats_over(ctl)
        assert int(st["rejected_connections"]) == 2, pick(st, "rejected_connections")
        assert get(admitted[-1], b"a") == {b"a": (0, b"1")}
    finally:
        for s in admitted:
            s.close()


TCP_YIELD_PAYLOADS = [
    b"version\r\n" * n for n in (1, 2, 3, 4, 5, 6, 11, 25)
] + [
    b"get a\r\n" * 3, b"get a\r\n" * 6, b"mn\r\n" * 2, b"version\r\nget a\r\nversion\r\n",
    b"get a\r\nversion\r\nversion\r\n", b"set a 0 0 1\r\nx\r\n" * 4,
    b"set a 0 0 1 noreply\r\nx\r\n" * 3, b"version\r\nver",
]


@pytest.mark.parametrize("reqs", ["1", "2", "5"])
def test_tcp_conn_yields_match_oracle(start_server, reqs):
    """-R over TCP, each payload sent at once on a connection of its own:
    conn_yields moves as memcached's does, including the yield it counts
    when writing the last replies of a turn takes it past the budget."""
    counts = []
    for kind in ("oracle", "ours"):
        # One worker thread: memcached counts a yield after writing, so
        # the control connection must be served by the same thread.
        srv = start_server(kind, "-R", reqs, "-t", "1")
        got = []
        with srv.connect() as control:
            for payload in TCP_YIELD_PAYLOADS:
                before = int(stats_over(control)["conn_yields"])
                with srv.connect() as c:
                    c.sendall(payload)
                    c.shutdown(socket.SHUT_WR)
                    recv_all_until_close(c)
                got.append(int(stats_over(control)["conn_yields"]) - before)
        counts.append(got)
    assert counts[1] == counts[0]
    assert any(counts[1])
