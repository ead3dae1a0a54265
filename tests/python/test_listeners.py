"""Several -l addresses (comma lists and repeated -l), IPv6 listeners
(`::1`, `[::1]:port`), UDP on each listed address, and memcached's
messages for listen entries it cannot use. Compared with the oracle.

(Every server here is started with `-l 127.0.0.1` first, which the
readiness check uses; the options under test add to it.)"""

import socket
import struct
import subprocess

import pytest

from mc_helpers import binary_for, free_port, have_ipv6_loopback, request, stats_over


needs_ipv6 = pytest.mark.skipif(not have_ipv6_loopback(), reason="no ::1 on this machine")


def conns_shape(srv):
    """`stats conns` for the listeners, in descriptor order, ports left
    out (the two servers listen on different ports). Clients are left out:
    the readiness probe's may or may not be closed yet."""
    with srv.connect() as c:
        conns = stats_over(c, "conns")
    clients = {key.split(":")[0] for key in conns if key.endswith(":listen_addr")}
    return [
        f"{key.split(':', 1)[1]} {value.rsplit(':', 1)[0] if ':' in value else value}"
        for key, value in conns.items()
        if key.split(":", 1)[1] in ("addr", "UDP") and key.split(":")[0] not in clients
    ]


def same_shape(start_server, *opts):
    shapes = [conns_shape(start_server(kind, *opts)) for kind in ("oracle", "ours")]
    assert shapes[1] == shapes[0]
    return shapes[1]


@needs_ipv6
@pytest.mark.parametrize("entry", ["::1", "[::1]", "[::1]:{port}"])
def test_ipv6_listener(start_server, kind, entry):
    srv = start_server(kind, "-l", entry)
    with socket.create_connection(("::1", srv.port), timeout=10) as c:
        assert request(c, b"version\r\n") == b"VERSION 1.6.18\r\n"


@needs_ipv6
def test_several_listeners_match_oracle(start_server):
    shape = same_shape(
        start_server, "-l", "[::1]:{port},127.0.0.2", "-l", "::1", "-U", "{port}"
    )
    listeners = [line for line in shape if line.startswith("addr ")]
    assert listeners[:6] == [
        "addr tcp:127.0.0.1", "addr tcp6:[::1]", "addr tcp:127.0.0.2",
        "addr udp:127.0.0.1", "addr udp6:[::1]", "addr udp:127.0.0.2",
    ]


@needs_ipv6
def test_udp_on_every_listed_address(start_server, kind):
    srv = start_server(kind, "-l", "[::1]", "-U", "{port}")
    shape = conns_shape(srv)
    assert shape.count("UDP UDP") == 2  # one per address with two -l
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(10)
            s.sendto(struct.pack(">HHHH", 77, 0, 1, 0) + b"version\r\n", (host, srv.port))
            data, _ = s.recvfrom(2048)
        assert data == struct.pack(">HHHH", 77, 0, 1, 0) + b"VERSION 1.6.18\r\n"


def test_repeated_l_accumulates_like_oracle(start_server):
    port2 = free_port()
    settings = []
    for kind in ("oracle", "ours"):
        srv = start_server(kind, "-l", f"127.0.0.1:{port2}", "-l", "127.0.0.1")
        settings.append(srv.stats("settings"))
        srv.kill()  # frees port2 for the next one
    # memcached drops an -l value already contained in the list so far.
    assert settings[1]["inter"] == settings[0]["inter"] == f"127.0.0.1,127.0.0.1:{port2}"


@pytest.mark.parametrize(
    "entry",
    ["127.0.0.1:abc", "127.0.0.1:", "[::1", "tag[123456789]:127.0.0.1", "proto[ascii", "tag[ab",
     "127.0.0.1,127.0.0.1"],
)
def test_bad_entries_fail_like_oracle(entry):
    port = str(free_port())
    results = []
    for kind in ("oracle", "ours"):
        proc = subprocess.run(
            [str(binary_for(kind)), "-u", "root", "-p", port, "-l", entry],
            capture_output=True, timeout=30,
        )
        results.append((proc.returncode, proc.stderr))
    assert results[1] == results[0]
    assert results[1][0] != 0


def test_proto_prefix_sets_the_listeners_protocol(start_server):
    """`-l proto[binary]:addr`: that listener speaks only the binary
    protocol (traced so at -vv); the others keep -B's."""
    version = struct.pack(">BBHBBHIIQ", 0x80, 0x0B, 0, 0, 0, 0, 0, 0, 0)
    results = []
    for kind in ("oracle", "ours"):
        srv = start_server(kind, "-vv", "-l", "proto[binary]:127.0.0.2")
        with socket.create_connection(("127.0.0.2", srv.port), timeout=10) as c:
            reply = request(c, version, done=lambda b: len(b) >= 24 + 6)
        assert srv.stderr.wait_for(lambda ls: any(b"new binary client" in l for l in ls), 10)
        listening = sorted(l.split(b" ", 1)[1] for l in srv.stderr.lines() if b"listening" in l)
        results.append((reply, listening))
    assert results[1] == results[0]
    assert results[1][1] == [b"server listening (auto-negotiate)", b"server listening (binary)"]
