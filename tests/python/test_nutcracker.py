"""Scale-out behind twemproxy (Debian's `nutcracker`): three of our servers
on loopback behind one proxy with ketama consistent hashing. Keys spread
over all three; reads through the proxy return what was written; an
instance stopped and restarted empty loses its share of the keys and only
that share."""

import shutil
import signal
import socket
import subprocess

import pytest

from daemon_helpers import answers, poll_until
from mc_helpers import IO_TIMEOUT, free_port, get, line_reply, ours_path, request

KEYS = [f"user:{i}:profile".encode() for i in range(300)]


def value_of(key):
    return b"v-" + key


class Backend:
    """One of our servers on a fixed port (so a restart keeps its place)."""

    def __init__(self, name, port):
        self.name, self.port, self.proc = name, port, None

    def start(self):
        self.proc = subprocess.Popen(
            [str(ours_path()), "-u", "root", "-l", "127.0.0.1", "-U", "0",
             "-p", str(self.port), "-m", "16"],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        poll_until(lambda: self.proc.poll() is not None or answers(self.port), 10,
                   f"{self.name} on port {self.port}")
        assert self.proc.poll() is None, f"{self.name} exited"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=10) == 0
        self.proc = None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def keys_held(self, keys):
        with socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT) as s:
            return set(get(s, *keys))


def proxy_config(listen_port, backends):
    """A nutcracker pool: ketama over the backends' names (so a restarted
    backend keeps its points on the ring), no ejection (a down backend
    answers errors for its keys instead of moving them elsewhere)."""
    servers = "".join(f"   - 127.0.0.1:{b.port}:1 {b.name}\n" for b in backends)
    return (
        "cache:\n"
        f"  listen: 127.0.0.1:{listen_port}\n"
        "  hash: fnv1a_64\n"
        "  distribution: ketama\n"
        "  timeout: 2000\n"
        "  auto_eject_hosts: false\n"
        "  servers:\n" + servers
    )


@pytest.fixture
def cluster(tmp_path):
    if shutil.which("nutcracker") is None:
        pytest.fail("nutcracker is not installed (make deps installs it)")
    if not ours_path().is_file():
        pytest.fail(f"{ours_path()} not built")
    backends = [Backend(f"mc{i}", free_port()) for i in range(3)]
    proxy_port, stats_port = free_port(), free_port()
    conf = tmp_path / "nutcracker.yml"
    conf.write_text(proxy_config(proxy_port, backends))
    check = subprocess.run(["nutcracker", "-t", "-c", str(conf)], capture_output=True, timeout=10)
    assert check.returncode == 0, check.stderr.decode()
    proxy = None
    try:
        for b in backends:
            b.start()
        proxy = subprocess.Popen(
            ["nutcracker", "-c", str(conf), "-s", str(stats_port), "-a", "127.0.0.1",
             "-o", str(tmp_path / "nutcracker.log")],
            stdin=subprocess.DEVNULL,
        )
        poll_until(lambda: proxy.poll() is not None or answers_through(proxy_port), 10,
                   "nutcracker")
        assert proxy.poll() is None, (tmp_path / "nutcracker.log").read_text()
        yield proxy_port, backends
    finally:
        if proxy is not None:
            proxy.kill()
            proxy.wait()
        for b in backends:
            b.kill()


def answers_through(port):
    """nutcracker does not proxy `version`: a get of a missing key proves
    both the proxy and a backend answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"get no-such-key\r\n")
            return s.recv(64) == b"END\r\n"
    except OSError:
        return False


def get_one(sock, key):
    """The value of `key` through the proxy, None on a miss, "error" when
    the proxy reports its backend unreachable."""
    reply = request(sock, b"get " + key + b"\r\n", lambda b: b.endswith(b"END\r\n")
                    or (b.startswith(b"SERVER_ERROR") and line_reply(b)))
    if reply.startswith(b"SERVER_ERROR"):
        return "error"
    return parse_single(reply, key)


def parse_single(reply, key):
    if reply == b"END\r\n":
        return None
    header = b"VALUE " + key + b" 0 "
    assert reply.startswith(header), reply
    return reply[reply.index(b"\r\n") + 2: -len(b"\r\nEND\r\n")]


def test_ketama_spread_reads_and_losing_one_instance(cluster):
    proxy_port, backends = cluster
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=IO_TIMEOUT) as s:
        for key in KEYS:
            v = value_of(key)
            assert request(s, b"set %s 0 0 %d\r\n%s\r\n" % (key, len(v), v)) == b"STORED\r\n"

        # Every key landed on exactly one instance, and each got a share.
        held = {b.name: b.keys_held(KEYS) for b in backends}
        assert sorted(k for keys in held.values() for k in keys) == sorted(KEYS)
        for name, keys in held.items():
            assert len(keys) >= len(KEYS) // 10, f"{name} holds only {len(keys)} keys"

        # Reads through the proxy, one by one and as one multi-get that
        # the proxy splits over the three.
        assert all(get_one(s, k) == value_of(k) for k in KEYS)
        assert get(s, *KEYS[:100]) == {k: (0, value_of(k)) for k in KEYS[:100]}

        # One instance goes away: only its keys fail.
        lost, kept = backends[1], backends[0:1] + backends[2:]
        lost_keys = held[lost.name]
        lost.stop()
        for key in KEYS:
            got = get_one(s, key)
            assert got == ("error" if key in lost_keys else value_of(key)), key

        # It comes back empty at the same place on the ring: its keys are
        # misses, the others' are all still there.
        lost.start()
        sample = sorted(lost_keys)[0]
        poll_until(lambda: get_one(s, sample) is None, 10, "the proxy to reach the restarted instance")
        for key in KEYS:
            assert get_one(s, key) == (None if key in lost_keys else value_of(key)), key
        assert all(b.keys_held(KEYS) == held[b.name] for b in kept)
