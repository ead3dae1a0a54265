"""The meta protocol with real concurrency and traces.

* Stale-while-revalidate with several clients at once: after `md <key> I`
  (or an `mg ... N` miss, or a TTL under `mg ... R`), concurrent `mg`s see
  exactly one W (the winner recaches) and Z for everyone else, on our
  server as on memcached.
* The -vv and -vvv traces of meta sessions, compared with the oracle line
  by line (fd numbers normalised): meta replies other than errors and `EN`
  of `me` are not traced, as memcached does not pass them to out_string.
"""

import re
import socket
import threading

import pytest

from mc_helpers import (
    IO_TIMEOUT,
    TRACE_FD_RE as FD_RE,
    normalise_trace as normalise,
    recv_until,
)

CLIENTS = 8

# memcached reads an item's "token sent" flag twice without the item lock
# (once for Z, once for W), so with several worker threads two clients can
# race and one gets neither flag. One worker thread makes the oracle as
# deterministic as our single-threaded reactor; both take `-t 1`.
ONE_THREAD = ("-t", "1")


def line_done(buf):
    return buf.endswith(b"\r\n")


def reply_complete(buf):
    """One meta reply: a line, plus the data block when it is VA."""
    eol = buf.find(b"\r\n")
    if eol < 0:
        return False
    if not buf.startswith(b"VA "):
        return len(buf) == eol + 2
    size = int(buf[3:eol].split()[0])
    return len(buf) == eol + 2 + size + 2


def meta(sock, req):
    """Sends one meta request; returns its whole reply."""
    sock.sendall(req)
    return recv_until(sock, reply_complete)


def flags_of(reply):
    return reply.split(b"\r\n", 1)[0].split()[1:]


def concurrent_mg(srv, req, n=CLIENTS):
    """n clients connect, wait at a barrier, then all send `req` at once."""
    socks = [srv.connect() for _ in range(n)]
    barrier = threading.Barrier(n)
    replies = [None] * n
    errors = []

    def run(i):
        try:
            barrier.wait(timeout=IO_TIMEOUT)
            replies[i] = meta(socks[i], req)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(IO_TIMEOUT * 2)
    for s in socks:
        s.close()
    assert not errors, errors
    return replies


def one_winner(replies):
    wins = [r for r in replies if b"W" in flags_of(r)]
    others = [r for r in replies if b"W" not in flags_of(r)]
    assert len(wins) == 1, replies
    assert all(b"Z" in flags_of(r) for r in others), replies
    return wins[0], others


def test_stale_while_revalidate_dance(start_server, kind):
    srv = start_server(kind, *ONE_THREAD)
    with srv.connect() as c:
        assert meta(c, b"ms swr 3 T0\r\nold\r\n") == b"HD\r\n"
        assert meta(c, b"md swr I T30\r\n") == b"HD\r\n"
    replies = concurrent_mg(srv, b"mg swr c v\r\n")
    win, others = one_winner(replies)
    # Everyone is told the data is stale and gets it anyway.
    assert all(b"X" in flags_of(r) and r.endswith(b"\r\nold\r\n") for r in replies)
    cas = [f for f in flags_of(win) if f.startswith(b"c")][0]
    assert all(cas in flags_of(r) for r in others)
    # The winner recaches with the CAS it saw; a loser trying the same
    # afterwards is refused.
    with srv.connect() as c:
        assert meta(c, b"ms swr 3 " + cas.replace(b"c", b"C") + b" T0\r\nnew\r\n") == b"HD\r\n"
        assert meta(c, b"ms swr 4 " + cas.replace(b"c", b"C") + b"\r\nlate\r\n") == b"EX\r\n"
    replies = concurrent_mg(srv, b"mg swr v\r\n")
    assert replies == [b"VA 3\r\nnew\r\n"] * CLIENTS


def test_stale_store_with_older_cas(start_server, kind):
    """`ms ... C<old> I` from a slow writer keeps the item stale (and the
    win already handed out) instead of failing."""
    srv = start_server(kind, *ONE_THREAD)
    with srv.connect() as c:
        assert meta(c, b"ms k 1 c\r\na\r\n") == b"HD c1\r\n"
        assert meta(c, b"md k I\r\n") == b"HD\r\n"
        assert meta(c, b"mg k c\r\n") == b"HD c2 X W\r\n"
        assert meta(c, b"ms k 1 C1 I c\r\nb\r\n") == b"HD c3\r\n"
    replies = concurrent_mg(srv, b"mg k v\r\n")
    assert replies == [b"VA 1 Z X\r\nb\r\n"] * CLIENTS


def test_vivify_on_miss_dance(start_server, kind):
    srv = start_server(kind, *ONE_THREAD)
    replies = concurrent_mg(srv, b"mg viv N30 s v\r\n")
    win, others = one_winner(replies)
    assert win == b"VA 0 s0 W\r\n\r\n"
    assert others == [b"VA 0 s0 Z\r\n\r\n"] * (CLIENTS - 1)
    with srv.connect() as c:
        assert meta(c, b"ms viv 4 T0\r\nfull\r\n") == b"HD\r\n"
    assert concurrent_mg(srv, b"mg viv N30 v\r\n") == [b"VA 4\r\nfull\r\n"] * CLIENTS


def test_recache_below_ttl_dance(start_server, kind):
    srv = start_server(kind, *ONE_THREAD)
    with srv.connect() as c:
        assert meta(c, b"ms r 1 T10\r\nv\r\n") == b"HD\r\n"
    replies = concurrent_mg(srv, b"mg r R30 v\r\n")
    one_winner(replies)
    assert all(r.endswith(b"\r\nv\r\n") for r in replies)
    # A TTL above the threshold: nobody wins.
    with srv.connect() as c:
        assert meta(c, b"ms r 1 T100\r\nw\r\n") == b"HD\r\n"
    assert concurrent_mg(srv, b"mg r R30 v\r\n") == [b"VA 1\r\nw\r\n"] * CLIENTS


def test_mn_with_arguments(start_server, kind):
    srv = start_server(kind, *ONE_THREAD)
    with srv.connect() as c:
        c.sendall(b"mg a q\r\nmn extra args\r\nmg b q k\r\nmn\r\n")
        assert recv_until(c, lambda b: b.count(b"MN\r\n") == 2) == b"MN\r\nMN\r\n"


def test_meta_matches_oracle_concurrently(start_server):
    """The same concurrent dance on both: the multiset of replies agrees."""
    got = {}
    for kind in ("oracle", "ours"):
        srv = start_server(kind, *ONE_THREAD)
        with srv.connect() as c:
            meta(c, b"ms k 2 T0\r\nv1\r\n")
            meta(c, b"md k I\r\n")
        got[kind] = sorted(concurrent_mg(srv, b"mg k c s f v Oop\r\n"))
    assert got["ours"] == got["oracle"]


# ---------------------------------------------------------------------------
# Traces
# ---------------------------------------------------------------------------

SESSIONS = {
    "meta-hits-misses": (
        b"mg a v\r\nms a 2 T0 F5\r\nhi\r\nmg a v k s f c\r\nmg a q\r\nmg b q\r\n"
        b"md b\r\nmd a q\r\nma n\r\nma n N0 J5 v\r\nma n q\r\nme n\r\nme zz\r\nmn\r\n"
    ),
    "meta-errors": (
        b"mg\r\nmg k Q\r\nmg k v v\r\nmd k Q\r\nma k MX\r\nma k Q\r\nme\r\n"
        b"ms k abc\r\nms k 2 Q\r\nab\r\nms k 2\r\nabc\r\nmx\r\n"
    ),
    "meta-base64": b"ms Zm9v 1 b k\r\nx\r\nmg Zm9v b k v\r\nme Zm9v b\r\nmg foo b\r\nmd Zm9v b q\r\n",
    "meta-stale": (
        b"ms s 1 T0\r\nx\r\nmd s I T30\r\nmg s c v\r\nmg s c v\r\nms s 1 C1 I\r\ny\r\n"
        b"mg nv N30\r\nmg nv N30\r\nma nn N0\r\n"
    ),
    "meta-swallow": b"ms big 2000000 T0\r\nxx\r\nms k 2 MX\r\nab\r\nms k 2 q\r\nok\r\nquit\r\n",
}


def is_connection_line(line):
    return bool(FD_RE.match(line)) or line.startswith(b"> ")


def closed_count(lines, vvv):
    """Connections whose close has been traced completely: at -vvv the
    "connection closed." line is followed by a last state change."""
    end = b" to conn_closed" if vvv else b" connection closed."
    return sum(1 for line in lines if line.endswith(end))


def trace(srv, payload, vvv):
    srv.stderr.wait_for(lambda ls: closed_count(ls, vvv) >= 1, timeout=5)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
    ok = srv.stderr.wait_for(lambda ls: closed_count(ls, vvv) >= 2, timeout=5)
    lines = [normalise(l) for l in srv.stderr.lines() if is_connection_line(l)]
    assert ok, f"{srv.describe()}: session never closed:\n" + b"\n".join(lines).decode()
    return lines


@pytest.mark.parametrize("level", ["-vv", "-vvv"])
@pytest.mark.parametrize("name", sorted(SESSIONS))
def test_meta_trace_matches_oracle(start_server, name, level):
    ours = start_server("ours", level)
    oracle = start_server("oracle", level)
    vvv = level == "-vvv"
    want = trace(oracle, SESSIONS[name], vvv)
    got = trace(ours, SESSIONS[name], vvv)
    assert any(re.match(rb"<FD m[gsdae] ", l) for l in want)
    assert got == want


# ---------------------------------------------------------------------------
# Random scripts
# ---------------------------------------------------------------------------

# memcached's segmented LRU holds an extra reference on an item fetched a
# second time while in its cold LRU (an asynchronous bump that its
# maintainer thread releases later), which makes "may incr rewrite in
# place" timing-dependent; without the maintainer (and the crawler, which
# reaps expired items on its own schedule) memcached is deterministic.
DETERMINISTIC = ("-o", "no_lru_maintainer,no_lru_crawler")
RANDOM_KEYS = ["a", "b", "c", "Zm9v", "YQ==", "n"]
RANDOM_FLAGS = [
    "b", "c", "f", "h", "k", "O1", "Oxyz", "q", "s", "u", "v", "N0", "N30",
    "R31", "T0", "T30", "T-1", "F5", "C1", "C2", "C3", "C0", "MS", "ME", "MA",
    "MP", "MR", "MI", "MD", "M-", "J5", "D3", "I", "P", "L", "Q", "x",
]


def random_command(r):
    k = r.choice(RANDOM_KEYS)
    cmd = r.choice(["mg", "mg", "mg", "ms", "ms", "md", "ma", "ma", "me",
                    "incr", "decr", "set", "get", "append", "delete", "touch"])
    # No t or l: they depend on when each server's clock ticks. Every TTL
    # set here is 30 s, so R31 always asks to recache and never sits on the
    # boundary a clock tick between the two servers' runs would cross.
    flags = " ".join(r.sample(RANDOM_FLAGS, r.randint(0, 4)))
    if cmd == "ms":
        val = r.choice(["1", "22", "abc", "", "99", "18446744073709551615"])
        return f"ms {k} {len(val)} {flags}\r\n{val}\r\n"
    if cmd in ("set", "append"):
        val = r.choice(["1", "99", "x"])
        return f"{cmd} {k} 0 0 {len(val)}\r\n{val}\r\n"
    if cmd in ("incr", "decr"):
        return f"{cmd} {k} {r.choice([1, 5, 100])}\r\n"
    if cmd in ("get", "delete"):
        return f"{cmd} {k}\r\n"
    if cmd == "touch":
        return f"touch {k} {r.choice([0, 30, -1])}\r\n"
    if cmd == "me":
        return f"me {k}{r.choice(['', ' b'])}\r\n"
    return f"{cmd} {k} {flags}\r\n"


def run_script(srv, script):
    with srv.connect() as c:
        c.sendall(script + b"mn\r\n")
        reply = recv_until(c, lambda b: b.endswith(b"MN\r\n"))
    # me's last-access age and remaining TTL depend on the clock too (an
    # item left by an earlier script ages between the two servers' runs);
    # "never expires" (-1) is kept.
    reply = re.sub(rb"la=\d+ ", b"", reply)
    return re.sub(rb"exp=(-?\d+)",
                  lambda m: m.group(0) if m.group(1) == b"-1" else b"exp=T", reply)


def test_random_meta_scripts_match_oracle(start_server):
    import random

    ours = start_server("ours", *DETERMINISTIC)
    oracle = start_server("oracle", *DETERMINISTIC)
    probe = b"".join(b"mg %s v c f s u\r\n" % k.encode() for k in RANDOM_KEYS)
    for seed in range(1500):
        r = random.Random(seed)
        script = "".join(random_command(r) for _ in range(r.randint(1, 12))).encode()
        want = run_script(oracle, script)
        got = run_script(ours, script)
        assert got == want, f"seed {seed}: {script!r}"
        # And the state they leave behind.
        assert run_script(ours, probe) == run_script(oracle, probe), f"seed {seed}: {script!r}"
