"""Slab page rebalancing: `slabs reassign` and `slabs automove`."""

import socket
import time

from mc_helpers import recv_until


def send(sock, payload, done):
    sock.sendall(payload)
    return recv_until(sock, done, timeout=30)


def stat(sock, name, sub=b""):
    reply = send(sock, b"stats " + sub + b"\r\n", lambda b: b.endswith(b"END\r\n"))
    for line in reply.split(b"\r\n"):
        parts = line.split(b" ")
        if len(parts) == 3 and parts[1] == name.encode():
            return int(parts[2])
    return 0


def fill_small(sock, n):
    value = b"s" * 100
    batch = b"".join(b"set small%d 0 0 100 noreply\r\n%s\r\n" % (i, value) for i in range(n))
    send(sock, batch + b"mn\r\n", lambda b: b.endswith(b"MN\r\n"))


def test_automove_gives_pages_to_a_new_value_size(start_server):
    srv = start_server("ours", "-m", "8")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        fill_small(s, 70000)
        assert stat(s, "evictions") > 0
        big = b"B" * 50000
        deadline = time.monotonic() + 40
        best = 0.0
        while time.monotonic() < deadline:
            sets = b"".join(b"set big%d 0 0 50000 noreply\r\n%s\r\n" % (i, big) for i in range(60))
            send(s, sets + b"mn\r\n", lambda b: b.endswith(b"MN\r\n"))
            keys = b" ".join(b"big%d" % i for i in range(60))
            reply = send(s, b"get " + keys + b"\r\n", lambda b: b.endswith(b"END\r\n"))
            best = max(best, reply.count(b"VALUE ") / 60)
            if best >= 0.95:
                break
            time.sleep(0.2)
        assert best >= 0.95, f"hit rate for large values stayed at {best:.0%}"
        assert stat(s, "slabs_moved") > 0


def test_reassign_replies_match_oracle(start_server):
    script = (b"slabs reassign 1 1\r\nslabs reassign 1 2\r\nslabs reassign 99 1\r\n"
              b"slabs reassign x 1\r\nslabs reassign\r\nslabs bogus\r\n"
              b"slabs automove 3\r\nslabs automove x\r\nslabs automove 0\r\n"
              b"slabs automove ratio\r\nslabs automove 1 noreply\r\nmn\r\n")
    replies = []
    for kind in ("oracle", "ours"):
        srv = start_server(kind)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            replies.append(send(s, script, lambda b: b.endswith(b"MN\r\n")))
    assert replies[1] == replies[0]


def test_reassign_moves_a_page(start_server):
    srv = start_server("ours", "-m", "4", "-o", "slab_automove=0")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        fill_small(s, 30000)
        pages = stat(s, "3:total_pages", b"slabs")
        assert pages >= 2
        assert send(s, b"slabs reassign 3 10\r\n", lambda b: b.endswith(b"\r\n")) == b"OK\r\n"
        deadline = time.monotonic() + 10
        while stat(s, "slabs_moved") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stat(s, "slabs_moved") == 1
        assert stat(s, "3:total_pages", b"slabs") == pages - 1
        assert stat(s, "10:total_pages", b"slabs") == 1
        # The moved page's items are gone; every other item reads back
        # intact.
        items = stat(s, "curr_items")
        assert 0 < items < 30000
        hits = 0
        for start in range(0, 30000, 1000):
            keys = b" ".join(b"small%d" % i for i in range(start, start + 1000))
            reply = send(s, b"get " + keys + b"\r\n", lambda b: b.endswith(b"END\r\n"))
            for block in reply.split(b"VALUE ")[1:]:
                header, value = block.split(b"\r\n")[:2]
                assert header.endswith(b" 0 100") and value == b"s" * 100, block[:80]
                hits += 1
        assert hits == items
