#!/usr/bin/env python3
"""What one get of a flash-resident value costs the server, in figures that
do not move with the machine's load: syscalls and context switches (all of
the server's threads), and with `--callgrind` instructions (user space,
all threads). A 100-byte RAM get is measured the same way for scale.

    python3 bench/extstore_cost.py BINARY [BINARY...] [--gets 2000] [--callgrind] [--strace]

Each BINARY (ours or /usr/bin/memcached) runs with `-t 1 -m 64` and
`-o ext_path=FILE:256m,ext_item_age=0` (FILE in $EXT_BENCH_DIR or /tmp);
one connection sets 2,000 values of 4-16 KB and waits until all are
written, then does `--gets` gets of random ones, one at a time (every
reply read before the next request), then as many gets of one 100-byte
RAM value. The values were just written, so the page cache holds them:
the common case on a host with memory to spare, and the one where ours
reads on the loop (`RWF_NOWAIT`); `--uncached` drops the file's pages
(fsync + `POSIX_FADV_DONTNEED`) before every flash get, so each one goes
to the disk through an I/O thread.

- context switches: voluntary + involuntary, summed over
  /proc/PID/task/*/status, before and after, per get;
- `--strace`: `strace -c -f -p PID` attached for the run, calls per get by
  syscall (strace slows the server, not the counts);
- `--callgrind`: the server under `valgrind --tool=callgrind`, its Ir
  total read with `callgrind_control -e Ir` before and after.
- server CPU per get: utime + stime from /proc/PID/stat (10 ms ticks,
  rough; with a loaded machine, rougher).
"""

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from extstore import key, size_of
from run import free_port

N_VALUES = 2000


class Conn:
    def __init__(self, port):
        deadline = time.time() + 300  # memcached starts slowly under valgrind
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port))
                return
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)

    def request(self, data, end):
        self.sock.sendall(data)
        b = b""
        while not b.endswith(end):
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("server closed")
            b += chunk
        return b

    def stats(self):
        r = self.request(b"stats\r\n", b"END\r\n").decode()
        return {l.split(" ")[1]: l.split(" ")[2] for l in r.split("\r\n") if l.startswith("STAT")}


def switches(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                total += sum(int(l.split()[1]) for l in f if "ctxt_switches:" in l)
        except FileNotFoundError:
            pass
    return total


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def read_ir(pid):
    out = subprocess.run(["callgrind_control", "-e", "Ir", str(pid)],
                         capture_output=True, text=True, timeout=60).stdout
    # One "Th N  count" line per thread: the I/O threads' work counts too.
    per_thread = [int(p[2].replace(",", "")) for p in map(str.split, out.splitlines())
                  if len(p) >= 3 and p[0] == "Th"]
    if not per_thread:
        raise RuntimeError(f"callgrind_control: {out!r}")
    return sum(per_thread)


def drop_cached(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def strace_start(pid, out):
    p = subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", out],
                         stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attaching to every thread
    return p


def strace_stop(p, out):
    p.send_signal(signal.SIGINT)
    p.wait(timeout=30)
    calls = {}
    with open(out) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                calls[parts[-1]] = int(parts[3])
    return calls


def run_gets(c, keys, end=b"END\r\n", before_each=None):
    for k in keys:
        if before_each:
            before_each()
        r = c.request(b"get " + k + b"\r\n", end)
        if not r.startswith(b"VALUE "):
            raise RuntimeError(f"miss for {k!r}: {r[:60]!r}")


def measure(binary, args, tmp):
    path = os.path.join(tmp, "ext")
    port = free_port()
    cmd = [binary, "-u", "root", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "1",
           "-m", "64", "-o", f"ext_path={path}:256m,ext_item_age=0"]
    if args.callgrind:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.%p"] + cmd
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        c = Conn(port)
        for base in range(0, N_VALUES, 100):
            c.sock.sendall(b"".join(b"set %s 0 0 %d noreply\r\n%s\r\n" % (key(i), size_of(i), b"v" * size_of(i))
                                    for i in range(base, base + 100)))
            c.request(b"version\r\n", b"\r\n")
            deadline = time.time() + 120
            while int(c.stats()["extstore_objects_written"]) < base + 100 and time.time() < deadline:
                time.sleep(0.01)
        c.request(b"set ram 0 0 100\r\n" + b"r" * 100 + b"\r\n", b"\r\n")
        # The writer's last buffer goes out on its own schedule: values
        # still in a write buffer are read from memory, so read only those
        # of the first half, long written.
        rng = random.Random(1)
        flash_keys = [key(rng.randrange(N_VALUES // 2)) for _ in range(args.gets)]
        run_gets(c, flash_keys[:200])  # warm: connection buffers, code
        before_each = (lambda: drop_cached(path)) if args.uncached else None
        rows = {}
        for name, keys in (("flash get", flash_keys), ("RAM get", [b"ram"] * args.gets)):
            st = strace_start(proc.pid, os.path.join(tmp, "st")) if args.strace else None
            sw0, cpu0 = switches(proc.pid), cpu_ticks(proc.pid)
            ir0 = read_ir(proc.pid) if args.callgrind else 0
            run_gets(c, keys, before_each=before_each if name == "flash get" else None)
            ir1 = read_ir(proc.pid) if args.callgrind else 0
            sw1, cpu1 = switches(proc.pid), cpu_ticks(proc.pid)
            calls = strace_stop(st, os.path.join(tmp, "st")) if st else {}
            n = len(keys)
            rows[name] = {
                "switches": (sw1 - sw0) / n,
                "cpu_us": (cpu1 - cpu0) * 1e6 / os.sysconf("SC_CLK_TCK") / n,
                "ir": (ir1 - ir0) / n if args.callgrind else None,
                "syscalls": {k: v / n for k, v in sorted(calls.items(), key=lambda kv: -kv[1])},
            }
        st = c.stats()
        rows["flash get"]["get_extstore"] = int(st["get_extstore"])
        return rows
    finally:
        proc.kill()
        proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--gets", type=int, default=2000)
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--strace", action="store_true")
    ap.add_argument("--uncached", action="store_true",
                    help="drop the file from the page cache before every flash get")
    args = ap.parse_args()
    for b in args.binaries:
        tmp = tempfile.mkdtemp(prefix="extcost-", dir=os.environ.get("EXT_BENCH_DIR", "/tmp"))
        try:
            rows = measure(b, args, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for name, r in rows.items():
            ir = f", {r['ir']:,.0f} Ir" if r["ir"] is not None else ""
            sc = sum(r["syscalls"].values())
            detail = " ".join(f"{k}={v:.2f}" for k, v in r["syscalls"].items() if v >= 0.01)
            print(f"{b} {name}: {r['switches']:.2f} context switches, {r['cpu_us']:.1f} us CPU{ir}"
                  + (f", {sc:.2f} syscalls ({detail})" if r["syscalls"] else ""))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
