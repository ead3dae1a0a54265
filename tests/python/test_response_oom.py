"""Response objects under `-o read_buf_mem_limit`, against the oracle.

memcached answers every request with a response object (one per key of a
multi-key get) from its worker thread's pool of 16 KB buffers,
`max(1, limit / threads / 16 KB)` of them with 13 objects each; the
connection's read buffer takes one. A get needing more than the rest
drops every reply not yet sent and answers `SERVER_ERROR out of memory
writing get response`; a request that finds none closes the connection.
Both count `response_obj_oom`. Each scenario runs on a fresh connection
of both servers and must give the same bytes and the same counters."""

import pytest

from mc_helpers import Closed, ends_with, recv_until, request, stats_over

OOM = b"SERVER_ERROR out of memory writing get response\r\n"


def capacity(threads, limit_mb=1):
    """Response objects one client gets before its replies are written."""
    buffers = max(1, (limit_mb << 20) // threads // 16384)
    return (buffers - 1) * 13


def run(srv, payload):
    """Sends payload then `mn` on a fresh connection; returns what came
    back until MN, and whether the server closed the connection."""
    with srv.connect() as s:
        s.sendall(payload + b"mn\r\n")
        try:
            return recv_until(s, ends_with(b"MN\r\n")), False
        except Closed as e:
            return e.got, True


def get_line(n, hits=()):
    keys = [b"k%d" % i for i in range(n)]
    return b"get " + b" ".join(keys) + b"\r\n"


COUNTERS = ("response_obj_oom", "cmd_get", "get_hits", "get_misses", "read_buf_oom")


def scenarios(cap):
    """(name, payload) pairs around the threshold `cap`."""
    return [
        ("get fits", get_line(cap)),
        ("get one over", get_line(cap + 1)),
        ("get far over", get_line(cap + 40)),
        # A stacked reply takes an object: the get one shorter fails, and
        # the meta reply before it is dropped with it.
        ("mg then get fits", b"mg k1 v\r\n" + get_line(cap - 1)),
        ("mg then get over", b"mg k1 v\r\n" + get_line(cap)),
        # A too-long key past the threshold is never reached.
        ("long key after", get_line(cap + 1)[:-2] + b" " + b"x" * 251 + b"\r\n"),
        ("long key before", b"get k1 " + b"x" * 251 + b" " + get_line(cap + 1)[4:]),
        # Stacked meta replies: the one past the threshold closes the
        # connection, sending nothing (`mn` itself needs one).
        ("stacked mg fit", b"mg k1 v\r\n" * (cap - 1)),
        ("stacked mg over", b"mg k1 v\r\n" * cap),
    ]


@pytest.mark.parametrize("threads", [32, 8, 4])
def test_thresholds_and_counters_like_oracle(start_server, threads):
    cap = capacity(threads)
    seen = {}
    for kind in ("oracle", "ours"):
        srv = start_server(kind, "-t", str(threads), "-R", "500", "-o", "read_buf_mem_limit=1")
        with srv.connect() as s:
            for key in (b"k1", b"k3"):
                assert request(s, b"set %s 0 0 1\r\nv\r\n" % key) == b"STORED\r\n"
        got = {name: run(srv, payload) for name, payload in scenarios(cap)}
        with srv.connect() as s:
            st = stats_over(s)
        seen[kind] = (got, {n: st[n] for n in COUNTERS})
    ours, oracle = seen["ours"], seen["oracle"]
    for name, _ in scenarios(cap):
        assert ours[0][name] == oracle[0][name], (threads, name)
    assert ours[1] == oracle[1], threads
    # What the scenarios show, spelled out.
    got = ours[0]
    assert got["get fits"][0].endswith(b"END\r\nMN\r\n")
    assert got["get one over"] == (OOM + b"MN\r\n", False)
    assert got["mg then get over"] == (OOM + b"MN\r\n", False)
    assert got["long key before"][0].startswith(b"CLIENT_ERROR bad command line format")
    assert got["long key after"] == (OOM + b"MN\r\n", False)
    assert got["stacked mg fit"] == (b"VA 1\r\nv\r\n" * (cap - 1) + b"MN\r\n", False)
    assert got["stacked mg over"] == (b"", True)
    # One for each refused get, one for the closed connection.
    assert ours[1]["response_obj_oom"] == "5"


def test_no_limit_no_refusal(start_server):
    """Without the option, a get of 2,000 keys is answered in full."""
    srv = start_server("ours", "-t", "32")
    reply, closed = run(srv, get_line(2000))
    assert (reply, closed) == (b"END\r\nMN\r\n", False)
    with srv.connect() as s:
        assert stats_over(s)["response_obj_oom"] == "0"
