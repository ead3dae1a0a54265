"""`--metrics-port`: GET /metrics in the Prometheus text format, served by
the reactor beside the memcached port.

- the body parses with Prometheus' own Python text parser
  (prometheus_client), every family has its HELP and TYPE;
- the families are memcached_exporter's (names, labels, types) and their
  values are what `stats` says, computed the exporter's way;
- our own families (AOF, replication) appear when those are on;
- hostile HTTP gets 404/405/400/431/505/408/503 and closes, bounded like a
  memcached client, and the memcached port is unaffected throughout.
"""

import http.client
import re
import socket
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mc_helpers import IO_TIMEOUT, free_port, recv_all_until_close, request, stats_over

# Every family memcached_exporter emits for a memcached 1.6 without
# extstore or proxy (pkg/exporter/exporter.go), with its type; counters
# are named here as the parser names them (without `_total`).
EXPORTER_FAMILIES = {
    "memcached_up": "gauge",
    "memcached_uptime_seconds": "counter",
    "memcached_time_seconds": "gauge",
    "memcached_version": "gauge",
    "memcached_process_user_cpu_seconds": "counter",
    "memcached_process_system_cpu_seconds": "counter",
    "memcached_read_bytes": "counter",
    "memcached_written_bytes": "counter",
    "memcached_current_connections": "gauge",
    "memcached_max_connections": "gauge",
    "memcached_connections": "counter",
    "memcached_connections_yielded": "counter",
    "memcached_connections_listener_disabled": "counter",
    "memcached_current_bytes": "gauge",
    "memcached_limit_bytes": "gauge",
    "memcached_commands": "counter",
    "memcached_current_items": "gauge",
    "memcached_items": "counter",
    "memcached_items_evicted": "counter",
    "memcached_items_reclaimed": "counter",
    "memcached_item_too_large": "counter",
    "memcached_item_no_memory": "counter",
    "memcached_lru_crawler_enabled": "gauge",
    "memcached_lru_crawler_sleep": "gauge",
    "memcached_lru_crawler_to_crawl": "gauge",
    "memcached_lru_crawler_maintainer_thread": "gauge",
    "memcached_lru_crawler_hot_percent": "gauge",
    "memcached_lru_crawler_warm_percent": "gauge",
    "memcached_lru_crawler_hot_max_factor": "gauge",
    "memcached_lru_crawler_warm_max_factor": "gauge",
    "memcached_lru_crawler_starts": "counter",
    "memcached_lru_crawler_reclaimed": "counter",
    "memcached_lru_crawler_items_checked": "counter",
    "memcached_lru_crawler_moves_to_cold": "counter",
    "memcached_lru_crawler_moves_to_warm": "counter",
    "memcached_lru_crawler_moves_within_lru": "counter",
    "memcached_direct_reclaims": "counter",
    "memcached_malloced_bytes": "gauge",
    "memcached_accepting_connections": "gauge",
    "memcached_slab_current_items": "gauge",
    "memcached_slab_items_age_seconds": "gauge",
    "memcached_slab_lru_hits": "counter",
    "memcached_slab_items_crawler_reclaimed": "counter",
    "memcached_slab_items_evicted": "counter",
    "memcached_slab_items_evicted_nonzero": "counter",
    "memcached_slab_items_evicted_time_seconds": "counter",
    "memcached_slab_items_evicted_unfetched": "counter",
    "memcached_slab_items_expired_unfetched": "counter",
    "memcached_slab_items_outofmemory": "counter",
    "memcached_slab_items_reclaimed": "counter",
    "memcached_slab_items_tailrepairs": "counter",
    "memcached_slab_mem_requested_bytes": "counter",
    "memcached_slab_items_moves_to_cold": "counter",
    "memcached_slab_items_moves_to_warm": "counter",
    "memcached_slab_items_moves_within_lru": "counter",
    "memcached_slab_hot_items": "gauge",
    "memcached_slab_warm_items": "gauge",
    "memcached_slab_cold_items": "gauge",
    "memcached_slab_hot_age_seconds": "gauge",
    "memcached_slab_warm_age_seconds": "gauge",
    "memcached_slab_chunk_size_bytes": "gauge",
    "memcached_slab_chunks_per_page": "gauge",
    "memcached_slab_current_pages": "gauge",
    "memcached_slab_current_chunks": "gauge",
    "memcached_slab_chunks_used": "gauge",
    "memcached_slab_chunks_free": "gauge",
    "memcached_slab_chunks_free_end": "gauge",
    "memcached_slab_commands": "counter",
}


def scrape(port, path="/metrics"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=IO_TIMEOUT)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        c.close()


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams, family, sample=None, **labels):
    for s in fams[family].samples:
        if (sample is None or s.name == sample) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError(f"{family} {labels}")


def traffic(srv):
    with srv.connect() as s:
        for i in range(20):
            assert request(s, b"set k%d 0 0 %d\r\n%s\r\n" % (i, i * 50, b"x" * (i * 50))) == b"STORED\r\n"
        request(s, b"get k1 k2 nokey\r\n", lambda b: b.endswith(b"END\r\n"))
        assert request(s, b"delete k3\r\n") == b"DELETED\r\n"
        assert request(s, b"delete k3\r\n") == b"NOT_FOUND\r\n"
        assert request(s, b"set n 0 0 1\r\n5\r\n") == b"STORED\r\n"
        assert request(s, b"incr n 2\r\n") == b"7\r\n"
        assert request(s, b"decr nokey 1\r\n") == b"NOT_FOUND\r\n"
        assert request(s, b"touch k4 100\r\n") == b"TOUCHED\r\n"
        cas = request(s, b"gets k5\r\n", lambda b: b.endswith(b"END\r\n")).split()[4]
        assert request(s, b"cas k5 0 0 1 " + cas + b"\r\na\r\n") == b"STORED\r\n"
        assert request(s, b"cas k5 0 0 1 " + cas + b"\r\na\r\n") == b"EXISTS\r\n"


@pytest.fixture
def served(start_server):
    mport = free_port()
    srv = start_server("ours", f"--metrics-port={mport}")
    srv.metrics_port = mport
    return srv


def test_metrics_parse_and_agree_with_stats(served):
    traffic(served)
    with served.connect() as s:
        st_before = stats_over(s)
        status, headers, body = scrape(served.metrics_port)
        st = stats_over(s)
        slabs = stats_over(s, "slabs")
        items = stats_over(s, "items")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    fams = families(body)
    for name, kind in EXPORTER_FAMILIES.items():
        assert name in fams, name
        assert fams[name].type == kind, name
        assert fams[name].documentation, name
    assert value(fams, "memcached_up") == 1
    assert value(fams, "memcached_version", version="1.6.18") == 1
    # Values that the scrape and the stats calls around it cannot move.
    for family, field in [
        ("memcached_current_items", "curr_items"),
        ("memcached_items", "total_items"),
        ("memcached_current_bytes", "bytes"),
        ("memcached_limit_bytes", "limit_maxbytes"),
        ("memcached_items_evicted", "evictions"),
        ("memcached_accepting_connections", "accepting_conns"),
        ("memcached_connections", "total_connections"),
        ("memcached_current_connections", "curr_connections"),
    ]:
        assert value(fams, family) == int(st[field]), family
    assert value(fams, "memcached_malloced_bytes") == int(slabs["total_malloced"])
    for op in ["get", "delete", "incr", "decr", "cas", "touch"]:
        assert value(fams, "memcached_commands", command=op, status="hit") == int(st[f"{op}_hits"])
        assert value(fams, "memcached_commands", command=op, status="miss") == int(st[f"{op}_misses"])
    cas_all = sum(int(st[f]) for f in ("cas_misses", "cas_hits", "cas_badval"))
    assert value(fams, "memcached_commands", command="set", status="hit") == int(st["cmd_set"]) - cas_all
    assert value(fams, "memcached_commands", command="cas", status="badval") == 1
    # Counters that the stats calls themselves move: between the two.
    for family, field in [("memcached_read_bytes", "bytes_read"), ("memcached_written_bytes", "bytes_written")]:
        assert int(st_before[field]) <= value(fams, family) <= int(st[field]), family
    assert value(fams, "memcached_max_connections") == 1024
    # One sample per class and field, as `stats slabs` / `stats items` list them.
    classes = {k.split(":")[0] for k in slabs if ":" in k}
    assert {s.labels["slab"] for s in fams["memcached_slab_chunk_size_bytes"].samples} == classes
    for cls in classes:
        assert value(fams, "memcached_slab_chunks_used", slab=cls) == int(slabs[f"{cls}:used_chunks"])
    lru_classes = {k.split(":")[1] for k in items}
    assert lru_classes and lru_classes <= classes
    for cls in lru_classes:
        assert value(fams, "memcached_slab_current_items", slab=cls) == int(items[f"items:{cls}:number"])
    # Our own families are absent when their features are off.
    assert not [n for n in fams if n.startswith(("memcached_aof", "memcached_repl"))]


def test_aof_families(start_server, tmp_path):
    mport = free_port()
    srv = start_server("ours", "-o", f"metrics_port={mport},aof={tmp_path / 'a.aof'}")
    traffic(srv)
    with srv.connect() as s:
        _, _, body = scrape(mport)
        st = stats_over(s)
    fams = families(body)
    assert value(fams, "memcached_aof_bytes") > 0
    assert value(fams, "memcached_aof_last_write_ok") == 1
    assert value(fams, "memcached_aof_refusing_writes") == 0
    assert fams["memcached_aof_rewrites"].type == "counter"
    assert value(fams, "memcached_aof_recovered_items") == int(st["aof_recovered_items"])


def test_repl_families(start_server):
    mport, rport = free_port(), free_port()
    srv = start_server("ours", f"--metrics-port={mport}", f"--repl-port={rport}")
    with srv.connect() as s:
        st = stats_over(s)
    fams = families(scrape(mport)[2])
    assert value(fams, "memcached_repl_info", role=st["repl_role"]) == 1
    assert value(fams, "memcached_repl_connected") == int(st["repl_connected"])


def test_metrics_addr_and_keep_alive(start_server):
    mport = free_port()
    srv = start_server("ours", "-o", f"metrics_port={mport},metrics_addr=127.0.0.1")
    c = http.client.HTTPConnection("127.0.0.1", mport, timeout=IO_TIMEOUT)
    for _ in range(3):
        c.request("GET", "/metrics")
        r = c.getresponse()
        assert r.status == 200 and r.getheader("Connection") is None
        assert "memcached_up 1" in r.read().decode()
    c.request("HEAD", "/metrics")
    r = c.getresponse()
    assert r.status == 200 and int(r.getheader("Content-Length")) > 1000
    assert r.read() == b""
    c.close()
    with srv.connect() as s:
        settings = stats_over(s, "settings")
    assert (settings["metrics_port"], settings["metrics_addr"]) == (str(mport), "127.0.0.1")
    # HTTP connections are not memcached connections.
    with srv.connect() as s:
        before = stats_over(s)["curr_connections"]
        h = socket.create_connection(("127.0.0.1", mport))
        h.sendall(b"GET /metr")
        assert stats_over(s)["curr_connections"] == before
        h.close()


def exchange(port, data, shutdown_write=False):
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as h:
        h.sendall(data)
        if shutdown_write:
            h.shutdown(socket.SHUT_WR)
        return recv_all_until_close(h)[0]


def status_of(reply):
    return reply.split(b"\r\n", 1)[0]


def test_hostile_requests_are_answered_and_closed(served):
    port = served.metrics_port
    assert status_of(exchange(port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")) == b"HTTP/1.1 404 Not Found"
    reply = exchange(port, b"POST /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert status_of(reply) == b"HTTP/1.1 405 Method Not Allowed"
    assert b"\r\nAllow: GET, HEAD\r\n" in reply
    for bad in [
        b"GARBAGE\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789",
        b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"\xff\xfe\r\n\r\n",
        b"GET metrics HTTP/1.1\r\n\r\n",
    ]:
        assert status_of(exchange(port, bad)) == b"HTTP/1.1 400 Bad Request", bad
    assert status_of(exchange(port, b"GET /metrics HTTP/3.0\r\n\r\n")) == b"HTTP/1.1 505 HTTP Version Not Supported"
    # A head without end, bigger than the bound: refused without reading on.
    huge = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 100_000
    reply = exchange(port, huge)
    assert status_of(reply) == b"HTTP/1.1 431 Request Header Fields Too Large"
    # A request cut short by the client: no answer, the connection closes.
    assert exchange(port, b"GET /metrics HTTP/1.1\r\n", shutdown_write=True) == b""
    # Pipelined requests are answered in order.
    reply = exchange(port, b"GET /a HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert re.findall(rb"HTTP/1\.1 \d\d\d [^\r]*", reply) == [
        b"HTTP/1.1 404 Not Found", b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found"
    ]
    # Memcached clients saw none of it.
    with served.connect() as s:
        assert request(s, b"version\r\n") == b"VERSION 1.6.18\r\n"
        assert stats_over(s)["curr_connections"] == "1"


def test_connections_are_limited(served):
    held = [socket.create_connection(("127.0.0.1", served.metrics_port)) for _ in range(16)]
    try:
        # Make sure all 16 were taken before the 17th comes.
        for h in held:
            h.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            h.settimeout(IO_TIMEOUT)
            assert h.recv(12) == b"HTTP/1.1 200"
        reply = exchange(served.metrics_port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert status_of(reply) == b"HTTP/1.1 503 Service Unavailable"
    finally:
        for h in held:
            h.close()
    # Closed ones free their places.
    deadline = time.monotonic() + 10
    while True:
        status = status_of(exchange(served.metrics_port, b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n"))
        if status == b"HTTP/1.1 200 OK" or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert status == b"HTTP/1.1 200 OK"


def test_a_slow_request_times_out(served):
    """A head that dribbles in is given 10 seconds, then 408 and closed
    (the memcached port is served meanwhile)."""
    with socket.create_connection(("127.0.0.1", served.metrics_port), timeout=30) as h:
        h.sendall(b"GET /metrics HTTP/1.1\r\n")
        started = time.monotonic()
        with served.connect() as s:
            assert request(s, b"version\r\n") == b"VERSION 1.6.18\r\n"
        reply, _ = recv_all_until_close(h, timeout=30)
    assert status_of(reply) == b"HTTP/1.1 408 Request Timeout"
    assert time.monotonic() - started >= 9


def test_metrics_port_option_errors():
    import subprocess
    from mc_helpers import ours_path

    r = subprocess.run([str(ours_path()), "--metrics-port=70000"], capture_output=True)
    assert r.returncode == 64 and r.stderr == b'Invalid metrics port "70000"\n'
    r = subprocess.run([str(ours_path()), "-o", "metrics_port"], capture_output=True)
    assert r.returncode == 1 and r.stderr == b"Missing metrics_port argument\n"
    # A metrics port that is taken: the server does not start.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run(
            [str(ours_path()), "-u", "root", "-p", "0", "-l", "127.0.0.1", f"--metrics-port={port}"],
            capture_output=True,
            timeout=30,
        )
    assert r.returncode != 0
    assert f"failed to listen on metrics port 127.0.0.1:{port}: Address already in use".encode() in r.stderr


def test_extstore_families(start_server, tmp_path):
    mport = free_port()
    srv = start_server("ours", "-m", "64", f"--metrics-port={mport}",
                       "-o", f"ext_path={tmp_path / 'ext'}:64m")
    traffic(srv)
    with srv.connect() as s:
        st = stats_over(s)
    fams = families(scrape(mport)[2])
    assert value(fams, "memcached_extstore_bytes_limit") == int(st["extstore_limit_maxbytes"])
    assert fams["memcached_extstore_objects_written"].type == "counter"
    assert fams["memcached_extstore_pages_free"].type == "gauge"
