"""-vvv: memcached's "extremely verbose" trace -- every connection state
change and every item lookup -- compared line by line with the oracle for a
set of sessions, fd numbers normalised. (A session ending in a partial line
is left out: whether its end of file arrives with the data or later decides
memcached's trace, so it is not deterministic.) Lines memcached's background
threads print at their own pace (LRU crawler/maintainer) are left out."""

import socket

import pytest

from mc_helpers import TRACE_FD_RE as FD_RE, normalise_trace as normalise

SESSIONS = {
    "get-set-get": b"get foo\r\nset foo 0 0 3\r\nbar\r\nget foo\r\n",
    "errors": b"cas foo 0 0 1 99\r\nx\r\ndelete foo\r\nincr nope 1\r\nbogus\r\n",
    "too-large-and-noreply": b"set a 0 0 2000000\r\nxx\r\nset b 0 0 1 noreply\r\nb\r\nget a b\r\nquit\r\n",
    "counters-touch-flush": b"set x 0 0 1\r\n1\r\nincr x 5\r\ntouch x 10\r\ngat 0 x\r\nflush_all\r\nget x\r\n",
    "bad-chunk": b"set k 0 0 1\r\nabc\r\nget k\r\n",
    "verbosity-change": b"set x 0 0 1\r\n1\r\nverbosity 2\r\nget x\r\n",
}


def is_connection_line(line):
    return bool(FD_RE.match(line)) or line.startswith(b"> ")


def closed_count(lines, end=b" to conn_closed"):
    """Connections whose close has been traced completely: at -vvv the
    "connection closed." line is followed by a last state change."""
    return sum(1 for line in lines if line.endswith(end))


def trace(srv, payload):
    srv.stderr.wait_for(lambda ls: closed_count(ls) >= 1, timeout=5)
    # A session that lowers the verbosity has no state changes at its end.
    end = b" connection closed." if b"verbosity" in payload else b" to conn_closed"
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
    ok = srv.stderr.wait_for(lambda ls: closed_count(ls, end) >= 2, timeout=5)
    lines = [normalise(l) for l in srv.stderr.lines() if is_connection_line(l)]
    assert ok, f"{srv.describe()}: session never closed:\n" + b"\n".join(lines).decode()
    return lines


@pytest.mark.parametrize("name", sorted(SESSIONS))
def test_vvv_trace_matches_oracle(start_server, name):
    ours = start_server("ours", "-vvv")
    oracle = start_server("oracle", "-vvv")
    want = trace(oracle, SESSIONS[name])
    got = trace(ours, SESSIONS[name])
    assert any(b"going from" in l for l in want)
    assert got == want
