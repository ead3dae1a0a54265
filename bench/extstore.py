#!/usr/bin/env python3
"""extstore, ours against Debian's memcached -t 1 with the same options on the
same file system (issue 18's four targets), printed as a table:

1. capacity: 512 MB of 4-16 KB values set as fast as one client sends them
   into `-m 64` over a 1 GB ext file (memcached's defaults otherwise): how
   many are readable afterwards, evictions, RSS;
2. flash gets/s: values of 4-16 KB all on flash (`ext_item_age=0`, the fill
   paced until written), then the load generator's random gets over them;
3. RAM gets while flash reads are in flight: 100-byte values (never written
   out) read by 4 connections, alone and then beside a second load
   generator whose 1 connection reads flash values as fast as it is
   answered (closed loop, so it takes the server time its flash gets cost);
   the loss of RAM gets/s, the flash gets served meanwhile, the server's
   CPU share alone and beside, and the share of the server's core those
   flash gets need at the CPU each costs in (2): a server busy all the time
   alone cannot lose less than that share, whatever the flash path; then
   again beside the same reader paced to 1,000 flash gets a second (about
   1% of the gets: a flash tier holding the cold tail of the key space),
   where what is lost beyond those reads' own cost is what their being in
   flight costs the RAM gets;
4. RSS after the capacity fill and the read-back (from 1).

Servers run on core 0 (`taskset`, their I/O threads with them), the load
generators on core 1, as bench/run.py places them.

    python3 bench/extstore.py [--bin target/release/memcached] [--scale 0.25]
        [--rounds 2] [--duration 5] [--only ours]

`--scale` multiplies the data (and the file); the default run takes about
three minutes. A shared machine gives rough figures: compare the two
servers run side by side, never absolute numbers. Nothing asserts on them.
"""
import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from run import cpu_busy, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADGEN = os.path.join(ROOT, "bench", "loadgen", "target", "release", "loadgen")
ORACLE = "/usr/bin/memcached"
SERVER_CORE = "0"
CLIENT_CORE = "1"
FLASH_KEY_SIZE = 11  # key:0000001, the load generator's keys
RAM_KEY_SIZE = 12    # key:00000001: another key space
RAM_KEYS = 1000
# Flash gets a second beside the RAM gets in the paced run: about 1% of
# the RAM gets, a flash tier holding the cold tail of the key space.
PACED_FLASH_RATE = 1000
READER = "loadgen"  # --reader


class Server:
    def __init__(self, binary, label, ext_opts, threads_one):
        self.dir = tempfile.mkdtemp(prefix="extbench-", dir=os.environ.get("EXT_BENCH_DIR", "/tmp"))
        self.path = os.path.join(self.dir, "ext")
        self.port = free_port()
        # taskset execs the server: the PID is the server's own.
        cmd = ["taskset", "-c", SERVER_CORE, binary, "-u", "root", "-l", "127.0.0.1", "-p", str(self.port), "-U", "0",
               "-m", "64", "-o", f"ext_path={self.path}:{ext_opts}"]
        if threads_one:
            cmd += ["-t", "1"]
        self.label = label
        self.proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.time() + 10
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.port))
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"{label} did not start")
                time.sleep(0.05)

    def req(self, data, end):
        self.sock.sendall(data)
        b = b""
        while not b.endswith(end):
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("server closed")
            b += chunk
        return b

    def stats(self):
        r = self.req(b"stats\r\n", b"END\r\n").decode()
        return {l.split(" ")[1]: l.split(" ")[2] for l in r.split("\r\n") if l.startswith("STAT")}

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return int(next(l for l in f if l.startswith("VmRSS")).split()[1])

    def stop(self):
        self.sock.close()
        self.proc.kill()
        self.proc.wait()
        try:
            os.unlink(self.path)
            os.rmdir(self.dir)
        except OSError:
            pass


def key(i, size=FLASH_KEY_SIZE):
    return b"key:%0*d" % (size - 4, i)


def size_of(i):
    return 4096 + (i * 7919 % 12289)  # 4-16 KB, spread


def fill(srv, n, paced):
    """Sets n values; `paced`: waits every batch until the store has
    written what was sent (so nothing is evicted), else as fast as sent."""
    for base in range(0, n, 500):
        top = min(n, base + 500)
        srv.sock.sendall(b"".join(b"set %s 0 0 %d noreply\r\n%s\r\n" % (key(i), size_of(i), b"v" * size_of(i))
                                  for i in range(base, top)))
        srv.req(b"version\r\n", b"\r\n")
        if paced:
            wait_written(srv, top)
    settle(srv)


def wait_written(srv, n, limit=60):
    deadline = time.time() + limit
    while int(srv.stats()["extstore_objects_written"]) < n and time.time() < deadline:
        time.sleep(0.01)


def settle(srv, limit=60):
    """Until the writer has nothing left to do (its count stops moving and
    no I/O is queued)."""
    last, deadline = -1, time.time() + limit
    while time.time() < deadline:
        st = srv.stats()
        w = int(st["extstore_objects_written"])
        if w == last and st["extstore_io_queue"] == "0":
            return
        last = w
        time.sleep(0.3)


def readable(srv, n):
    found = 0
    for base in range(0, n, 100):
        r = srv.req(b"get " + b" ".join(key(i) for i in range(base, min(n, base + 100))) + b"\r\n",
                    b"END\r\n")
        found += r.count(b"\r\nVALUE ") + r.startswith(b"VALUE ")
    return found


def loadgen_cmd(srv, keys, key_size, conns, duration, extra=(), warmup=1):
    return ["taskset", "-c", CLIENT_CORE, LOADGEN, "run", "--server", f"127.0.0.1:{srv.port}",
            "--conns", str(conns), "--duration", str(duration), "--warmup", str(warmup),
            "--keys", str(keys), "--key-size", str(key_size), "--server-pid", str(srv.proc.pid),
            "--watch-cpus", f"{SERVER_CORE},{CLIENT_CORE}"] + list(extra)


def result_of(stdout, stderr):
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"loadgen: {stderr.strip()}")


def wait_quiet(limit=15.0):
    """Waits (up to `limit` seconds) until both cores are idle, so a run
    does not start in the middle of someone else's burst."""
    end = time.time() + limit
    while time.time() < end and cpu_busy((SERVER_CORE, CLIENT_CORE)) >= 0.10:
        pass


def foreign(r, client_util):
    """Busy time on the two cores that neither the server nor the load
    generators spent (other processes of a shared machine), as a fraction
    of the interval: the larger of the two cores'."""
    cpus = r.get("cpus", {})
    own = {SERVER_CORE: r.get("server_cpu_util"), CLIENT_CORE: client_util}
    return max((cpus[c]["busy"] + cpus[c]["steal"] - u for c, u in own.items()
                if c in cpus and u is not None), default=0.0)


def loadgen(srv, keys, key_size, conns, duration, extra=(), quiet_first=True):
    if quiet_first:
        wait_quiet()
    cmd = loadgen_cmd(srv, keys, key_size, conns, duration, extra)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    return result_of(out.stdout, out.stderr)


def python_reader(srv, n, stop, count):
    """The flash reader of the figures before the load generator took its
    place (`--reader python`): one connection from a Python thread of this
    script, on the load generators' core."""
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    c = socket.create_connection(("127.0.0.1", srv.port))
    r, done = random.Random(7), 0
    t0 = time.thread_time()
    while not stop.is_set():
        c.sendall(b"get %s\r\n" % key(r.randrange(n)))
        b = b""
        while not b.endswith(b"END\r\n"):
            b += c.recv(1 << 16)
        done += 1
    count.append((done, time.thread_time() - t0))
    c.close()


def ram_beside_python(srv, n, duration):
    stop, count = threading.Event(), []
    t = threading.Thread(target=python_reader, args=(srv, n, stop, count))
    start = time.time()
    wait_quiet()
    t.start()
    try:
        ram = loadgen(srv, RAM_KEYS, RAM_KEY_SIZE, 4, duration, quiet_first=False)
    finally:
        stop.set()
        t.join()
    secs = time.time() - start
    done, cpu = count[0]
    return ram, {"ops_per_sec": done / secs, "hits": done, "gets": done,
                 "client_cpu_util": cpu / secs}


def ram_beside_flash(srv, n, duration, rate=0):
    """The RAM-get run with a second load generator beside it: 1
    connection reading flash values for as long as the RAM run lasts (its
    warm-up second included, so its rate is the rate during that run), as
    fast as it is answered or, with `rate`, that many a second."""
    wait_quiet()
    extra = ["--seed", "7"] + (["--rate", str(rate)] if rate else [])
    reader = subprocess.Popen(loadgen_cmd(srv, n, FLASH_KEY_SIZE, 1, duration + 1, warmup=0,
                                          extra=extra),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # At once: the reader keeps the cores busy.
        ram = loadgen(srv, RAM_KEYS, RAM_KEY_SIZE, 4, duration, quiet_first=False)
        out, err = reader.communicate(timeout=duration + 120)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    return ram, result_of(out, err)


def capacity(binary, label, threads_one, scale):
    total = int(512 * scale) << 20
    n = total // (10 * 1024)
    srv = Server(binary, label, f"{max(1, int(1024 * scale))}m", threads_one)
    try:
        fill(srv, n, paced=False)
        st = srv.stats()
        found = readable(srv, n)
        # RSS once the reads are done: a server at rest after the fill.
        return {"items": n, "readable": found, "evictions": int(st["evictions"]),
                "written": int(st["extstore_objects_written"]), "rss_kb": srv.rss_kb()}
    finally:
        srv.stop()


def throughput(binary, label, threads_one, scale, duration):
    n = int(20000 * scale)
    srv = Server(binary, label, f"{max(1, int(1024 * scale))}m,ext_item_age=0", threads_one)
    try:
        fill(srv, n, paced=True)
        flash = loadgen(srv, n, FLASH_KEY_SIZE, 8, duration)
        st = srv.stats()
        ram_extra = ["--value-size", "100", "--preload"]
        alone = loadgen(srv, RAM_KEYS, RAM_KEY_SIZE, 4, duration, ram_extra)
        beside, reader = (ram_beside_python if READER == "python" else ram_beside_flash)(
            srv, n, duration)
        # A cache whose flash tier serves a small share of the gets: the
        # same reader paced to PACED_FLASH_RATE.
        paced, paced_reader = ram_beside_flash(srv, n, duration, rate=PACED_FLASH_RATE)
        flash_cpu_us = flash["server_cpu_us_per_req"] or 0.0
        client_beside = beside["client_cpu_util"] + reader["client_cpu_util"]
        return {"flash_gets": flash["ops_per_sec"], "flash_hits": flash["hits"],
                "flash_gets_all": flash["gets"], "flash_p99_us": flash["p99_us"],
                "flash_cpu_us": flash_cpu_us,
                "flash_server_cpu": flash["server_cpu_util"],
                "get_extstore": int(st["get_extstore"]),
                "ram_alone": alone["ops_per_sec"], "ram_beside": beside["ops_per_sec"],
                "ram_p99_alone": alone["p99_us"], "ram_p99_beside": beside["p99_us"],
                "server_cpu_alone": alone["server_cpu_util"],
                "server_cpu_beside": beside["server_cpu_util"],
                "client_cpu_alone": alone["client_cpu_util"],
                "client_cpu_beside": client_beside,
                "foreign": max(foreign(flash, flash["client_cpu_util"]),
                               foreign(alone, alone["client_cpu_util"]),
                               foreign(beside, client_beside)),
                "flash_beside": reader["ops_per_sec"], "flash_beside_hits": reader["hits"],
                "flash_beside_gets": reader["gets"],
                # The share of the server's core the flash gets beside the
                # RAM gets take, at what each cost in the flash-only run.
                "flash_share": reader["ops_per_sec"] * flash_cpu_us / 1e6,
                "ram_beside_paced": paced["ops_per_sec"],
                "flash_beside_paced": paced_reader["ops_per_sec"],
                "ram_p99_beside_paced": paced["p99_us"]}
    finally:
        srv.stop()


def med(rs, k):
    return statistics.median(r[k] for r in rs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binary", nargs="?", default=os.path.join(ROOT, "target", "release", "memcached"))
    ap.add_argument("--scale", type=float, default=1.0, help="data and file size factor [1]")
    ap.add_argument("--rounds", type=int, default=1, help="rounds per server (medians) [1]")
    ap.add_argument("--duration", type=float, default=5, help="seconds per measured get run [5]")
    ap.add_argument("--only", choices=["ours"], help="skip memcached")
    ap.add_argument("--reader", choices=["loadgen", "python"], default="loadgen",
                    help="what reads flash beside the RAM gets: a second load generator "
                         "[loadgen], or a Python thread of this script (earlier figures' way)")
    args = ap.parse_args()
    global READER
    READER = args.reader
    if not os.path.exists(LOADGEN):
        sys.exit(f"{LOADGEN} missing: cargo build --release --manifest-path bench/loadgen/Cargo.toml")
    servers = [("ours", args.binary, False)]
    if not args.only:
        servers.append(("memcached -t 1", ORACLE, True))
    cap, thr = {}, {}
    for r in range(args.rounds):
        for label, binary, t1 in servers:
            c = capacity(binary, label, t1, args.scale)
            print(f"# round {r + 1} {label} capacity {json.dumps(c)}", flush=True)
            cap.setdefault(label, []).append(c)
            t = throughput(binary, label, t1, args.scale, args.duration)
            print(f"# round {r + 1} {label} gets {json.dumps(t)}", flush=True)
            thr.setdefault(label, []).append(t)
    n = cap["ours"][0]["items"]
    print()
    print(f"extstore, `-m 64`, {n:,} values of 4-16 KB ({512 * args.scale:.0f} MB) into a "
          f"{1024 * args.scale:.0f} MB file; {args.rounds} round(s), medians; gets: "
          f"{int(20000 * args.scale):,} values all on flash, 8 connections, {args.duration:g} s.")
    print()
    print("| | " + " | ".join(l for l, _, _ in servers) + " |")
    print("|---|" + "---:|" * len(servers))
    row = lambda name, f: print(f"| {name} | " + " | ".join(f(l) for l, _, _ in servers) + " |")
    row("readable after the fill", lambda l: f"{med(cap[l], 'readable'):,.0f} of {n:,}")
    row("evictions", lambda l: f"{med(cap[l], 'evictions'):,.0f}")
    row("RSS after the fill and read-back", lambda l: f"{med(cap[l], 'rss_kb') / 1024:.0f} MB")
    row("flash gets/s", lambda l: f"{med(thr[l], 'flash_gets'):,.0f}")
    row("flash get p99 (µs)", lambda l: f"{med(thr[l], 'flash_p99_us'):,.0f}")
    row("server CPU per flash get (µs)", lambda l: f"{med(thr[l], 'flash_cpu_us'):.1f}")
    row("server CPU during flash gets (% of a core)",
        lambda l: f"{med(thr[l], 'flash_server_cpu') * 100:.0f}%")
    row("RAM gets/s alone (4 conns)", lambda l: f"{med(thr[l], 'ram_alone'):,.0f}")
    row("RAM gets/s beside 1 conn of flash gets", lambda l: f"{med(thr[l], 'ram_beside'):,.0f}")
    row("flash gets/s served meanwhile (that 1 conn)",
        lambda l: f"{med(thr[l], 'flash_beside'):,.0f}")
    row("RAM gets lost beside flash reads",
        lambda l: f"{(1 - med(thr[l], 'ram_beside') / med(thr[l], 'ram_alone')) * 100:.1f}%")
    row("server core share those flash gets need (rate x CPU per flash get)",
        lambda l: f"{med(thr[l], 'flash_share') * 100:.1f}%")
    row(f"RAM gets/s beside {PACED_FLASH_RATE:,} flash gets/s (1 conn, paced)",
        lambda l: f"{med(thr[l], 'ram_beside_paced'):,.0f}")
    row("flash gets/s served meanwhile (paced)",
        lambda l: f"{med(thr[l], 'flash_beside_paced'):,.0f}")
    row("RAM gets lost beside paced flash reads",
        lambda l: f"{(1 - med(thr[l], 'ram_beside_paced') / med(thr[l], 'ram_alone')) * 100:.1f}%")
    row("RAM get p99 beside paced flash reads (µs)",
        lambda l: f"{med(thr[l], 'ram_p99_beside_paced'):.0f}")
    row("server CPU alone / beside (% of a core)",
        lambda l: f"{med(thr[l], 'server_cpu_alone') * 100:.0f}% / "
                  f"{med(thr[l], 'server_cpu_beside') * 100:.0f}%")
    row("load generators' CPU alone / beside (% of core 1)",
        lambda l: f"{med(thr[l], 'client_cpu_alone') * 100:.0f}% / "
                  f"{med(thr[l], 'client_cpu_beside') * 100:.0f}%")
    row("RAM get p99 alone / beside (µs)",
        lambda l: f"{med(thr[l], 'ram_p99_alone'):.0f} / {med(thr[l], 'ram_p99_beside'):.0f}")
    row("other processes' load on the cores (worst get run)",
        lambda l: f"{med(thr[l], 'foreign') * 100:.0f}%")


if __name__ == "__main__":
    main()
