"""The replication link over TLS (`-o repl_tls`, ours): a pair whose link
is TLS replicates as a plaintext pair does (sets and deletes both ways, a
full copy, a heal after a node is killed), and it is encrypted (a relay
between the nodes records no value, and the replication port answers
plaintext with a TLS alert). A peer that speaks plaintext, one whose
certificate another CA signed, and one whose certificate does not carry
the expected name are refused, each with a log line that says why, and
nothing either sent is applied.

The nodes are two "hosts", 127.0.0.2 and 127.0.0.3, with the same -X
port. The certificates are made for the session: one CA signs both
nodes', another CA a stranger's; each names 127.0.0.1-3 (the relay runs
on 127.0.0.1).
"""

import shutil
import socket
import subprocess

import pytest

from mc_helpers import Server, free_port, ours_path, request
from repl_helpers import (
    gets, repl_stats, set_value, wait_linked, wait_role, wait_until, wait_value,
)
from test_repl_faults import RelayProcess

A, B = "127.0.0.2", "127.0.0.3"
SAN = "subjectAltName=IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(d / f"{name}_key.pem"), "-out", str(d / f"{name}_crt.pem"),
            "-days", "30", "-subj", f"/CN={name}")


def make_node(d, name, ca):
    key, csr, crt, ext = (d / f"{name}{s}" for s in ("_key.pem", ".csr", "_crt.pem", ".ext"))
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    ext.write_text(SAN + "\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(d / f"{ca}_crt.pem"),
            "-CAkey", str(d / f"{ca}_key.pem"), "-CAcreateserial", "-out", str(crt),
            "-days", "30", "-extfile", str(ext))


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("repl_tls")
    make_ca(d, "ca")
    make_ca(d, "other_ca")
    make_node(d, "a", "ca")
    make_node(d, "b", "ca")
    make_node(d, "stranger", "other_ca")
    return d


def tls_opts(certs, name, ca="ca", extra=""):
    opts = (f"repl_tls,ssl_chain_cert={certs / f'{name}_crt.pem'},"
            f"ssl_key={certs / f'{name}_key.pem'},ssl_ca_cert={certs / f'{ca}_crt.pem'}")
    return ("-o", opts + extra)


@pytest.fixture
def world():
    if not ours_path().is_file():
        pytest.fail(f"{ours_path()} not built: run `cargo build`")
    started = {"nodes": [], "relay": None}
    yield started
    for node in started["nodes"]:
        node.kill()
    if started["relay"] is not None:
        started["relay"].stop()


def node(world, host, peer, port, *more):
    n = Server("ours", ("-v", "-x", peer, "-X", str(port), *more), host=host)
    world["nodes"].append(n)
    return n


def log_has(n, text):
    return text in n.stderr.text()


def test_a_tls_pair_copies_replicates_both_ways_and_is_encrypted(world, certs, tmp_path):
    port, via_a, via_b = free_port(), free_port(), free_port()
    record = tmp_path / "wire.bin"
    relay = RelayProcess([(("127.0.0.1", via_a), (B, port)),
                          (("127.0.0.1", via_b), (A, port))], record=record)
    world["relay"] = relay
    a = node(world, A, f"127.0.0.1:{via_a}", port, *tls_opts(certs, "a"))
    wait_role(a, "master")
    # Before b exists: these reach it by the full copy.
    with a.connect() as s:
        for i in range(50):
            set_value(s, f"copied_{i}", f"secret-copied-{i}".encode())
    b = node(world, B, f"127.0.0.1:{via_b}", port, *tls_opts(certs, "b"))
    wait_role(b, "replica")
    wait_linked(a, b)
    assert gets(b, "copied_49")[0] == b"secret-copied-49"
    assert a.stats("settings")["repl_tls"] == "yes"

    with a.connect() as sa, b.connect() as sb:
        set_value(sa, "from_a", b"secret-from-master")
        set_value(sb, "from_b", b"secret-from-replica")
        wait_value(b, "from_a", b"secret-from-master")
        wait_value(a, "from_b", b"secret-from-replica")
        assert request(sb, b"delete from_a\r\n") == b"DELETED\r\n"
        assert request(sa, b"delete copied_0\r\n") == b"DELETED\r\n"
    wait_value(a, "from_a", None)
    wait_value(b, "copied_0", None)
    wait_linked(a, b)

    wire = record.read_bytes()
    assert len(wire) > 2000, "the relay forwarded almost nothing"
    # TLS records (a handshake record first), and no value in the clear.
    assert wire[:3] in (b"\x16\x03\x01", b"\x16\x03\x03"), wire[:16]
    for value in (b"secret-copied-", b"secret-from-master", b"secret-from-replica",
                  b"copied_", b"from_a"):
        assert value not in wire, f"{value!r} crossed the link in the clear"


def test_the_replication_port_speaks_only_tls_and_wants_a_client_certificate(world, certs):
    import ssl
    port = free_port()
    a = node(world, A, f"{B}:{port}", port, *tls_opts(certs, "a"))
    wait_role(a, "master")
    with socket.create_connection((A, port), timeout=10) as s:
        # What a plaintext peer sends first: a frame's header, not a
        # ClientHello's. (OpenSSL reads a record header, five bytes; more
        # would be left unread at the close, which then resets.)
        s.sendall(b"\x11\x00\x00\x00\x9a")
        reply = s.recv(64)
    # Closed, with at most a TLS alert: nothing in plaintext.
    assert reply == b"" or reply[:1] == b"\x15", reply
    wait_until("a's log line", lambda: log_has(a, "TLS with the peer failed: wrong version number"))

    # A TLS client is shown a's certificate (signed by the CA, naming A),
    # and refused for coming without one of its own.
    ctx = ssl.create_default_context(cafile=str(certs / "ca_crt.pem"))
    with socket.create_connection((A, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=A) as s:
            subject = dict(x[0] for x in s.getpeercert()["subject"])
            assert subject["commonName"] == "a"
            with pytest.raises((ssl.SSLError, ConnectionError)):
                s.sendall(b"x" * 25)
                assert s.recv(64) == b""
    wait_until("a's log line", lambda: log_has(
        a, "TLS with the peer failed: peer did not return a certificate"))


def refused_pair(world, certs, b_opts, a_extra=""):
    """a (TLS, holding `only_a`) and b (b_opts, holding `only_b`), each
    naming the other; returns them once each has tried the other."""
    port = free_port()
    a = node(world, A, f"{B}:{port}", port, *tls_opts(certs, "a", extra=a_extra))
    wait_role(a, "master")
    with a.connect() as s:
        set_value(s, "only_a", b"a's")
    b = node(world, B, f"{A}:{port}", port, *b_opts)
    with b.connect() as s:
        set_value(s, "only_b", b"b's")
    return a, b


def assert_nothing_crossed(a, b):
    # b serves alone as master after its failed attempt; neither holds
    # the other's key, and neither link reports a connection.
    wait_role(b, "master")
    for n in (a, b):
        assert repl_stats(n)["repl_connected"] == "0"
    assert gets(a, "only_b") is None
    assert gets(b, "only_a") is None
    assert gets(a, "only_a")[0] == b"a's" and gets(b, "only_b")[0] == b"b's"


def test_a_plaintext_peer_is_refused_and_nothing_it_sends_is_applied(world, certs):
    a, b = refused_pair(world, certs, ())
    wait_until("a's log line",
               lambda: log_has(a, "link lost: TLS with the peer failed: wrong version number"))
    wait_until("b to give up on a", lambda: log_has(b, "link lost"))
    assert_nothing_crossed(a, b)


def test_a_certificate_from_another_ca_is_refused(world, certs):
    a, b = refused_pair(world, certs, tls_opts(certs, "stranger"))
    # b checks a's certificate first (against ca: it trusts it), then a
    # checks b's, signed by the other CA.
    wait_until("a's log line", lambda: log_has(
        a, "TLS with the peer failed: certificate verify failed (unable to get local issuer"))
    wait_until("b's log line", lambda: log_has(b, "TLS with the peer failed: tlsv1 alert unknown ca"))
    assert_nothing_crossed(a, b)


def test_a_node_that_trusts_another_ca_refuses_the_peer(world, certs):
    # b's certificate is good, but b checks a's against the other CA. (a
    # sends its CA with its certificate, which b then finds self-signed
    # and unknown.)
    a, b = refused_pair(world, certs, tls_opts(certs, "b", ca="other_ca"))
    wait_until("b's log line", lambda: log_has(
        b, "TLS with the peer failed: certificate verify failed (self-signed certificate"))
    wait_until("a's log line", lambda: log_has(a, "TLS with the peer failed: tlsv1 alert unknown ca"))
    assert_nothing_crossed(a, b)


def test_a_certificate_without_the_expected_name_is_refused(world, certs):
    a, b = refused_pair(world, certs,
                        tls_opts(certs, "b", extra=",repl_tls_name=cache.example"))
    wait_until("b's log line", lambda: log_has(
        b, "TLS with the peer failed: certificate verify failed (hostname mismatch)"))
    assert_nothing_crossed(a, b)


def test_a_killed_replica_comes_back_and_heals_over_tls(world, certs):
    port = free_port()
    a = node(world, A, f"{B}:{port}", port, *tls_opts(certs, "a"))
    wait_role(a, "master")
    b = node(world, B, f"{A}:{port}", port, *tls_opts(certs, "b"))
    wait_role(b, "replica")
    wait_linked(a, b)
    with a.connect() as s:
        set_value(s, "before", b"1")
    wait_value(b, "before", b"1")

    b.kill()  # SIGKILL: no close_notify, the link just stops
    world["nodes"].remove(b)
    with a.connect() as s:
        for i in range(20):
            set_value(s, f"while_down_{i}", b"x" * 100)
        assert request(s, b"delete before\r\n") == b"DELETED\r\n"
    b = node(world, B, f"{A}:{port}", port, *tls_opts(certs, "b"))
    wait_role(b, "replica")
    wait_linked(a, b)
    assert gets(b, "while_down_19")[0] == b"x" * 100
    assert gets(b, "before") is None
    with b.connect() as s:
        set_value(s, "after", b"back")
    wait_value(a, "after", b"back")
    assert not log_has(a, "TLS with the peer failed")


def test_the_options_are_checked_at_start(certs):
    def run(*args):
        return subprocess.run([str(ours_path()), "-u", "root", *args],
                              capture_output=True, timeout=10)
    missing_ca = run("-x", "127.0.0.1", "-o",
                     f"repl_tls,ssl_chain_cert={certs / 'a_crt.pem'},ssl_key={certs / 'a_key.pem'}")
    assert missing_ca.returncode == 64
    assert b"repl_tls needs ssl_chain_cert, ssl_key and ssl_ca_cert" in missing_ca.stderr
    alone = run(*tls_opts(certs, "a"))
    assert alone.returncode == 64
    assert b"repl_tls needs replication" in alone.stderr
    bad_key = run("-x", "127.0.0.1", "-o",
                  f"repl_tls,ssl_chain_cert={certs / 'a_crt.pem'},"
                  f"ssl_key={certs / 'b_key.pem'},ssl_ca_cert={certs / 'ca_crt.pem'}")
    assert bad_key.returncode == 64
    assert b"repl_tls: Error loading the key" in bad_key.stderr
    name_alone = run("-x", "127.0.0.1", "-o", "repl_tls_name=x")
    assert name_alone.returncode == 64
    helped = run("-h").stdout
    assert b"- repl_tls:" in helped and b"- repl_tls_name:" in helped
