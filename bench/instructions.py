#!/usr/bin/env python3
"""Instructions per request, counted by callgrind: a CPU-cost figure that
does not move with the machine's load (wall-clock and CPU time do).

    python3 bench/instructions.py BINARY [BINARY...] [--rounds 3] [--scale 0.5] [--server-arg=-o --server-arg=no_lru_maintainer]

Each BINARY runs under `valgrind --tool=callgrind` (`-t 1 -m 64`, TCP on a
free 127.0.0.1 port, no UDP). One client connection preloads 10,000 keys
of 100 bytes and 2,000 of 1 KB, fetches every key about four times
(unmeasured: the items are fetched and the segmented LRU is in its steady
state, as after `make bench`'s warm-up), waits until the idle server has
settled, then runs fixed workloads one after the other (keys drawn from a
fixed seed, every reply read before the next request):

    get        20,000 gets of one existing 100 B key
    mget10     2,000 gets of 10 existing keys (one request each)
    pipelined  200 batches of 100 gets sent in one write
    set        5,000 sets of 100 B
    mix1k      10,000 requests, 90% gets and 10% sets, of 1 KB values

Before and after each workload the server's Ir total is read live
(`callgrind_control -e Ir`); a workload's figure is the difference divided
by its requests (the idle server's own rate, printed as `idle Ir/s`, is a
few hundred thousand a second at most, a few Ir per request). After each
workload its counts are dumped to their own file (`callgrind_annotate
target/bench/callgrind/N-NAME.PID.out.K`: K = 2 is `get`, 3 `mget10`, ...).
The client is one connection doing one request (or batch) at a time, so a
turn of the event loop serves one read: the figures include the loop's
per-turn work (epoll, timers, the LRU maintainer's tick) but not the
kernel's side of the syscalls, which callgrind does not see (count those
with `strace -c -f -p PID`).

Timers (the LRU maintainer's backoff, the clock, the LRU crawler's
schedule) run in real time while the server runs ~50x slower under
valgrind, so per-request shares of timer-driven work come out larger than
at full speed, and a workload that an automatic crawl happens to fall in
costs a few hundred Ir more per request; runs of one binary agree within
about 1% otherwise. Compare builds with this script, on the same machine. Build with symbols for
`callgrind_annotate` on the output files (kept in target/bench/callgrind/):

    CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_PROFILE_RELEASE_STRIP=none \\
        cargo build --release --target-dir target/sym

`--tls`: every server runs with `-Z` and a certificate made for the run
(RSA-2048, as bench/tls.py's), and the client speaks TLS 1.3 (Python's
ssl module, the same OpenSSL). `--syscalls`: instead of callgrind, each
workload runs with `strace -c -f` attached to the server (every thread),
and the figures are system calls per request, the total and by name
(`epoll_wait`, `read`, `write`, `sendmsg`, ...); strace slows the server
but not the number of calls it makes for a request answered before the
next is sent.
"""

import argparse
import os
import re
import ssl
import tempfile
import random
import shutil
import signal
import statistics
import socket
import subprocess
import sys
import time

KEYS = 10_000
BIG_KEYS = 2_000
SMALL = b"v" * 100
BIG = b"w" * 1024


def key(i):
    return b"key:%07d" % i


def big_key(i):
    return b"big:%07d" % i


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    def __init__(self, port, tls=False):
        deadline = time.time() + 60
        while True:
            try:
                self.s = socket.create_connection(("127.0.0.1", port), timeout=60)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            self.s = ctx.wrap_socket(self.s)
        self.buf = b""

    def request(self, data, end, count=1):
        """Sends `data`, reads until `end` has been seen `count` times."""
        self.s.sendall(data)
        while True:
            n = self.buf.count(end)
            if n >= count:
                # Cut after the count-th terminator.
                at = -1
                for _ in range(count):
                    at = self.buf.index(end, at + 1)
                reply, self.buf = self.buf[: at + len(end)], self.buf[at + len(end):]
                return reply
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise RuntimeError("server closed the connection")
            self.buf += chunk


def set_cmd(k, v):
    return b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v)


def preload(c):
    for lo in range(0, KEYS, 100):
        c.request(b"".join(set_cmd(key(i), SMALL) for i in range(lo, lo + 100)), b"STORED\r\n", 100)
    # Ten at a time: a write within one TLS record (memcached 1.6.18 stalls
    # on a batch of requests that spans records, see README's TLS section).
    for lo in range(0, BIG_KEYS, 10):
        c.request(b"".join(set_cmd(big_key(i), BIG) for i in range(lo, lo + 10)), b"STORED\r\n", 10)


def warm_up(c, rng):
    """Every key fetched a few times, unmeasured: the items are fetched and
    the segmented LRU's segments are in their steady state (a workload's
    share of LRU moves would otherwise depend on the ones run before it)."""
    for keyspace, n in ((key, KEYS), (big_key, BIG_KEYS)):
        for _ in range(4 * n // 100):
            batch = b"".join(b"get %s\r\n" % keyspace(rng.randrange(n)) for _ in range(100))
            c.request(batch, b"END\r\n", 100)


def workloads(scale):
    """(name, requests, run(client, rng))."""

    def n(x):
        return max(1, int(x * scale))

    def get(c, rng, count=n(20_000)):
        for _ in range(count):
            r = c.request(b"get %s\r\n" % key(rng.randrange(KEYS)), b"END\r\n")
            assert r.startswith(b"VALUE"), r[:80]

    def mget10(c, rng, count=n(2_000)):
        for _ in range(count):
            keys = b" ".join(key(rng.randrange(KEYS)) for _ in range(10))
            r = c.request(b"get %s\r\n" % keys, b"END\r\n")
            assert r.count(b"VALUE") == 10, r[:80]

    def pipelined(c, rng, count=n(200)):
        for _ in range(count):
            batch = b"".join(b"get %s\r\n" % key(rng.randrange(KEYS)) for _ in range(100))
            r = c.request(batch, b"END\r\n", 100)
            assert r.count(b"VALUE") == 100

    def sets(c, rng, count=n(5_000)):
        for _ in range(count):
            c.request(set_cmd(key(rng.randrange(KEYS)), SMALL), b"STORED\r\n")

    def mix(c, rng, count=n(10_000)):
        for _ in range(count):
            k = big_key(rng.randrange(BIG_KEYS))
            if rng.random() < 0.9:
                r = c.request(b"get %s\r\n" % k, b"END\r\n")
                assert r.startswith(b"VALUE"), r[:80]
            else:
                c.request(set_cmd(k, BIG), b"STORED\r\n")

    return [
        ("get", n(20_000), get),
        ("mget10", n(2_000), mget10),
        ("pipelined", n(200) * 100, pipelined),
        ("set", n(5_000), sets),
        ("mix1k", n(10_000), mix),
    ]


def read_ir(pid):
    out = subprocess.run(
        ["callgrind_control", "-e", "Ir", str(pid)], capture_output=True, text=True, check=True
    ).stdout
    # Every thread's (memcached's worker is not its first thread).
    threads = [int(parts[2].replace(",", "")) for parts in map(str.split, out.splitlines())
               if len(parts) >= 3 and parts[0] == "Th"]
    if not threads:
        raise RuntimeError("no Ir in callgrind_control output:\n" + out)
    return sum(threads)


def dump(pid, name):
    """Writes the counts since the last dump to their own file (for
    callgrind_annotate) and zeroes them."""
    subprocess.run(["callgrind_control", "--dump=" + name, str(pid)], capture_output=True, check=True)


def settle(pid, quiet=200_000, longest=30.0):
    """Waits until the server spends less than `quiet` Ir a second idle
    (the LRU maintainer has sent the preload's items from HOT to COLD and
    backed off), at most `longest` seconds; returns the last idle rate."""
    deadline = time.monotonic() + longest
    while True:
        ir0, t0 = read_ir(pid), time.monotonic()
        time.sleep(0.5)
        rate = (read_ir(pid) - ir0) / (time.monotonic() - t0)
        if rate < quiet or time.monotonic() > deadline:
            return rate


def make_cert(d):
    crt, key = os.path.join(d, "crt.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "2", "-subj", "/CN=bench"], check=True,
                   capture_output=True)
    return crt, key


class Callgrind:
    """Instructions per request: the server's Ir, read live."""

    def __init__(self, outdir, label):
        self.outdir, self.label = outdir, label

    def wrap(self, cmd):
        return ["valgrind", "--tool=callgrind",
                "--callgrind-out-file=%s/%s.%%p.out" % (self.outdir, self.label)] + cmd

    def settle(self, pid):
        return {"idle Ir/s": settle(pid)}

    def before(self, pid, name):
        self.ir = read_ir(pid)

    def after(self, pid, name, requests):
        ir = read_ir(pid)
        dump(pid, name)
        return {name: (ir - self.ir) / requests}


class Strace:
    """System calls per request: `strace -c -f` attached for each workload."""

    def __init__(self, outdir, label):
        self.outdir, self.label = outdir, label

    def wrap(self, cmd):
        return cmd

    def settle(self, pid):
        return {}

    def before(self, pid, name):
        self.out = os.path.join(self.outdir, "%s-%s.strace" % (self.label, name))
        self.proc = subprocess.Popen(["strace", "-c", "-f", "-o", self.out, "-p", str(pid)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # strace says "Process N attached" for each thread once it holds it.
        threads = len(os.listdir("/proc/%d/task" % pid))
        seen = 0
        while seen < threads:
            line = self.proc.stderr.readline()
            if not line:
                break
            if b"attached with" in line:  # "attached with N threads": all at once
                break
            seen += b"attached" in line

    def after(self, pid, name, requests):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)
        calls = {}
        with open(self.out) as f:
            for line in f:
                m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
                if m and m.group(2) != "total":
                    calls[m.group(2)] = int(m.group(1))
        total = sum(calls.values())
        per = ", ".join("%s %.2f" % (k, v / requests)
                        for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v / requests >= 0.01)
        print("  %s: %.2f syscalls/request (%s)" % (name, total / requests, per), flush=True)
        return {name: total / requests}


def measure(binary, scale, server_args, outdir, label, counter, cert=None):
    port = free_port()
    os.makedirs(outdir, exist_ok=True)
    counter = counter(outdir, label)
    cmd = counter.wrap([binary, "-p", str(port), "-U", "0", "-l", "127.0.0.1", "-t", "1", "-m", "64"])
    if os.geteuid() == 0:
        cmd += ["-u", "root"]
    if cert:
        cmd += ["-Z", "-o", "ssl_chain_cert=%s,ssl_key=%s" % cert]
    cmd += server_args
    log = open(os.path.join(outdir, label + ".log"), "w")
    srv = subprocess.Popen(cmd, stdout=log, stderr=log)
    results = {}
    try:
        c = Client(port, tls=cert is not None)
        preload(c)
        warm_up(c, random.Random(5))
        results.update(counter.settle(srv.pid))
        if isinstance(counter, Callgrind):
            dump(srv.pid, "setup")
        rng = random.Random(17)
        for name, requests, run in workloads(scale):
            counter.before(srv.pid, name)
            run(c, rng)
            results.update(counter.after(srv.pid, name, requests))
    finally:
        srv.send_signal(signal.SIGTERM)
        try:
            srv.wait(timeout=60)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
        log.close()
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every workload's request count")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="an extra server argument (repeatable); memcached itself needs "
                         "-c set to the open-files limit valgrind leaves (`valgrind --tool=none "
                         "sh -c 'ulimit -Hn'`), or it fails to set the limit and exits")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each binary; the median is printed")
    ap.add_argument("--out", default="target/bench/callgrind")
    ap.add_argument("--tls", action="store_true", help="servers with -Z, the client over TLS")
    ap.add_argument("--syscalls", action="store_true",
                    help="system calls per request (strace -c -f) instead of instructions")
    args = ap.parse_args()
    tool = "strace" if args.syscalls else "valgrind"
    if not shutil.which(tool):
        sys.exit("%s is needed (apt-get install %s)" % (tool, tool))
    counter = Strace if args.syscalls else Callgrind
    cert = make_cert(tempfile.mkdtemp(prefix="instr-tls-")) if args.tls else None
    names = [w[0] for w in workloads(1.0)]
    runs = {b: [] for b in args.binaries}
    # Rounds alternate the binaries, so a busier spell of the machine (which
    # changes how often timers fire per request) falls on all of them.
    for rnd in range(args.rounds):
        for i, b in enumerate(args.binaries):
            label = "%d-%s" % (i, os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(b))))) or "bin")
            r = measure(b, args.scale, args.server_arg, args.out, label, counter, cert)
            runs[b].append(r)
            print("round %d %s: %s" % (rnd + 1, b, ", ".join("%s %.0f" % kv for kv in r.items())), flush=True)
    print()
    what = "median of %d rounds" % args.rounds if args.rounds > 1 else "one round"
    unit = "syscalls" if args.syscalls else "Ir"
    fmt = "%.2f" if args.syscalls else "%.0f"
    print("| %s per request (%s%s) | " % (unit, what, ", TLS" if args.tls else "") + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for b in args.binaries:
        print("| %s | " % b + " | ".join(fmt % statistics.median(r[n] for r in runs[b]) for n in names) + " |")

if __name__ == "__main__":
    main()
