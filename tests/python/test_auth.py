"""ASCII authentication (`-Y authfile`) against the oracle, byte for byte:
wrong and right passwords, malformed credential commands, split writes,
over-long junk, the statistics, and the start-up errors for bad files."""

import subprocess

import pytest

from mc_helpers import (
    Closed,
    binary_for,
    free_port,
    normalise_trace,
    recv_all_until_close,
    recv_until,
    stats_over,
)

AUTHFILE_TEXT = b"alice:secret\nbob:pa:ss\r\n"


@pytest.fixture
def authfile(tmp_path):
    path = tmp_path / "auth"
    path.write_bytes(AUTHFILE_TEXT)
    return str(path)


def lines_done(n):
    return lambda b: b.count(b"\r\n") >= n


def run_steps(srv, steps):
    """steps: (bytes to send, reply lines expected). Returns every reply
    byte, in order, and whether the server closed the connection."""
    sock = srv.connect()
    got = bytearray()
    try:
        for data, nlines in steps:
            sock.sendall(data)
            if nlines:
                got += recv_until(sock, lines_done(nlines))
        return bytes(got), False
    except Closed as closed:
        return bytes(got) + closed.got, True
    finally:
        sock.close()


# name -> steps; each step's reply-line count is what both servers send.
SCRIPTS = {
    "command_before_auth": [(b"get foo\r\n", 1), (b"mn\r\n", 1), (b"version\r\n", 1)],
    "empty_line": [(b"\r\n", 1)],
    "set_too_few_tokens": [(b"set x 0 0\r\n", 1)],
    "set_bad_length": [(b"set x 0 0 abc\r\n", 1)],
    "add_is_not_set": [(b"add x 0 0 5\r\n", 1), (b"hello\r\n", 1)],
    "one_token": [(b"set x 0 0 5\r\nalice\r\n", 1)],
    "wrong_password": [(b"set x 0 0 12\r\nalice wrong!\r\n", 1), (b"get a\r\n", 1)],
    "wrong_user": [(b"set x 0 0 13\r\nmallory secret\r\n", 1)],
    "bad_termination": [(b"set x 0 0 12\r\nalice secretXY", 1), (b"get a\r\n", 1)],
    "right_password": [
        (b"set x 0 0 12\r\nalice secret\r\n", 1),
        (b"set a 0 0 1\r\nb\r\n", 1),
        (b"get a\r\n", 3),
    ],
    "colon_in_password_crlf_file": [(b"set k 1 2 9\r\nbob pa:ss\r\n", 1), (b"get a\r\n", 1)],
    "failure_then_success": [
        (b"set x 0 0 12\r\nalice wrong!\r\n", 1),
        (b"set x 0 0 12\r\nalice secret\r\n", 1),
        (b"version\r\n", 1),
    ],
    "noreply_and_extra_tokens": [
        (b"set x 0 0 18 noreply\r\nalice secret extra\r\n", 1),
        (b"get a\r\n", 1),
    ],
    "split_writes": [
        (b"se", 0),
        (b"t x 0 0 1", 0),
        (b"2\r\nali", 0),
        (b"ce sec", 0),
        (b"ret\r", 0),
        (b"\n", 1),
        (b"get a\r\n", 1),
    ],
    # memcached answers unauthenticated requests in one response object
    # until it is written: pipelined, a later answer replaces an earlier one.
    "pipelined": [(b"get a\r\nset x 0 0 12\r\nalice secret\r\nget a\r\n", 2)],
    "pipelined_failures": [(b"get a\r\nset x 0 0 3\r\nabc\r\nversion\r\n", 1), (b"stats\r\n", 1)],
    "bare_newline": [(b"set x 0 0 12\nalice secret\r\n", 1)],
    "nul_in_line": [(b"set\0x 0 0 12\r\n", 1)],
    "long_junk_closes": [(b"x" * 2049, 0), (b"", 1)],
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_auth_script_matches_oracle(start_server, authfile, name):
    outcomes = {}
    for kind in ("oracle", "ours"):
        srv = start_server(kind, "-Y", authfile)
        outcomes[kind] = run_steps(srv, SCRIPTS[name])
        assert srv.alive(), f"{kind} died"
    assert outcomes["ours"] == outcomes["oracle"]
    # Every script gets some answer (or a close): the comparison is not of
    # two silences.
    assert outcomes["oracle"][0] or outcomes["oracle"][1]


def test_exactly_2048_bytes_waits_for_more(start_server, authfile):
    for kind in ("oracle", "ours"):
        srv = start_server(kind, "-Y", authfile)
        sock = srv.connect()
        sock.sendall(b"x" * 2048)
        sock.sendall(b"\r\n")
        assert recv_until(sock, lines_done(1)) == b"CLIENT_ERROR unauthenticated\r\n", kind
        sock.close()


def test_auth_counters_and_settings(start_server, authfile):
    results = {}
    for kind in ("oracle", "ours"):
        srv = start_server(kind, "-Y", authfile)
        sock = srv.connect()
        sock.sendall(b"set x 0 0 12\r\nalice wrong!\r\n")
        recv_until(sock, lines_done(1))
        sock.sendall(b"set x 0 0 13\r\nalice secret\r\n\r\n")
        assert recv_until(sock, lines_done(1)) == b"CLIENT_ERROR bad command line termination\r\n"
        sock.sendall(b"set x 0 0 12\r\nalice secret\r\n")
        assert recv_until(sock, lines_done(1)) == b"STORED\r\n"
        st = stats_over(sock)
        settings = stats_over(sock, "settings")
        results[kind] = (
            st["auth_cmds"],
            st["auth_errors"],
            settings["auth_enabled_ascii"],
            settings["binding_protocol"],
        )
        sock.close()
    assert results["ours"] == results["oracle"]
    assert results["ours"][:2] == ("2", "1")


def test_unauthenticated_connection_stores_nothing(start_server, authfile):
    srv = start_server("ours", "-Y", authfile)
    sock = srv.connect()
    sock.sendall(b"set a 0 0 5\r\nhello\r\n")
    assert recv_until(sock, lines_done(1)) == b"CLIENT_ERROR bad authentication token format\r\n"
    sock.close()
    admin = srv.connect()
    admin.sendall(b"set x 0 0 9\r\nbob pa:ss\r\nget a\r\n")
    assert recv_until(admin, lines_done(2)) == b"STORED\r\nEND\r\n"
    admin.close()


def start_failure(kind, *args):
    port = free_port()
    proc = subprocess.run(
        [str(binary_for(kind)), "-u", "root", "-l", "127.0.0.1", "-U", "0",
         "-p", str(port), *args],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=10,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("content", [b"nocolon\n", b"alice:secret\n\nbob:x\n", b"\n"])
def test_malformed_authfile_refused_like_oracle(tmp_path, content):
    path = tmp_path / "auth"
    path.write_bytes(content)
    ours = start_failure("ours", "-Y", str(path))
    assert ours == start_failure("oracle", "-Y", str(path))
    assert ours[0] == 1 and b"malformed" in ours[2]


def test_missing_authfile_refused_like_oracle(tmp_path):
    path = str(tmp_path / "missing")
    ours = start_failure("ours", "-Y", path)
    assert ours == start_failure("oracle", "-Y", path)
    assert ours[0] == 1 and b"Could not open authfile" in ours[2]


@pytest.mark.parametrize("args", [["-U", "1234"], ["-B", "binary"]])
def test_authfile_conflicts_like_oracle(authfile, args):
    ours = start_failure("ours", "-Y", authfile, *args)
    assert ours == start_failure("oracle", "-Y", authfile, *args)
    assert ours[0] != 0


def test_vv_trace_of_auth_session(start_server, authfile):
    traces = {}
    for kind in ("oracle", "ours"):
        srv = start_server(kind, "-vv", "-Y", authfile)
        sock = srv.connect()
        sock.sendall(b"get a\r\nset x 0 0 12\r\nalice secret\r\nget a\r\n")
        recv_until(sock, lines_done(2))
        sock.close()
        # The readiness probe's connection closes first, then this one.
        srv.stderr.wait_for(lambda lines: sum(b"connection closed" in x for x in lines) >= 2, 5)
        lines = srv.stderr.lines()
        opened = [x for x in lines if x.endswith(b" new ascii client connection.")]
        assert len(opened) == 2, kind
        # The probe's close and this connection's opening may interleave
        # in memcached (its threads); the requests and replies may not.
        traces[kind] = [
            normalise_trace(x) for x in lines if x[:1] == b">" or x.endswith(b"get a")
        ]
    assert traces["ours"] == traces["oracle"]
    assert len(traces["ours"]) == 4



def try_auth(srv, payload):
    with srv.connect() as s:
        s.sendall(b"set x 0 0 %d\r\n%s\r\n" % (len(payload), payload))
        return recv_until(s, lines_done(1))


@pytest.mark.parametrize("kind", ["oracle", "ours"])
def test_sighup_reloads_authfile(start_server, tmp_path, kind):
    """memcached re-reads the authfile on SIGHUP (in the foreground); a
    malformed file leaves the old credentials in force."""
    import signal
    import time

    path = tmp_path / "auth"
    path.write_bytes(b"alice:old\n")
    srv = start_server(kind, "-Y", str(path))
    assert try_auth(srv, b"alice old") == b"STORED\r\n"
    path.write_bytes(b"alice:new\n")
    srv.signal(signal.SIGHUP)
    # memcached reloads on its next clock tick: poll until the new
    # password works.
    deadline = time.monotonic() + 5
    while try_auth(srv, b"alice new") != b"STORED\r\n":
        assert time.monotonic() < deadline, f"{kind}: new password not accepted"
        time.sleep(0.05)
    assert try_auth(srv, b"alice old") == b"CLIENT_ERROR authentication failure\r\n"
    path.write_bytes(b"malformed\n")
    srv.signal(signal.SIGHUP)
    # Nothing shows when the reload happened; memcached's comes within a
    # clock tick, so the old credentials are checked for 1.5 s.
    until = time.monotonic() + 1.5
    while time.monotonic() < until:
        assert try_auth(srv, b"alice new") == b"STORED\r\n", kind
        time.sleep(0.1)
    assert srv.alive()
