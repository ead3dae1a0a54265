"""Warm restart (`-e PATH`): SIGUSR1 stops the server with its metadata
saved in PATH.meta, and a restart with the same options finds every item
(value, flags, CAS, TTL) where it was; different memory options, a crash
(kill -9) or a damaged PATH.meta start empty with a message.

Most tests run against both servers (`kind`), so what they assert is
memcached 1.6.18's behaviour. Two waits are real time on purpose, not
synchronisation: the downtime an item's TTL must run out in, and (for the
oracle only) the one second memcached wants between a stop and the next
start, since it refuses a metadata file stopped in the same second.
"""

import os
import random
import re
import signal
import time

import pytest

from mc_helpers import (
    get_reply_done,
    line_reply,
    request,
    stats_over,
    wait_exit,
)

# memcached preallocates a page per slab class for a memory file, so it
# needs -m of at least 39 (MB) with the default classes.
MEM = "64"


def memory_file(tmp_path):
    return str(tmp_path / "cache.mem")


def stop_gracefully(srv, timeout=10):
    srv.signal(signal.SIGUSR1)
    rc = wait_exit(srv.proc, timeout)
    srv.stderr.wait_eof(2)
    return rc


def restart_gap(kind, stopped_at):
    """memcached refuses a restart within the second it stopped in."""
    if kind == "oracle":
        while time.time() < int(stopped_at) + 1.05:
            time.sleep(0.05)


def gets(sock, *keys):
    """{key: (flags, cas, data)} from a gets reply."""
    reply = request(sock, b"gets " + b" ".join(keys) + b"\r\n", get_reply_done())
    out, pos = {}, 0
    while True:
        eol = reply.index(b"\r\n", pos)
        line = reply[pos:eol]
        if line == b"END":
            return out
        _, key, flags, size, cas = line.split()
        size = int(size)
        out[key] = (int(flags), int(cas), reply[eol + 2:eol + 2 + size])
        pos = eol + 4 + size


def store(sock, cmd, key, flags, exptime, data):
    head = b"%s %s %d %d %d\r\n" % (cmd, key, flags, exptime, len(data))
    assert request(sock, head + data + b"\r\n") == b"STORED\r\n", key


def remaining_ttl(sock, key):
    reply = request(sock, b"mg " + key + b" t\r\n", line_reply)
    m = re.match(rb"HD t(-?\d+)\r\n", reply)
    assert m, reply
    return int(m.group(1))


def fill(sock, rng):
    """Every kind of item; returns the keys expected to survive."""
    keys = []
    for i in range(1500):
        key = b"small:%d" % i
        store(sock, b"set", key, rng.randrange(0, 2**32), 0, rng.randbytes(rng.randrange(0, 3000)))
        keys.append(key)
    for i, size in enumerate([600 * 1024, 1000 * 1024, 512 * 1024 - 60, 2 * 512 * 1024 - 100]):
        key = b"large:%d" % i
        store(sock, b"set", key, i + 1, 0, rng.randbytes(size))
        keys.append(key)
    store(sock, b"set", b"counter", 5, 0, b"41")
    assert request(sock, b"incr counter 1\r\n") == b"42\r\n"
    store(sock, b"set", b"joined", 0, 0, b"abc")
    store(sock, b"append", b"joined", 0, 0, b"def")
    store(sock, b"set", b"ttl:long", 7, 1000, b"stays")
    store(sock, b"set", b"ttl:abs", 8, int(time.time()) + 1000, b"stays too")
    keys += [b"counter", b"joined", b"ttl:long", b"ttl:abs"]
    return keys


def test_items_survive_a_graceful_restart(start_server, kind, tmp_path):
    path = memory_file(tmp_path)
    rng = random.Random(6)
    srv = start_server(kind, "-m", MEM, "-e", path)
    with srv.connect() as s:
        keys = fill(s, rng)
        store(s, b"set", b"ttl:short", 9, 2, b"gone after the downtime")
        short_set_at = time.monotonic()
        before = {}
        for i in range(0, len(keys), 100):
            before.update(gets(s, *keys[i:i + 100]))
        assert len(before) == len(keys)
        assert before[b"counter"][2] == b"42" and before[b"joined"][2] == b"abcdef"
        uptime_before = int(stats_over(s)["uptime"])
    assert stop_gracefully(srv) == 0
    stopped_at = time.time()
    assert os.path.exists(path + ".meta")
    assert "Gracefully stopping" in srv.stderr.text()
    # The short TTL runs out while the server is down.
    while time.monotonic() < short_set_at + 3.1:
        time.sleep(0.05)
    restart_gap(kind, stopped_at)

    srv = start_server(kind, "-m", MEM, "-e", path)
    assert "[restart]" not in srv.stderr.text()
    assert not os.path.exists(path + ".meta"), "the metadata is consumed at start"
    with srv.connect() as s:
        after = {}
        for i in range(0, len(keys), 100):
            after.update(gets(s, *keys[i:i + 100]))
        assert after.keys() == before.keys()
        for key in keys:
            assert after[key] == before[key], key
        assert gets(s, b"ttl:short") == {}
        assert 990 <= remaining_ttl(s, b"ttl:long") <= 997
        assert 990 <= remaining_ttl(s, b"ttl:abs") <= 1000
        # The clock went on: uptime counts the downtime too.
        assert int(stats_over(s)["uptime"]) >= uptime_before + 3
        # A new CAS continues after the saved one (memcached's save takes one).
        store(s, b"set", b"new", 0, 0, b"x")
        newest = max(cas for _, cas, _ in before.values())
        assert gets(s, b"new")[b"new"][1] == newest + 3  # ttl:short took one
        assert request(s, b"incr counter 1\r\n") == b"43\r\n"


def test_a_second_restart_keeps_them_too(start_server, kind, tmp_path):
    path = memory_file(tmp_path)
    srv = start_server(kind, "-m", MEM, "-e", path)
    with srv.connect() as s:
        store(s, b"set", b"k", 3, 0, b"v" * 5000)
        first = gets(s, b"k")
    for _ in range(2):
        assert stop_gracefully(srv) == 0
        stopped_at = time.time()
        restart_gap(kind, stopped_at)
        srv = start_server(kind, "-m", MEM, "-e", path)
        with srv.connect() as s:
            assert gets(s, b"k") == first


def restart_messages(srv):
    return [line for line in srv.stderr.text().splitlines() if line.startswith("[restart]")]


@pytest.mark.parametrize(
    "changed",
    [("-m", "65"), ("-f", "1.3"), ("-n", "64"), ("-I", "2m"), ("-C",)],
    ids=["m", "f", "n", "I", "C"],
)
def test_different_memory_options_start_empty(start_server, tmp_path, changed):
    messages = {}
    for kind in ("ours", "oracle"):
        path = str(tmp_path / f"{kind}.mem")
        srv = start_server(kind, "-m", MEM, "-e", path)
        with srv.connect() as s:
            store(s, b"set", b"k", 0, 0, b"v")
        assert stop_gracefully(srv) == 0
        srv = start_server(kind, "-m", MEM, "-e", path, *changed)
        with srv.connect() as s:
            assert gets(s, b"k") == {}, kind
        messages[kind] = restart_messages(srv)
    assert messages["ours"] == messages["oracle"]
    assert messages["ours"][-1] == "[restart] failed to validate metadata, starting with a clean cache"
    assert "restart incompatible due to setting for" in messages["ours"][0]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "term"])
def test_a_crash_or_plain_stop_starts_empty(start_server, kind, tmp_path, sig):
    path = memory_file(tmp_path)
    srv = start_server(kind, "-m", MEM, "-e", path)
    with srv.connect() as s:
        store(s, b"set", b"k", 0, 0, b"v")
    assert stop_gracefully(srv) == 0
    stopped_at = time.time()
    restart_gap(kind, stopped_at)
    # Restarted warm, then killed (or stopped without SIGUSR1): the
    # metadata was consumed at start, so the next start cannot trust the
    # file.
    srv = start_server(kind, "-m", MEM, "-e", path)
    with srv.connect() as s:
        assert b"k" in gets(s, b"k")
        store(s, b"set", b"k2", 0, 0, b"v2")
    srv.signal(sig)
    wait_exit(srv.proc, 10)
    assert not os.path.exists(path + ".meta")
    srv = start_server(kind, "-m", MEM, "-e", path)
    with srv.connect() as s:
        assert gets(s, b"k", b"k2") == {}
    assert restart_messages(srv) == [
        "[restart] no metadata save file, starting with a clean cache"
    ]


def test_a_damaged_metadata_file_starts_empty(start_server, tmp_path):
    path = memory_file(tmp_path)
    srv = start_server("ours", "-m", MEM, "-e", path)
    with srv.connect() as s:
        store(s, b"set", b"k", 0, 0, b"v")
    assert stop_gracefully(srv) == 0
    meta = path + ".meta"
    with open(meta, "rb") as f:
        text = f.read()
    with open(meta, "wb") as f:
        f.write(text[: len(text) // 2])
    srv = start_server("ours", "-m", MEM, "-e", path)
    with srv.connect() as s:
        assert gets(s, b"k") == {}
        store(s, b"set", b"k", 0, 0, b"fresh")
        assert gets(s, b"k")[b"k"][2] == b"fresh"
    assert restart_messages(srv) == [
        "[restart] corrupt metadata file",
        "[restart] failed to validate metadata, starting with a clean cache",
    ]


def test_a_value_still_arriving_at_the_stop_is_dropped(start_server, tmp_path):
    path = memory_file(tmp_path)
    srv = start_server("ours", "-m", MEM, "-e", path)
    with srv.connect() as s, srv.connect() as half:
        store(s, b"set", b"whole", 0, 0, b"w" * 100)
        half.sendall(b"set partial 0 0 100\r\n" + b"p" * 50)
        # The half-sent value has its chunk once its connection is reading
        # the value (memcached's conn_nread).
        deadline = time.monotonic() + 5
        while "conn_nread" not in stats_over(s, "conns").values():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        used_before = used_chunks(s)
        assert stop_gracefully(srv) == 0
    srv = start_server("ours", "-m", MEM, "-e", path)
    with srv.connect() as s:
        assert list(gets(s, b"whole", b"partial")) == [b"whole"]
        assert used_chunks(s) == used_before - 1
        assert int(stats_over(s)["curr_items"]) == 1


def used_chunks(sock):
    st = stats_over(sock, "slabs")
    return sum(int(v) for k, v in st.items() if k.endswith(":used_chunks"))


def test_restart_trace_at_v(start_server, kind, tmp_path):
    path = memory_file(tmp_path)
    srv = start_server(kind, "-m", MEM, "-e", path)
    assert stop_gracefully(srv) == 0
    stopped_at = time.time()
    restart_gap(kind, stopped_at)
    srv = start_server(kind, "-m", MEM, "-e", path, "-v")
    lines = restart_messages(srv)
    assert len(lines) == 3, lines
    assert re.fullmatch(r"\[restart\] original memory base: \[0x[0-9a-f]+\] new base: \[0x[0-9a-f]+\]", lines[0])
    assert re.fullmatch(r"\[restart\] recovery start \[\d+\.\d+\]", lines[1])
    assert re.fullmatch(r"\[restart\] recovery end \[\d+\.\d+\]", lines[2])


def test_too_little_memory_for_a_memory_file(start_server, tmp_path):
    import subprocess

    from mc_helpers import binary_for, free_port

    out = {}
    for kind in ("ours", "oracle"):
        path = str(tmp_path / f"{kind}.mem")
        args = [str(binary_for(kind)), "-u", "root", "-l", "127.0.0.1", "-U", "0",
                "-p", str(free_port()), "-m", "32", "-e", path]
        p = subprocess.run(args, capture_output=True, timeout=20)
        out[kind] = (p.returncode, p.stdout, p.stderr)
    assert out["ours"] == out["oracle"]
    assert out["ours"][0] == 1


def test_sigusr1_without_a_memory_file_stops_gracefully(start_server):
    traces = {}
    for kind in ("ours", "oracle"):
        srv = start_server(kind, "-vv")
        with srv.connect() as s:
            store(s, b"set", b"k", 0, 0, b"v")
            assert stop_gracefully(srv) == 0
        lines = srv.stderr.text().splitlines()
        start = lines.index("Gracefully stopping")
        # Whether the client's own close is traced first depends on timing.
        traces[kind] = [
            re.sub(r"^<\d+ ", "<FD ", line)
            for line in lines[start:]
            if line
        ]
    assert traces["ours"] == traces["oracle"]
    assert traces["ours"][-1] == "all background threads stopped"


def test_shutdown_graceful_saves_too(start_server, kind, tmp_path):
    path = memory_file(tmp_path)
    srv = start_server(kind, "-m", MEM, "-e", path, "-A")
    with srv.connect() as s:
        store(s, b"set", b"k", 1, 0, b"kept")
        before = gets(s, b"k")
        s.sendall(b"shutdown graceful\r\n")
        assert wait_exit(srv.proc, 10) == 0
    stopped_at = time.time()
    assert os.path.exists(path + ".meta")
    restart_gap(kind, stopped_at)
    srv = start_server(kind, "-m", MEM, "-e", path)
    with srv.connect() as s:
        assert gets(s, b"k") == before
