"""The append-only file (-o aof=PATH): kill -9 mid-load and restart, torn
and corrupt files, a rewrite while clients write, TTLs and flush_all
across restarts, recovery into a smaller memory limit.

A note on what kill -9 proves: it kills the process, not the machine, so
bytes already handed to write() survive in the page cache whatever the
sync policy. These tests therefore check what the process is responsible
for -- with every policy a mutation's record is written before its reply
leaves -- not the fdatasync itself (which only a machine crash tests).
"""

import os
import re
import struct
import threading
import time

import pytest

from mc_helpers import get, request, stats_over, wait_exit

MAGIC = b"MCAOF01\n"


def start_aof(start_server, path, *opts):
    return start_server("ours", "-o", f"aof={path}", *opts)


def set_cmd(key, value, exptime=0, flags=0):
    return b"set %s %d %d %d\r\n%s\r\n" % (key, flags, exptime, len(value), value)


def store(sock, key, value, exptime=0):
    assert request(sock, set_cmd(key, value, exptime)) == b"STORED\r\n"


def record_offsets(path):
    """Start offset and length of every record in an AOF file."""
    data = open(path, "rb").read()
    assert data[:8] == MAGIC
    pos, out = 8, []
    while pos + 8 <= len(data):
        (n,) = struct.unpack_from("<I", data, pos)
        out.append((pos, 8 + n))
        pos += 8 + n
    return out


def stderr_says(srv, pattern, timeout=5):
    """Waits (bounded) for a stderr line matching the regex `pattern`."""
    return srv.stderr.wait_for(
        lambda lines: any(re.search(pattern, line.decode()) for line in lines), timeout
    )


def stop_gracefully(srv):
    srv.signal(15)
    assert wait_exit(srv.proc, 10) == 0


class Writer(threading.Thread):
    """Sets key<prefix>:<n> = value<n> as fast as replies come back,
    pipelining `depth` sets per round trip; remembers when each was
    acknowledged."""

    def __init__(self, srv, prefix, depth=1):
        super().__init__(daemon=True)
        self.sock = srv.connect()
        self.prefix = prefix
        self.depth = depth
        self.acked = {}  # key -> (value, monotonic ack time)
        self.stop = False
        self.n = 0

    def run(self):
        try:
            while not self.stop:
                batch = []
                for _ in range(self.depth):
                    key = b"%s:%d" % (self.prefix, self.n)
                    batch.append((key, b"value-%d" % self.n))
                    self.n += 1
                data = b"".join(set_cmd(k, v) for k, v in batch)
                reply = request(
                    self.sock, data, lambda b: b.count(b"\r\n") >= len(batch)
                )
                now = time.monotonic()
                assert reply == b"STORED\r\n" * len(batch)
                for k, v in batch:
                    self.acked[k] = (v, now)
        except Exception:
            # The server was killed under us: what was acknowledged counts.
            pass


def run_writers_then_kill(srv, writers, at_least):
    for w in writers:
        w.start()
    deadline = time.monotonic() + 20
    while sum(len(w.acked) for w in writers) < at_least:
        assert time.monotonic() < deadline, "writers made no progress"
        time.sleep(0.01)
    srv.kill()
    killed_at = time.monotonic()
    for w in writers:
        w.stop = True
        w.join(10)
    return killed_at


def missing_after_restart(srv, writers):
    missing = []
    with srv.connect() as s:
        for w in writers:
            items = list(w.acked.items())
            for i in range(0, len(items), 100):
                chunk = items[i : i + 100]
                got = get(s, *[k for k, _ in chunk])
                for k, (v, t) in chunk:
                    if k not in got:
                        missing.append((k, t))
                    else:
                        assert got[k][1] == v
    return missing


def test_always_keeps_every_acknowledged_write_through_kill_9(start_server, tmp_path):
    path = tmp_path / "a.aof"
    srv = start_aof(start_server, path, "-o", "aof_sync=always")
    writers = [Writer(srv, b"w%d" % i, depth=1 + 7 * (i % 2)) for i in range(4)]
    run_writers_then_kill(srv, writers, at_least=3000)
    acked = sum(len(w.acked) for w in writers)
    again = start_aof(start_server, path)
    assert missing_after_restart(again, writers) == []
    st = again.stats()
    assert int(st["aof_recovered_items"]) >= acked
    assert st["aof_enabled"] == "1"


@pytest.mark.parametrize("policy", ["everysec", "no"])
def test_without_always_a_killed_process_still_loses_nothing_acknowledged(
    start_server, tmp_path, policy
):
    # everysec may lose up to a second to a machine crash; to a process
    # crash it loses nothing that was acknowledged (and a fortiori nothing
    # older than a second).
    path = tmp_path / "e.aof"
    srv = start_aof(start_server, path, "-o", f"aof_sync={policy}")
    writers = [Writer(srv, b"e%d" % i, depth=4) for i in range(2)]
    run_writers_then_kill(srv, writers, at_least=3000)
    again = start_aof(start_server, path)
    assert missing_after_restart(again, writers) == []


def test_every_mutation_kind_survives_a_restart(start_server, tmp_path):
    path = tmp_path / "m.aof"
    srv = start_aof(start_server, path, "-o", "aof_sync=no")
    with srv.connect() as s:
        store(s, b"a", b"hello")
        assert request(s, b"append a 0 0 3\r\n!!!\r\n") == b"STORED\r\n"
        assert request(s, b"prepend a 0 0 1\r\n>\r\n") == b"STORED\r\n"
        store(s, b"n", b"10")
        assert request(s, b"incr n 5\r\n") == b"15\r\n"
        assert request(s, b"decr n 20\r\n") == b"0\r\n"
        store(s, b"gone", b"x")
        assert request(s, b"delete gone\r\n") == b"DELETED\r\n"
        store(s, b"t", b"x", exptime=1)
        assert request(s, b"touch t 1000\r\n") == b"TOUCHED\r\n"
        reply = request(s, b"gets a\r\n", lambda b: b.endswith(b"END\r\n"))
        cas_before = reply.split(b"\r\n")[0].split()[-1]
        assert request(s, b"ms m 2 T0 F7\r\nhi\r\n") == b"HD\r\n"
        assert request(s, b"ma n N0 J9 D3\r\n") == b"HD\r\n"
        assert request(s, b"add a 0 0 1\r\nz\r\n") == b"NOT_STORED\r\n"
    stop_gracefully(srv)
    again = start_aof(start_server, path)
    with again.connect() as s:
        got = get(s, b"a", b"n", b"gone", b"t", b"m")
        assert got[b"a"][1] == b">hello!!!"
        # Space padded in place, as memcached leaves a shrunk number.
        assert got[b"n"][1] == b"3 "
        assert b"gone" not in got
        assert got[b"t"][1] == b"x"
        assert got[b"m"] == (7, b"hi")
        reply = request(s, b"gets a\r\n", lambda b: b.endswith(b"END\r\n"))
        assert reply.split(b"\r\n")[0].split()[-1] == cas_before
        ttl = request(s, b"mg t t\r\n")
        assert 990 <= int(ttl.split()[1][1:]) <= 1000


def write_ten_records(start_server, path):
    """A server logs k0..k9 to `path`, then stops cleanly."""
    srv = start_aof(start_server, path)
    with srv.connect() as s:
        for i in range(10):
            store(s, b"k%d" % i, b"v%d" % i)
    stop_gracefully(srv)


def test_a_torn_last_record_is_cut_off_with_a_warning(start_server, tmp_path):
    path = tmp_path / "t.aof"
    write_ten_records(start_server, path)
    offsets = record_offsets(path)
    last_start, last_len = offsets[-1]
    os.truncate(path, last_start + last_len - 3)
    again = start_aof(start_server, path)
    with again.connect() as s:
        got = get(s, *[b"k%d" % i for i in range(10)])
    assert sorted(got) == [b"k%d" % i for i in range(9)]
    assert stderr_says(
        again, rf"at byte offset {last_start}, \d+ bytes\) is incomplete"
    ), again.stderr.text()
    assert os.path.getsize(path) == last_start


def test_a_corrupt_record_refuses_the_start_naming_its_offset(start_server, tmp_path):
    path = tmp_path / "c.aof"
    write_ten_records(start_server, path)
    bad_start, bad_len = record_offsets(path)[4]
    data = bytearray(open(path, "rb").read())
    data[bad_start + bad_len - 2] ^= 0x20
    open(path, "wb").write(bytes(data))

    import subprocess

    from mc_helpers import ours_path

    proc = subprocess.run(
        [str(ours_path()), "-u", "root", "-l", "127.0.0.1", "-U", "0", "-p", "0",
         "-o", f"aof={path}"],
        capture_output=True, timeout=20,
    )
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert f"corrupt record at byte offset {bad_start}" in err, err
    assert "aof_fix" in err
    assert open(path, "rb").read() == bytes(data), "the file must be left alone"

    fixed = start_aof(start_server, path, "-o", "aof_fix")
    with fixed.connect() as s:
        got = get(s, *[b"k%d" % i for i in range(10)])
    assert sorted(got) == [b"k%d" % i for i in range(4)]
    assert os.path.getsize(path) == bad_start
    assert stderr_says(fixed, rf"offset {bad_start} .*truncating"), fixed.stderr.text()


def test_a_file_that_is_not_an_aof_is_refused(start_server, tmp_path):
    import subprocess

    from mc_helpers import ours_path

    path = tmp_path / "x.aof"
    path.write_bytes(b"hello, this is not it\n")
    proc = subprocess.run(
        [str(ours_path()), "-u", "root", "-p", "0", "-U", "0", "-o", f"aof={path}"],
        capture_output=True, timeout=20,
    )
    assert proc.returncode == 1
    assert b"bad header" in proc.stderr


@pytest.mark.parametrize("policy", ["everysec", "always"])
def test_a_rewrite_while_clients_write_loses_nothing_and_shrinks_the_file(
    start_server, tmp_path, policy
):
    path = tmp_path / "r.aof"
    srv = start_aof(
        start_server, path,
        "-o", f"aof_sync={policy},aof_rewrite_min=256k,aof_rewrite_pct=100",
    )
    keys = [b"key:%d" % i for i in range(300)]
    stop = threading.Event()

    def overwrite(ident):
        with srv.connect() as s:
            n = 0
            while not stop.is_set():
                key = keys[(n * 7 + ident) % len(keys)]
                value = b"%d-%d-" % (ident, n) + b"x" * 80
                store(s, key, value)
                n += 1

    threads = [threading.Thread(target=overwrite, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        peak = 0
        with srv.connect() as ctl:
            while True:
                st = stats_over(ctl)
                peak = max(peak, int(st["aof_bytes"]))
                if int(st["aof_rewrites"]) >= 2:
                    break
                assert time.monotonic() < deadline, st
                time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    st = srv.stats()
    assert int(st["aof_bytes"]) < peak
    # Each key's value is the one written last, by whichever client.
    with srv.connect() as s:
        before = {k: v for k, (_f, v) in get(s, *keys).items()}
    assert len(before) == len(keys)
    srv.kill()
    again = start_aof(start_server, path)
    with again.connect() as s:
        after = {k: v for k, (_f, v) in get(s, *keys).items()}
    assert after == before
    assert os.path.getsize(path) < peak


def test_items_whose_ttl_passed_while_down_stay_gone(start_server, tmp_path):
    path = tmp_path / "ttl.aof"
    srv = start_aof(start_server, path)
    with srv.connect() as s:
        store(s, b"short", b"1", exptime=1)
        store(s, b"long", b"2", exptime=3600)
        store(s, b"forever", b"3")
        # An absolute unix expiry, as memcached takes above 30 days.
        store(s, b"absolute", b"4", exptime=int(time.time()) + 1)
    stop_gracefully(srv)
    passed = time.time() + 2.2
    while time.time() < passed:  # waiting for wall-clock time itself
        time.sleep(0.05)
    again = start_aof(start_server, path)
    with again.connect() as s:
        got = get(s, b"short", b"long", b"forever", b"absolute")
        assert sorted(got) == [b"forever", b"long"]
        ttl = int(request(s, b"mg long t\r\n").split()[1][1:])
        assert 3590 <= ttl <= 3600


def test_an_item_a_touch_extended_survives_a_restart_after_its_first_ttl(
    start_server, tmp_path
):
    """`set t 0 1` then `touch t 1000`: a restart after that first second
    must give `t` back. The PUT record has expired when it is replayed; the
    TOUCH after it is what kept the item, so recovery holds the expired
    PUT until the end of the file (a regression: the item was lost)."""
    path = tmp_path / "touch.aof"
    srv = start_aof(start_server, path)
    with srv.connect() as s:
        store(s, b"t", b"x", exptime=1)
        assert request(s, b"touch t 1000\r\n") == b"TOUCHED\r\n"
        store(s, b"short", b"y", exptime=1)
    stop_gracefully(srv)
    passed = time.time() + 2.2
    while time.time() < passed:  # waiting for wall-clock time itself
        time.sleep(0.05)
    again = start_aof(start_server, path)
    with again.connect() as s:
        got = get(s, b"t", b"short")
        assert sorted(got) == [b"t"]
        ttl = int(request(s, b"mg t t\r\n").split()[1][1:])
        assert 990 <= ttl <= 1000
        assert stats_over(s)["curr_items"] == "1"


def test_flush_all_is_replayed(start_server, tmp_path):
    path = tmp_path / "f.aof"
    srv = start_aof(start_server, path)
    with srv.connect() as s:
        store(s, b"a", b"1")
        store(s, b"b", b"2")
        assert request(s, b"flush_all\r\n") == b"OK\r\n"
        store(s, b"c", b"3")
        # memcached's clock is in whole seconds: a delayed flush takes
        # effect between delay - 2 and delay seconds after the command.
        assert request(s, b"flush_all 4\r\n") == b"OK\r\n"
        store(s, b"d", b"4")
    commanded = time.time()
    srv.kill()
    again = start_aof(start_server, path)
    with again.connect() as s:
        got = get(s, b"a", b"b", b"c", b"d")
        if time.time() < commanded + 1:
            assert sorted(got) == [b"c", b"d"]
        while time.time() < commanded + 5.5:  # the delayed flush's own time
            time.sleep(0.05)
        assert get(s, b"a", b"b", b"c", b"d") == {}
    # And once more after its time passed while down: still gone.
    again.kill()
    third = start_aof(start_server, path)
    with third.connect() as s:
        assert get(s, b"c", b"d") == {}


def test_recovery_into_less_memory_evicts_or_reports(start_server, tmp_path):
    path = tmp_path / "m.aof"
    srv = start_aof(start_server, path, "-m", "64")
    value = b"v" * 10000
    with srv.connect() as s:
        data = b"".join(set_cmd(b"big:%d" % i, value) for i in range(3000))
        reply = request(s, data, lambda b: b.count(b"\r\n") >= 3000, timeout=60)
        assert reply == b"STORED\r\n" * 3000
    stop_gracefully(srv)
    evicting = start_aof(start_server, path, "-m", "8")
    assert stderr_says(evicting, r"\d+ items were evicted during recovery"), (
        evicting.stderr.text()
    )
    st = evicting.stats()
    assert 0 < int(st["curr_items"]) < 3000
    assert int(st["aof_recovered_items"]) == int(st["curr_items"])
    evicting.kill()
    # The evicting restart logged nothing new: the file still has them all.
    strict = start_aof(start_server, path, "-m", "8", "-M")
    assert stderr_says(strict, r"\d+ items did not fit .*-M"), strict.stderr.text()
    st = strict.stats()
    assert 0 < int(st["curr_items"]) < 3000


def test_stats_show_aof_only_when_enabled(start_server, tmp_path):
    plain = start_server("ours")
    assert not any(k.startswith("aof") for k in plain.stats())
    assert not any(k.startswith("aof") for k in plain.stats("settings"))
    path = tmp_path / "s.aof"
    srv = start_aof(start_server, path, "-o", "aof_sync=always,aof_rewrite_pct=50")
    with srv.connect() as s:
        store(s, b"k", b"v")
        st = stats_over(s)
        settings = stats_over(s, "settings")
    names = [k for k in st if k.startswith("aof")]
    assert names == [
        "aof_enabled", "aof_bytes", "aof_rewrites", "aof_rewrite_in_progress",
        "aof_last_fsync_ms", "aof_recovered_items", "aof_rewrite_failures",
        "aof_last_write_status", "aof_write_errors", "aof_last_write_errno",
        "aof_refusing_writes",
    ]
    assert [st[k] for k in names[-5:]] == ["0", "ok", "0", "0", "0"]
    assert int(st["aof_bytes"]) == os.path.getsize(path) > len(MAGIC)
    assert settings["aof_file"] == str(path)
    assert settings["aof_sync"] == "always"
    assert settings["aof_rewrite_pct"] == "50"


def test_long_option_and_bad_values(start_server, tmp_path):
    import subprocess

    from mc_helpers import ours_path

    path = tmp_path / "l.aof"
    srv = start_server("ours", f"--aof-file={path}")
    with srv.connect() as s:
        store(s, b"k", b"v")
    stop_gracefully(srv)
    assert os.path.getsize(path) > len(MAGIC)
    proc = subprocess.run(
        [str(ours_path()), "-u", "root", "-p", "0", "-o", "aof_sync=sometimes"],
        capture_output=True, timeout=10,
    )
    assert proc.returncode == 1
    assert proc.stderr == b"aof_sync must be always, everysec or no\n"


def test_binary_protocol_changes_are_logged_too(start_server, tmp_path):
    pylibmc = pytest.importorskip("pylibmc")
    path = tmp_path / "b.aof"
    srv = start_aof(start_server, path, "-o", "aof_sync=always")
    c = pylibmc.Client([f"127.0.0.1:{srv.port}"], binary=True)
    c.set("bin:a", b"one")
    c.set("bin:gone", b"x")
    c.delete("bin:gone")
    c.set("bin:n", b"5")
    assert c.incr("bin:n", 10) == 15
    c.append("bin:a", b"+two")
    c.disconnect_all()
    srv.kill()
    again = start_aof(start_server, path)
    with again.connect() as s:
        got = get(s, b"bin:a", b"bin:gone", b"bin:n")
    assert got[b"bin:a"][1] == b"one+two"
    assert got[b"bin:n"][1].strip() == b"15"
    assert b"bin:gone" not in got


def test_a_udp_change_is_written_before_its_reply(start_server, tmp_path):
    import socket

    path = tmp_path / "u.aof"
    srv = start_aof(start_server, path, "-U", "{port}", "-o", "aof_sync=always")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(10)
    try:
        for i in range(20):
            payload = set_cmd(b"udp:%d" % i, b"v%d" % i)
            udp.sendto(struct.pack(">HHHH", i, 0, 1, 0) + payload, srv.addr)
            data, _ = udp.recvfrom(65536)
            assert data[8:] == b"STORED\r\n"
    finally:
        udp.close()
    srv.kill()
    again = start_aof(start_server, path)
    with again.connect() as s:
        got = get(s, *[b"udp:%d" % i for i in range(20)])
    assert len(got) == 20
