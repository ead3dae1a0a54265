"""`watch`: memcached's log streams, against the oracle.

The same watchers and the same traffic on both servers; the streams are
compared line for line once `ts=`, `gid=`, `cfd=` and `rport=` values are
normalised (times, global ids, descriptor numbers and client ports differ
between any two runs). memcached's logger thread batches lines, so every
comparison polls the watcher until a sentinel entry has arrived.

Both servers run with `-t 1 -o no_lru_maintainer,no_lru_crawler`: one
worker keeps memcached's entries in order, and without its LRU maintainer
an expired or flushed item is still there for the fetch that finds it
(ours has no maintainer; memcached's would reclaim it first at random).
"""

import re
import socket
import struct
import time

import pytest

from mc_helpers import IO_TIMEOUT, request, wait_stat

OPTS = ("-t", "1", "-o", "no_lru_maintainer,no_lru_crawler")

NORMALISE = [
    (re.compile(rb"^ts=\d+\.\d+ gid=\d+ "), b"ts=T gid=G "),
    (re.compile(rb" cfd=-?\d+"), b" cfd=F"),
    (re.compile(rb" rport=\d+"), b" rport=P"),
]


def normalise(line):
    for pattern, repl in NORMALISE:
        line = pattern.sub(repl, line)
    return line


class Watcher:
    """A connection that sent `watch ARGS` and collects its stream."""

    def __init__(self, server, args):
        self.sock = server.connect()
        self.buf = b""
        self.sock.sendall(b"watch" + (b" " + args if args else b"") + b"\r\n")
        self.read_until(lambda: b"\r\n" in self.buf)
        ok, self.buf = self.buf.split(b"\r\n", 1)
        assert ok == b"OK", ok

    def read_until(self, done, timeout=IO_TIMEOUT):
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"watcher stream stalled at {self.buf[-400:]!r}")
            self.sock.settimeout(min(remaining, 0.5))
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            assert chunk, f"watcher closed; got {self.buf[-400:]!r}"
            self.buf += chunk

    def lines_through(self, marker, timeout=IO_TIMEOUT):
        """Every line up to and including the first containing `marker`,
        normalised; they are taken off the stream."""
        def has_marker():
            return any(marker in line for line in self.buf.split(b"\n")[:-1])

        self.read_until(has_marker, timeout)
        lines = self.buf.split(b"\n")
        for i, line in enumerate(lines):
            if marker in line:
                self.buf = b"\n".join(lines[i + 1:])
                return [normalise(x) for x in lines[: i + 1]]
        raise AssertionError("unreachable")

    def close(self):
        self.sock.close()


def run(sock, data, done):
    return request(sock, data, done)


def line_done(b):
    return b.endswith(b"\r\n")


def end_done(b):
    return b.endswith(b"END\r\n") or b.endswith(b"ERROR\r\n")


ASCII_TRAFFIC = [
    (b"get a\r\n", end_done),
    (b"set a 5 0 3\r\nabc\r\n", line_done),
    (b"get a\r\n", end_done),
    (b"gets a b\r\n", end_done),
    (b"add a 0 0 1\r\nx\r\n", line_done),
    (b"add n 0 0 1\r\nx\r\n", line_done),
    (b"replace a 0 0 2\r\nxy\r\n", line_done),
    (b"replace zz 0 0 2\r\nxy\r\n", line_done),
    (b"append a 0 0 1\r\nz\r\n", line_done),
    (b"prepend a 0 0 1\r\nz\r\n", line_done),
    (b"append zz 0 0 1\r\nz\r\n", line_done),
    (b"cas a 0 0 1 999\r\nq\r\n", line_done),
    (b"cas zz 0 0 1 1\r\nq\r\n", line_done),
    (b"set t 0 100 1\r\n1\r\n", line_done),
    (b"set neg 0 -1 1\r\n1\r\n", line_done),
    (b"get neg\r\n", end_done),
    (b"incr t 5\r\n", line_done),
    (b"decr t 1\r\n", line_done),
    (b"incr zz 1\r\n", line_done),
    (b"touch t 50\r\n", line_done),
    (b"touch zz 5\r\n", line_done),
    (b"gat 10 t zz\r\n", end_done),
    (b"gats 10 t\r\n", end_done),
    (b"delete t\r\n", line_done),
    (b"delete zz\r\n", line_done),
    (b"set noisy 0 0 1 noreply\r\n1\r\n", None),
    (b"mg a v\r\n", line_done),
    (b"mg zz v\r\n", line_done),
    (b"ms m 2\r\nhi\r\n", line_done),
    (b"ms m 2 MA\r\nhi\r\n", line_done),
    (b"md m\r\n", line_done),
    (b"ma zz\r\n", line_done),
    (b"ma n\r\n", line_done),
    (b"set n 0 0 1\r\n5\r\n", line_done),
    (b"ma n\r\n", line_done),
    (b"mn\r\n", line_done),
    (b"set f 0 0 1\r\n1\r\n", line_done),
    (b"flush_all\r\n", line_done),
    (b"get f\r\n", end_done),
    (b"set big 0 0 2000000\r\n" + b"x" * 2000000 + b"\r\n", line_done),
]


def ascii_session(server, watchers):
    c = server.connect()
    for data, done in ASCII_TRAFFIC:
        if done is None:
            c.sendall(data)
        else:
            run(c, data, done)
    run(c, b"get __end__\r\n", end_done)
    run(c, b"set __end__ 0 0 1\r\n1\r\n", line_done)
    c.close()
    return [w.lines_through(b"key=__end__") for w in watchers]


def refused_store_fields(lines):
    """memcached passes its refused-store entry too few arguments: its
    clsid is the client's descriptor and its cfd is whatever a register
    held. Both are blanked (the test compares the rest)."""
    out = []
    for line in lines:
        if b"status=too_large" in line or b"status=no_memory" in line:
            line = re.sub(rb" clsid=\d+", b" clsid=X", line)
        out.append(line)
    return out


def both(start_server, *opts):
    return start_server("ours", *OPTS, *opts), start_server("oracle", *OPTS, *opts)


def test_fetch_and_store_entries_match_memcached(start_server):
    streams = []
    for srv in both(start_server):
        w = Watcher(srv, b"fetchers mutations")
        streams.append(refused_store_fields(ascii_session(srv, [w])[0]))
    ours, oracle = streams
    assert ours == oracle
    # The stream is what the tests think it is.
    text = b"\n".join(oracle)
    for needle in (b"status=expired", b"status=flushed", b"status=too_large",
                   b"cmd=append ttl=0 clsid=1 cfd=F size=3", b"ttl=4294967"):
        assert needle in text, needle


def test_no_argument_watch_is_fetchers_only(start_server):
    streams = []
    for srv in both(start_server):
        w = Watcher(srv, b"")
        streams.append(ascii_session(srv, [w])[0])
    ours, oracle = streams
    assert ours == oracle
    assert all(b"type=item_get" in line for line in oracle)


def test_replies_to_watch_arguments(start_server):
    cases = [
        b"watch foo\r\n",
        b"watch fetchers foo\r\n",
        b"watch deletions\r\n",
        b"watch sysevents rawcmds proxyreqs proxyevents proxyuser\r\n",
        b"watch mutations evictions connevents fetchers\r\n",
        b"watch noreply\r\nversion\r\n",
        (b"get a\r\nwatch\r\n", 2),
        b"WATCH\r\n",
        b"watch\tfetchers\r\n",
    ]
    replies = {}
    for srv in both(start_server):
        got = []
        for case in cases:
            data, lines = case if isinstance(case, tuple) else (case, 1)
            s = srv.connect()
            got.append(run(s, data, lambda b, n=lines: b.count(b"\r\n") >= n))
            s.close()
        replies[srv.kind] = got
    assert replies["ours"] == replies["oracle"]
    assert replies["oracle"][0] == b"ERROR\r\n"
    assert replies["oracle"][3] == b"OK\r\n"


def test_disabled_watch_and_the_watcher_limit(start_server):
    results = {}
    for srv in both(start_server, "-W"):
        s = srv.connect()
        results[srv.kind] = [run(s, b"watch\r\n", line_done)]
    for srv in both(start_server):
        socks = [srv.connect() for _ in range(21)]
        got = [run(s, b"watch mutations\r\n", line_done) for s in socks]
        results[srv.kind].append(got[-1])
        assert got[:20] == [b"OK\r\n"] * 20
        st = wait_stat(srv, "log_watchers", lambda v: v == 20)
        assert st["log_watchers"] == "20"
    assert results["ours"] == results["oracle"]
    assert results["oracle"] == [
        b"CLIENT_ERROR watch commands not allowed\r\n",
        b"WATCHER_TOO_MANY log watcher limit reached\r\n",
    ]


def bin_req(op, key=b"", extras=b"", val=b"", cas=0):
    body = len(key) + len(extras) + len(val)
    return (struct.pack(">BBHBBHIIQ", 0x80, op, len(key), len(extras), 0, 0, body, 0, cas)
            + extras + key + val)


def bin_done(b):
    if len(b) < 24:
        return False
    return len(b) >= 24 + struct.unpack(">I", b[8:12])[0]


def test_binary_protocol_entries_and_binary_keys(start_server):
    odd = b"k\x00 \xff%,\r\n"
    traffic = [
        bin_req(0x01, b"bk", struct.pack(">II", 0, 0), b"vv"),
        bin_req(0x00, b"bk"),
        bin_req(0x00, b"nokey"),
        bin_req(0x0C, b"bk"),
        bin_req(0x1D, b"bk", struct.pack(">I", 10)),
        bin_req(0x1C, b"bk", struct.pack(">I", 10)),
        bin_req(0x04, b"bk"),
        bin_req(0x05, b"cnt", struct.pack(">QQI", 1, 5, 0)),
        bin_req(0x0E, b"bk", b"", b"x"),
        bin_req(0x02, b"bk", struct.pack(">II", 0, 0), b"vv"),
        bin_req(0x01, odd, struct.pack(">II", 0, 0), b"v"),
        bin_req(0x00, odd),
        bin_req(0x00, b"__end__"),
    ]
    streams = []
    for srv in both(start_server):
        w = Watcher(srv, b"fetchers mutations")
        c = srv.connect()
        for req in traffic:
            run(c, req, bin_done)
        streams.append(w.lines_through(b"key=__end__"))
        c.close()
    ours, oracle = streams
    assert ours == oracle
    assert any(b"key=k%00%20%FF%25%2C%0D%0A status=found" in x for x in oracle)


def test_eviction_entries(start_server):
    value = b"x" * 100000
    streams = []
    for srv in both(start_server, "-m", "2"):
        w = Watcher(srv, b"evictions")
        c = srv.connect()
        for i in range(30):
            ttl = 0 if i % 2 else 1000
            run(c, b"set k%d 0 %d %d\r\n" % (i, ttl, len(value)) + value + b"\r\n", line_done)
            if i == 3:
                run(c, b"get k1\r\n", end_done)
        streams.append(w.lines_through(b"key=k9 "))
        c.close()
    ours, oracle = streams
    assert ours == oracle
    assert oracle[1].endswith(b"key=k1 fetch=yes ttl=-1 la=0 clsid=32 size=100000")
    assert oracle[0].endswith(b"key=k0 fetch=no ttl=1000 la=0 clsid=32 size=100000")


def connevents_session(srv, w):
    a = srv.connect()
    run(a, b"version\r\n", line_done)
    a.close()
    b = srv.connect()
    b.sendall(b"quit\r\n")
    b.settimeout(IO_TIMEOUT)
    assert b.recv(10) == b""
    b.close()
    first = w.lines_through(b"reason=normal")
    second = w.lines_through(b"reason=normal")
    return first + second


def test_connection_entries(start_server):
    streams = []
    for srv in both(start_server):
        w = Watcher(srv, b"connevents")
        streams.append(connevents_session(srv, w))
    ours, oracle = streams
    assert ours == oracle
    assert oracle[0] == b"ts=T gid=G type=conn_new rip=127.0.0.1 rport=P transport=tcp cfd=F"
    assert oracle[1] == (b"ts=T gid=G type=conn_close rip=127.0.0.1 rport=P "
                         b"transport=tcp reason=normal cfd=F")


def test_a_watcher_ignores_its_input_and_its_close_is_logged(start_server):
    streams = []
    for srv in both(start_server):
        observer = Watcher(srv, b"connevents")
        w = Watcher(srv, b"fetchers")
        # Commands sent to a watcher are not run (nothing answers them).
        w.sock.sendall(b"get x\r\nversion\r\nquit\r\n")
        c = srv.connect()
        run(c, b"get __end__\r\n", end_done)
        got = w.lines_through(b"key=__end__")
        assert got == [b"ts=T gid=G type=item_get key=__end__ status=not_found clsid=0 cfd=F size=0"]
        w.close()
        streams.append(observer.lines_through(b"reason=error"))
        st = wait_stat(srv, "log_watchers", lambda v: v == 1)
        assert st["log_watchers"] == "1"
        c.close()
    ours, oracle = streams
    assert [x for x in ours if b"conn_close" in x] == [x for x in oracle if b"conn_close" in x]


def test_several_watchers_each_with_its_own_filter(start_server):
    streams = {}
    for srv in both(start_server):
        fetch = Watcher(srv, b"fetchers")
        mutate = Watcher(srv, b"mutations")
        both_w = Watcher(srv, b"mutations fetchers")
        streams[srv.kind] = ascii_session(srv, [fetch, mutate, both_w])
        fetch_lines, mutate_lines, both_lines = streams[srv.kind]
        assert all(b"type=item_get" in x for x in fetch_lines)
        assert all(b"type=item_store" in x for x in mutate_lines)
        # The combined stream stops at the fetch sentinel, before the
        # store sentinel that ends the mutations stream.
        assert len(both_lines) == len(fetch_lines) + len(mutate_lines) - 1
        want = 2 * len(both_lines)
        st = wait_stat(srv, "log_watcher_sent", lambda v: v >= want)
        assert int(st["log_watcher_sent"]) >= want
    for i in range(3):
        assert refused_store_fields(streams["ours"][i]) == refused_store_fields(streams["oracle"][i])


def test_a_slow_watcher_skips_lines_and_says_so(start_server, kind):
    """A watcher that does not read: memcached drops what does not fit
    its buffer, counts it, and reports it in the stream as skipped=N."""
    srv = start_server(kind, *OPTS, "-o", "watcher_logbuf_size=8")
    w = Watcher(srv, b"fetchers")
    c = srv.connect()
    # Long keys make long lines: more than the kernel's socket buffers
    # hold for a client that does not read.
    # memcached's workers drop entries its logger thread has not taken
    # yet (log_worker_dropped): a paced burst lets the thread keep up, so
    # what overflows is the watcher's own buffer, as this test wants.
    per_get = 40
    batch = b"get " + b" ".join(b"%05d" % i + b"m" * 240 for i in range(per_get)) + b"\r\n"
    rounds = 700
    for _ in range(rounds):
        run(c, batch, end_done)
        time.sleep(0.002)
    # The sentinel itself may find the buffer full: ask again until one
    # arrives (each is one more entry logged).
    lines = []
    for attempt in range(1, 50):
        run(c, b"get __end__\r\n", end_done)
        try:
            lines += w.lines_through(b"key=__end__", timeout=0.5)
            break
        except AssertionError:
            continue
    logged = rounds * per_get + attempt
    w.sock.settimeout(0.2)
    try:
        while True:
            chunk = w.sock.recv(1 << 20)
            if not chunk:
                break
            w.buf += chunk
    except socket.timeout:
        pass
    lines += [normalise(x) for x in w.buf.split(b"\n") if x]
    skipped_lines = [x for x in lines if x.startswith(b"skipped=")]
    entries = [x for x in lines if not x.startswith(b"skipped=")]
    reported = sum(int(x.split(b"=")[1]) for x in skipped_lines)
    st = srv.stats()
    assert skipped_lines, "a watcher that never read lost nothing"
    assert reported == int(st["log_watcher_skipped"])
    # Every entry logged either arrived or was reported skipped.
    assert len(entries) + reported == int(st["log_worker_written"])
    assert int(st["log_worker_written"]) + int(st["log_worker_dropped"]) == logged
    assert all(re.fullmatch(rb"ts=T gid=G type=item_get key=\S+ status=not_found clsid=0 cfd=F size=0", x)
               for x in entries)


def test_logger_stats_count_truly(start_server, kind):
    srv = start_server(kind, *OPTS)
    st = srv.stats()
    assert [st[k] for k in ("log_worker_written", "log_watcher_sent", "log_watchers")] == ["0", "0", "0"]
    c = srv.connect()
    run(c, b"get nobody_watches\r\n", end_done)
    w1 = Watcher(srv, b"fetchers")
    w2 = Watcher(srv, b"fetchers")
    run(c, b"get one\r\n", end_done)
    run(c, b"get __end__\r\n", end_done)
    w1.lines_through(b"key=__end__")
    w2.lines_through(b"key=__end__")
    st = wait_stat(srv, "log_watcher_sent", lambda v: v == 4)
    assert (st["log_worker_written"], st["log_watcher_sent"], st["log_watchers"],
            st["log_watcher_skipped"], st["log_worker_dropped"]) == ("2", "4", "2", "0", "0")


def test_unix_socket_clients_are_logged_as_local(tmp_path):
    from test_unix_socket import UnixServer

    streams = []
    for kind in ("ours", "oracle"):
        srv = UnixServer(kind, tmp_path / f"{kind}.sock", "-t", "1").wait_ready()
        try:
            w = Watcher(srv, b"connevents fetchers")
            c = srv.connect()
            run(c, b"get __end__\r\n", end_done)
            c.close()
            streams.append(w.lines_through(b"conn_close"))
        finally:
            srv.kill()
    ours, oracle = streams
    assert ours == oracle
    # (rport is normalised; memcached prints 0 for a unix client.)
    assert oracle == [
        b"ts=T gid=G type=conn_new rip=unix rport=P transport=local cfd=F",
        b"ts=T gid=G type=item_get key=__end__ status=not_found clsid=0 cfd=F size=0",
        b"ts=T gid=G type=conn_close rip=unix rport=P transport=local reason=normal cfd=F",
    ]


def test_watch_traces_as_memcached_at_vvv(start_server):
    """-vvv: the watcher's state change, and its close from memcached's
    logger thread."""
    traces = []
    for srv in both(start_server, "-vvv"):
        w = Watcher(srv, b"fetchers")
        w.close()

        def watcher_trace(lines):
            fd, picked = None, []
            for line in lines:
                if line.endswith(b" watch fetchers"):
                    fd = line[1:].split(b" ")[0]
                if fd is not None and (line.startswith(b"<" + fd + b" ")
                                       or line.startswith(fd + b": ")):
                    picked.append(line.replace(fd, b"FD", 1))
            return picked

        srv.stderr.wait_for(lambda ls: watcher_trace(ls)[-1:] == [
            b"FD: going from conn_closing to conn_closed"], IO_TIMEOUT)
        traces.append(watcher_trace(srv.stderr.lines()))
    ours, oracle = traces
    assert ours == oracle
    assert oracle == [
        b"<FD watch fetchers",
        b"FD: going from conn_parse_cmd to conn_watch",
        b"<FD connection closing from side thread.",
        b"<FD connection closed.",
        b"FD: going from conn_closing to conn_closed",
    ]


def test_idle_timeout_closes_are_logged_and_watchers_are_not_kicked(start_server):
    streams = []
    for srv in both(start_server, "-o", "idle_timeout=1"):
        w = Watcher(srv, b"connevents")
        c = srv.connect()
        run(c, b"version\r\n", line_done)
        streams.append(w.lines_through(b"reason=idle_timeout", timeout=10))
        # The watcher, idle just as long, is still served.
        c2 = srv.connect()
        assert w.lines_through(b"conn_new")
        c2.close()
        c.close()
    ours, oracle = streams
    assert ours == oracle
    assert oracle[-1].endswith(b"reason=idle_timeout cfd=F")


def test_watch_over_udp_leaves_the_port_serving(start_server):
    """A datagram socket cannot carry a log stream: memcached's logger
    fails to write it and drops the watcher; the port goes on serving."""
    for srv in both(start_server, "-U", "{port}"):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(IO_TIMEOUT)

        def udp(cmd, rid):
            u.sendto(struct.pack(">HHHH", rid, 0, 1, 0) + cmd, srv.addr)
            while True:
                # memcached at times answers the watch datagram with an
                # empty frame; only this request's reply counts.
                reply = u.recv(2000)
                if struct.unpack(">H", reply[:2])[0] == rid:
                    return reply

        u.sendto(struct.pack(">HHHH", 1, 0, 1, 0) + b"watch\r\n", srv.addr)
        reply = udp(b"version\r\n", 2)
        assert reply[8:].startswith(b"VERSION "), (srv.kind, reply)
        st = wait_stat(srv, "log_watchers", lambda v: v == 0)
        assert st["log_watchers"] == "0", srv.kind
        u.close()


def test_stats_conns_shows_a_watcher_in_conn_watch(start_server):
    reports = []
    for srv in both(start_server):
        w = Watcher(srv, b"")
        c = srv.connect()
        reply = run(c, b"stats conns\r\n", lambda b: b.endswith(b"END\r\n"))
        # One block per descriptor; descriptor numbers (and so the blocks'
        # order) differ between the servers.
        blocks = {}
        for line in reply.split(b"\r\n"):
            m = re.match(rb"STAT (\d+):(.*)", line)
            if m:
                blocks.setdefault(m.group(1), []).append(re.sub(rb":\d+$", b":P", m.group(2)))
        reports.append(sorted(blocks.values()))
        c.close()
        w.close()
    assert reports[0] == reports[1]
    for report in reports:
        assert [b"addr tcp:127.0.0.1:P", b"listen_addr tcp:127.0.0.1:P", b"state conn_watch",
                b"secs_since_last_cmd 0"] in report
