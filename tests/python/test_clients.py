"""Real client libraries against the server: python-memcached, pymemcache,
pylibmc (libmemcached, text protocol)."""

import memcache
import pytest
from pymemcache.client import base
from pymemcache.exceptions import MemcacheClientError


@pytest.fixture
def mc(start_server, kind):
    srv = start_server(kind)
    client = memcache.Client(["127.0.0.1:%d" % srv.port], socket_timeout=10)
    yield client
    client.disconnect_all()


def test_python_memcached_basic_ops(mc):
    # The seed 004 loop.
    for i in range(100):
        assert mc.set("key%d" % i, "v%d" % i)
        assert mc.get("key%d" % i) == "v%d" % i
    assert mc.get("nope") is None
    assert mc.add("key1", "other") == 0  # NOT_STORED
    assert mc.add("newkey", "n")
    assert mc.replace("key1", "r1")
    assert mc.get("key1") == "r1"
    assert mc.replace("absent", "x") == 0
    assert mc.append("key2", "-tail")
    assert mc.prepend("key2", "head-")
    assert mc.get("key2") == "head-v2-tail"
    assert mc.set("n", 10)
    assert mc.incr("n", 5) == 15
    assert mc.decr("n", 20) == 0
    assert mc.incr("absent") is None
    assert mc.delete("key3")
    assert mc.get("key3") is None
    assert mc.get_multi(["key4", "key5", "missing"]) == {"key4": "v4", "key5": "v5"}
    assert mc.set_multi({"m1": "a", "m2": "b"}) == []
    assert mc.get_multi(["m1", "m2"]) == {"m1": "a", "m2": "b"}
    assert mc.delete_multi(["m1", "m2"])
    assert mc.get_multi(["m1", "m2"]) == {}
    # Pickled objects (flags 1) round-trip.
    obj = {"a": [1, 2, 3], "b": ("x", None)}
    assert mc.set("obj", obj)
    assert mc.get("obj") == obj
    # gets / cas
    mc.cache_cas = True
    assert mc.gets("key6") == "v6"
    assert mc.cas("key6", "c6")
    assert mc.get("key6") == "c6"
    mc.cache_cas = False
    assert mc.touch("key7", 100)
    mc.flush_all()
    assert mc.get("key7") is None


def stats_one(result):
    assert len(result) == 1, result
    name, st = result[0]
    assert name.startswith("127.0.0.1:"), name
    return st


def test_python_memcached_get_stats(mc):
    mc.set("a", "1")
    mc.set("b", "x" * 5000)
    st = stats_one(mc.get_stats())
    for k in ("pid", "uptime", "version", "curr_connections", "total_items",
              "curr_items", "bytes", "limit_maxbytes", "threads", "evictions"):
        assert k in st, k
    assert st["curr_items"] == "2"
    assert st["total_items"] == "2"
    assert st["version"] == "1.6.18"

    items = stats_one(mc.get_stats("items"))
    assert items, "stats items is empty"
    numbers = [k for k in items if k.startswith("items:") and k.endswith(":number")]
    assert sum(int(items[k]) for k in numbers) == 2, items

    slabs = stats_one(mc.get_stats("slabs"))
    assert slabs.get("active_slabs") == "2", slabs
    assert "total_malloced" in slabs
    used = [k for k in slabs if k.endswith(":used_chunks")]
    assert sum(int(slabs[k]) for k in used) == 2, slabs

    settings = stats_one(mc.get_stats("settings"))
    assert settings["maxconns"] == "1024"
    assert settings["item_size_max"] == "1048576"


def test_pymemcache_basic_ops(start_server, kind):
    srv = start_server(kind)
    c = base.Client(srv.addr, default_noreply=False, timeout=10)
    try:
        assert c.set("a", "1") is True
        assert c.get("a") == b"1"
        assert c.add("a", "2") is False
        assert c.replace("a", "3") is True
        assert c.append("a", "4") is True
        assert c.prepend("a", "0") is True
        assert c.get("a") == b"034"
        value, cas = c.gets("a")
        assert value == b"034"
        assert c.cas("a", "x", cas) is True
        assert c.cas("a", "y", cas) is False
        assert c.cas("missing", "y", cas) is None
        with pytest.raises(MemcacheClientError) as ei:
            c.incr("a", 1)
        assert str(ei.value) == "b'cannot increment or decrement non-numeric value'"
        assert c.set("n", "41") is True
        assert c.incr("n", 1) == 42
        assert c.decr("n", 50) == 0
        assert c.incr("nope", 1) is None
        assert c.delete("n") is True
        assert c.delete("n") is False
        assert c.get_many(["a", "zz"]) == {"a": b"x"}
        assert c.touch("a", 100) is True
        assert c.version() == b"1.6.18"
    finally:
        c.close()


# ---------------------------------------------------------------------------
# pylibmc (optional: pip install pylibmc; the PyPI manylinux wheel bundles
# libmemcached, no apt package needed)
# ---------------------------------------------------------------------------


def test_pylibmc_text_protocol(start_server, kind):
    pylibmc = pytest.importorskip(
        "pylibmc", reason="pylibmc not installed: pip install pylibmc "
        "(wheel for CPython x86_64; from source it needs apt libmemcached-dev zlib1g-dev)")
    srv = start_server(kind)
    c = pylibmc.Client(["127.0.0.1:%d" % srv.port], binary=False,
                       behaviors={"cas": True, "tcp_nodelay": True})
    try:
        assert c.set("a", b"hello")
        assert c.get("a") == b"hello"
        assert c.get("missing") is None
        assert c.add("a", b"x") is False
        assert c.add("b", b"bee")
        assert c.replace("b", b"BEE")
        assert c.append("a", b" world")
        assert c.prepend("a", b">> ")
        assert c.get("a") == b">> hello world"
        assert c.set("n", 10)
        assert c.get("n") == 10  # pylibmc stores ints with its own flag
        assert c.incr("n", 5) == 15
        assert c.decr("n", 100) == 0
        with pytest.raises(pylibmc.NotFound):
            c.incr("nope")
        value, cas = c.gets("b")
        assert value == b"BEE"
        assert c.cas("b", b"new", cas)
        assert not c.cas("b", b"newer", cas)
        assert c.get("b") == b"new"
        assert c.delete("b")
        assert not c.delete("b")
        assert c.set_multi({"m1": b"1", "m2": b"2", "m3": b"3"}) == []
        assert c.get_multi(["m1", "m2", "m3", "m4"]) == {"m1": b"1", "m2": b"2", "m3": b"3"}
        assert c.delete_multi(["m1", "m2"])
        assert c.get_multi(["m1", "m2", "m3"]) == {"m3": b"3"}
        big = bytes(range(256)) * 2000
        assert c.set("big", big)
        assert c.get("big") == big
        st = c.get_stats()
        assert st and st[0][1]["curr_items"] == b"4", st  # a, n, m3, big
    finally:
        c.disconnect_all()
