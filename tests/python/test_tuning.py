"""Retuning a running server: `lru tune|mode|temp_ttl` and
`cache_memlimit`, against the oracle byte for byte.

`lru` retunes the segmented LRU (its effect on the segments is compared in
tests/diff_lru.rs); `cache_memlimit` really moves the page budget, so a server told to use
less stops growing at the new limit exactly where memcached stops, and one
told to use more grows as memcached grows.
"""

import pytest

from mc_helpers import recv_until, request, wait_stat

SCRIPTS = [
    b"lru mode segmented\r\nlru mode flat\r\nlru mode x\r\nlru mode\r\nlru\r\n",
    b"lru temp_ttl 10\r\nlru temp_ttl -1\r\nlru temp_ttl x\r\nlru temp_ttl 5 noreply\r\n",
    b"lru tune 10 25 0.1 2\r\nlru tune 10 25 0.1 2 noreply\r\nlru tune 10 25 0.1\r\n",
    # Limits: the sum of the percentages (as uint32, wrapping), the factors.
    b"lru tune 60 25 0.1 2\r\nlru tune 4294967295 1 0.1 2\r\nlru tune 10 25 0 2\r\n",
    # Factors are read by strtod: hex, infinities, NaN (which passes the
    # `<= 0` check), overflow and trailing junk.
    b"lru tune 10 25 nan 2\r\nlru tune 10 25 1e999 2\r\nlru tune 10 25 0x1p3 -inf\r\n",
    b"lru tune 1 2 0x1.8p1 INF\r\nlru tune 1 2 3x 4\r\nlru tune 1 2 .5e1 1e-400\r\n",
    b"lru x y z\r\nlru tune a b c d\r\nlru tune -1 2 3 4\r\n",
    b"cache_memlimit\r\ncache_memlimit 0\r\ncache_memlimit 7\r\ncache_memlimit 8\r\n",
    b"cache_memlimit 1000000001\r\ncache_memlimit 4294967304\r\ncache_memlimit -1\r\n",
    b"cache_memlimit abc\r\ncache_memlimit 32 noreply\r\ncache_memlimit 32 x y\r\n",
    b"slabs automove ratio 0x1p-2\r\nslabs automove ratio 1e999\r\nslabs automove ratio nan\r\n",
]


def run(srv, script):
    with srv.connect() as c:
        c.sendall(script + b"mn\r\n")
        return recv_until(c, lambda b: b.endswith(b"MN\r\n"))


def tuned_settings(srv):
    keys = ("hot_lru_pct", "warm_lru_pct", "hot_max_factor", "warm_max_factor",
            "lru_segmented", "temp_lru", "temporary_ttl", "maxbytes",
            "slab_automove_ratio")
    st = srv.stats("settings")
    return {k: st[k] for k in keys}


@pytest.mark.parametrize("script", SCRIPTS, ids=range(len(SCRIPTS)))
def test_tuning_commands_match_oracle(start_server, script):
    got = {}
    for kind in ("oracle", "ours"):
        srv = start_server(kind)
        got[kind] = (run(srv, script), tuned_settings(srv), srv.stats()["limit_maxbytes"])
    assert got["ours"] == got["oracle"]


def test_lru_mode_and_temp_ttl_need_the_maintainer(start_server):
    script = b"lru mode flat\r\nlru temp_ttl 5\r\nlru tune 1 2 3 4\r\n"
    got = {}
    for kind in ("oracle", "ours"):
        srv = start_server(kind, "-o", "no_lru_maintainer")
        got[kind] = (run(srv, script), tuned_settings(srv))
    assert got["ours"] == got["oracle"]
    assert got["ours"][0] == b"ERROR\r\nERROR\r\nOK\r\nMN\r\n"


def fill(srv, count, size):
    value = b"v" * size
    with srv.connect() as c:
        batch = b"".join(b"set k%d 0 0 %d noreply\r\n%s\r\n" % (i, size, value)
                         for i in range(count))
        c.sendall(batch)
        assert request(c, b"mn\r\n", lambda b: b.endswith(b"MN\r\n")) == b"MN\r\n"


def test_a_lower_limit_stops_growth_where_memcached_stops(start_server):
    """-m 64, then cache_memlimit 8: 20 MB of 1000-byte items evict at the
    same point on both servers."""
    got = {}
    for kind in ("oracle", "ours"):
        srv = start_server(kind, "-m", "64")
        with srv.connect() as c:
            assert request(c, b"cache_memlimit 8\r\n") == b"OK\r\n"
        fill(srv, 20000, 1000)
        st = srv.stats()
        slabs = srv.stats("slabs")
        got[kind] = (st["limit_maxbytes"], st["curr_items"], st["evictions"],
                     slabs["total_malloced"])
    assert got["ours"] == got["oracle"]
    assert got["ours"][0] == str(8 << 20)
    assert int(got["ours"][3]) <= 9 << 20


def test_a_limit_cannot_move_when_memory_is_a_file(start_server, tmp_path):
    got = {}
    for kind in ("oracle", "ours"):
        srv = start_server(kind, "-m", "64", "-e", str(tmp_path / f"{kind}.mem"))
        got[kind] = run(srv, b"cache_memlimit 8\r\ncache_memlimit 64\r\n")
    assert got["ours"] == got["oracle"]
    assert got["ours"].startswith(b"MEMLIMIT_ADJUST_FAILED")


def test_the_limit_is_traced_at_v(start_server):
    got = {}
    for kind in ("oracle", "ours"):
        srv = start_server(kind, "-v")
        assert run(srv, b"cache_memlimit 9\r\n") == b"OK\r\nMN\r\n"
        got[kind] = srv.stderr.wait_for(
            lambda lines: b"maxbytes adjusted to 9m" in lines, 5)
    assert got["ours"] and got["oracle"]


def limits(srv):
    st, slabs = srv.stats(), srv.stats("slabs")
    return (st["limit_maxbytes"], srv.stats("settings")["maxbytes"], st["curr_items"],
            st["evictions"], slabs["total_malloced"])


def test_a_higher_limit_grows_as_memcached_grows(start_server):
    """-m 8, then cache_memlimit 32: 20 MB of 1000-byte items fit without
    an eviction on both servers, and both count the same pages. (Until
    issue 17 this server refused any limit above its start-up -m, as its
    arena was reserved for -m only; it now reserves the address space the
    chunk references can name and opens it as the limit grows.)"""
    got = {}
    for kind in ("oracle", "ours"):
        srv = start_server(kind, "-m", "8")
        assert run(srv, b"cache_memlimit 32\r\n") == b"OK\r\nMN\r\n"
        fill(srv, 20000, 1000)
        raised = limits(srv)
        # Lower again: handed-out pages stay, the reported limit follows.
        assert run(srv, b"cache_memlimit 8\r\n") == b"OK\r\nMN\r\n"
        got[kind] = (raised, limits(srv))
    assert got["ours"] == got["oracle"]
    raised, lowered = got["ours"]
    assert raised[:4] == (str(32 << 20), str(32 << 20), "20000", "0")
    assert int(raised[4]) > 16 << 20
    assert lowered[:2] == (str(8 << 20), str(8 << 20))
    assert lowered[4] == raised[4]


def test_a_lowered_limit_gives_pooled_pages_back(start_server):
    """Under a lowered limit, a page moved to the global pool is given
    back (memcached's memory_release): total_malloced drops by a page."""
    got = {}
    for kind in ("oracle", "ours"):
        srv = start_server(kind, "-m", "32", "-o", "slab_automove=0")
        fill(srv, 20000, 1000)
        before = int(srv.stats("slabs")["total_malloced"])
        with srv.connect() as c:
            c.sendall(b"".join(b"delete k%d noreply\r\n" % i for i in range(20000)))
            assert request(c, b"cache_memlimit 8\r\n") == b"OK\r\n"
            cls = next(k.split(":")[0] for k in srv.stats("slabs") if k.endswith(":total_pages"))
            assert request(c, b"slabs reassign %s 0\r\n" % cls.encode()) == b"OK\r\n"
        wait = wait_stat(srv, "slabs_moved", lambda v: v == 1)["slabs_moved"]
        after = int(srv.stats("slabs")["total_malloced"])
        got[kind] = (wait, before - after)
    assert got["ours"] == got["oracle"]
    assert got["ours"][1] == 1 << 20


def test_a_preallocated_limit_cannot_move(start_server):
    """-L lays memory out once, in memcached as here: any new limit is
    refused and the old one stays."""
    got = {}
    for kind in ("oracle", "ours"):
        srv = start_server(kind, "-m", "64", "-L")
        got[kind] = (run(srv, b"cache_memlimit 128\r\ncache_memlimit 32\r\n"), limits(srv)[:2])
    assert got["ours"] == got["oracle"]
    assert got["ours"] == (b"MEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust\r\n" * 2
                           + b"MN\r\n", (str(64 << 20),) * 2)


def test_ours_cannot_grow_past_what_chunk_references_address(ours):
    """memcached accepts any limit up to 10^9 MB; chunks here are named by
    32-bit offsets in 8-byte units, so 32 GiB is the most the arena can
    open: a limit beyond it is refused and the old one kept."""
    assert run(ours, b"cache_memlimit 32000\r\ncache_memlimit 40000\r\n") == (
        b"OK\r\nMEMLIMIT_ADJUST_FAILED out of bounds or unable to adjust\r\nMN\r\n")
    assert ours.stats()["limit_maxbytes"] == str(32000 << 20)


def test_under_k_a_raised_limit_is_locked_as_touched(start_server):
    """-k (mlockall, on fault): raising the limit and filling past -m
    works, and the locked memory follows what was touched, not the 32 GiB
    reserved."""
    srv = start_server("ours", "-m", "8", "-k")
    assert run(srv, b"cache_memlimit 32\r\n") == b"OK\r\nMN\r\n"
    fill(srv, 20000, 1000)
    st = srv.stats()
    assert (st["curr_items"], st["evictions"]) == ("20000", "0")
    status = open(f"/proc/{srv.proc.pid}/status").read()
    locked_kb = int(next(line.split()[1] for line in status.splitlines()
                         if line.startswith("VmLck:")))
    assert locked_kb < 1 << 20, f"VmLck {locked_kb} kB"
