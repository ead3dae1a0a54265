"""extstore (`-o ext_path=FILE:SIZE`) against Debian's memcached: start-up
errors and the `stats settings` / `stats extstore` / `stats` lines byte for
byte, values that went to flash read back (text, meta, binary), what
invalidates them, and a full disk at run time.

Items go to flash once they are older than `ext_item_age` (here 0: at
once) and at the tail of their class's LRU; the tests poll
`extstore_objects_written` rather than sleep.
"""

import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time

import pytest

from mc_helpers import (
    binary_for,
    free_port,
    get,
    request,
    stats_over,
    wait_stat,
)

VALUE_LEN = 20000
SMALL = "ext_page_size=8,ext_wbuf_size=2,ext_threads=1,ext_item_size=512,ext_item_age=0"


def value_of(n):
    return (b"%07d-" % n) * (VALUE_LEN // 8)


def ext_opts(path, extra=""):
    opts = f"{SMALL},ext_path={path}:64m"
    return opts + ("," + extra if extra else "")


def run_to_exit(kind, args, timeout=3.0):
    """Runs a server that should refuse to start: (exit code, stderr)."""
    cmd = [str(binary_for(kind)), "-u", "root", "-l", "127.0.0.1", "-p", str(free_port())]
    proc = subprocess.Popen(cmd + list(args), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return ("running", b"")
    return (proc.returncode, err)


@pytest.mark.parametrize("opts", [
    ["-U", "0", "-o", "ext_path=/tmp/x"],
    ["-U", "0", "-o", "ext_path=/tmp/x:64m:compact"],
    ["-U", "0", "-o", "ext_path=/tmp/x:64m:bogus"],
    ["-U", "0", "-o", "ext_path={d}/f:64m,ext_page_size=8"],
    ["-U", "0", "-o", "ext_page_size=3,ext_path={d}/f:64m"],
    ["-U", "0", "-o", "ext_wbuf_size=1,ext_path={d}/f:64m"],
    ["-U", "0", "-o", "ext_path={d}/no/such/dir/f:64m"],
    ["-U", "0", "-o", "ext_threads=x"],
    ["-U", "0", "-o", "ext_max_frag=abc"],
    ["-U", "0", "-o", "ext_path"],
    ["-U", "0", "-o", "ext_item_size"],
    ["-U", "0", "-I", "8m", "-o", "ext_path={d}/f:64m"],
    ["-U", "11211", "-o", "ext_path={d}/f:64m"],
])
def test_start_up_errors_match_memcached(tmp_path, opts):
    args = [a.replace("{d}", str(tmp_path)) for a in opts]
    ours = run_to_exit("ours", args)
    theirs = run_to_exit("oracle", args)
    assert ours[0] != "running", "our server should have refused to start"
    assert ours == theirs


def test_a_second_server_cannot_share_the_file(tmp_path, start_server):
    path = tmp_path / "shared"
    start_server("ours", "-o", ext_opts(path))
    ours = run_to_exit("ours", ["-U", "0", "-o", ext_opts(path)])
    start_server("oracle", "-o", ext_opts(tmp_path / "other"))
    theirs = run_to_exit("oracle", ["-U", "0", "-o", ext_opts(tmp_path / "other")])
    assert ours[0] == 1
    assert ours == theirs


def test_settings_and_stats_lines_match_memcached(tmp_path, start_server):
    extra = "ext_max_frag=0.5,ext_drop_unread,ext_recache_rate=7,ext_low_ttl=3"
    commands = (b"extstore max_frag 0.25\r\nextstore bogus 1\r\nextstore item_age\r\n"
                b"extstore drop_under 2\r\nextstore free_memchunks 1 2\r\n")
    replies = {}
    for kind in ("ours", "oracle"):
        srv = start_server(kind, "-o", ext_opts(tmp_path / kind, extra))
        with srv.connect() as s:
            settings = request(s, b"stats settings\r\n", lambda b: b.endswith(b"END\r\n"))
            ext_lines = [l for l in settings.split(b"\r\n")
                         if l.startswith((b"STAT ext_", b"STAT slab_automove_freeratio"))]
            pages = request(s, b"stats extstore\r\n", lambda b: b.endswith(b"END\r\n"))
            st = stats_over(s)
            counters = {k: v for k, v in st.items()
                        if "extstore" in k or k in ("total_malloced", "slab_global_page_pool")}
            answers = request(s, commands, lambda b: b.count(b"\r\n") == 5)
            after = request(s, b"stats settings\r\n", lambda b: b.endswith(b"END\r\n"))
            after = [l for l in after.split(b"\r\n") if l.startswith(b"STAT ext_")]
        replies[kind] = (ext_lines, pages, counters, answers, after)
    for ours, theirs in zip(replies["ours"], replies["oracle"]):
        assert ours == theirs
    assert b"STAT ext_compact_under 2" in replies["ours"][0]


def test_no_ext_path_settings_lines_match(start_server):
    lines = {}
    for kind in ("ours", "oracle"):
        with start_server(kind).connect() as s:
            reply = request(s, b"stats settings\r\n", lambda b: b.endswith(b"END\r\n"))
            lines[kind] = [l for l in reply.split(b"\r\n") if b"ext_" in l or b"freeratio" in l]
            lines[kind].append(request(s, b"stats extstore\r\n", lambda b: b.endswith(b"END\r\n")))
    assert lines["ours"] == lines["oracle"]


def fill_and_wait(srv, n, prefix=b"k"):
    with srv.connect() as s:
        data = b"".join(b"set %s%d 0 0 %d noreply\r\n%s\r\n" % (prefix, i, VALUE_LEN, value_of(i))
                        for i in range(n))
        s.sendall(data)
        st = wait_stat(srv, "extstore_objects_written", lambda v: v >= n, timeout=20, sock=s)
    assert int(st["extstore_objects_written"]) >= n, st
    return st


@pytest.mark.parametrize("kind", ["ours", "oracle"])
def test_values_come_back_from_flash(kind, tmp_path, start_server):
    srv = start_server(kind, "-m", "64", "-o", ext_opts(tmp_path / "f"))
    fill_and_wait(srv, 200)
    with srv.connect() as s:
        for i in range(0, 200, 7):
            assert get(s, b"k%d" % i) == {b"k%d" % i: (0, value_of(i))}
        # A multi-get mixing flash items, a RAM item and a miss, in order.
        request(s, b"set small 5 0 2\r\nhi\r\n")
        reply = request(s, b"get k1 small nope k2\r\n", lambda b: b.endswith(b"END\r\n"))
        assert reply == (b"VALUE k1 0 %d\r\n%s\r\nVALUE small 5 2\r\nhi\r\n"
                         b"VALUE k2 0 %d\r\n%s\r\nEND\r\n"
                         % (VALUE_LEN, value_of(1), VALUE_LEN, value_of(2)))
        # Meta: the value and its size.
        reply = request(s, b"mg k3 s v\r\n", lambda b: b.endswith(b"\r\n") and b.count(b"\r\n") >= 2)
        assert reply == b"VA %d s%d\r\n%s\r\n" % (VALUE_LEN, VALUE_LEN, value_of(3))
        # Binary get (a connection of its own: the first byte picks the
        # protocol).
        b = srv.connect()
        key = b"k4"
        b.sendall(struct.pack(">BBHBBHIIQ", 0x80, 0x00, len(key), 0, 0, 0, len(key), 0, 0) + key)
        head = b""
        while len(head) < 24:
            head += b.recv(24 - len(head))
        bodylen = struct.unpack(">I", head[8:12])[0]
        body = b""
        while len(body) < bodylen:
            body += b.recv(bodylen - len(body))
        assert head[6:8] == b"\0\0"
        assert body[4:] == value_of(4)
        b.close()
        # What cannot work on a value that is not in RAM.
        assert request(s, b"incr k5 1\r\n") == \
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
        assert request(s, b"append k5 0 0 2\r\nhi\r\n") == b"NOT_STORED\r\n"
        # Deletes, overwrites and flush_all invalidate.
        before = int(stats_over(s)["extstore_objects_used"])
        assert request(s, b"delete k6\r\n") == b"DELETED\r\n"
        assert get(s, b"k6") == {}
        assert int(stats_over(s)["extstore_objects_used"]) == before - 1
        assert request(s, b"set k7 0 0 3\r\nnew\r\n") == b"STORED\r\n"
        assert get(s, b"k7") == {b"k7": (0, b"new")}
        assert request(s, b"flush_all\r\n") == b"OK\r\n"
        assert get(s, b"k8", b"k9") == {}
        assert stats_over(s)["miss_from_extstore"] == "0"


@pytest.mark.parametrize("kind", ["ours", "oracle"])
def test_expired_flash_items_are_gone(kind, tmp_path, start_server):
    srv = start_server(kind, "-o", ext_opts(tmp_path / "f"))
    with srv.connect() as s:
        s.sendall(b"set e 0 2 %d\r\n%s\r\n" % (VALUE_LEN, value_of(1)))
        assert s.recv(100) == b"STORED\r\n"
        wait_stat(srv, "extstore_objects_written", lambda v: v >= 1, timeout=10, sock=s)
        deadline = time.monotonic() + 10
        while get(s, b"e") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert get(s, b"e") == {}


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs at tmp_path/fs, unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("kind", ["ours", "oracle"])
def test_a_full_disk_gives_misses_and_the_server_stays_up(kind, small_fs, start_server):
    """The ext file's size is promised, not reserved: 64 MB over a 4 MB
    tmpfs runs out of space at run time. Values that could not be written
    read as misses (memcached: a CRC mismatch), never as wrong data."""
    srv = start_server(kind, "-o", ext_opts(small_fs / "ext"))
    n = 400  # 8 MB of values: twice what the disk holds
    with srv.connect() as s:
        data = b"".join(b"set k%d 0 0 %d noreply\r\n%s\r\n" % (i, VALUE_LEN, value_of(i))
                        for i in range(n))
        s.sendall(data)
        wait_stat(srv, "extstore_objects_written", lambda v: v >= n, timeout=20, sock=s)
        found = 0
        for i in range(n):
            got = get(s, b"k%d" % i)
            if got:
                assert got == {b"k%d" % i: (0, value_of(i))}
                found += 1
        st = stats_over(s)
    assert srv.alive()
    assert found < n
    assert int(st["miss_from_extstore"]) + int(st["get_misses"]) >= n - found


def test_the_aof_rewrite_carries_values_that_live_on_flash(tmp_path, start_server):
    """A rewrite after the values went to flash writes them whole (its
    forked child reads them back), so a restart finds every one."""
    aof = tmp_path / "a.aof"
    srv = start_server("ours", "-o", f"aof={aof},aof_rewrite_min=256k,aof_rewrite_pct=1",
                       "-o", ext_opts(tmp_path / "f"))
    n = 150
    fill_and_wait(srv, n)
    with srv.connect() as s:
        before = int(stats_over(s)["aof_rewrites"])
        deadline = time.monotonic() + 30
        i = 0
        while int(stats_over(s)["aof_rewrites"]) <= before:
            assert time.monotonic() < deadline
            request(s, b"set small%d 0 0 100\r\n%s\r\n" % (i % 50, b"s" * 100))
            i += 1
        wait_stat(srv, "aof_rewrite_in_progress", lambda v: v == 0, timeout=20, sock=s)
        assert int(stats_over(s)["aof_rewrite_failures"]) == 0
    srv.kill()
    again = start_server("ours", "-o", f"aof={aof}")
    with again.connect() as s:
        for i in range(n):
            assert get(s, b"k%d" % i) == {b"k%d" % i: (0, value_of(i))}


def test_memcached_restarts_clean_with_extstore(tmp_path, start_server):
    """memcached 1.6.18 cannot restart its memory with extstore on (its
    issue #871): the restart is clean (its own check fails first, on a
    metadata line)."""
    import signal as sig
    from mc_helpers import wait_exit
    args = ("-e", str(tmp_path / "mem"), "-o", ext_opts(tmp_path / "f"))
    srv = start_server("oracle", *args)
    with srv.connect() as s:
        assert request(s, b"set a 0 0 1\r\n1\r\n") == b"STORED\r\n"
    srv.signal(sig.SIGUSR1)
    assert wait_exit(srv.proc, 10) == 0
    with start_server("oracle", *args).connect() as s:
        assert get(s, b"a") == {}


def test_a_warm_restart_keeps_values_on_flash(tmp_path, start_server):
    """Beyond memcached: `-e` with extstore keeps the ext file and the page
    table (saved in PATH.meta once every write buffer is on disk), so the
    headers the arena keeps still find their values; the store goes on
    writing and reading after the restart. SIGUSR1 stops the server with its
    I/O threads running."""
    import signal as sig
    from mc_helpers import wait_exit
    args = ("-e", str(tmp_path / "mem"), "-o", ext_opts(tmp_path / "f"))
    srv = start_server("ours", *args)
    n = 150  # some still in an open write buffer at the stop
    with srv.connect() as s:
        on_flash(srv, n, s)
        assert request(s, b"set a 0 0 1\r\n1\r\n") == b"STORED\r\n"
        used = stats_over(s)["extstore_objects_used"]
    srv.signal(sig.SIGUSR1)
    assert wait_exit(srv.proc, 10) == 0
    again = start_server("ours", *args)
    with again.connect() as s:
        assert stats_over(s)["extstore_objects_used"] == used
        assert get(s, b"a") == {b"a": (0, b"1")}
        for i in range(n):
            assert get(s, b"k%d" % i) == {b"k%d" % i: (0, value_of(i))}, i
        st = stats_over(s)
        assert int(st["get_extstore"]) > 0 and st["miss_from_extstore"] == "0"
        fill_and_wait(again, 40, prefix=b"new")
        for i in range(40):
            assert get(s, b"new%d" % i) == {b"new%d" % i: (0, value_of(i))}
    assert "not presently supported" not in again.stderr.text()


def test_a_warm_restart_with_other_extstore_files_starts_clean(tmp_path, start_server):
    """A save whose ext files or layout differ from this start's is not
    trusted: the restart is clean, with memcached's words."""
    import signal as sig
    from mc_helpers import wait_exit
    mem = str(tmp_path / "mem")
    srv = start_server("ours", "-e", mem, "-o", ext_opts(tmp_path / "f"))
    with srv.connect() as s:
        on_flash(srv, 20, s)
    srv.signal(sig.SIGUSR1)
    assert wait_exit(srv.proc, 10) == 0
    again = start_server("ours", "-e", mem, "-o", ext_opts(tmp_path / "g"))
    with again.connect() as s:
        assert get(s, b"k1") == {}
    assert "[restart] memory restart with extstore not presently supported." in \
        again.stderr.text()


def test_the_full_copy_carries_values_that_live_on_flash(tmp_path, start_server):
    """A replica that joins after the values went to flash gets them whole
    (the copy reads them back)."""
    from repl_helpers import wait_linked, wait_role
    ports = {"a": free_port(), "b": free_port()}

    def node(name, *extra):
        other = "b" if name == "a" else "a"
        return start_server("ours", "-x", f"127.0.0.1:{ports[other]}",
                            "--repl-port", str(ports[name]), *extra)

    a = node("a", "-o", ext_opts(tmp_path / "f"))
    wait_role(a, "master")
    n = 100
    fill_and_wait(a, n)
    b = node("b")
    wait_linked(a, b)
    with b.connect() as s:
        for i in range(n):
            assert get(s, b"k%d" % i) == {b"k%d" % i: (0, value_of(i))}


def mg_value(s, key):
    reply = request(s, b"mg %s v\r\n" % key,
                    lambda b: b.startswith(b"EN") or b.count(b"\r\n") >= 2)
    return reply


@pytest.mark.parametrize("kind", ["ours", "oracle"])
def test_meta_get_recaches_as_get_does(kind, tmp_path, start_server):
    """With `ext_recache_rate=1`, a read of a flash item whose header was
    fetched before brings its value back into RAM, for mg as for get (with
    `ext_item_age=0` the writer may send it out again at once, so what
    follows is not checked). Ours recaches at the second read;
    memcached at the second too unless its `item_trylock` loses to one of
    its background threads (it then drops the recache), so it may take a
    read or two more."""
    srv = start_server(kind, "-o", ext_opts(tmp_path / "f", "ext_recache_rate=1"))
    fill_and_wait(srv, 4)
    reads_needed = {}
    with srv.connect() as s:
        for key, read in [(b"k1", lambda k: mg_value(s, k)), (b"k2", lambda k: get(s, k))]:
            before = stats_over(s)
            recached = int(before["recache_from_extstore"])
            n = 0
            while int(stats_over(s)["recache_from_extstore"]) == recached and n < 10:
                got = read(key)
                n += 1
                assert got in ({key: (0, value_of(int(key[1:])))},
                               b"VA %d\r\n%s\r\n" % (VALUE_LEN, value_of(int(key[1:]))))
            reads_needed[key] = n
            st = stats_over(s)
            assert int(st["recache_from_extstore"]) == recached + 1
            assert int(st["get_extstore"]) == int(before["get_extstore"]) + n
    if kind == "ours":
        assert reads_needed == {b"k1": 2, b"k2": 2}
    assert all(2 <= n <= 10 for n in reads_needed.values())


@pytest.fixture
def ext_gate(tmp_path):
    """A FIFO the debug build's I/O threads read a byte from before each
    flash read (`MEMCACHED_TEST_EXT_GATE`): a read stays in flight until
    the test writes a byte. Closed at the end, which opens the gate."""
    if os.environ.get("MEMCACHED_BIN"):
        pytest.skip("the read gate is a test hook of the debug build")
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR)
    yield {"MEMCACHED_TEST_EXT_GATE": str(fifo)}, fd
    os.close(fd)


def on_flash(srv, n, sock):
    """Fills n values and waits until the first ones are on disk (not in a
    write buffer, which would be read from RAM)."""
    fill_and_wait(srv, n)
    wait_stat(srv, "extstore_io_queue", lambda v: v == 0, timeout=20, sock=sock)


def nothing_yet(sock):
    sock.setblocking(False)
    try:
        with pytest.raises(BlockingIOError):
            sock.recv(1)
    finally:
        sock.setblocking(True)


def others_are_served(srv, n):
    with srv.connect() as s:
        for i in range(n):
            assert request(s, b"set ram%d 0 0 3\r\nabc\r\n" % i) == b"STORED\r\n"
            assert get(s, b"ram%d" % i) == {b"ram%d" % i: (0, b"abc")}


def test_a_held_flash_read_blocks_no_other_client(tmp_path, start_server, ext_gate):
    """While a flash read waits in an I/O thread (held by the gate), other
    clients are served; then the value arrives whole: text get, mg."""
    env, gate = ext_gate
    srv = start_server("ours", "-o", ext_opts(tmp_path / "f"), env=env)
    with srv.connect() as ctl:
        on_flash(srv, 200, ctl)
        for cmd, key, want in [
            (b"get k0\r\n", 0, b"VALUE k0 0 %d\r\n%s\r\nEND\r\n" % (VALUE_LEN, value_of(0))),
            (b"mg k1 v\r\n", 1, b"VA %d\r\n%s\r\n" % (VALUE_LEN, value_of(1))),
        ]:
            with srv.connect() as a:
                before = int(stats_over(ctl)["get_extstore"])
                a.sendall(cmd)
                wait_stat(srv, "get_extstore", lambda v: v > before, sock=ctl)
                assert int(stats_over(ctl)["extstore_io_queue"]) >= 1
                others_are_served(srv, 20)
                nothing_yet(a)
                os.write(gate, b"x")
                assert request(a, b"", ends_with_len(len(want))) == want


def ends_with_len(n):
    return lambda b: len(b) >= n


def test_md_invalidate_of_a_flash_item_reads_it_without_blocking(tmp_path, start_server,
                                                                    ext_gate):
    """`md KEY I` of a flash item with the AOF on: the PUT it logs carries
    the value, read through an I/O thread (others served meanwhile); a
    restart from the file finds it whole and stale."""
    env, gate = ext_gate
    aof = tmp_path / "a.aof"
    srv = start_server("ours", "-o", f"aof={aof}", "-o", ext_opts(tmp_path / "f"), env=env)
    with srv.connect() as ctl:
        on_flash(srv, 200, ctl)
        before = int(stats_over(ctl)["extstore_objects_read"])
        with srv.connect() as a:
            a.sendall(b"md k3 I\r\n")
            wait_stat(srv, "extstore_objects_read", lambda v: v > before, sock=ctl)
            others_are_served(srv, 20)
            nothing_yet(a)
            os.write(gate, b"x")
            assert request(a, b"") == b"HD\r\n"
        # Without a read in flight the gate is not consulted again: no wait.
        assert stats_over(ctl)["get_extstore"] == "0"
    srv.kill()
    again = start_server("ours", "-o", f"aof={aof}")
    with again.connect() as s:
        reply = request(s, b"mg k3 v\r\n", ends_with_len(VALUE_LEN + 10))
        head, _, rest = reply.partition(b"\r\n")
        assert head.startswith(b"VA %d" % VALUE_LEN) and b" X" in head, head
        assert rest == value_of(3) + b"\r\n"


def test_the_full_copy_reads_flash_without_blocking(tmp_path, start_server, ext_gate):
    """The master's full copy waits for its flash reads in the I/O threads
    while clients are served, then the replica has every value whole."""
    from repl_helpers import wait_linked, wait_role
    env, gate = ext_gate
    ports = {"a": free_port(), "b": free_port()}

    def node(name, *extra, env=None):
        other = "b" if name == "a" else "a"
        return start_server("ours", "-x", f"127.0.0.1:{ports[other]}",
                            "--repl-port", str(ports[name]), *extra, env=env)

    a = node("a", "-o", ext_opts(tmp_path / "f"), env=env)
    wait_role(a, "master")
    n = 200
    with a.connect() as ctl:
        on_flash(a, n, ctl)
        before = int(stats_over(ctl)["extstore_objects_read"])
        b = node("b")
        # The copy has reached a flash item and waits for the gate.
        wait_stat(a, "extstore_objects_read", lambda v: v > before, timeout=20, sock=ctl)
        others_are_served(a, 20)
        with b.connect() as s:
            assert get(s, b"k0") == {}
        os.write(gate, b"x" * (2 * n))
        wait_linked(a, b)
    with b.connect() as s:
        for i in range(n):
            assert get(s, b"k%d" % i) == {b"k%d" % i: (0, value_of(i))}


def binary_get(sock, key, opcode=0x00):
    sock.sendall(struct.pack(">BBHBBHIIQ", 0x80, opcode, len(key), 0, 0, 0, len(key), 0, 0) + key)
    head = b""
    while len(head) < 24:
        head += sock.recv(24 - len(head))
    body = b""
    while len(body) < struct.unpack(">I", head[8:12])[0]:
        body += sock.recv(65536)
    return head, body


def test_the_vv_trace_of_flash_gets_matches_memcached(tmp_path, start_server):
    """`-vv` with values read from flash by text get/gets, mg, md and the
    binary GET/GETK: the same lines as memcached's (descriptors aside; a
    binary request run again after its read is not traced twice)."""
    from mc_helpers import normalise_trace
    traces = {}
    for kind in ("ours", "oracle"):
        srv = start_server(kind, "-vv", "-o", ext_opts(tmp_path / kind))
        with srv.connect() as s:
            on_flash(srv, 200, s)
            assert get(s, b"k1") == {b"k1": (0, value_of(1))}
            assert len(get(s, b"k2", b"k3", b"nope")) == 2
            request(s, b"gets k4\r\n", lambda b: b.endswith(b"END\r\n"))
            assert mg_value(s, b"k5").endswith(value_of(5) + b"\r\n")
            assert request(s, b"md k6 I\r\n") == b"HD\r\n"
            with srv.connect() as b:
                assert binary_get(b, b"k7")[1][4:] == value_of(7)
                assert binary_get(b, b"k8", 0x0c)[1][4:] == b"k8" + value_of(8)
        srv.stderr.wait_for(lambda ls: sum(l.endswith(b"connection closed.") for l in ls) >= 3,
                            timeout=5)
        # What a request prints (connections open and close in an order
        # the harness's probes make racy).
        traces[kind] = [normalise_trace(l) for l in srv.stderr.lines()
                        if l[:1] in b"<>" and not l.endswith((b" stats", b"connection closed.",
                                                              b"client connection"))]
    assert b"<FD GET k8" in traces["oracle"]
    assert sum(b"Read binary protocol data" in l for l in traces["oracle"]) == 2
    assert traces["ours"] == traces["oracle"]


def test_a_fast_fill_far_past_memory_loses_nothing(tmp_path, start_server):
    """Values set as fast as one client sends them, four times what `-m`
    holds, with memcached's default `ext_item_age` (values go out only when
    memory runs short): each value's class writes its oldest value out
    rather than take the global pool's last pages (kept for the headers'
    class) or evict, and the loop holds clients while every write buffer
    is on its way to disk. (Nearly) every value is readable afterwards
    (memcached, whose writer thread races its workers, evicts most)."""
    opts = f"ext_page_size=8,ext_wbuf_size=2,ext_threads=1,ext_item_size=512,ext_path={tmp_path / 'f'}:256m"
    srv = start_server("ours", "-m", "16", "-o", opts)
    n = 3200  # 64 MB of values into 16 MB
    with srv.connect() as s:
        for base in range(0, n, 200):
            s.sendall(b"".join(b"set k%d 0 0 %d noreply\r\n%s\r\n" % (i, VALUE_LEN, value_of(i))
                               for i in range(base, base + 200)))
        assert request(s, b"version\r\n").startswith(b"VERSION")
        found = 0
        for i in range(n):
            got = get(s, b"k%d" % i)
            if got:
                assert got == {b"k%d" % i: (0, value_of(i))}, i
                found += 1
        st = stats_over(s)
    # A step of the loop (`-R` requests) that finds every buffer on its way
    # to a slow disk evicts what it cannot write; the next one waits. On a
    # quiet machine nothing is lost.
    assert found >= n * 9 // 10, st["evictions"]
    assert int(st["extstore_objects_written"]) > n // 2


def test_a_warm_restart_over_a_changed_ext_file_loses_only_those_values(tmp_path,
                                                                       start_server):
    """Same options, but the ext file's length changed since the save: the
    cache comes back, the values that were on flash read as misses (never
    as other data), and the store works on."""
    import signal as sig
    from mc_helpers import wait_exit
    ext = tmp_path / "f"
    args = ("-e", str(tmp_path / "mem"), "-o", ext_opts(ext))
    srv = start_server("ours", *args)
    with srv.connect() as s:
        on_flash(srv, 150, s)
        assert request(s, b"set a 0 0 1\r\n1\r\n") == b"STORED\r\n"
    srv.signal(sig.SIGUSR1)
    assert wait_exit(srv.proc, 10) == 0
    with open(ext, "ab") as f:
        f.write(b"x")
    again = start_server("ours", *args)
    with again.connect() as s:
        assert get(s, b"a") == {b"a": (0, b"1")}
        for i in range(0, 150, 10):
            assert get(s, b"k%d" % i) == {}
        fill_and_wait(again, 150, prefix=b"k")
        for i in range(150):
            assert get(s, b"k%d" % i) == {b"k%d" % i: (0, value_of(i))}
    assert "[restart] extstore files changed since the save" in again.stderr.text()


def io_thread_wakeups(pid):
    """Context switches of the server's extstore I/O threads: each read
    handed to one wakes it, and it is switched out again once done; a read
    served on the loop from the page cache wakes none."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() != "mc-ext-io":
                    continue
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                # voluntary_ctxt_switches and nonvoluntary_ctxt_switches
                total += sum(int(line.split()[1]) for line in f if "ctxt_switches:" in line)
        except FileNotFoundError:
            pass
    return total


def wakeups_past(pid, before, timeout=10.0):
    """Polls until an I/O thread has been switched out since `before` (it
    may still be on its way back to sleep when the reply arrives)."""
    deadline = time.monotonic() + timeout
    while io_thread_wakeups(pid) <= before and time.monotonic() < deadline:
        time.sleep(0.001)
    return io_thread_wakeups(pid) > before


def drop_from_page_cache(path):
    """Writes `path`'s dirty pages back, then has the kernel drop every
    cached page of it: the next read of it must go to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def test_flash_values_in_the_page_cache_are_read_on_the_loop(tmp_path, start_server):
    """A flash value whose pages the page cache holds is read by the loop
    itself (`preadv2` with `RWF_NOWAIT`, which cannot wait for the disk):
    no I/O thread wakes, for a text get, a multi-get, `mg` and a binary
    get alike. Once its pages are dropped from the cache, the read goes to
    an I/O thread and the value still comes back whole."""
    srv = start_server("ours", "-o", ext_opts(tmp_path / "f"))
    with srv.connect() as s, srv.connect() as b:
        on_flash(srv, 200, s)
        # The first 40 went out in the first write buffer (about 100 fit).
        before = io_thread_wakeups(srv.pid)
        for i in range(0, 40, 3):
            assert get(s, b"k%d" % i) == {b"k%d" % i: (0, value_of(i))}
        assert get(s, b"k1", b"k2", b"k4") == {b"k%d" % i: (0, value_of(i)) for i in (1, 2, 4)}
        assert request(s, b"mg k5 v\r\n", ends_with_len(VALUE_LEN + 10)) == \
            b"VA %d\r\n%s\r\n" % (VALUE_LEN, value_of(5))
        assert binary_get(b, b"k7")[1][4:] == value_of(7)
        assert io_thread_wakeups(srv.pid) == before, "an I/O thread woke for a cached value"
        assert stats_over(s)["extstore_io_queue"] == "0"
        # Out of the page cache: each read goes to an I/O thread.
        for i in range(8, 12):
            drop_from_page_cache(tmp_path / "f")
            before = io_thread_wakeups(srv.pid)
            assert get(s, b"k%d" % i) == {b"k%d" % i: (0, value_of(i))}
            assert wakeups_past(srv.pid, before), "no I/O thread read k%d" % i
        drop_from_page_cache(tmp_path / "f")
        before = io_thread_wakeups(srv.pid)
        assert binary_get(b, b"k13")[1][4:] == value_of(13)
        assert wakeups_past(srv.pid, before)
        assert stats_over(s)["miss_from_extstore"] == "0"


@pytest.fixture
def tmpfs_dir():
    """A directory on a tmpfs (/dev/shm), removed at the end: tmpfs
    answers `RWF_NOWAIT` with EOPNOTSUPP."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    d = tempfile.mkdtemp(prefix="mc-ext-", dir="/dev/shm")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_a_file_system_that_cannot_read_without_waiting_reads_through_a_thread(
        tmpfs_dir, start_server):
    """On a file system without `RWF_NOWAIT` (tmpfs) the first read learns
    it and every read of that file goes to an I/O thread, as memcached
    reads: each get wakes one, and the value comes back whole."""
    srv = start_server("ours", "-o", ext_opts(os.path.join(tmpfs_dir, "f")))
    with srv.connect() as s:
        on_flash(srv, 200, s)
        for i in range(0, 40, 4):
            before = io_thread_wakeups(srv.pid)
            assert get(s, b"k%d" % i) == {b"k%d" % i: (0, value_of(i))}
            assert wakeups_past(srv.pid, before), "no I/O thread read k%d" % i
        assert request(s, b"mg k1 v\r\n", ends_with_len(VALUE_LEN + 10)) == \
            b"VA %d\r\n%s\r\n" % (VALUE_LEN, value_of(1))
        assert stats_over(s)["miss_from_extstore"] == "0"
