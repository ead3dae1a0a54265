"""Switches that keep operators safe: -F (no flush_all), -X (no dumping),
-A (shutdown only when enabled), compared with the oracle byte for byte;
and the warning (ours only, memcached has none) when the server listens
on every interface with no authentication."""

import socket
import subprocess
import time

import pytest

from mc_helpers import (
    StderrCollector,
    binary_for,
    free_port,
    recv_all_until_close,
    recv_until,
    wait_exit,
)

SETUP = b"set a 0 0 1\r\n1\r\nset b 0 0 1\r\n2\r\n"


def session(srv, data, nlines):
    """Sends data, reads until nlines reply lines (or the close)."""
    s = srv.connect()
    s.sendall(data)
    try:
        return recv_until(s, lambda b: b.count(b"\r\n") >= nlines)
    finally:
        s.close()


CASES = {
    # name: (switches, request, reply lines)
    "F_flush_all": (["-F"], SETUP + b"flush_all\r\nflush_all 0\r\nflush_all noreply\r\nget a b\r\n", 8),
    "F_meta_still_works": (["-F"], SETUP + b"mn\r\nmg a v\r\n", 5),
    "X_cachedump": (["-X"], SETUP + b"stats cachedump 1 0\r\nstats cachedump 1 1\r\n", 4),
    "X_metadump": (["-X"], SETUP + b"lru_crawler metadump all\r\n", 3),
    "X_me": (["-X"], SETUP + b"me a\r\n", 3),
    "A_off": ([], b"shutdown\r\nshutdown graceful\r\nversion\r\n", 3),
    "FXA_together": (["-F", "-X", "-A"], SETUP + b"flush_all\r\nstats cachedump 1 0\r\nget a\r\n", 7),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_switch_matches_oracle(start_server, name):
    switches, data, nlines = CASES[name]
    got = {}
    for kind in ("oracle", "ours"):
        srv = start_server(kind, *switches)
        got[kind] = session(srv, data, nlines)
        assert srv.alive(), kind
    assert got["ours"] == got["oracle"]
    assert got["ours"].count(b"\r\n") >= nlines


@pytest.mark.parametrize("command", [b"shutdown\r\n", b"shutdown graceful\r\n"])
def test_shutdown_only_with_A(start_server, kind, command):
    srv = start_server(kind, "-A")
    s = srv.connect()
    s.sendall(command)
    data, _ = recv_all_until_close(s, timeout=5)
    assert data == b""
    assert wait_exit(srv.proc, 5) == 0
    other = start_server(kind)
    assert session(other, command, 1) == b"ERROR: shutdown not enabled\r\n"
    assert other.alive()


WARNING = b"WARNING: listening on all interfaces"


def startup_stderr(*args):
    """Starts ours with exactly `args` (no -l 127.0.0.1 added), waits until
    it answers on 127.0.0.1, stops it, and returns all it wrote to stderr
    (read to the end of the pipe, so nothing is still in flight)."""
    port = free_port()
    proc = subprocess.Popen(
        [str(binary_for("ours")), "-u", "root", "-U", "0", "-p", str(port), *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    err = StderrCollector(proc.stderr)
    try:
        deadline = time.monotonic() + 5
        while True:
            assert proc.poll() is None, err.text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"version\r\n")
                    reply = recv_until(s, lambda b: b.endswith(b"\r\n"))
                    assert reply.startswith((b"VERSION", b"CLIENT_ERROR unauthenticated"))
                    break
            except OSError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
        assert err.wait_eof(5)
    return err.text().encode()


def test_wildcard_listener_without_auth_warns():
    for args in (["-l", "0.0.0.0"], []):
        err = startup_stderr(*args)
        assert WARNING in err and b"no authentication" in err, args


def test_private_listener_or_auth_does_not_warn(tmp_path):
    authfile = tmp_path / "auth"
    authfile.write_bytes(b"user:pass\n")
    for args in (["-l", "127.0.0.1", "-vv"], ["-l", "0.0.0.0", "-Y", str(authfile)]):
        assert WARNING not in startup_stderr(*args), args
