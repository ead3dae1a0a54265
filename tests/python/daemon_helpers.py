"""Helpers for servers that detach (-d) or are started by the packaged
start script: they are not our children, so they are found through their
pid files and stopped by pid. Every wait is a bounded poll loop."""

import os
import signal
import socket
import time

POLL = 0.02


def poll_until(predicate, timeout, what):
    """Calls `predicate` until it returns something truthy; fails the test
    with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL)


def read_pid(path):
    """The pid in a complete pid file (`<digits>\\n`), or None."""
    try:
        text = path.read_text()
    except OSError:
        return None
    return int(text) if text.endswith("\n") and text.strip().isdigit() else None


def pid_alive(pid):
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def answers(port):
    """True if a server on 127.0.0.1:port replies to `version`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"version\r\n")
            return s.recv(64).startswith(b"VERSION ")
    except OSError:
        return False


def wait_gone(pid, timeout=10):
    poll_until(lambda: not pid_alive(pid), timeout, f"pid {pid} to exit")


class Reaper:
    """Remembers the pids of detached servers a test started and kills
    those still alive at teardown."""

    def __init__(self):
        self.pids = []

    def track(self, pid):
        self.pids.append(pid)
        return pid

    def kill_all(self):
        for pid in self.pids:
            if pid_alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
