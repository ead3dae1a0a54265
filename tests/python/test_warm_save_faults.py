"""Warm restart (`-e PATH`) under faults: a kill -9 in the middle of the
save that SIGUSR1 starts, on a RAM disk the test mounts (a tmpfs, as
memcached advises for the memory file).

The save is held at one system call by strace attached to the running
server (`-e inject=SYSCALL:delay_enter=...`, limited to the metadata's
files with `-P`): no hook in the server. While it is held there, the
server gets SIGKILL. Whatever the step, the next start must come up and
serve: with the saved items when the metadata had been renamed into place,
otherwise clean with memcached's "no metadata save file" -- never the
refusal an empty or torn `PATH.meta` causes, which under a supervisor
that restarts the server is a crash loop.

An empty `PATH.meta` is what memcached 1.6.18's in-place save leaves when
killed; memcached refuses to start on it, and so does this server (with
memcached's message and SIGABRT), after deleting it so the next start is
clean.
"""

import os
import shutil
import signal
import subprocess
import time

import pytest

from mc_helpers import request, wait_exit
from test_warm_restart import MEM, gets, restart_messages, stop_gracefully, store

STRACE = shutil.which("strace")
HOLD = "60s"  # longer than the test waits; the kill ends it


@pytest.fixture
def ramdisk(tmp_path):
    """A tmpfs of its own, mounted for the test and unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    d = tmp_path / "shm"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m,mode=0700", "tmpfs", str(d)],
                   check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def proc_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces; the state follows its ')'.
        return f.read().rsplit(")", 1)[1].split()[0]


def hold_save_at(srv, syscalls, path, trace_out):
    """Attaches strace to the server, delaying every call of `syscalls`
    that touches `path`. Returns the strace process once it is attached."""
    tracer = subprocess.Popen(
        [STRACE, "-p", str(srv.pid), "-o", str(trace_out), "-qq",
         "-e", f"trace={syscalls}", "-e", f"inject={syscalls}:delay_enter={HOLD}",
         "-P", path],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        with open(f"/proc/{srv.pid}/status") as f:
            tracer_pid = next(int(line.split()[1]) for line in f if line.startswith("TracerPid:"))
        if tracer_pid == tracer.pid:
            return tracer
        assert tracer.poll() is None, "strace could not attach"
        assert time.monotonic() < deadline, "strace did not attach"
        time.sleep(0.01)


def wait_held(srv, trace_out, syscall):
    """Until the server is stopped at the entry of `syscall`."""
    deadline = time.monotonic() + 10
    while True:
        text = trace_out.read_text() if trace_out.exists() else ""
        if syscall + "(" in text and proc_state(srv.pid) == "t":
            return text
        assert srv.alive(), "the server ended before reaching the held call"
        assert time.monotonic() < deadline, f"never held at {syscall}: {text!r}"
        time.sleep(0.01)


def fill(sock):
    for i in range(200):
        store(sock, b"set", b"k%d" % i, i, 0, b"v%d" % i * 50)
    store(sock, b"set", b"big", 1, 0, b"b" * 700_000)
    return gets(sock, *[b"k%d" % i for i in range(200)], b"big")


# (syscalls to hold, what `-P` names: the temporary file, or the directory
# for its sync, what the next start finds).
STEPS = {
    # The metadata is being written: the temporary file is still empty.
    "write": ("write", "tmp", "clean"),
    # Written and synced, not yet renamed.
    "rename": ("rename,renameat,renameat2", "tmp", "clean"),
    # Renamed into place; the directory's sync is under way.
    "dir-fsync": ("fsync", "dir", "warm"),
}


@pytest.mark.skipif(STRACE is None, reason="needs strace (apt-get install strace)")
@pytest.mark.parametrize("step", list(STEPS))
def test_a_kill_during_the_save_never_stops_the_next_start(start_server, ramdisk, tmp_path,
                                                           step):
    syscalls, target, outcome = STEPS[step]
    path = str(ramdisk / "cache.mem")
    meta, tmp = path + ".meta", path + ".meta.tmp"
    srv = start_server("ours", "-m", MEM, "-e", path)
    with srv.connect() as s:
        saved = fill(s)
    trace_out = tmp_path / "strace.out"
    tracer = hold_save_at(srv, syscalls, tmp if target == "tmp" else str(ramdisk), trace_out)
    try:
        srv.signal(signal.SIGUSR1)
        wait_held(srv, trace_out, syscalls.split(",")[0])
        # The kill is taken where the server is held: a tracee stopped at a
        # call's entry with SIGKILL pending never makes that call. It ends
        # once strace lets go of it.
        srv.signal(signal.SIGKILL)
    finally:
        tracer.kill()
        tracer.wait(10)
    assert wait_exit(srv.proc, 10) == -signal.SIGKILL

    if outcome == "clean":
        assert not os.path.exists(meta), "a save cut short left metadata behind"
        # Held before its first byte (write) or after its last (rename).
        assert (os.path.getsize(tmp) == 0) == (step == "write")
    else:
        assert os.path.getsize(meta) > 0

    srv = start_server("ours", "-m", MEM, "-e", path)
    assert not os.path.exists(tmp), "the leftover of the cut-short save is removed at start"
    with srv.connect() as s:
        if outcome == "clean":
            assert restart_messages(srv) == [
                "[restart] no metadata save file, starting with a clean cache"]
            assert gets(s, b"k0", b"big") == {}
        else:
            assert restart_messages(srv) == []
            assert gets(s, *saved.keys()) == saved
        store(s, b"set", b"after", 0, 0, b"the next save works")
    # The next graceful stop saves and the start after it is warm.
    assert stop_gracefully(srv) == 0
    srv = start_server("ours", "-m", MEM, "-e", path)
    with srv.connect() as s:
        assert gets(s, b"after")[b"after"][2] == b"the next save works"


def start_exit(kind, path):
    """Runs a server start to its end (it must not come up): (returncode,
    stderr)."""
    from mc_helpers import binary_for, free_port

    args = [str(binary_for(kind)), "-u", "root", "-l", "127.0.0.1", "-U", "0",
            "-p", str(free_port()), "-m", MEM, "-e", path]
    p = subprocess.run(args, capture_output=True, timeout=30, cwd=os.path.dirname(path))
    return p.returncode, p.stderr


@pytest.mark.parametrize("content", [b"", b"Kmaxbytes 67108864\n", b"junk\nTmain\n",
                                     b"Textstore\n"],
                         ids=["empty", "key-first", "junk", "unknown-tag"])
def test_metadata_without_a_first_tag_stops_the_start_as_memcached(ramdisk, content):
    seen = {}
    for kind in ("ours", "oracle"):
        path = str(ramdisk / f"{kind}.mem")
        with open(path + ".meta", "wb") as f:
            f.write(content)
        seen[kind] = start_exit(kind, path)
        if kind == "ours":
            assert not os.path.exists(path + ".meta"), "the refused file is deleted"
        else:
            os.unlink(path + ".meta")  # memcached keeps it: the next start would refuse again
    assert seen["ours"] == seen["oracle"]
    assert seen["ours"][0] == -signal.SIGABRT
    assert seen["ours"][1].startswith(b"[restart] ")


def test_the_start_after_a_refused_one_is_clean(start_server, ramdisk):
    path = str(ramdisk / "cache.mem")
    open(path + ".meta", "wb").close()
    rc, err = start_exit("ours", path)
    assert (rc, err) == (-signal.SIGABRT, b"[restart] Failed to read a tag from metadata file\n")
    srv = start_server("ours", "-m", MEM, "-e", path)
    assert restart_messages(srv) == ["[restart] no metadata save file, starting with a clean cache"]
    with srv.connect() as s:
        assert request(s, b"version\r\n").startswith(b"VERSION ")
