"""Socket activation: `systemd-socket-activate` (Debian's systemd package)
opens the sockets and starts our server on them with LISTEN_FDS and
LISTEN_PID, as systemd does for packaging/memcached.socket.

- TCP and unix stream sockets are served as memcached ports, a datagram
  socket as the UDP port, and one named "metrics" as /metrics;
- a restart through the held socket (warm restart with -e, or the AOF)
  keeps the listening socket: a client that connects while no server runs
  waits in its backlog and is served, with its data, by the next server;
- variables meant for another process (LISTEN_PID not ours) are ignored.

For restarts, tests/python/activation_supervisor.py sits between
systemd-socket-activate and the server, holding the sockets as systemd's
PID 1 holds a .socket unit's, and starting the server again when it exits.
"""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from daemon_helpers import poll_until, read_pid, wait_gone
from mc_helpers import IO_TIMEOUT, free_port, get, ours_path, request, stats_over

ACTIVATE = shutil.which("systemd-socket-activate")
SUPERVISOR = os.path.join(os.path.dirname(__file__), "activation_supervisor.py")

pytestmark = pytest.mark.skipif(
    ACTIVATE is None, reason="systemd-socket-activate missing (apt-get install systemd)"
)


class Activated:
    """systemd-socket-activate with `listen` sockets, running `command`."""

    def __init__(self, listen, command, datagram=False, names=None, env=None, accept=False):
        args = [ACTIVATE] + (["--accept"] if accept else [])
        for addr in listen:
            args += ["-l", addr]
        if datagram:
            args.append("-d")
        if names:
            args.append("--fdname=" + ":".join(names))
        for k, v in (env or {}).items():
            args += ["-E", f"{k}={v}"]
        self.proc = subprocess.Popen(
            args + list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.stderr = b""

    def stop(self):
        if self.proc.stderr.closed:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr = self.proc.stderr.read()
        self.proc.stderr.close()


@pytest.fixture
def activated():
    started = []

    def start(*args, **kw):
        a = Activated(*args, **kw)
        started.append(a)
        return a

    yield start
    for a in started:
        a.stop()


def server(*opts):
    return [str(ours_path()), "-u", "root", *opts]


def connect_tcp(port, timeout=IO_TIMEOUT):
    """The activator listens from the start: poll only until it does."""
    return poll_until(
        lambda: _try(lambda: socket.create_connection(("127.0.0.1", port), timeout=timeout)),
        10,
        f"a listener on {port}",
    )


def _try(f):
    try:
        return f()
    except OSError:
        return None


def test_tcp_and_unix_sockets_are_served_in_their_roles(activated, tmp_path):
    port = free_port()
    path = str(tmp_path / "mc.sock")
    a = activated([f"127.0.0.1:{port}", path], server("-vv"))
    with connect_tcp(port) as s:
        assert request(s, b"set k 0 0 2\r\nhi\r\n") == b"STORED\r\n"
        conns = request(s, b"stats conns\r\n", lambda b: b.endswith(b"END\r\n"))
    assert f"STAT 3:addr tcp:127.0.0.1:{port}\r\n".encode() in conns
    assert f"STAT 4:addr unix:{path}"[:35].encode() in conns
    assert b"STAT 3:state conn_listening" in conns
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.settimeout(IO_TIMEOUT)
    u.connect(path)
    with u:
        assert get(u, b"k") == {b"k": (0, b"hi")}
    # The server is the activator, exec'd: same pid.
    os.kill(a.proc.pid, signal.SIGTERM)
    a.proc.wait(timeout=10)
    a.stop()
    assert b"<3 server listening (" in a.stderr
    assert b"<4 server listening (" in a.stderr
    # The socket file is the activator's: the server leaves it in place.
    assert os.path.exists(path)
    # Not bound by -l: no warning about listening on every interface.
    assert b"WARNING" not in a.stderr


def test_a_datagram_socket_is_the_udp_port(activated):
    port = free_port()
    activated([f"127.0.0.1:{port}"], server(), datagram=True)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(0.2)
    deadline = time.monotonic() + 10
    with u:
        # The first datagram that finds the socket bound wakes the
        # activator; it stays queued for the server, which answers it.
        # (One sent before the activator has bound is lost: sent again.)
        for request_id in range(1, 1000):
            assert time.monotonic() < deadline, "no reply over UDP"
            header = bytes([0, request_id % 256, 0, 0, 0, 1, 0, 0])
            u.sendto(header + b"version\r\n", ("127.0.0.1", port))
            try:
                reply, _ = u.recvfrom(2048)
                break
            except (TimeoutError, ConnectionRefusedError):
                continue
    assert reply[2:] == b"\x00\x00\x00\x01\x00\x00VERSION 1.6.18\r\n"


def test_a_socket_named_metrics_serves_metrics(activated):
    port, mport = free_port(), free_port()
    activated(
        [f"127.0.0.1:{port}", f"127.0.0.1:{mport}"],
        server(),
        names=["memcached", "metrics"],
    )
    with connect_tcp(port) as s:
        assert request(s, b"version\r\n") == b"VERSION 1.6.18\r\n"
    with connect_tcp(mport) as h:
        h.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := h.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\nmemcached_up 1\n" in reply


class Supervised:
    """The server under activation_supervisor.py, behind the activator."""

    def __init__(self, activated, tmp_path, opts):
        self.port = free_port()
        self.pid_file = tmp_path / "server.pid"
        self.go_file = tmp_path / "go"
        command = ["python3", SUPERVISOR, str(self.pid_file), str(self.go_file)]
        self.activator = activated(
            [f"127.0.0.1:{self.port}"], command + server(*opts)
        )

    def pid(self):
        return poll_until(lambda: read_pid(self.pid_file), 10, "the server's pid file")

    def restart(self, sig, between):
        """Stops the server with `sig`; runs `between()` while none runs;
        lets the supervisor start the next one; returns between()'s value."""
        old = self.pid()
        os.kill(old, sig)
        wait_gone(old)
        value = between()
        self.go_file.write_text("go\n")
        poll_until(lambda: (read_pid(self.pid_file) or old) != old, 10, "a new server")
        return value


def restart_keeps_the_socket(activated, tmp_path, opts, sig):
    sup = Supervised(activated, tmp_path, opts)
    with connect_tcp(sup.port) as s:
        for i in range(100):
            assert request(s, b"set key%d 0 0 3\r\nv%02d\r\n" % (i, i)) == b"STORED\r\n"

    def connect_while_down():
        # No server process runs now; the socket is still held open by the
        # supervisor, so the kernel completes the handshake and queues us.
        c = socket.create_connection(("127.0.0.1", sup.port), timeout=IO_TIMEOUT)
        c.sendall(b"get key7 key99\r\n")
        return c

    waiting = sup.restart(sig, connect_while_down)
    with waiting:
        reply = request(waiting, b"", lambda b: b.endswith(b"END\r\n"))
    assert reply == b"VALUE key7 0 3\r\nv07\r\nVALUE key99 0 3\r\nv99\r\nEND\r\n"
    with connect_tcp(sup.port) as s:
        st = stats_over(s)
        assert st["curr_items"] == "100"
    return sup


def test_warm_restart_through_the_held_socket_refuses_no_client(activated, tmp_path):
    opts = ["-e", str(tmp_path / "cache.mem"), "-m", "64"]
    restart_keeps_the_socket(activated, tmp_path, opts, signal.SIGUSR1)


def test_aof_restart_through_the_held_socket_refuses_no_client(activated, tmp_path):
    opts = ["-o", f"aof={tmp_path / 'cache.aof'}", "-m", "64"]
    restart_keeps_the_socket(activated, tmp_path, opts, signal.SIGTERM)


def test_without_a_held_socket_the_same_gap_refuses(start_server):
    # The contrast: a server that bound its own port takes it with it.
    srv = start_server("ours")
    srv.signal(signal.SIGTERM)
    srv.proc.wait(timeout=10)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(srv.addr, timeout=IO_TIMEOUT)


def test_variables_for_another_process_are_ignored(start_server):
    # LISTEN_PID names init: the variables leaked from some parent. The
    # server binds its own -p as usual and touches no descriptor 3.
    srv = start_server("ours", env={"LISTEN_PID": "1", "LISTEN_FDS": "2"})
    with srv.connect() as s:
        assert request(s, b"version\r\n") == b"VERSION 1.6.18\r\n"
    assert b"inherited" not in srv.stderr.text().encode()


def test_many_restarts_lose_no_connection(activated, tmp_path):
    """Clients connect continuously while the server restarts five times:
    none is refused, every one is answered."""
    sup = Supervised(activated, tmp_path, ["-e", str(tmp_path / "m.mem"), "-m", "64"])
    with connect_tcp(sup.port) as s:
        assert request(s, b"set k 0 0 1\r\nx\r\n") == b"STORED\r\n"
    answered = 0
    for _ in range(5):
        def some_clients():
            return [connect_and_ask(sup.port) for _ in range(3)]

        for c in sup.restart(signal.SIGUSR1, some_clients):
            with c:
                assert request(c, b"", lambda b: b.endswith(b"END\r\n")) == (
                    b"VALUE k 0 1\r\nx\r\nEND\r\n"
                )
                answered += 1
    assert answered == 15


def connect_and_ask(port):
    c = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    c.sendall(b"get k\r\n")
    return c


def test_inherited_sockets_publish_their_ports(activated, tmp_path):
    port = free_port()
    port_file = tmp_path / "ports"
    activated(
        [f"127.0.0.1:{port}"],
        server(),
        env={"MEMCACHED_PORT_FILENAME": str(port_file)},
    )
    with connect_tcp(port):
        pass
    text = poll_until(lambda: port_file.exists() and port_file.read_text(), 10, "the port file")
    assert text == f"TCP INET: {port}\n"


def test_a_socket_on_the_metrics_port_serves_metrics(activated):
    port, mport = free_port(), free_port()
    activated([f"127.0.0.1:{port}", f"127.0.0.1:{mport}"], server(f"--metrics-port={mport}"))
    with connect_tcp(mport) as h:
        h.sendall(b"GET /nothing HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert h.recv(100).startswith(b"HTTP/1.1 404 Not Found\r\n")
    with connect_tcp(port) as s:
        assert request(s, b"version\r\n") == b"VERSION 1.6.18\r\n"


def test_accept_yes_connections_are_refused_with_a_reason(activated):
    """systemd's Accept=yes hands over one connection, not a listener:
    the server says so and does not start."""
    port = free_port()
    a = activated([f"127.0.0.1:{port}"], server(), accept=True)
    with connect_tcp(port) as c:
        c.settimeout(IO_TIMEOUT)
        assert c.recv(100) == b""  # closed: the server exited
    a.stop()
    assert b"inherited descriptor 3 is a connection, not a socket to listen on" in a.stderr
    assert b"LISTEN_FDS gave no TCP, UDP or unix socket to serve" in a.stderr
