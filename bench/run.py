#!/usr/bin/env python3
"""Benchmark driver: Debian's memcached (-t 1) against ours, and a null server.

Run by hand, normally through `make bench` (which builds both binaries
first). Every server is pinned to core 0 and the load generator to core 1;
each (round, workload, server) run gets a fresh server, preloaded with every
key, then a warm-up and a measured interval. Servers alternate within a
round and the order rotates between rounds, so drift on a noisy machine
spreads over all of them. Medians over rounds are reported.

Then memory: RSS of a fresh server, after 1,000,000 100-byte items, and
with 10,000 idle connections open. Then scan resistance (`bench/scan.py`):
a cache-aside hot set's hit ratio while one-hit keys flood `-m 32`.

Everything started here is stopped here, by PID. Only 127.0.0.1.
"""

import argparse
import datetime
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time

import scan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = os.path.join(ROOT, "target", "release", "memcached")
LOADGEN = os.path.join(ROOT, "bench", "loadgen", "target", "release", "loadgen")
DEBIAN = "/usr/bin/memcached"
SERVER_CORE = "0"
CLIENT_CORE = "1"

WORKLOADS = [
    # name, loadgen options
    ("get hit, 100 B", dict(keys=100_000, value_size=100, get_ratio=1.0, multiget=1, pipeline=1)),
    ("multiget 10 keys, 100 B", dict(keys=100_000, value_size=100, get_ratio=1.0, multiget=10, pipeline=1)),
    ("set, 100 B", dict(keys=100_000, value_size=100, get_ratio=0.0, multiget=1, pipeline=1)),
    ("90/10 get/set, 1 KB", dict(keys=100_000, value_size=1024, get_ratio=0.9, multiget=1, pipeline=1)),
    ("pipelined get x16, 100 B", dict(keys=100_000, value_size=100, get_ratio=1.0, multiget=1, pipeline=16)),
]
SERVERS = ["memcached", "ours", "null"]

started = []  # Popen objects, stopped in stop_all()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not come up")


def as_root_args():
    return ["-u", "nobody"] if os.geteuid() == 0 else []


def start_server(kind, port, mem, value_size=100, maxconns=None):
    if kind == "null":
        cmd = [LOADGEN, "null", "--listen", f"127.0.0.1:{port}",
               "--value-size", str(value_size), "--lifetime", "600"]
    else:
        binary = DEBIAN if kind == "memcached" else OURS
        cmd = [binary, "-t", "1", "-m", str(mem), "-l", "127.0.0.1", "-p", str(port)]
        cmd += as_root_args()
        if maxconns:
            cmd += ["-c", str(maxconns)]
    # taskset execs the server, so the PID is the server's own.
    proc = subprocess.Popen(["taskset", "-c", SERVER_CORE] + cmd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started.append(proc)
    wait_port(port, proc)
    return proc


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in started:
        started.remove(proc)


def stop_all():
    for p in list(started):
        stop(p)


def loadgen(port, pid, opts, args, extra=()):
    cmd = ["taskset", "-c", CLIENT_CORE, LOADGEN, "run",
           "--server", f"127.0.0.1:{port}", "--conns", str(args.conns),
           "--duration", str(args.duration), "--warmup", str(args.warmup),
           "--key-size", "11", "--preload", "--server-pid", str(pid),
           "--watch-cpus", f"{SERVER_CORE},{CLIENT_CORE}"]
    for k, v in opts.items():
        cmd += ["--" + k.replace("_", "-"), str(v)]
    cmd += list(extra)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started.append(p)
    try:
        out, err = p.communicate(timeout=args.duration + args.warmup + 120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        started.remove(p)
    if p.returncode != 0:
        raise RuntimeError(f"loadgen failed ({p.returncode}): {err.strip()}")
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError("loadgen printed no RESULT")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def stat_value(port, name):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"stats\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    for line in buf.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == name:
            return int(parts[2])
    return None


def foreign_load(r):
    """Busy time not spent by the server on its core, or by the load
    generator on its core (other processes on a shared machine), as a
    fraction of the interval; the larger of the two."""
    cpus = r.get("cpus", {})
    worst = 0.0
    for core, own in ((SERVER_CORE, r.get("server_cpu_util")),
                      (CLIENT_CORE, r.get("client_cpu_util"))):
        cpu = cpus.get(core)
        if cpu is not None and own is not None:
            worst = max(worst, cpu["busy"] + cpu["steal"] - own)
    return worst


def cpu_busy(cores, interval=0.5):
    """Fraction of `interval` the given cores were busy (from /proc/stat)."""
    def snap():
        busy = total = 0
        with open("/proc/stat") as f:
            for line in f:
                parts = line.split()
                if parts[0] in {f"cpu{c}" for c in cores}:
                    v = [int(x) for x in parts[1:9]]
                    busy += sum(v) - v[3] - v[4]
                    total += sum(v)
        return busy, total
    b0, t0 = snap()
    time.sleep(interval)
    b1, t1 = snap()
    return (b1 - b0) / max(1, t1 - t0)


def wait_quiet(log, limit=15.0):
    """Waits (up to `limit` seconds) until both cores are idle, so a run
    does not start in the middle of someone else's burst."""
    end = time.time() + limit
    while time.time() < end:
        if cpu_busy((SERVER_CORE, CLIENT_CORE)) < 0.10:
            return
    log("  (cores still busy with other work; running anyway)")


def measure(kind, opts, args, log):
    """One run on a fresh server. A run during which either core was busy
    with something else (more than --max-foreign) is repeated, up to --retries
    times; the least disturbed attempt is kept. Each attempt first waits
    for both cores to be idle."""
    best = None
    for attempt in range(args.retries + 1):
        wait_quiet(log)
        port = free_port()
        proc = start_server(kind, port, args.mem, opts["value_size"])
        try:
            r = loadgen(port, proc.pid, opts, args)
        finally:
            stop(proc)
        r["foreign"] = foreign_load(r)
        r["attempts"] = attempt + 1
        if best is None or r["foreign"] < best["foreign"]:
            best = r
        if r["foreign"] <= args.max_foreign:
            break
        log(f"  (attempt {attempt + 1} disturbed: {r['foreign'] * 100:.0f}% of a core "
            f"busy with other work; {r['ops_per_sec']:.0f} ops/s)")
    best["attempts"] = attempt + 1
    return best


def throughput(args, log):
    results = {}  # (workload, server) -> [result per round]
    for rnd in range(args.rounds):
        order = SERVERS[rnd % len(SERVERS):] + SERVERS[:rnd % len(SERVERS)]
        for name, opts in WORKLOADS:
            for kind in order:
                r = measure(kind, opts, args, log)
                results.setdefault((name, kind), []).append(r)
                warn = ""
                expected_hits = opts["get_ratio"] == 1.0
                if r["errors"] or r["dead_conns"] or r["preload_errors"] or (expected_hits and r["misses"]):
                    warn = (f"  !! errors={r['errors']} dead={r['dead_conns']} "
                            f"preload_errors={r['preload_errors']} misses={r['misses']}")
                log(f"round {rnd + 1} {name:26} {kind:9} {r['ops_per_sec']:>10.0f} ops/s "
                    f"p50 {r['p50_us']:7.1f} p99 {r['p99_us']:7.1f} p99.9 {r['p999_us']:7.1f} us "
                    f"cpu {r['server_cpu_us_per_req'] or 0:5.2f} us/req "
                    f"server {r['server_cpu_util'] * 100:3.0f}% client {r['client_cpu_util'] * 100:3.0f}% "
                    f"other {r['foreign'] * 100:3.0f}%{warn}")
    return results


def memory(args, log):
    out = {}
    for kind in ["memcached", "ours"]:
        m = {}
        # 1,000,000 items of 100 bytes.
        port = free_port()
        proc = start_server(kind, port, args.mem, maxconns=20000)
        try:
            time.sleep(0.5)
            m["rss_idle_kb"] = rss_kb(proc.pid)
            a = argparse.Namespace(**vars(args))
            a.duration, a.warmup, a.conns = 0, 0, 16
            r = loadgen(port, proc.pid, dict(keys=args.items, value_size=100), a)
            time.sleep(0.5)
            m["rss_items_kb"] = rss_kb(proc.pid)
            m["curr_items"] = stat_value(port, "curr_items")
            m["preload_errors"] = r["preload_errors"]
            m["load_secs"] = r["preload_secs"]
            m["bytes_per_item"] = (m["rss_items_kb"] - m["rss_idle_kb"]) * 1024 / args.items
        finally:
            stop(proc)
        # 10,000 idle connections on a fresh server.
        port = free_port()
        proc = start_server(kind, port, args.mem, maxconns=20000)
        try:
            time.sleep(0.5)
            m["rss_fresh_kb"] = rss_kb(proc.pid)
            idle = subprocess.Popen(
                ["taskset", "-c", CLIENT_CORE, LOADGEN, "idle", "--server", f"127.0.0.1:{port}",
                 "--conns", str(args.idle_conns), "--hold", "120"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            started.append(idle)
            try:
                line = idle.stdout.readline()
                if not line.startswith("READY"):
                    raise RuntimeError(f"idle: {line!r} {idle.stderr.read()}")
                time.sleep(0.5)
                m["rss_conns_kb"] = rss_kb(proc.pid)
                m["curr_connections"] = stat_value(port, "curr_connections")
            finally:
                idle.stdin.close()
                try:
                    idle.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    idle.kill()
                    idle.wait()
                started.remove(idle)
            m["bytes_per_conn"] = (m["rss_conns_kb"] - m["rss_fresh_kb"]) * 1024 / args.idle_conns
        finally:
            stop(proc)
        log(f"memory {kind:9} {json.dumps(m)}")
        out[kind] = m
    return out


def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")


def spread(rs):
    v = [r["ops_per_sec"] for r in rs]
    m = statistics.median(v)
    return (max(v) - min(v)) / m * 100 if m else 0.0


def report(args, results, mem, scanned=None):
    lines = []
    p = lines.append
    if not results:
        p = lambda *_: None
    p(f"Machine: {machine()}; date {datetime.date.today().isoformat()}. "
      f"{args.rounds} rounds, {args.conns} connections, {args.warmup:g} s warm-up + "
      f"{args.duration:g} s measured per run; servers on core {SERVER_CORE}, load "
      f"generator on core {CLIENT_CORE}. Medians over rounds; 'spread' is (max - min) / "
      f"median of a server's rounds.")
    p("")
    p("| workload | memcached ops/s | ours ops/s | ours / memcached | null server ops/s (ceiling) | spread memcached / ours |")
    p("|---|---:|---:|---:|---:|---:|")
    for name, _ in WORKLOADS:
        mc, us, nl = (results.get((name, k), []) for k in SERVERS)
        if not mc or not us:
            continue
        a, b = med(mc, "ops_per_sec"), med(us, "ops_per_sec")
        c = med(nl, "ops_per_sec") if nl else float("nan")
        p(f"| {name} | {a:,.0f} | {b:,.0f} | {b / a:.2f} | {c:,.0f} | {spread(mc):.0f}% / {spread(us):.0f}% |")
    p("")
    p("Latency, microseconds, p50 / p99 / p99.9 (per request; per batch of 16 when pipelined), "
      "and server CPU per request (utime + stime over the measured interval / requests; "
      "in parentheses, how busy that kept the server's core):")
    p("")
    p("| workload | memcached latency | ours latency | memcached CPU µs/req | ours CPU µs/req | null CPU µs/req |")
    p("|---|---:|---:|---:|---:|---:|")
    for name, _ in WORKLOADS:
        mc, us, nl = (results.get((name, k), []) for k in SERVERS)
        if not mc or not us:
            continue
        lat = lambda rs: " / ".join(f"{med(rs, k):.0f}" for k in ("p50_us", "p99_us", "p999_us"))
        cpu = lambda rs: (f"{med(rs, 'server_cpu_us_per_req'):.2f} ({med(rs, 'server_cpu_util') * 100:.0f}%)"
                          if rs else "-")
        p(f"| {name} | {lat(mc)} | {lat(us)} | {cpu(mc)} | {cpu(us)} | {cpu(nl)} |")
    p = lines.append
    if mem:
        mc, us = mem["memcached"], mem["ours"]
        mb = lambda kb: f"{kb / 1024:.1f} MB"
        p("")
        p(f"Memory (`-m {args.mem} -c 20000`; VmRSS):")
        p("")
        p("| | memcached | ours |")
        p("|---|---:|---:|")
        p(f"| RSS idle | {mb(mc['rss_idle_kb'])} | {mb(us['rss_idle_kb'])} |")
        p(f"| RSS after {args.items:,} 100-byte items | {mb(mc['rss_items_kb'])} | {mb(us['rss_items_kb'])} |")
        p(f"| bytes per item ((after - idle) / {args.items:,}) | {mc['bytes_per_item']:.1f} | {us['bytes_per_item']:.1f} |")
        p(f"| RSS with {args.idle_conns:,} idle connections | {mb(mc['rss_conns_kb'])} | {mb(us['rss_conns_kb'])} |")
        p(f"| bytes per idle connection | {mc['bytes_per_conn']:,.0f} | {us['bytes_per_conn']:,.0f} |")
    if scanned:
        p("")
        for line in scan.report_lines(scanned[0], scanned[1]):
            p(line)
    bad = [(k, r) for k, rs in results.items() for r in rs
           if r["errors"] or r["dead_conns"] or r["preload_errors"]]
    runs = [r for rs in results.values() for r in rs]
    if runs:
        p("")
        p(f"Load generator core busy (median over runs): "
          f"{statistics.median(r['client_cpu_util'] for r in runs) * 100:.0f}%. "
          f"Runs repeated because other work took more than {args.max_foreign * 100:.0f}% of "
          f"a core: {sum(r['attempts'] - 1 for r in runs)}; kept runs still above it: "
          f"{sum(r['foreign'] > args.max_foreign for r in runs)} of {len(runs)}.")
    if not runs:
        return "\n".join(lines)
    p("")
    p(f"Protocol errors seen by the load generator: {sum(r['errors'] for _, r in bad)} "
      f"in {len(bad)} of {sum(len(v) for v in results.values())} runs.")
    return "\n".join(lines)


def machine():
    cpus = os.cpu_count()
    model = "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"`nproc` {cpus}, {model}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--mem", type=int, default=1024, help="-m for both servers")
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--idle-conns", type=int, default=10_000)
    ap.add_argument("--retries", type=int, default=2,
                    help="repeat a run disturbed by other load on either core")
    ap.add_argument("--max-foreign", type=float, default=0.12,
                    help="fraction of either core busy with other work that makes a run disturbed")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-scan", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "bench"),
                    help="directory for results.json and results.md")
    args = ap.parse_args()

    for path in (OURS, LOADGEN, DEBIAN):
        if not os.access(path, os.X_OK):
            sys.exit(f"missing {path}: run `make bench` (it builds both)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.idle_conns + 100:
        sys.exit(f"RLIMIT_NOFILE hard limit {hard} is below {args.idle_conns} connections")

    def log(msg):
        print(msg, flush=True)

    t0 = time.time()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        results = {} if args.skip_throughput else throughput(args, log)
        mem = None if args.skip_memory else memory(args, log)
        scanned = None
        if not args.skip_scan:
            scan_args = scan.parser().parse_args(["--core", SERVER_CORE])
            scanned = (scan_args, scan.run_scan(scan_args, log))
    finally:
        stop_all()
    table = report(args, results, mem, scanned)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"throughput": {f"{k[0]} | {k[1]}": v for k, v in results.items()},
                   "memory": mem, "scan": scanned[1] if scanned else None}, f, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table + "\n")
    print()
    print(table)
    print(f"\n({time.time() - t0:.0f} s; written to {args.out}/results.md)")


if __name__ == "__main__":
    main()
