"""Hostile clients: slow ones, idle ones, huge requests, 10,000 connections
and connection storms. Others must keep being served, the server's memory
must stay bounded, and where memcached's reaction is observable (idle
kicks, limits) ours must be the same."""

import resource
import socket
import threading
import time

import pytest

from mc_helpers import (
    Closed,
    get,
    recv_all_until_close,
    recv_until,
    request,
    settle_conns,
    stats_over,
    wait_stat,
)


def serve_round_trips(srv, n, tag):
    """n set+get round trips on a fresh connection; returns the slowest."""
    worst = 0.0
    with srv.connect() as s:
        for i in range(n):
            t0 = time.monotonic()
            key = b"%s%d" % (tag, i)
            assert request(s, b"set %s 0 0 2\r\nok\r\n" % key, timeout=5) == b"STORED\r\n"
            assert get(s, key, timeout=5) == {key: (0, b"ok")}
            worst = max(worst, time.monotonic() - t0)
    return worst


def wait_closed(sock, timeout):
    """Seconds until the server closes `sock` (which sends nothing)."""
    t0 = time.monotonic()
    data, _how = recv_all_until_close(sock, timeout=timeout)
    return time.monotonic() - t0, data


# ---------------------------------------------------------------------------
# -o idle_timeout
# ---------------------------------------------------------------------------


def test_idle_timeout_kicks_like_oracle(start_server):
    seen = {}
    for kind in ("oracle", "ours"):
        srv = start_server(kind, "-vv", "-o", "idle_timeout=1")
        idle = srv.connect()
        took, data = wait_closed(idle, timeout=10)
        ctl = srv.connect()
        st = stats_over(ctl)
        settings = stats_over(ctl, "settings")
        ctl.close()
        traced = srv.stderr.wait_for(
            lambda lines: any(x.startswith(b"Closing idle fd") for x in lines), 3
        )
        seen[kind] = (data, st["idle_kicks"], settings["idle_timeout"], traced)
        # memcached's kicker wakes once a second and kicks after more than
        # idle_timeout whole seconds of the coarse clock.
        assert 1.0 <= took < 4.5, f"{kind}: idle connection closed after {took:.2f}s"
    assert seen["ours"] == seen["oracle"]
    assert seen["ours"][1] != "0"


def test_idle_timeout_spares_busy_clients_and_kicks_slowloris(start_server):
    for kind in ("oracle", "ours"):
        srv = start_server(kind, "-o", "idle_timeout=2")
        busy = srv.connect()
        slow = srv.connect()
        slow.sendall(b"get ")
        # A client trickling bytes without ever finishing a line is idle
        # (the clock runs from the last request), one sending requests is not.
        t0 = time.monotonic()
        slow_closed = None
        while time.monotonic() - t0 < 5.5 and not (slow_closed and time.monotonic() - t0 > 3):
            assert request(busy, b"version\r\n").startswith(b"VERSION"), kind
            if slow_closed is None:
                try:
                    slow.sendall(b"k")
                    slow.settimeout(0.01)
                    if slow.recv(100) == b"":
                        slow_closed = time.monotonic() - t0
                except (socket.timeout, BlockingIOError):
                    pass
                except OSError:
                    slow_closed = time.monotonic() - t0
            time.sleep(0.5)
        assert slow_closed is not None and slow_closed < 5.5, kind
        assert request(busy, b"version\r\n").startswith(b"VERSION"), kind
        busy.close()


def test_idle_timeout_spares_a_client_mid_value(start_server):
    srv = start_server("ours", "-o", "idle_timeout=1")
    s = srv.connect()
    s.sendall(b"set k 0 0 10\r\n12345")
    # memcached only kicks connections waiting for a command: the idle
    # one goes, the one in the middle of a value stays.
    idle = srv.connect()
    other = srv.connect()
    st = wait_stat(srv, "idle_kicks", lambda v: v >= 1, timeout=6, sock=other)
    assert int(st["idle_kicks"]) == 1
    assert recv_all_until_close(idle, timeout=1) == (b"", "eof")
    s.sendall(b"67890\r\n")
    assert recv_until(s, lambda b: b.endswith(b"\r\n")) == b"STORED\r\n"
    other.close()


# ---------------------------------------------------------------------------
# Slow and greedy clients
# ---------------------------------------------------------------------------


def test_slowloris_does_not_starve_others(start_server, kind):
    """Five clients send a request a byte at a time (a byte every 0.2 s per
    client); meanwhile another client is served promptly, and each slow
    request is answered correctly once complete."""
    srv = start_server(kind)
    request_bytes = b"set slow%d 0 0 5\r\nhello\r\nget slow%d\r\n"
    slow = [srv.connect() for _ in range(5)]
    errors = []

    def trickle(i, s):
        try:
            for b in request_bytes % (i, i):
                s.sendall(bytes([b]))
                time.sleep(0.2 / len(slow))
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=trickle, args=(i, s)) for i, s in enumerate(slow)]
    for t in threads:
        t.start()
    worst = serve_round_trips(srv, 100, b"fast")
    for t in threads:
        t.join()
    assert not errors
    assert worst < 1.0, f"slowest round trip {worst:.3f}s while slow clients trickle"
    for i, s in enumerate(slow):
        want = b"STORED\r\nVALUE slow%d 0 5\r\nhello\r\nEND\r\n" % i
        assert recv_until(s, lambda b: b.endswith(b"END\r\n")) == want
        s.close()


def test_huge_multiget_memory_bounded(start_server, kind):
    """A get of 50,000 keys (a 0.5 MB line) for 1 KB values, sent by a
    client that does not read: the server answers others, and its memory
    does not grow by the size of the reply (~50 MB)."""
    srv = start_server(kind, "-m", "64")
    value = b"v" * 1000
    with srv.connect() as s:
        s.sendall(b"".join(b"set h%d 0 0 1000 noreply\r\n%s\r\n" % (i, value) for i in range(1000)))
        assert request(s, b"version\r\n").startswith(b"VERSION")
    rss0 = srv.rss_kb()
    greedy = srv.connect()
    line = b"get " + b" ".join(b"h%d" % (i % 1000) for i in range(50_000)) + b"\r\n"
    greedy.sendall(line)
    # A server blocked on the greedy client would never answer (each round
    # trip times out after 5 s); the bound is loose because a loaded
    # 2-core machine once took 1.96 s for a round trip here.
    assert serve_round_trips(srv, 20, b"other") < 3.0
    rss1 = srv.rss_kb()
    # The whole reply is ~51 MB. Ours holds a bounded window of it; Debian's
    # memcached holds more (its response objects for the pending keys), once
    # measured at 25.6 MB, so its bound only proves it is not the whole reply.
    bound_mb = 24 if kind == "ours" else 36
    assert rss1 - rss0 < bound_mb * 1024, f"VmRSS grew {rss0} -> {rss1} kB"
    # The reply is complete and correct once read.
    got = recv_until(greedy, lambda b: b.endswith(b"END\r\n"), timeout=60)
    assert got.count(b"VALUE ") == 50_000
    assert got.startswith(b"VALUE h0 0 1000\r\n" + value + b"\r\nVALUE h1 0 1000\r\n")
    greedy.close()


def test_announced_value_larger_than_I_is_swallowed(start_server, kind):
    """A client announces 2 MB with -I 1m and sends it: refused, the data
    is discarded (not parsed as commands), the connection keeps working,
    and nothing is kept in memory for it."""
    srv = start_server(kind, "-I", "1m")
    rss0 = srv.rss_kb()
    with srv.connect() as s:
        payload = (b"get injected\r\n" * 150_000)[: 2 * 1024 * 1024]
        s.sendall(b"set big 0 0 %d\r\n" % len(payload))
        s.sendall(payload + b"\r\n")
        got = recv_until(s, lambda b: b.endswith(b"\r\n"))
        assert got == b"SERVER_ERROR object too large for cache\r\n"
        assert request(s, b"get big\r\n") == b"END\r\n"
    assert srv.rss_kb() - rss0 < 8 * 1024


# ---------------------------------------------------------------------------
# Many connections
# ---------------------------------------------------------------------------


@pytest.fixture
def fds_for_10k():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 11_000
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"hard fd limit {hard} < {want}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_10000_simultaneous_connections(start_server, fds_for_10k):
    srv = start_server("ours", "-c", "10100")
    ctl = srv.connect()
    base = settle_conns(ctl)
    rss0 = srv.rss_kb()
    socks = []
    try:
        for i in range(10_000):
            socks.append(socket.create_connection(srv.addr, timeout=10))
        st = wait_stat(srv, "curr_connections", lambda v: v >= base + 10_000, timeout=20, sock=ctl)
        assert int(st["curr_connections"]) == base + 10_000
        # Every one of them is served.
        for i, s in enumerate(socks):
            s.sendall(b"set c%d 0 0 1 noreply\r\nx\r\nget c%d\r\n" % (i, i))
        for i, s in enumerate(socks):
            assert recv_until(s, lambda b: b.endswith(b"END\r\n")) == b"VALUE c%d 0 1\r\nx\r\nEND\r\n" % i
        rss1 = srv.rss_kb()
        # A few hundred bytes per idle connection, not a read buffer each.
        assert (rss1 - rss0) * 1024 / 10_000 < 2048, f"VmRSS {rss0} -> {rss1} kB"
    finally:
        for s in socks:
            s.close()
    st = wait_stat(srv, "curr_connections", lambda v: v == base, timeout=20, sock=ctl)
    assert int(st["curr_connections"]) == base
    ctl.close()


def test_connection_storm_past_c(start_server, kind, many_fds):
    """3,000 connects in a burst against -c 200: the excess is refused with
    memcached's message, the server survives and serves afterwards."""
    srv = start_server(kind, "-c", "200")
    socks = []
    refused = 0
    for _ in range(3000):
        try:
            socks.append(socket.create_connection(srv.addr, timeout=10))
        except OSError:
            refused += 1
    counted = 0
    for s in socks:
        s.settimeout(0.0)
    deadline = time.monotonic() + 10
    pending = list(socks)
    while pending and time.monotonic() < deadline:
        still = []
        for s in pending:
            try:
                data = s.recv(100)
            except BlockingIOError:
                still.append(s)
                continue
            except OSError:
                data = b""
            if data.startswith(b"ERROR Too many open connections"):
                counted += 1
        pending = still
        if len(pending) <= 200:
            break
        time.sleep(0.05)
    for s in socks:
        s.close()
    assert counted >= 2500, f"{counted} refusals seen"
    ctl = srv.connect()
    st = stats_over(ctl)
    assert int(st["rejected_connections"]) >= 2500
    assert request(ctl, b"set after 0 0 1\r\n1\r\n") == b"STORED\r\n"
    assert srv.alive()
    ctl.close()


# ---------------------------------------------------------------------------
# -o read_buf_mem_limit
# ---------------------------------------------------------------------------


def closed_sockets(socks):
    """How many of socks the server has closed (non-blocking check)."""
    n = 0
    for s in socks:
        s.settimeout(0.0)
        try:
            if s.recv(16) == b"":
                n += 1
        except BlockingIOError:
            pass
        except OSError:
            n += 1
    return n


def test_read_buf_mem_limit_like_oracle(start_server):
    """With 1 MB for read buffers (64 buffers of 16 KB; memcached: 16 for
    each of its 4 threads), 100 clients each holding a partial request:
    36 are closed for want of a buffer and counted as read_buf_oom, the
    others stay. Ours then serves them; memcached takes the buffers for
    its replies from the same exhausted pool and closes them instead."""
    for kind in ("oracle", "ours"):
        srv = start_server(kind, "-o", "read_buf_mem_limit=1")
        socks = [srv.connect() for _ in range(100)]
        for s in socks:
            s.sendall(b"get abc")
        deadline = time.monotonic() + 10
        while closed_sockets(socks) < 36 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert closed_sockets(socks) == 36, kind
        # The ones still open finish their request and get an answer.
        alive = []
        for s in socks:
            s.settimeout(0.0)
            try:
                if s.recv(16) == b"":
                    continue
            except BlockingIOError:
                alive.append(s)
            except OSError:
                continue
        assert len(alive) == 64, kind
        for s in alive if kind == "ours" else []:
            s.settimeout(5)
            s.sendall(b"\r\n")
            assert recv_until(s, lambda b: b.endswith(b"END\r\n")) == b"END\r\n", kind
        for s in socks:
            s.close()
        # memcached may still be releasing the closed clients' buffers.
        deadline = time.monotonic() + 5
        while True:
            try:
                with srv.connect() as ctl:
                    oom = stats_over(ctl)["read_buf_oom"]
                break
            except (Closed, ConnectionError):
                assert time.monotonic() < deadline, kind
                time.sleep(0.05)
        assert oom == "36", kind


# ---------------------------------------------------------------------------
# Lines without a newline, up to and past the limit
# ---------------------------------------------------------------------------

LINE_CASES = {
    # name: (bytes sent before the newline, arrives separately)
    "2048_bytes_waits": b"x" * 2048,
    "2049_bytes_closes": b"x" * 2049,
    "get_of_8192_bytes_waits": b"get " + b"k" * 8188,
    "get_with_101_spaces_closes": b" " * 101 + b"get " + b"k" * 3000,
    "set_with_long_key_closes": b"set " + b"k" * 3000,
}


@pytest.mark.parametrize("name", sorted(LINE_CASES))
def test_unterminated_line_limits_like_oracle(start_server, name):
    """A request line sent without its newline: memcached keeps waiting up
    to 2048 bytes (longer only for get/gets), then closes. The newline is
    sent once the server had time to read the first part (a close would be
    seen by then); both servers must end the same way."""
    outcomes = {}
    for kind in ("oracle", "ours"):
        srv = start_server(kind)
        s = srv.connect()
        s.sendall(LINE_CASES[name])
        # Nothing observable says the server has read the partial line
        # (memcached's worker threads order nothing with other clients), so
        # a close is waited for a bounded half second.
        s.settimeout(0.5)
        try:
            early = s.recv(100)
        except socket.timeout:
            early = None
        if early is None:
            s.settimeout(5)
            s.sendall(b"\r\n")
            try:
                outcomes[kind] = recv_until(s, lambda b: b.endswith(b"\r\n"))
            except Closed as c:
                outcomes[kind] = ("closed", c.got)
        else:
            outcomes[kind] = ("closed", early)
        s.close()
    assert outcomes["ours"] == outcomes["oracle"]
    closes = name.endswith("closes")
    assert isinstance(outcomes["ours"], tuple) == closes, outcomes["ours"]
