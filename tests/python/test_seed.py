"""The seed transcripts (shared/seeds/000_*.txt): the nc session, the -vv
trace, and the pymemcache out-of-memory loop under `-m 3 -M`."""

import re

from pymemcache.client import base

from mc_helpers import get_reply_done, normalise_trace as normalise, request

# The seed nc session (`nc -c` sends CRLF line endings), command by command,
# with the exact reply expected for each.
NC_SESSION = [
    (b"get foo\r\n", b"END\r\n"),
    (b"set foo 0 0 3\r\nbar\r\n", b"STORED\r\n"),
    (b"get foo\r\n", b"VALUE foo 0 3\r\nbar\r\nEND\r\n"),
]


def run_nc_session(server):
    """Runs the seed session, one round trip per command; returns replies."""
    replies = []
    with server.connect() as s:
        for cmd, expected in NC_SESSION:
            replies.append(request(s, cmd, get_reply_done()))
    return replies


def test_seed_nc_session(start_server, kind):
    srv = start_server(kind)
    replies = run_nc_session(srv)
    for (cmd, expected), got in zip(NC_SESSION, replies):
        assert got == expected, f"{srv.describe()}: {cmd!r} -> {got!r}, expected {expected!r}"


def test_seed_nc_session_same_bytes_as_oracle(start_server):
    ours = start_server("ours")
    oracle = start_server("oracle")
    assert run_nc_session(ours) == run_nc_session(oracle)


# ---------------------------------------------------------------------------
# Seed OOM loop: -m 3 -M, 10240-byte values under keys "0", "1", ...
# ---------------------------------------------------------------------------


def seed_oom_loop(port, limit=None):
    """The seed's pymemcache client loop, verbatim in behaviour. Returns
    (exception or None, sz, pos)."""
    client = base.Client(("127.0.0.1", port), default_noreply=False,
                         connect_timeout=10, timeout=10)
    sz = 0
    pos = 0
    exc = None
    try:
        while limit is None or pos < limit:
            key = str(pos)
            value = "x" * 10240
            try:
                res = client.set(key, value)
                if res:
                    sz += len(key) + len(value)
                    pos += 1
                else:
                    break
            except Exception as e:  # noqa: BLE001 - the seed catches everything
                exc = e
                break
    finally:
        client.close()
    return exc, sz, pos


def test_seed_oom_with_M(start_server, kind):
    srv = start_server(kind, "-m", "3", "-M")
    exc, sz, pos = seed_oom_loop(srv.port, limit=5000)
    assert exc is not None, f"{srv.describe()}: no error after {pos} sets (sz={sz})"
    # The seed prints 'exception: %s, sz: %s' % (e, sz):
    printed = "exception: %s, sz: %s" % (exc, sz)
    assert printed == "exception: b'out of memory storing object', sz: 2888416", (
        f"{srv.describe()}: {printed!r} ({type(exc).__name__}, {pos} items stored)"
    )
    assert pos == 282
    # Nothing that was stored got lost, and the server still works.
    c = base.Client(("127.0.0.1", srv.port), default_noreply=False, timeout=10)
    try:
        assert c.get("0") == b"x" * 10240
        assert c.get("281") == b"x" * 10240
        assert c.get("282") is None
        st = c.stats()
        assert st[b"curr_items"] == 282, st
        assert st[b"evictions"] == 0, st
        assert st[b"total_items"] == 282, st
    finally:
        c.close()
    # A raw look at the exact error line (the seed's -vv trace shows it).
    with srv.connect() as s:
        got = request(s, b"set 282 0 0 10240\r\n" + b"x" * 10240 + b"\r\n")
        assert got == b"SERVER_ERROR out of memory storing object\r\n"


def test_seed_oom_same_as_oracle(start_server):
    ours = start_server("ours", "-m", "3", "-M")
    oracle = start_server("oracle", "-m", "3", "-M")
    r_ours = seed_oom_loop(ours.port, limit=5000)
    r_oracle = seed_oom_loop(oracle.port, limit=5000)
    assert (str(r_ours[0]), r_ours[1], r_ours[2]) == (str(r_oracle[0]), r_oracle[1], r_oracle[2])


def test_eviction_without_M(start_server, kind):
    srv = start_server(kind, "-m", "3")
    n = 2000
    exc, sz, pos = seed_oom_loop(srv.port, limit=n)
    assert exc is None, f"{srv.describe()}: set #{pos} failed: {exc!r}"
    assert pos == n
    c = base.Client(("127.0.0.1", srv.port), default_noreply=False, timeout=10)
    try:
        st = c.stats()
        assert st[b"evictions"] > 0, st
        assert st[b"total_items"] == n, st
        assert st[b"curr_items"] + st[b"evictions"] == n, st
        newest = [str(i) for i in range(n - 50, n)]
        got = c.get_many(newest)
        missing = [k for k in newest if k not in got]
        assert not missing, f"newest keys evicted: {missing}"
        assert all(v == b"x" * 10240 for v in got.values())
        # The oldest are gone.
        assert c.get("0") is None
    finally:
        c.close()


# ---------------------------------------------------------------------------
# -vv trace
# ---------------------------------------------------------------------------

def closed_count(lines):
    return sum(1 for line in lines if line.endswith(b" connection closed."))


def vv_trace(srv):
    """Runs the seed nc session on a -vv server; returns its stderr lines up
    to and including the session's `connection closed.` line."""
    # The readiness probe made one connection: wait for its close to be
    # logged so it cannot interleave with the session's lines.
    srv.stderr.wait_for(lambda ls: closed_count(ls) >= 1, timeout=5)
    with srv.connect() as s:
        for cmd, expected in NC_SESSION:
            request(s, cmd, get_reply_done())
    ok = srv.stderr.wait_for(lambda ls: closed_count(ls) >= 2, timeout=5)
    lines = srv.stderr.lines()
    assert ok, f"{srv.describe()}: no second 'connection closed.' in -vv stderr:\n" + \
        "\n".join(l.decode("utf-8", "replace") for l in lines if not l.startswith(b"slab class"))
    return lines


def test_vv_trace_matches_oracle(start_server):
    ours = start_server("ours", "-vv", "-m", "3", "-M")
    oracle = start_server("oracle", "-vv", "-m", "3", "-M")
    ours_lines = vv_trace(ours)
    oracle_lines = vv_trace(oracle)

    ours_slab = [l for l in ours_lines if l.startswith(b"slab class")]
    oracle_slab = [l for l in oracle_lines if l.startswith(b"slab class")]
    assert len(oracle_slab) == 39
    assert ours_slab == oracle_slab

    ours_rest = [normalise(l) for l in ours_lines if not l.startswith(b"slab class")]
    oracle_rest = [normalise(l) for l in oracle_lines if not l.startswith(b"slab class")]
    assert ours_rest == oracle_rest


def test_vv_trace_seed_lines(start_server, kind):
    """The seed's -vv lines, fd numbers kept consistent: the session's lines
    all carry the same fd, the listener's a different one."""
    srv = start_server(kind, "-vv", "-m", "3", "-M")
    lines = [l for l in vv_trace(srv) if not l.startswith(b"slab class")]
    text = b"\n".join(lines).decode()
    m = re.match(r"<(\d+) server listening \(auto-negotiate\)\n"
                 r"<(\d+) new auto-negotiating client connection\n"
                 r"<\2 connection closed\.\n"
                 r"<(\d+) new auto-negotiating client connection\n"
                 r"\3: Client using the ascii protocol\n"
                 r"<\3 get foo\n"
                 r">\3 END\n"
                 r"<\3 set foo 0 0 3\n"
                 r">\3 STORED\n"
                 r"<\3 get foo\n"
                 r">\3 sending key foo\n"
                 r">\3 END\n"
                 r"<\3 connection closed\.$", text)
    assert m, f"{srv.describe()} -vv trace:\n{text}"
    assert m.group(1) != m.group(3)


def vv_oom_trace(srv):
    srv.stderr.wait_for(lambda ls: closed_count(ls) >= 1, timeout=5)
    exc, sz, pos = seed_oom_loop(srv.port, limit=5000)  # closes its client
    ok = srv.stderr.wait_for(lambda ls: closed_count(ls) >= 2, timeout=5)
    assert ok, f"{srv.describe()}: no 'connection closed.' after the OOM loop"
    return [normalise(l) for l in srv.stderr.lines() if not l.startswith(b"slab class")]


def test_vv_trace_oom_matches_oracle(start_server):
    """The seed's second -vv trace: 282 `set N 0 0 10240` / `STORED`, then
    `SERVER_ERROR out of memory storing object`, then the close."""
    ours = start_server("ours", "-vv", "-m", "3", "-M")
    oracle = start_server("oracle", "-vv", "-m", "3", "-M")
    oracle_lines = vv_oom_trace(oracle)
    assert oracle_lines[-3:] == [
        b"<FD set 282 0 0 10240",
        b">FD SERVER_ERROR out of memory storing object",
        b"<FD connection closed.",
    ]
    assert vv_oom_trace(ours) == oracle_lines
