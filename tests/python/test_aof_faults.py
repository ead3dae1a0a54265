"""The append-only file under faults: a disk that fills up (a small tmpfs
mounted by the test), a rewrite child killed, and kill -9 of the server at
each phase of a rewrite.

Each test keeps a model of the writes the server acknowledged and checks,
after a kill -9 and a restart without `aof_fix`, that none is lost.

The rewrite phases are reached with the server's test hook
`MEMCACHED_TEST_REWRITE_STALL=child|install|renamed` (src/persist/rewrite.rs),
which stops the rewrite there for a minute after saying so on stderr:
`child` is the snapshot writer with part of the snapshot on disk, `install`
the server with the new file complete but not renamed, `renamed` the server
right after the rename.
"""

import errno
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest

from mc_helpers import Closed, get, recv_all_until_close, request, stats_over

REFUSED = b"SERVER_ERROR aof write failed; writes refused\r\n"
VALUE = 4096  # each set needs pages of its own on the full tmpfs


def set_cmd(key, value):
    return b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value)


def value_of(n):
    return (b"%08d" % n) * (VALUE // 8)


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs at tmp_path/fs, unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs these as root)")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield mnt
    # The servers are killed by start_server's teardown; lazily in case a
    # descriptor is still open.
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt):
    """Fills the file system; returns the filler's path."""
    path = mnt / "filler"
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return path


class Reader(threading.Thread):
    """Reads one key over and over on its own connection, counting the
    answers and anything that was not the right value."""

    def __init__(self, srv, key, value):
        super().__init__(daemon=True)
        self.sock = srv.connect()
        self.key, self.value = key, value
        self.answered = 0
        self.wrong = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                got = get(self.sock, self.key)
            except Exception as e:  # noqa: BLE001 -- any failure counts
                self.wrong.append(repr(e))
                return
            if got.get(self.key, (0, None))[1] == self.value:
                self.answered += 1
            else:
                self.wrong.append(got)
            self.stop.wait(0.005)

    def finish(self):
        self.stop.set()
        self.join(10)
        self.sock.close()
        return self.answered, self.wrong


class Model:
    """The writes a server acknowledged, and a connection to make them."""

    def __init__(self, srv):
        self.srv = srv
        self.sock = srv.connect()
        self.acked = {}
        self.n = 0
        self.closed = 0

    def set(self):
        """One set of a fresh key: 'stored' or 'refused'."""
        key = b"k:%d" % self.n
        value = value_of(self.n)
        self.n += 1
        try:
            reply = request(self.sock, set_cmd(key, value))
        except (Closed, ConnectionError):
            # Closed after the error that answered the first write which
            # failed under `always`: this set never ran; again, anew.
            self.closed += 1
            self.sock = self.srv.connect()
            reply = request(self.sock, set_cmd(key, value))
        if reply == b"STORED\r\n":
            self.acked[key] = value
            return "stored"
        assert reply == REFUSED, reply
        return "refused"

    def set_until(self, outcome, timeout):
        """Sets until one gets `outcome`, 100 a second at most (pacing: the
        grace must not fill the cache's memory and evict the model)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.set()
            if got == outcome:
                return
            assert time.monotonic() < deadline, f"no {outcome} in {timeout} s"
            time.sleep(0.01)

    def missing_from(self, srv):
        missing = []
        keys = list(self.acked)
        with srv.connect() as s:
            for i in range(0, len(keys), 50):
                got = get(s, *keys[i:i + 50])
                for k in keys[i:i + 50]:
                    if k not in got:
                        missing.append(k)
                    else:
                        assert got[k][1] == self.acked[k]
        return missing


def binary_set(key, value):
    extras = struct.pack(">II", 0, 0)
    body = extras + key + value
    return struct.pack(
        ">BBHBBHIIQ", 0x80, 0x01, len(key), len(extras), 0, 0, len(body), 0xABCD, 0
    ) + body


def failure_lines(srv):
    return [
        line for line in srv.stderr.text().splitlines()
        if re.search(r"AOF (write|sync|retry) failed", line)
    ]


@pytest.mark.parametrize("policy", ["always", "everysec", "no"])
def test_a_full_disk_refuses_writes_serves_reads_and_loses_nothing(
    start_server, small_fs, tmp_path, policy
):
    path = small_fs / "a.aof"
    opts = ("-o", f"aof={path},aof_sync={policy},aof_rewrite_pct=0")
    srv = start_server("ours", *opts)
    m = Model(srv)
    for _ in range(20):
        assert m.set() == "stored"
    reader = Reader(srv, b"k:3", value_of(3))
    reader.start()
    filler = fill(small_fs)

    # The disk is full: writes are refused, at once (always) or after the
    # grace (everysec, no), during which they are still acknowledged.
    started = time.monotonic()
    m.set_until("refused", timeout=10)
    if policy == "always":
        assert time.monotonic() - started < 1.5
    else:
        assert time.monotonic() - started >= 1.5, "refused within the grace"
    for _ in range(5):
        assert m.set() == "refused"
    # Under `always` the first failed write's reply became the error and
    # its connection closed (what followed it in the pipeline could not be
    # answered in order); later ones are refused before they change
    # anything, on a connection that stays open.
    assert m.closed == (1 if policy == "always" else 0)

    # Reads are answered throughout; stats say what is going on.
    with srv.connect() as s:
        got = get(s, b"k:0", b"k:19")
        assert got[b"k:0"][1] == value_of(0)
        assert got[b"k:19"][1] == value_of(19)
        st = stats_over(s)
        assert st["aof_last_write_status"] == "err"
        assert st["aof_refusing_writes"] == "1"
        assert int(st["aof_write_errors"]) >= 1
        assert int(st["aof_last_write_errno"]) == errno.ENOSPC
        # meta and binary are refused too, with nothing changed.
        assert request(s, b"ms m:1 1\r\nx\r\n") == REFUSED
        assert request(s, b"md k:0\r\n") == REFUSED
        assert request(s, b"delete k:1\r\n") == REFUSED
        assert request(s, b"incr k:1 1\r\n") == REFUSED
        assert request(s, b"mg k:1 s\r\n") == b"HD s%d\r\n" % VALUE
        with srv.connect() as b:
            b.sendall(binary_set(b"b:1", b"v"))
            head = b.recv(24, socket.MSG_WAITALL)
            magic, opcode, _, _, _, status, bodylen, opaque = struct.unpack(
                ">BBHBBHII", head[:16]
            )
            assert (magic, opcode, status, opaque) == (0x81, 0x01, 0x0084, 0xABCD)
            assert b.recv(bodylen, socket.MSG_WAITALL) == b"aof write failed; writes refused"
        assert get(s, b"m:1", b"b:1", b"k:0").keys() == {b"k:0"}

    # The file as it stands replays without aof_fix.
    copy = tmp_path / "copy.aof"
    shutil.copy(path, copy)
    probe = start_server("ours", "-o", f"aof={copy}")
    if policy == "always":
        assert m.missing_from(probe) == []
    probe.kill()

    # Space comes back: writes are accepted again within the retry.
    filler.unlink()
    m.set_until("stored", timeout=3)
    for _ in range(10):
        assert m.set() == "stored"
    st = srv.stats()
    assert st["aof_last_write_status"] == "ok"
    assert st["aof_refusing_writes"] == "0"
    # Reads were answered, right, all the way through.
    answered, wrong = reader.finish()
    assert wrong == [] and answered > 50, (answered, wrong)
    text = srv.stderr.text()
    assert len(failure_lines(srv)) == 1, text
    assert "succeed again" in text
    if policy != "always":
        assert "refusing writes until it succeeds again" in text

    # Nothing acknowledged is lost across kill -9, and no aof_fix needed.
    srv.kill()
    again = start_server("ours", *opts)
    assert m.missing_from(again) == []
    assert len(m.acked) >= 30


def test_always_refuses_a_whole_pipeline_whose_write_failed(start_server, small_fs):
    """The turn whose write fails: none of its sets is acknowledged, the
    client gets the error and the connection closes; a reader on another
    connection is not disturbed."""
    path = small_fs / "p.aof"
    opts = ("-o", f"aof={path},aof_sync=always,aof_rewrite_pct=0")
    srv = start_server("ours", *opts)
    m = Model(srv)
    assert m.set() == "stored"
    fill(small_fs)
    with srv.connect() as s, srv.connect() as other:
        batch = [(b"p:%d" % i, value_of(i)) for i in range(5)]
        s.sendall(b"".join(set_cmd(k, v) for k, v in batch) + b"get k:0\r\n")
        assert recv_all_until_close(s) == (REFUSED, "eof")
        assert get(other, b"k:0")[b"k:0"][1] == value_of(0)
        assert request(other, set_cmd(b"q", b"v")) == REFUSED
    srv.kill()
    again = start_server("ours", *opts)
    assert m.missing_from(again) == []
    with again.connect() as s:
        assert get(s, *[b"p:%d" % i for i in range(5)]) == {}


def test_udp_gets_no_reply_for_a_failed_write_then_the_error(start_server, small_fs):
    from test_udp import UDP_OPTS, UdpClient, frame

    path = small_fs / "u.aof"
    opts = ("-o", f"aof={path},aof_sync=always,aof_rewrite_pct=0", *UDP_OPTS)
    srv = start_server("ours", *opts)
    udp = UdpClient(srv.port)
    try:
        fill(small_fs)
        acked, silent = {}, 0
        for n in range(200):
            key, value = b"u:%d" % n, b"%04d" % n * 300
            got = udp.exchange(frame(n, set_cmd(key, value)))
            replies = [d[8:] for d in got]
            if replies == [b"STORED\r\n"]:
                assert silent == 0, "stored after a failed write"
                acked[key] = value
            elif replies == []:
                silent += 1  # the write that failed: no reply at all
            else:
                assert replies == [REFUSED]
                break
        assert silent == 1
        assert [d[8:] for d in udp.exchange(frame(1, b"get u:0\r\n"))][-1].endswith(b"END\r\n")
    finally:
        udp.close()
    srv.kill()
    again = start_server("ours", *opts[:2])
    with again.connect() as s:
        got = get(s, *acked) if acked else {}
        assert {k: v[1] for k, v in got.items()} == acked


def test_a_file_size_limit_is_survived_like_a_full_disk(start_server, tmp_path):
    """RLIMIT_FSIZE, set on the running server: the write that crosses it
    is short, then EFBIG (not SIGXFSZ, which would kill the server)."""
    import resource

    path = tmp_path / "f.aof"
    opts = ("-o", f"aof={path},aof_sync=always,aof_rewrite_pct=0")
    srv = start_server("ours", *opts)
    m = Model(srv)
    for _ in range(10):
        assert m.set() == "stored"
    limit = path.stat().st_size + 3 * VALUE
    # The soft limit only: raising a hard one back needs CAP_SYS_RESOURCE.
    soft, hard = resource.prlimit(srv.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(srv.pid, resource.RLIMIT_FSIZE, (limit, hard))
    m.set_until("refused", timeout=5)
    assert srv.alive()
    assert path.stat().st_size < limit, "the torn record was cut off"
    st = srv.stats()
    assert int(st["aof_last_write_errno"]) == errno.EFBIG
    assert st["aof_refusing_writes"] == "1"
    resource.prlimit(srv.pid, resource.RLIMIT_FSIZE, (soft, hard))
    m.set_until("stored", timeout=3)
    srv.kill()
    again = start_server("ours", *opts)
    assert m.missing_from(again) == []


def test_a_rewrite_on_a_full_disk_fails_keeps_the_old_file_and_serving(
    start_server, small_fs
):
    path = small_fs / "r.aof"
    opts = ("-o", f"aof={path},aof_sync=always,aof_rewrite_min=1m,aof_rewrite_pct=100")
    srv = start_server("ours", *opts)
    # Leave 1.6 MiB: room for the file to pass 1 MiB (which starts the
    # rewrite), not for a 1 MiB snapshot beside it.
    with open(small_fs / "filler", "wb") as f:
        f.write(b"\0" * (4 * 1024 * 1024 - 1_600_000))
    m = Model(srv)
    while path.stat().st_size < 1024 * 1024:
        assert m.set() == "stored"
    with srv.connect() as s:
        deadline = time.monotonic() + 10
        while int(stats_over(s)["aof_rewrite_failures"]) == 0:
            assert time.monotonic() < deadline, srv.stderr.text()
            time.sleep(0.05)
        st = stats_over(s)
        assert st["aof_rewrite_in_progress"] == "0"
        assert int(st["aof_rewrites"]) == 0
        assert get(s, b"k:0")[b"k:0"][1] == value_of(0)
    assert "AOF rewrite failed, keeping the old file" in srv.stderr.text()
    assert not (small_fs / "r.aof.rewrite").exists()
    # The old file is in use and takes writes.
    for _ in range(5):
        assert m.set() == "stored"
    srv.kill()
    again = start_server("ours", *opts)
    assert m.missing_from(again) == []


def children_of(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def start_stalled(start_server, path, phase):
    return start_server(
        "ours", "-o", f"aof={path},aof_sync=always,aof_rewrite_min=2m,aof_rewrite_pct=100",
        env={"MEMCACHED_TEST_REWRITE_STALL": phase},
    )


def load_until_stall(srv, path, m, phase):
    """Sets keys until the file passes aof_rewrite_min (the reply to the
    set that passed it comes after the fork), then waits for the rewrite
    to reach `phase`."""
    while path.stat().st_size < 2 * 1024 * 1024:
        assert m.set() == "stored"
    assert srv.stderr.wait_for(
        lambda lines: any(b"test stall: " + phase.encode() in l for l in lines), 15
    ), srv.stderr.text()


def test_a_killed_rewrite_child_is_counted_and_retried(start_server, tmp_path):
    path = tmp_path / "k.aof"
    srv = start_stalled(start_server, path, "child")
    m = Model(srv)
    load_until_stall(srv, path, m, "child")
    (child,) = children_of(srv.pid)
    os.kill(child, 9)
    with srv.connect() as s:
        deadline = time.monotonic() + 5
        while int(stats_over(s)["aof_rewrite_failures"]) != 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert stats_over(s)["aof_rewrite_in_progress"] == "0"
    for _ in range(20):
        assert m.set() == "stored"
    assert "next attempt in 5 s" in srv.stderr.text()
    # Tried again after the back-off (and stalled again by the hook).
    assert srv.stderr.wait_for(
        lambda lines: sum(b"test stall: child" in l for l in lines) == 2, 10
    ), srv.stderr.text()
    for pid in children_of(srv.pid):
        os.kill(pid, 9)
    srv.kill()
    again = start_server("ours", "-o", f"aof={path}")
    assert m.missing_from(again) == []


@pytest.mark.parametrize("phase", ["child", "install", "renamed"])
def test_kill_9_at_each_phase_of_a_rewrite_loses_nothing(start_server, tmp_path, phase):
    path = tmp_path / "p.aof"
    srv = start_stalled(start_server, path, phase)
    m = Model(srv)
    load_until_stall(srv, path, m, phase)
    if phase == "child":
        # The server goes on while its child writes: these reach both files.
        for _ in range(50):
            assert m.set() == "stored"
    children = children_of(srv.pid)
    srv.kill()
    for pid in children:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    again = start_server("ours", "-o", f"aof={path}")
    assert m.missing_from(again) == []
    assert not os.path.exists(str(path) + ".rewrite")
    st = again.stats()
    assert int(st["curr_items"]) == len(m.acked)
