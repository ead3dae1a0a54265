"""The LRU crawler: reclaiming expired items with no client traffic,
`lru_crawler` command replies, and `lru_crawler metadump`."""

import re
import time

from mc_helpers import recv_until, stats_over


def command(srv, payload, done=lambda b: b.endswith(b"\r\n")):
    with srv.connect() as s:
        s.sendall(payload)
        return recv_until(s, done)


def stats(srv):
    with srv.connect() as s:
        return stats_over(s)


def test_crawler_reclaims_expired_items_without_traffic(start_server):
    # The LRU maintainer, off here, would reclaim them first at the tails
    # (test_lru_maintainer.py); with it goes the segmented LRU.
    ours = start_server("ours", "-o", "no_lru_maintainer")
    payload = b"".join(b"set t%d 0 1 1\r\nx\r\n" % i for i in range(100))
    payload += b"set keep 0 0 1\r\nk\r\n"
    command(ours, payload, lambda b: b.count(b"STORED") == 101)
    # Only `stats` from now on: no request touches the expired items.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        st = stats(ours)
        if st["curr_items"] == "1":
            break
        time.sleep(0.2)
    assert st["curr_items"] == "1", st
    assert int(st["crawler_reclaimed"]) == 100, st
    assert st["get_expired"] == "0", st
    assert command(ours, b"get keep\r\n", lambda b: b.endswith(b"END\r\n")) == \
        b"VALUE keep 0 1\r\nk\r\nEND\r\n"


def test_manual_crawl_reclaims(ours):
    command(ours, b"set e 0 1 1\r\nx\r\n")
    deadline = time.monotonic() + 5
    # Wait (polling `stats`, not the item) until memcached's clock has
    # passed the item's expiry, then crawl by hand.
    start = int(stats(ours)["time"])
    while int(stats(ours)["time"]) < start + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    reply = command(ours, b"lru_crawler crawl all\r\n")
    # On a slow machine the LRU maintainer (or an automatic crawl) may have
    # reclaimed the item first: then there is nothing to crawl, as memcached
    # says. Either way the item must be gone.
    assert reply in (b"OK\r\n", b"BUSY currently processing crawler request\r\n",
                     b"NOTSTARTED no items to crawl\r\n")
    while stats(ours)["curr_items"] != "0" and time.monotonic() < deadline + 5:
        time.sleep(0.1)
    assert stats(ours)["curr_items"] == "0"


CRAWLER_SCRIPT = (
    b"lru_crawler crawl 0\r\nlru_crawler crawl 64\r\nlru_crawler crawl x\r\n"
    b"lru_crawler bogus\r\nlru_crawler\r\nlru_crawler sleep 2000000\r\n"
    b"lru_crawler sleep 5\r\nlru_crawler tocrawl x\r\nlru_crawler tocrawl 0\r\n"
    b"lru_crawler enable\r\nlru_crawler metadump all\r\nlru_crawler disable\r\nmn\r\n"
)
# What follows a `disable` is left out: memcached's crawler thread stops
# asynchronously, so its answers to a later crawl or enable are racy.


def test_crawler_command_replies_match_oracle(start_server):
    replies = []
    for kind in ("oracle", "ours"):
        srv = start_server(kind)
        replies.append(command(srv, CRAWLER_SCRIPT, lambda b: b.endswith(b"MN\r\n")))
    assert replies[1] == replies[0]


def test_metadump_refused_under_X(start_server):
    replies = []
    for kind in ("oracle", "ours"):
        srv = start_server(kind, "-X")
        replies.append(command(srv, b"lru_crawler metadump all\r\nstats cachedump 1 1\r\nmn\r\n",
                               lambda b: b.endswith(b"MN\r\n")))
    assert replies[1] == replies[0]


TIME_RE = re.compile(rb"(exp|la)=\d+")


def test_metadump_lines_match_oracle(start_server):
    setup = (b"set a 0 0 1\r\n1\r\nset b%20c 5 100 3\r\nabc\r\nset \xc3\xa9 0 0 2\r\nhi\r\n"
             b"get a\r\nmn\r\n")
    dumps = []
    for kind in ("oracle", "ours"):
        srv = start_server(kind)
        command(srv, setup, lambda b: b.endswith(b"MN\r\n"))
        dump = command(srv, b"lru_crawler metadump all\r\n", lambda b: b.endswith(b"END\r\n"))
        dumps.append(sorted(TIME_RE.sub(rb"\1=T", dump).split(b"\n")))
    assert dumps[1] == dumps[0]
