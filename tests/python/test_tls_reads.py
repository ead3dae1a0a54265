"""How TLS input reaches the server: records that arrive together with
the handshake's last flight, many records in one segment, a record split
over several segments, values that span many records, many clients
connecting at once (each one handshake and one get, the benchmark's
"new connections"), and what a request costs in reads of the socket.

The client here drives Python's TLS over memory buffers, so that it
chooses exactly which bytes go out in which `send`: its Finished and its
first request back to back is what a client that writes right after its
handshake often sends, and what a server reading ahead must not leave
unprocessed inside its TLS library. Each case runs against memcached
1.6.18 too, which answers all of them.
"""

import shutil
import socket
import ssl
import subprocess
import threading

import pytest

from mc_helpers import ends_with, recv_until

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")

IO_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls_reads")
    crt, key = d / "crt.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "30", "-subj", "/CN=reads"],
        check=True, capture_output=True)
    return crt, key


def start(start_server, kind, cert, *more):
    crt, key = cert
    return start_server(kind, "-Z", "-o", f"ssl_chain_cert={crt},ssl_key={key}", *more)


def context(version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


class FlightClient:
    """A TLS client over a plain socket whose sends are chosen by the
    caller: `handshake` stops with the client's last handshake bytes
    still unsent (its Finished, in TLS 1.3 and in a resumed TLS 1.2
    session), so the first request can go out in the same segment."""

    def __init__(self, addr, ctx, session=None):
        self.sock = socket.create_connection(addr, timeout=IO_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, session=session)
        self.plain = b""

    def handshake(self):
        while True:
            try:
                self.tls.do_handshake()
                return
            except ssl.SSLWantReadError:
                if self.outgoing.pending:
                    self.sock.sendall(self.outgoing.read())
                self._receive()

    def records(self, *plaintexts):
        """Each plaintext as its own record(s), with whatever handshake
        bytes are pending in front; the TLS bytes, not yet sent."""
        for p in plaintexts:
            self.tls.write(p)
        return self.outgoing.read()

    def send(self, *plaintexts):
        self.sock.sendall(self.records(*plaintexts))

    def _receive(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise EOFError("server closed the connection")
        self.incoming.write(data)

    def read_until(self, done):
        while not done(self.plain):
            try:
                while True:
                    self.plain += self.tls.read(1 << 16)
            except ssl.SSLWantReadError:
                pass
            if done(self.plain):
                break
            self._receive()
        got, self.plain = self.plain, b""
        return got

    def close(self):
        self.sock.close()


def count(what, n):
    return lambda buf: buf.count(what) >= n


VERSIONS = [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2]


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.3", "tls1.2"])
def test_first_request_in_the_same_segment_as_the_finished(start_server, cert, kind, version):
    srv = start(start_server, kind, cert)
    for _ in range(20):
        c = FlightClient(srv.addr, context(version))
        c.handshake()
        c.send(b"version\r\n")
        assert c.read_until(ends_with(b"\r\n")) == b"VERSION 1.6.18\r\n"
        c.close()


def test_resumed_tls12_finished_and_request_together(start_server, cert, kind):
    """A resumed TLS 1.2 handshake ends with the client's Finished, so its
    first request can ride in the same segment."""
    srv = start(start_server, kind, cert)
    ctx = context(ssl.TLSVersion.TLSv1_2)
    first = FlightClient(srv.addr, ctx)
    first.handshake()
    first.send(b"version\r\n")
    first.read_until(ends_with(b"\r\n"))
    session = first.tls.session
    first.close()
    for _ in range(5):
        c = FlightClient(srv.addr, ctx, session=session)
        c.handshake()
        assert c.tls.session_reused
        c.send(b"set k 0 0 1\r\nv\r\n", b"get k\r\n")
        assert c.read_until(count(b"END\r\n", 1)) == b"STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n"
        c.close()


def test_many_records_in_one_segment(start_server, cert, kind):
    """Fifty requests, each its own record, sent in one write: every one
    answered, in order, though the last record may sit read but not yet
    decrypted when the socket is empty."""
    srv = start(start_server, kind, cert)
    c = FlightClient(srv.addr, context())
    c.handshake()
    c.send(*[b"set k%d 0 0 %d\r\n%d\r\n" % (i, len(b"%d" % i), i) for i in range(50)])
    assert c.read_until(count(b"STORED\r\n", 50)) == b"STORED\r\n" * 50
    c.send(*[b"get k%d\r\n" % i for i in range(50)])
    want = b"".join(b"VALUE k%d 0 %d\r\n%d\r\nEND\r\n" % (i, len(b"%d" % i), i) for i in range(50))
    assert c.read_until(count(b"END\r\n", 50)) == want
    c.close()


def test_records_split_across_segments(start_server, cert, kind):
    """A record's header and body in separate sends, and a record cut in
    the middle of its body: the server waits for the rest and answers."""
    srv = start(start_server, kind, cert)
    c = FlightClient(srv.addr, context())
    c.handshake()
    other = FlightClient(srv.addr, context())
    other.handshake()
    probe = b"version\r\n"
    for cut in (3, 5, 20, -1):
        wire = c.records(b"get nothing\r\n")
        c.sock.sendall(wire[:cut])
        # A round trip on another connection: the server has had its turn
        # with the first part before the rest comes.
        other.send(probe)
        assert other.read_until(ends_with(b"\r\n")) == b"VERSION 1.6.18\r\n"
        c.sock.sendall(wire[cut:])
        assert c.read_until(ends_with(b"END\r\n")) == b"END\r\n"
    c.close()
    other.close()


def test_value_spanning_many_records_and_pipelined_gets(start_server, cert):
    """A 200 KB value goes in and out through many records, and pipelined
    gets of it come back whole (our server only: memcached 1.6.18 stalls
    on values that span records)."""
    srv = start(start_server, "ours", cert)
    value = bytes(range(256)) * 800
    c = FlightClient(srv.addr, context())
    c.handshake()
    c.send(b"set big 0 0 %d\r\n" % len(value) + value + b"\r\n")
    assert c.read_until(ends_with(b"\r\n")) == b"STORED\r\n"
    c.send(b"get big\r\n" * 5)
    want = (b"VALUE big 0 %d\r\n" % len(value) + value + b"\r\nEND\r\n") * 5
    assert c.read_until(count(b"\r\nEND\r\n", 5)) == want
    c.close()


def test_many_clients_connecting_at_once(start_server, cert, kind):
    """Four threads each connect, handshake and get, forty times over
    (the benchmark's new connections): every get is answered."""
    srv = start(start_server, kind, cert)
    s = FlightClient(srv.addr, context())
    s.handshake()
    s.send(b"set key:1 0 0 3\r\nabc\r\n")
    s.read_until(ends_with(b"\r\n"))
    s.close()
    failures = []

    def worker():
        ctx = context()
        try:
            for _ in range(40):
                raw = socket.create_connection(srv.addr, timeout=IO_TIMEOUT)
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with ctx.wrap_socket(raw) as t:
                    t.sendall(b"get key:1\r\n")
                    got = recv_until(t, ends_with(b"END\r\n"))
                    if got != b"VALUE key:1 0 3\r\nabc\r\nEND\r\n":
                        failures.append(got)
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert failures == []


@pytest.mark.skipif(shutil.which("strace") is None, reason="no strace")
def test_one_read_per_request(start_server, cert, tmp_path):
    """Read ahead and the short-read note: a get over TLS costs the
    server one `read` of its socket (a record header, its body and a read
    that finds the socket empty were three), and a mget10 too."""
    srv = start(start_server, "ours", cert)
    c = FlightClient(srv.addr, context())
    c.handshake()
    c.send(*[b"set k%d 0 0 1\r\nv\r\n" % i for i in range(10)])
    c.read_until(count(b"STORED\r\n", 10))
    trace = tmp_path / "reads.strace"
    tracer = subprocess.Popen(["strace", "-f", "-e", "trace=read,recvfrom,recvmsg", "-o", str(trace),
                               "-p", str(srv.pid)], stderr=subprocess.PIPE)
    try:
        assert b"attached" in tracer.stderr.readline()
        for _ in range(20):
            c.send(b"get k1\r\n")
            assert c.read_until(ends_with(b"END\r\n")) == b"VALUE k1 0 1\r\nv\r\nEND\r\n"
            c.send(b"get " + b" ".join(b"k%d" % i for i in range(10)) + b"\r\n")
            assert c.read_until(ends_with(b"END\r\n")).count(b"VALUE") == 10
    finally:
        tracer.terminate()
        tracer.wait(timeout=10)
    per_fd = {}
    for line in trace.read_text().splitlines():
        fd = line.split("(", 1)[1].split(",", 1)[0] if "(" in line else None
        if fd is not None and fd.isdigit():
            per_fd[fd] = per_fd.get(fd, 0) + 1
    c.close()
    # The client's descriptor is the one read most; 40 requests.
    assert 40 <= max(per_fd.values()) <= 42, per_fd


def test_stream_of_small_records_with_values_swallowed(start_server, cert):
    """memcached's lru-maintainer.t over TLS, its first part: 15,000 sets
    (noreply, one record each) into 3 MB, many refused and their values
    swallowed a few bytes at a time, written without reading, then one
    set that answers. A read that finds records left inside OpenSSL must
    not take an old short read from the socket for a drained socket (data
    may have come since, its event already handled): it stalled here."""
    srv = start(start_server, "ours", cert, "-m", "3", "-o", "lru_maintainer,lru_crawler")
    raw = socket.create_connection(srv.addr, timeout=IO_TIMEOUT)
    with context().wrap_socket(raw) as s:
        stub = b"X" * 200
        for i in range(1, 15001):
            s.sendall(b"set %s%d 0 0 2 noreply\r\nok\r\n" % (stub, i))
        s.sendall(b"set %s20001 0 0 2\r\nok\r\n" % stub)
        assert recv_until(s, ends_with(b"STORED\r\n")).endswith(b"STORED\r\n")
