"""repcached's command line (the seed: `memcached -d -m 2048 -p 11211 -u root
-c 2048 -x $PEER -X 11212`): `-X <port>` followed by a number is the
replication port, with or without `-x`; `-x host` reaches the peer on that
port; a bare `-X` is still memcached's --disable-dumping. Two nodes are two
loopback addresses (127.0.0.2, 127.0.0.3) using the same `-X` port, as two
hosts would.

Every wait is a bounded poll on a stat or a value.
"""

import time

import pytest

from mc_helpers import Server, free_port, ours_path, oracle_path, request
from repl_helpers import (
    gets, repl_stats, set_value, wait_linked, wait_role, wait_until, wait_value,
)

A, B = "127.0.0.2", "127.0.0.3"


@pytest.fixture
def nodes():
    if not ours_path().is_file():
        pytest.fail(f"{ours_path()} not built: run `cargo build`")
    started = []
    yield started
    for node in started:
        node.kill()


def start(nodes, host, *args):
    node = Server("ours", args, host=host)
    nodes.append(node)
    return node


def test_the_seeds_command_line_pairs_two_hosts_on_the_same_X_port(nodes):
    port = free_port()
    seed = ("-m", "64", "-c", "2048")
    a = start(nodes, A, *seed, "-x", B, "-X", str(port))
    wait_role(a, "master")
    b = start(nodes, B, *seed, "-x", A, "-X", str(port))
    wait_role(b, "replica")
    wait_linked(a, b)
    # Each listens (or would) on its own address, the same port number.
    settings = [n.stats("settings") for n in (a, b)]
    assert [s["repl_port"] for s in settings] == [str(port)] * 2
    assert [s["repl_peer"] for s in settings] == [B, A]
    with a.connect() as s:
        set_value(s, "from_a", b"1")
    with b.connect() as s:
        set_value(s, "from_b", b"2")
    wait_value(b, "from_a", b"1")
    wait_value(a, "from_b", b"2")
    # repcached's -X is the port only: dumping stays enabled. (The dump
    # walks COLD, where the LRU maintainer moves new items.)
    deadline = time.monotonic() + 10
    with a.connect() as s:
        while True:
            dump = request(s, b"stats cachedump 1 1\r\n")
            if dump.startswith(b"ITEM ") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert dump.startswith(b"ITEM "), dump


def test_X_port_alone_is_a_master_listening_on_its_address(nodes):
    port = free_port()
    a = start(nodes, A, "-X", str(port))
    wait_role(a, "master")
    st = repl_stats(a)
    assert st["repl_peer"] == "(none)" and st["repl_connected"] == "0"
    with a.connect() as s:
        set_value(s, "early", b"master's")
    # The port is bound on -l's address only: B's address is free for it.
    b = start(nodes, B, "-x", f"{A}:{port}", "-X", str(port))
    wait_role(b, "replica")
    wait_linked(a, b)
    wait_value(b, "early", b"master's")
    with b.connect() as s:
        set_value(s, "late", b"replica's")
    wait_value(a, "late", b"replica's")
    assert gets(a, "late") == gets(b, "late")
    # A master without -x has no peer to try: when its replica goes away it
    # stays master, and keeps serving.
    b.kill()
    wait_until("a to notice its replica left",
               lambda: repl_stats(a)["repl_connected"] == "0")
    with a.connect() as s:
        set_value(s, "still", b"here")
    assert repl_stats(a)["repl_role"] == "master"


BARE_X_LINES = [
    ("-X",),
    ("-X", "-m", "64"),
    ("-vX",),
    ("-X", "-t", "1", "-Xm", "64"),
    ("--disable-dumping",),
]


@pytest.mark.parametrize("args", BARE_X_LINES, ids=" ".join)
def test_a_bare_X_is_still_memcacheds_disable_dumping(args):
    """No number after -X: the same replies as memcached 1.6.18, and no
    replication."""
    if not oracle_path().is_file():
        pytest.skip(f"oracle {oracle_path()} not installed")
    replies = {}
    for kind in ("ours", "oracle"):
        server = Server(kind, args)
        try:
            with server.connect() as s:
                set_value(s, "k", b"v")
                replies[kind] = [
                    request(s, b"stats cachedump 1 1\r\n"),
                    request(s, b"lru_crawler metadump all\r\n"),
                    request(s, b"me k\r\n"),
                ]
            st = server.stats()
            assert not any(k.startswith("repl_") for k in st), kind
        finally:
            server.kill()
    assert replies["ours"] == replies["oracle"]
    assert replies["ours"][0] != b"END\r\n" and b"ITEM" not in replies["ours"][0]


def test_a_bad_X_port_refuses_to_start():
    import subprocess
    for bad in ("0", "65536"):
        out = subprocess.run([str(ours_path()), "-X", bad], capture_output=True, timeout=10)
        assert out.returncode != 0
        assert f'Invalid replication port "{bad}"' in out.stderr.decode()
