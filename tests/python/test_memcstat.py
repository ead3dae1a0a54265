"""libmemcached's memcstat reads every stats group from ours without error."""

import shutil
import subprocess
import time

import pytest


@pytest.mark.skipif(shutil.which("memcstat") is None,
                    reason="memcstat not installed (apt-get install libmemcached-tools)")
@pytest.mark.parametrize("group", [None, "items", "slabs", "settings", "sizes", "conns"])
def test_memcstat_reads_stats(ours, group):
    with ours.connect() as s:
        s.sendall(b"set k 0 0 1\r\nv\r\n")
        assert s.recv(64) == b"STORED\r\n"
    cmd = ["memcstat", "--servers=127.0.0.1:%d" % ours.port]
    if group:
        cmd.append("--args=" + group)
    run = subprocess.run(cmd, capture_output=True, timeout=30)
    out = run.stdout.decode()
    assert run.returncode == 0, run.stderr.decode()
    assert "Server: 127.0.0.1" in out, out
    if group is None:
        assert "curr_items: 1" in out, out


def test_python_memcached_cachedump_like_the_seed(ours):
    """Seed 004 calls get_stats('cachedump 5 0'); the keys of a class come
    back as python-memcached parses them."""
    import memcache

    mc = memcache.Client(["127.0.0.1:%d" % ours.port])
    try:
        for i in range(3):
            assert mc.set("key%d" % i, "v%d" % i)
        # As memcached's, the dump walks a class's COLD segment: new items
        # reach it when the LRU maintainer moves them out of HOT (at once
        # while HOT is over its share of the class, else after a second).
        deadline = time.monotonic() + 10
        while True:
            stats = mc.get_stats("cachedump 1 0")
            assert len(stats) == 1
            _, dump = stats[0]
            if len(dump) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert sorted(dump) == [b"key0", b"key1", b"key2"] or \
            sorted(dump) == ["key0", "key1", "key2"], dump
        assert mc.get_stats("cachedump 5 0")[0][1] == {}
    finally:
        mc.disconnect_all()
