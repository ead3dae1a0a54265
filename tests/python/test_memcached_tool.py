"""The admin tools people already run against memcached keep working:

- Debian's memcached-tool (display, stats, settings, sizes, dump, keys)
  prints the same thing against ours as against Debian's memcached given
  the same data, values aside (ages, pids, times, CPU, the port);
- `stats` (with `stats slabs`, `stats items`, `stats settings`) stays
  parseable the way prometheus/memcached_exporter parses it off the wire
  (its client splits each line on single spaces and keeps only lines of
  exactly three fields; the exporter then reads numbers with ParseFloat,
  `rusage_*` as `sec.usec`, `lru_crawler` and `lru_maintainer_thread` as
  yes/no), and `cmd_set` counts CAS commands, which the exporter subtracts.

Both servers run every check, so the tests are validated against the
oracle too.
"""

import os
import re
import subprocess

import pytest

from mc_helpers import request, stats_over

TOOL = "/usr/share/memcached/scripts/memcached-tool"

pytestmark = pytest.mark.skipif(
    not os.path.exists(TOOL), reason="memcached-tool missing (apt-get install memcached)"
)



def load(srv):
    """The same data in both servers: several classes, some with a TTL,
    one read back. The sizes are ones both servers file in the same class:
    ours stores an item with a 40-byte header where memcached's takes 56,
    so a value near a class boundary (100 bytes with this key) fits a
    smaller class here (README, "Items"); that is where the item lives, not
    what the tool shows of it."""
    with srv.connect() as s:
        for i, size in enumerate([1, 10, 20, 300, 1000, 5000, 20000]):
            ttl = 1000 if i % 2 else 0
            cmd = b"set key%d %d %d %d\r\n" % (i, i, ttl, size) + b"v" * size + b"\r\n"
            assert request(s, cmd) == b"STORED\r\n"
        assert request(s, b"get key1\r\n", lambda b: b.endswith(b"END\r\n"))


def tool(srv, *args):
    out = subprocess.run(
        ["perl", TOOL, f"127.0.0.1:{srv.port}", *args],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.decode()
    # The header names the server.
    return out.replace(f"127.0.0.1:{srv.port}", "HOST")


@pytest.fixture
def pair(start_server):
    servers = [start_server(kind, "-m", "64") for kind in ("ours", "oracle")]
    for srv in servers:
        load(srv)
    return servers


def columns(text):
    return [line.split() for line in text.splitlines()]


def test_display_is_the_same_but_for_ages(pair):
    ours, oracle = (tool(srv, "display") for srv in pair)
    age = re.compile(r"\b\d+s\b")
    assert age.sub("AGE", ours) == age.sub("AGE", oracle)
    assert len(ours.splitlines()) == 1 + 5  # classes 1, 7, 12, 19, 25


def test_stats_lists_the_same_fields(pair):
    ours, oracle = (columns(tool(srv, "stats")) for srv in pair)
    assert [row[0] for row in ours] == [row[0] for row in oracle]
    # Field and value, one of each per line, as memcached-tool aligns them.
    assert all(len(row) == 2 for row in ours[1:])
    assert ours[0] == ["#HOST", "Field", "Value"]


def test_settings_are_the_same_but_for_the_port(pair):
    ours, oracle = (columns(tool(srv, "settings")) for srv in pair)
    port_free = [
        [row for row in rows if row[0] != "tcpport"] for rows in (ours, oracle)
    ]
    assert port_free[0] == port_free[1]


def test_sizes_are_the_same(pair, start_server):
    ours, oracle = (tool(srv, "sizes") for srv in pair)
    assert ours == oracle
    # With the histogram on, the same buckets.
    servers = [start_server(k, "-m", "64", "-o", "track_sizes") for k in ("ours", "oracle")]
    for srv in servers:
        load(srv)
    ours, oracle = (tool(srv, "sizes") for srv in servers)
    assert ours == oracle
    assert len(ours.splitlines()) > 3


def normalised_dump(text):
    """Records as sets (metadump's order is the crawler's), the absolute
    expiry time a value."""
    lines = text.splitlines()
    records = []
    for head, value in zip(lines[0::2], lines[1::2]):
        verb, key, flags, exptime, size = head.split()
        records.append((verb, key, flags, exptime != "0", size, value))
    return sorted(records)


def test_dump_gives_the_same_records(pair):
    ours, oracle = (normalised_dump(tool(srv, "dump")) for srv in pair)
    assert ours == oracle
    assert len(ours) == 7
    assert ("add", "key6", "6", False, "20000", "v" * 20000) in ours


def test_keys_gives_the_same_keys(pair):
    def keys(text):
        return sorted(re.sub(r"exp=\d+", "exp=E", re.sub(r"la=\d+", "la=L", line))
                      for line in text.splitlines())

    ours, oracle = (keys(tool(srv, "keys")) for srv in pair)
    assert ours == oracle


# --- stats as memcached_exporter reads them --------------------------------

# The `stats` fields the exporter reads with ParseFloat (pkg/exporter).
EXPORTER_NUMBERS = """
uptime time cas_badval cmd_flush cmd_set cas_misses cas_hits bytes limit_maxbytes
curr_items total_items bytes_read bytes_written curr_connections total_connections
conn_yields listen_disabled_num evictions reclaimed store_too_large store_no_memory
lru_crawler_starts crawler_items_checked crawler_reclaimed total_malloced
accepting_conns get_hits get_misses delete_hits delete_misses incr_hits incr_misses
decr_hits decr_misses touch_hits touch_misses
""".split()
SETTINGS_NUMBERS = """maxconns lru_crawler_sleep lru_crawler_tocrawl hot_lru_pct
warm_lru_pct hot_max_factor warm_max_factor""".split()


def raw(srv, command):
    with srv.connect() as s:
        reply = request(s, command.encode() + b"\r\n", lambda b: b.endswith(b"END\r\n"))
    lines = reply.decode().split("\r\n")
    assert lines[-2:] == ["END", ""]
    return lines[:-2]


def exporter_split(lines):
    """gomemcache's statsFromAddr: `STAT name value`, names `a`, `N:a` or
    `items:N:a`."""
    general, slabs, items = {}, {}, {}
    for line in lines:
        fields = line.split(" ")
        assert len(fields) == 3 and fields[0] == "STAT", line
        parts = fields[1].split(":")
        if len(parts) == 1:
            general[parts[0]] = fields[2]
        elif len(parts) == 2:
            slabs.setdefault(int(parts[0]), {})[parts[1]] = fields[2]
        else:
            assert len(parts) == 3, line
            items.setdefault(int(parts[1]), {})[parts[2]] = fields[2]
    return general, slabs, items


def test_stats_parse_as_the_exporter_parses_them(kind, start_server):
    srv = start_server(kind)
    load(srv)
    lines = raw(srv, "stats") + raw(srv, "stats slabs") + raw(srv, "stats items")
    general, slabs, items = exporter_split(lines)
    for name in EXPORTER_NUMBERS:
        float(general[name])
    for name in ("rusage_user", "rusage_system"):
        assert re.fullmatch(r"\d+\.\d{6}", general[name]), general[name]
    assert general["version"] == "1.6.18"
    assert slabs and items
    for fields in list(slabs.values()) + list(items.values()):
        for name, value in fields.items():
            float(value)
    settings = dict(line.split(" ")[1:] for line in raw(srv, "stats settings"))
    assert all(len(line.split(" ")) == 3 for line in raw(srv, "stats settings"))
    for name in SETTINGS_NUMBERS:
        float(settings[name])
    assert settings["lru_crawler"] in ("yes", "no")
    assert settings["lru_maintainer_thread"] in ("yes", "no")


def test_cmd_set_counts_cas_commands(kind, start_server):
    srv = start_server(kind)
    with srv.connect() as s:
        assert request(s, b"set k 0 0 1\r\na\r\n") == b"STORED\r\n"
        cas = request(s, b"gets k\r\n", lambda b: b.endswith(b"END\r\n")).split()[4]
        before = stats_over(s)
        assert request(s, b"cas k 0 0 1 " + cas + b"\r\nb\r\n") == b"STORED\r\n"
        assert request(s, b"cas k 0 0 1 " + cas + b"\r\nc\r\n") == b"EXISTS\r\n"
        assert request(s, b"cas nokey 0 0 1 1\r\nd\r\n") == b"NOT_FOUND\r\n"
        after = stats_over(s)
    grew = {n: int(after[n]) - int(before[n]) for n in ("cmd_set", "cas_hits", "cas_badval", "cas_misses")}
    assert grew == {"cmd_set": 3, "cas_hits": 1, "cas_badval": 1, "cas_misses": 1}
