"""Helpers shared by the scenario tests: starting servers, talking raw
text protocol over sockets, reading stats and RSS.

Every wait in here is a bounded poll loop on an observable condition
(a connect succeeding, a line appearing on stderr, a stat reaching a
value), never a fixed sleep used for synchronisation.
"""

import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

STARTUP_TIMEOUT = 10.0  # seconds a server may take to accept connections
IO_TIMEOUT = 10.0  # default socket timeout for a single reply

ORACLE_DEFAULT = "/usr/bin/memcached"


def ours_path():
    env = os.environ.get("MEMCACHED_BIN")
    if env:
        return Path(env)
    return REPO_ROOT / "target" / "debug" / "memcached"


def oracle_path():
    return Path(os.environ.get("MEMCACHED_ORACLE", ORACLE_DEFAULT))


def binary_for(kind):
    return ours_path() if kind == "ours" else oracle_path()


def have_ipv6_loopback():
    """Whether ::1 can be bound here (IPv6 tests skip without it)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listen_inodes_for_port(port):
    """Inodes of IPv4 sockets in LISTEN state on 127.0.0.1:port."""
    inodes = set()
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                local, state, inode = parts[1], parts[3], parts[9]
                if state != "0A":
                    continue
                _ip, p = local.split(":")
                if int(p, 16) == port:
                    inodes.add(inode)
    except OSError:
        pass
    return inodes


def _pid_owns_listener(pid, port):
    inodes = _listen_inodes_for_port(port)
    if not inodes:
        return False
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return True
    except OSError:
        return False
    return False


class StderrCollector:
    """Drains a process's stderr pipe in a thread (so the server can never
    block on a full pipe) and keeps every line."""

    def __init__(self, pipe):
        self._pipe = pipe
        self._lines = []
        self._partial = b""
        self._cond = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        fd = self._pipe.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self._cond:
                if not chunk:
                    if self._partial:
                        self._lines.append(self._partial)
                        self._partial = b""
                    self._eof = True
                    self._cond.notify_all()
                    return
                data = self._partial + chunk
                *complete, self._partial = data.split(b"\n")
                self._lines.extend(complete)
                self._cond.notify_all()

    def lines(self):
        with self._cond:
            return list(self._lines)

    def text(self):
        with self._cond:
            return b"\n".join(self._lines + [self._partial]).decode("utf-8", "replace")

    def wait_for(self, predicate, timeout):
        """Wait until predicate(lines) is true or timeout; returns the result."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if predicate(self._lines):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    return bool(predicate(self._lines))
                self._cond.wait(min(remaining, 0.2))

    def wait_eof(self, timeout):
        self._thread.join(timeout)
        return not self._thread.is_alive()


class Server:
    """A running memcached (ours or the oracle) on a free 127.0.0.1 port
    (or on `host`, another loopback address, for a second "machine")."""

    def __init__(self, kind, args=(), stdout=False, env=None, host="127.0.0.1"):
        self.kind = kind
        self.host = host
        self.bin = binary_for(kind)
        self.extra_args = list(args)
        last_err = ""
        for _attempt in range(6):
            self.port = free_port()
            self.args = [
                str(self.bin),
                "-u", "root", "-l", host, "-U", "0", "-p", str(self.port),
            ] + [a.replace("{port}", str(self.port)) for a in self.extra_args]
            self.proc = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=None if env is None else {**os.environ, **env},
            )
            self.pid = self.proc.pid
            self.stderr = StderrCollector(self.proc.stderr)
            err = self._wait_ready()
            if err is None:
                return
            last_err = (
                f"{kind} server {self.args} did not start: {err}\n"
                f"stderr:\n{self.stderr.text()}"
            )
            self.kill()
        raise RuntimeError(last_err)

    def _wait_ready(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            rc = self.proc.poll()
            if rc is not None:
                return f"exited with code {rc} before accepting connections"
            # The connect proves something listens on the port; the /proc
            # check proves it is *this* process (not a stranger that grabbed
            # the port between free_port() and the server's bind).
            if _pid_owns_listener(self.pid, self.port):
                try:
                    socket.create_connection((self.host, self.port), timeout=1).close()
                    return None
                except OSError:
                    pass
            if time.monotonic() > deadline:
                return f"not listening on {self.port} after {STARTUP_TIMEOUT}s"
            time.sleep(0.01)

    @property
    def addr(self):
        return (self.host, self.port)

    def alive(self):
        return self.proc.poll() is None

    def connect(self, timeout=IO_TIMEOUT):
        s = socket.create_connection(self.addr, timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def rss_kb(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stats(self, sub=None):
        with self.connect() as s:
            return stats_over(s, sub)

    def signal(self, sig):
        os.kill(self.pid, sig)

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.stderr.wait_eof(2)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    def describe(self):
        return f"{self.kind} ({' '.join(self.args)})"


# ---------------------------------------------------------------------------
# Raw protocol helpers
# ---------------------------------------------------------------------------


class Closed(Exception):
    """The peer closed the connection before the expected reply arrived."""

    def __init__(self, got):
        super().__init__(f"connection closed after {got[:200]!r}")
        self.got = got


def recv_until(sock, done, timeout=IO_TIMEOUT, initial=b""):
    """Read until done(buffer) is true. Raises Closed on EOF/reset,
    socket.timeout after `timeout` seconds overall."""
    buf = bytearray(initial)
    deadline = time.monotonic() + timeout
    while not done(buf):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout(f"timed out; got so far {bytes(buf[:300])!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(1 << 20)
        except ConnectionResetError:
            raise Closed(bytes(buf))
        if not chunk:
            raise Closed(bytes(buf))
        buf += chunk
    return bytes(buf)


def recv_all_until_close(sock, timeout=IO_TIMEOUT):
    """Read everything until EOF or reset; returns (data, how) with how in
    {'eof', 'reset'}."""
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout(f"no close; got so far {bytes(buf[:300])!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(buf), "reset"
        if not chunk:
            return bytes(buf), "eof"
        buf += chunk


def ends_with(suffix):
    return lambda b: bytes(b[-len(suffix):]) == suffix if len(b) >= len(suffix) else False


def line_reply(b):
    return b.endswith(b"\r\n")


def request(sock, data, done=line_reply, timeout=IO_TIMEOUT):
    sock.sendall(data)
    return recv_until(sock, done, timeout)


def first_reply_end(buf):
    """Length of the first complete retrieval reply (VALUE blocks + END, or
    one other line) at the start of buf, or -1 if it is not complete yet."""
    pos = 0
    n = len(buf)
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return -1
        line = bytes(buf[pos:eol])
        if line.startswith(b"VALUE "):
            parts = line.split()
            size = int(parts[3])
            pos = eol + 2 + size + 2
            if pos > n:
                return -1
            continue
        # END, or an error line.
        return eol + 2


def get_reply_done():
    """A retrieval reply is complete at END\\r\\n that is not inside a value
    (VALUE headers are parsed to skip data blocks), and nothing follows it."""
    return lambda buf: first_reply_end(buf) == len(buf)


def parse_values(reply):
    """Parse a get/gets reply into {key: (flags, data)}; asserts structure."""
    out = {}
    pos = 0
    while True:
        eol = reply.index(b"\r\n", pos)
        line = reply[pos:eol]
        if line == b"END":
            assert eol + 2 == len(reply), f"trailing bytes after END: {reply[eol + 2:][:100]!r}"
            return out
        assert line.startswith(b"VALUE "), f"unexpected line {line[:100]!r}"
        parts = line.split()
        key, flags, size = parts[1], int(parts[2]), int(parts[3])
        data = reply[eol + 2: eol + 2 + size]
        assert len(data) == size, f"short data for {key!r}"
        assert reply[eol + 2 + size: eol + 4 + size] == b"\r\n", f"bad data terminator for {key!r}"
        out[key] = (flags, data)
        pos = eol + 4 + size


def get(sock, *keys, timeout=IO_TIMEOUT):
    reply = request(sock, b"get " + b" ".join(keys) + b"\r\n", get_reply_done(), timeout)
    return parse_values(reply)


def stats_over(sock, sub=None):
    cmd = b"stats\r\n" if sub is None else b"stats " + sub.encode() + b"\r\n"
    reply = request(sock, cmd, ends_with(b"END\r\n"))
    out = {}
    for line in reply.split(b"\r\n"):
        if line.startswith(b"STAT "):
            _, k, v = line.split(b" ", 2)
            out[k.decode()] = v.decode()
    return out


def wait_stat(server, name, predicate, timeout=5.0, sock=None):
    """Poll `stats` until predicate(int(value)) holds; returns the last stats."""
    deadline = time.monotonic() + timeout
    while True:
        st = stats_over(sock) if sock is not None else server.stats()
        if predicate(int(st[name])):
            return st
        if time.monotonic() > deadline:
            return st
        time.sleep(0.01)


def wait_exit(proc, timeout):
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def settle_conns(ctl, expected=1, timeout=3.0):
    """Waits (bounded) until `stats` on the control socket `ctl` shows
    curr_connections == expected -- memcached's value when ctl is the only
    client (1 listener + 1 client - 1) -- so that earlier connections (the
    readiness probe) are known to be closed. Returns the value seen last:
    tests that are not about connection counting use it as their baseline,
    so an off-by-one in curr_connections does not mask what they test."""
    deadline = time.monotonic() + timeout
    while True:
        v = int(stats_over(ctl)["curr_connections"])
        if v == expected or time.monotonic() > deadline:
            return v
        time.sleep(0.01)


def pick(st, *names):
    """A few stats, for readable assertion messages."""
    return {n: st.get(n) for n in names}


TRACE_FD_RE = re.compile(rb"^([<>])\d+ |^\d+: ")


def normalise_trace(line):
    """A -v trace line with its fd number replaced, so traces of two
    servers (whose descriptors differ) compare line by line."""
    m = TRACE_FD_RE.match(line)
    if not m:
        return line
    if m.group(1):
        return m.group(1) + b"FD " + line[m.end():]
    return b"FD: " + line[m.end():]
