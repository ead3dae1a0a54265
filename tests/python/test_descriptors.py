"""Out of descriptors, and `-c` without `maxconns_fast`: accepting pauses
(memcached's "listen disabled", counted in listen_disabled_num and
time_in_listen_disabled_us) and clients waiting in the backlog are served
as soon as a descriptor or a slot is free -- with no new connection
arriving to wake the listener.

Descriptors are exhausted for real: the test lowers the running server's
RLIMIT_NOFILE (prlimit(2), as `prlimit --pid` does) to its lowest free
descriptor, so its next accept fails with EMFILE.
"""

import os
import resource
import select
import socket

import pytest

from mc_helpers import (
    recv_until,
    request,
    settle_conns,
    stats_over,
    wait_stat,
)

# As in test_connections.py: with -c 30 and one listener memcached keeps
# 6 clients under maxconns_fast; without it, one more (descriptor 29).
MAXCONN = 30
WITHOUT_FAST = MAXCONN - 24 + 1
# A client that gets no reply within this is taken to be waiting (the
# replies in these tests come back in well under a millisecond).
QUIET = 0.3
CONN_STATS = ("curr_connections", "total_connections", "listen_disabled_num", "accepting_conns")


def version_probe(srv):
    s = socket.create_connection(srv.addr, timeout=10)
    s.sendall(b"version\r\n")
    return s


def late_probe(srv):
    """A connection started without waiting for it to be established
    (memcached shrinks its backlog while paused, so a second one waits in
    SYN retries rather than in the backlog); `answered_late` finishes it."""
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(srv.addr)
    return s


def answered_late(sock, timeout):
    _, writable, _ = select.select([], [sock], [], timeout)
    if not writable or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
        return False
    sock.setblocking(True)
    sock.sendall(b"version\r\n")
    return answered(sock, timeout)


def answered(sock, timeout):
    try:
        return recv_until(sock, lambda b: b.endswith(b"\r\n"), timeout=timeout).startswith(
            b"VERSION ")
    except socket.timeout:
        return False


def picked(st):
    return {n: st[n] for n in CONN_STATS}


def fill(srv, n):
    """A control connection and n-1 more, each answered."""
    ctl = srv.connect()
    settle_conns(ctl)
    socks = [ctl]
    for _ in range(n - 1):
        s = version_probe(srv)
        assert answered(s, 10)
        socks.append(s)
    return socks


def test_limit_without_maxconns_fast_same_as_oracle(start_server):
    seen = {}
    for kind in ("oracle", "ours"):
        srv = start_server(kind, "-c", str(MAXCONN), "-o", "no_maxconns_fast", "-v")
        socks = fill(srv, WITHOUT_FAST)
        ctl = socks[0]
        waiting = version_probe(srv)
        try:
            # Over the limit: connected (the kernel's backlog) but not served.
            assert not answered(waiting, QUIET), kind
            paused = picked(stats_over(ctl))
            assert "rejected_connections" not in stats_over(ctl)
            # A client leaves; nothing new connects. The waiting one is served.
            socks.pop().close()
            assert answered(waiting, 5), f"{kind}: the waiting client was never served"
            st = wait_stat(srv, "accepting_conns", lambda v: v == 1, sock=ctl)
            resumed = picked(st)
            assert int(st["time_in_listen_disabled_us"]) >= QUIET * 1e6 * 0.9, kind
            seen[kind] = (paused, resumed)
        finally:
            waiting.close()
            for s in socks:
                s.close()
        lines = srv.stderr.text().splitlines()
        assert lines.count("accept4(): Too many open files") == 1, (kind, lines)
        assert lines.count("Too many open connections") == 1, (kind, lines)
        srv.kill()
    assert seen["ours"] == seen["oracle"]
    paused, resumed = seen["ours"]
    assert paused["listen_disabled_num"] == "1" and paused["accepting_conns"] == "0"
    assert resumed["listen_disabled_num"] == "1" and resumed["accepting_conns"] == "1"


def open_fds(pid):
    return {int(n) for n in os.listdir(f"/proc/{pid}/fd")}


def lowest_free(fds):
    n = 0
    while n in fds:
        n += 1
    return n


def server_fd_of(ctl, sock):
    """The server's descriptor for one of our sockets, from `stats conns`."""
    port = sock.getsockname()[1]
    for key, value in stats_over(ctl, "conns").items():
        if key.endswith(":addr") and value == f"tcp:127.0.0.1:{port}":
            return int(key.split(":")[0])
    raise AssertionError(f"no connection from port {port} in stats conns")


def exhaust_descriptors(srv):
    """Lowers the server's soft RLIMIT_NOFILE to its lowest free descriptor:
    its next accept fails with EMFILE. Returns the old limits."""
    old = resource.prlimit(srv.pid, resource.RLIMIT_NOFILE)
    limit = lowest_free(open_fds(srv.pid))
    resource.prlimit(srv.pid, resource.RLIMIT_NOFILE, (limit, old[1]))
    return old, limit


@pytest.mark.parametrize("kind", ["ours", "oracle"])
def test_backlog_served_when_a_client_leaves_after_emfile(start_server, kind):
    srv = start_server(kind, "-v")
    socks = fill(srv, 5)
    ctl = socks[0]
    _, limit = exhaust_descriptors(srv)
    waiting = [version_probe(srv)]
    try:
        assert not answered(waiting[0], QUIET)
        # One more while paused.
        waiting.append(late_probe(srv))
        st = stats_over(ctl)
        assert (st["listen_disabled_num"], st["accepting_conns"]) == ("1", "0")
        # Two clients under the limit leave; nothing new connects.
        leaving = [s for s in socks[1:] if server_fd_of(ctl, s) < limit][:2]
        assert len(leaving) == 2
        for s in leaving:
            socks.remove(s)
            s.close()
        assert answered(waiting[0], 5), f"{kind}: the client in the backlog was never served"
        assert answered_late(waiting[1], 5), f"{kind}: the second waiting client was never served"
        assert request(waiting[1], b"set k 0 0 1\r\nv\r\n") == b"STORED\r\n"
        st = wait_stat(srv, "accepting_conns", lambda v: v == 1, sock=ctl)
        assert (st["listen_disabled_num"], st["accepting_conns"]) == ("1", "1")
        assert int(st["time_in_listen_disabled_us"]) >= QUIET * 1e6 * 0.9
        assert "accept4(): Too many open files" in srv.stderr.text().splitlines()
        assert srv.alive()
    finally:
        for s in socks + waiting:
            s.close()


def test_a_descriptor_freed_elsewhere_resumes_within_the_retry(start_server):
    """Not only a client's close frees a descriptor (here the limit is
    raised back): the 10 ms re-poll serves the waiting client without any
    close or new connection. memcached retries only after a close."""
    srv = start_server("ours")
    socks = fill(srv, 3)
    ctl = socks[0]
    old, _ = exhaust_descriptors(srv)
    waiting = version_probe(srv)
    try:
        assert not answered(waiting, QUIET)
        assert stats_over(ctl)["accepting_conns"] == "0"
        resource.prlimit(srv.pid, resource.RLIMIT_NOFILE, old)
        assert answered(waiting, 2)
        st = stats_over(ctl)
        assert (st["listen_disabled_num"], st["accepting_conns"]) == ("1", "1")
        # The next client is served at once.
        with version_probe(srv) as s:
            assert answered(s, 5)
    finally:
        waiting.close()
        for s in socks:
            s.close()


def test_stats_reset_zeroes_the_listen_disabled_counters(start_server):
    srv = start_server("ours", "-c", str(MAXCONN), "-o", "no_maxconns_fast")
    socks = fill(srv, WITHOUT_FAST)
    ctl = socks[0]
    waiting = version_probe(srv)
    try:
        assert not answered(waiting, QUIET)
        socks.pop().close()
        assert answered(waiting, 5)
        st = wait_stat(srv, "accepting_conns", lambda v: v == 1, sock=ctl)
        assert int(st["time_in_listen_disabled_us"]) > 0
        assert request(ctl, b"stats reset\r\n") == b"RESET\r\n"
        st = stats_over(ctl)
        assert (st["listen_disabled_num"], st["time_in_listen_disabled_us"]) == ("0", "0")
    finally:
        waiting.close()
        for s in socks:
            s.close()
