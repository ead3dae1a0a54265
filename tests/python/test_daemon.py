"""Process life cycle against the oracle: -d with a -P pid file (written
once listening, removed at a clean exit only by a daemon), SIGHUP ignored,
and -k when the locked-memory limit cannot hold the cache."""

import os
import resource
import signal
import socket
import subprocess

import pytest

from daemon_helpers import Reaper, answers, pid_alive, poll_until, read_pid, wait_gone
from mc_helpers import binary_for, free_port, get, request

BASE = ["-u", "root", "-l", "127.0.0.1", "-U", "0"]


@pytest.fixture
def reaper():
    r = Reaper()
    yield r
    r.kill_all()


@pytest.fixture
def binary(kind):
    path = binary_for(kind)
    if not path.is_file():
        pytest.skip(f"{path} is not there")
    return str(path)


def start_daemon(binary, reaper, pid_file, *extra):
    """Starts `binary -d -P pid_file` on a free port; returns (pid, port)."""
    port = free_port()
    out = subprocess.run(
        [binary, "-d", *BASE, "-p", str(port), "-P", str(pid_file), *extra],
        capture_output=True,
        timeout=10,
    )
    # The parent returns as soon as the child detached.
    assert out.returncode == 0, out.stderr
    pid = reaper.track(poll_until(lambda: read_pid(pid_file), 10, "the pid file"))
    poll_until(lambda: answers(port), 10, f"the daemon on port {port}")
    return pid, port


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_daemon_removes_its_pid_file_at_exit(binary, reaper, tmp_path, sig):
    pid_file = tmp_path / "memcached.pid"
    pid, _port = start_daemon(binary, reaper, pid_file)
    assert pid_alive(pid)
    assert not (tmp_path / "memcached.pid.tmp").exists()
    os.kill(pid, sig)
    wait_gone(pid)
    assert not pid_file.exists()


def test_foreground_server_leaves_its_pid_file(binary, tmp_path):
    pid_file = tmp_path / "memcached.pid"
    port = free_port()
    proc = subprocess.Popen(
        [binary, *BASE, "-p", str(port), "-P", str(pid_file)],
        stderr=subprocess.DEVNULL,
    )
    try:
        assert poll_until(lambda: read_pid(pid_file), 10, "the pid file") == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert read_pid(pid_file) == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_no_pid_file_when_the_port_is_taken(binary, tmp_path):
    pid_file = tmp_path / "memcached.pid"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [binary, *BASE, "-p", str(port), "-P", str(pid_file)],
            capture_output=True,
            timeout=10,
        )
    assert out.returncode != 0
    assert b"Address already in use" in out.stderr
    assert not pid_file.exists()


@pytest.mark.parametrize("detached", [False, True], ids=["foreground", "daemon"])
def test_sighup_is_ignored(binary, reaper, tmp_path, detached):
    if detached:
        pid, port = start_daemon(binary, reaper, tmp_path / "memcached.pid")
        proc = None
    else:
        port = free_port()
        proc = subprocess.Popen([binary, *BASE, "-p", str(port)], stderr=subprocess.DEVNULL)
        pid = proc.pid
        poll_until(lambda: answers(port), 10, "the server")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            assert request(s, b"set k 0 0 1\r\nv\r\n") == b"STORED\r\n"
            os.kill(pid, signal.SIGHUP)
            # A request after the signal is answered, with the data intact.
            assert get(s, b"k") == {b"k": (0, b"v")}
        assert pid_alive(pid)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def small_memlock_limit():
    limit = 8 << 20
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (limit, limit))


def test_lock_memory_beyond_the_memlock_limit_warns_and_serves(binary, kind):
    """-k with a cache larger than RLIMIT_MEMLOCK allows (as an unprivileged
    user): memcached warns and serves; so must we."""
    port = free_port()
    proc = subprocess.Popen(
        [binary, "-u", "nobody", "-l", "127.0.0.1", "-U", "0", "-p", str(port),
         "-m", "64", "-k"],
        stderr=subprocess.PIPE,
        preexec_fn=small_memlock_limit,
    )
    try:
        poll_until(lambda: proc.poll() is not None or answers(port), 10, "the server")
        assert proc.poll() is None, proc.stderr.read()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            assert request(s, b"set k 0 0 3\r\nabc\r\n") == b"STORED\r\n"
            assert get(s, b"k") == {b"k": (0, b"abc")}
    finally:
        proc.kill()
        proc.wait()
        warnings = proc.stderr.read()
    assert warnings.startswith(b"warning: -k")


def test_lock_memory_locks_pages_as_they_are_used(start_server):
    """-k locks the arena on fault: an idle server does not hold all of -m
    in RAM (with MCL_FUTURE alone, the 64 MB arena would be resident)."""
    srv = start_server("ours", "-m", "64", "-k")
    status = open(f"/proc/{srv.pid}/status").read()
    locked_kb = int(status.split("VmLck:")[1].split()[0])
    if locked_kb == 0:
        pytest.skip("mlockall failed here (no CAP_IPC_LOCK, small limit)")
    assert srv.rss_kb() < 32 * 1024
