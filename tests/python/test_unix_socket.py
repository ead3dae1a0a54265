"""Unix sockets (-s, -a): the socket file's mode, stale files, the same
replies as the oracle over the socket, `stats conns`, the -vv accept trace,
and real clients (pymemcache, memcstat) over the socket path."""

import os
import shutil
import signal
import socket
import stat
import subprocess
import time

import pytest

from mc_helpers import (
    STARTUP_TIMEOUT,
    StderrCollector,
    binary_for,
    free_port,
    normalise_trace,
    request,
    stats_over,
)


class UnixServer:
    """A server on a unix socket; ready when the socket accepts a client."""

    def __init__(self, kind, path, *opts):
        self.path = str(path)
        self.args = [str(binary_for(kind)), "-u", "root", "-s", self.path, *opts]
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self.stderr = StderrCollector(self.proc.stderr)

    def wait_ready(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args} exited: {self.stderr.text()}")
            try:
                self.connect().close()
                return self
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"{self.args} never accepted on {self.path}")

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect(self.path)
        except OSError:
            s.close()
            raise
        return s

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.stderr.wait_eof(2)
        self.proc.stderr.close()


@pytest.fixture
def unix_server(tmp_path):
    started = []

    def start(kind, name, *opts, ready=True):
        srv = UnixServer(kind, tmp_path / name, *opts)
        started.append(srv)
        return srv.wait_ready() if ready else srv

    yield start
    for srv in started:
        srv.kill()


def mode_of(path):
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode)
    return stat.S_IMODE(st.st_mode)


@pytest.mark.parametrize("mask", [None, "644", "777", "0", "1777"])
def test_mask_sets_file_mode_like_oracle(unix_server, mask):
    opts = () if mask is None else ("-a", mask)
    modes = [mode_of(unix_server(kind, f"{kind}.sock", *opts).path) for kind in ("oracle", "ours")]
    assert modes[1] == modes[0]
    expected = 0o700 if mask is None else int(mask, 8) & 0o777
    assert modes[1] == expected


SCRIPT = (
    b"set a 0 0 3\r\nabc\r\nget a nope\r\nincr a 1\r\nset n 0 0 1\r\n5\r\n"
    b"incr n 7\r\ngets n\r\nmg n v t\r\ndelete a\r\nbogus\r\nversion\r\n"
)


def test_replies_match_oracle(unix_server):
    replies = []
    for kind in ("oracle", "ours"):
        srv = unix_server(kind, f"{kind}.sock")
        with srv.connect() as s:
            replies.append(request(s, SCRIPT, done=lambda b: b.endswith(b"VERSION 1.6.18\r\n")))
    assert replies[1] == replies[0]


def test_stats_conns_and_settings_match_oracle(unix_server, tmp_path):
    shapes = []
    for kind in ("oracle", "ours"):
        srv = unix_server(kind, f"{kind}.sock", "-a", "640")
        with srv.connect() as s:
            conns = stats_over(s, "conns")
            settings = stats_over(s, "settings")
        # memcached shows a unix listener's path cut to 26 bytes. Of the
        # clients, only the asker is certain to be there (not the probe).
        asker = max(int(k.split(":")[0]) for k in conns)
        shape = sorted(
            f"{k.split(':', 1)[1]} {v.replace(srv.path, 'PATH').replace(srv.path[:26], 'CUT')}"
            for k, v in conns.items()
            if k.split(":")[0] == str(asker) or not any(
                key == f"{k.split(':')[0]}:listen_addr" for key in conns
            )
        )
        shape += [f"{n} {settings[n].replace(srv.path, 'PATH')}"
                  for n in ("domain_socket", "umask", "inter", "udpport")]
        shapes.append(shape)
    assert shapes[1] == shapes[0]
    assert "listen_addr unix:PATH" in shapes[1]


def test_stale_socket_file_is_replaced(unix_server, tmp_path):
    for kind in ("oracle", "ours"):
        path = tmp_path / f"{kind}.sock"
        old = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old.bind(str(path))
        old.close()  # leaves the file behind, as a crashed server would
        srv = unix_server(kind, path.name)
        with srv.connect() as s:
            assert request(s, b"version\r\n") == b"VERSION 1.6.18\r\n"


def test_other_file_in_the_way_fails_like_oracle(tmp_path):
    results = []
    for kind in ("oracle", "ours"):
        path = tmp_path / f"{kind}.sock"
        path.write_text("not a socket")
        proc = subprocess.run(
            [str(binary_for(kind)), "-u", "root", "-s", str(path)],
            capture_output=True, timeout=30,
        )
        assert path.read_text() == "not a socket"
        results.append((proc.returncode, proc.stderr.replace(str(path).encode(), b"PATH")))
    assert results[1] == results[0]
    assert results[1][0] == 71
    assert results[1][1].startswith(b"bind(): Address already in use\n")


def test_unix_socket_disables_tcp(unix_server):
    port = str(free_port())
    srv = unix_server("ours", "ours.sock", "-p", port, "-U", port)
    with srv.connect() as s:
        conns = stats_over(s, "conns")
    addrs = [v for k, v in conns.items() if k.endswith(":addr") or k.endswith(":listen_addr")]
    assert addrs and all(not a.startswith(("tcp", "udp")) for a in addrs), addrs


def test_vv_accept_trace_matches_oracle(unix_server):
    traces = []
    for kind in ("oracle", "ours"):
        srv = unix_server(kind, f"{kind}.sock", "-vv")
        with srv.connect() as s:
            request(s, b"version\r\n")
        # Two clients (the readiness probe and this one) have come and gone.
        assert srv.stderr.wait_for(
            lambda ls: sum(b"connection closed." in l for l in ls) == 2, 10
        )
        lines = [normalise_trace(l) for l in srv.stderr.lines() if not l.startswith(b"slab class")]
        traces.append(sorted(lines))
    assert traces[1] == traces[0]
    assert b"<FD new auto-negotiating client connection" in traces[1]


def test_pymemcache_over_unix_socket(unix_server):
    pymemcache = pytest.importorskip("pymemcache.client.base")
    srv = unix_server("ours", "ours.sock")
    client = pymemcache.Client(srv.path, timeout=10)
    try:
        assert client.set("k", b"value") is True
        assert client.get("k") == b"value"
        assert client.incr("n", 1) is None
        assert client.delete("k") is True
        assert client.get("k") is None
    finally:
        client.close()


def test_memcstat_over_unix_socket(unix_server):
    if shutil.which("memcstat") is None:
        pytest.skip("memcstat (libmemcached-tools) not installed")
    srv = unix_server("ours", "ours.sock")
    out = subprocess.run(
        ["memcstat", f"--servers={srv.path}"], capture_output=True, timeout=30, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "version: 1.6.18" in out.stdout
    assert "curr_connections: 1" in out.stdout
