#!/usr/bin/env python3
"""TLS benchmark: our server against Debian's memcached, both `-t 1 -Z`
with the same certificate, on the same workloads over TLS and over
plaintext (so the TLS ratio can be read against the plaintext one):

  get        one 100-byte key per request, one request per round trip
  set        one 100-byte value per request
  mget10     a get of 10 keys per request
  pipelined  50 gets per write
  conns      new connections per second: TCP + TLS handshake, one get, close

The clients are Python processes (blocking sockets, Python's ssl module):
on a small machine they, not the servers, may be the bottleneck, so the
figures are a floor and the ratios the thing to read. Brief by default
(the machine may be shared): --duration seconds per workload and server.

    python3 bench/tls.py [--duration 3] [--procs 2] [--out target/bench]
"""

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), ".."))
OURS = os.path.join(ROOT, "target", "release", "memcached")
ORACLE = "/usr/bin/memcached"
VALUE = b"v" * 100
KEYS = 1000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(d):
    crt, key = os.path.join(d, "crt.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "2", "-subj", "/CN=bench"], check=True,
                   capture_output=True)
    return crt, key


def start(binary, port, crt, key, tls):
    args = [binary, "-u", "root", "-t", "1", "-m", "256", "-c", "4096", "-l", "127.0.0.1",
            "-p", str(port), "-U", "0"]
    if tls:
        args += ["-Z", "-o", f"ssl_chain_cert={crt},ssl_key={key}"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError(f"{binary} did not start")


def connect(port, tls):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if not tls:
        return s
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(s)


def read_until(s, buf, end):
    while not buf.endswith(end):
        chunk = s.recv(1 << 16)
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def request_for(workload, i):
    k = b"key:%d" % (i % KEYS)
    if workload == "set":
        return b"set " + k + b" 0 0 100\r\n" + VALUE + b"\r\n", b"STORED\r\n", 1
    if workload == "mget10":
        keys = b" ".join(b"key:%d" % ((i + j) % KEYS) for j in range(10))
        return b"get " + keys + b"\r\n", b"END\r\n", 1
    if workload == "pipelined":
        return b"".join(b"get key:%d\r\n" % ((i + j) % KEYS) for j in range(50)), None, 50
    return b"get " + k + b"\r\n", b"END\r\n", 1


def client(port, tls, workload, duration, out):
    ops, i = 0, os.getpid()
    deadline = time.monotonic() + duration
    if workload == "conns":
        while time.monotonic() < deadline:
            s = connect(port, tls)
            s.sendall(b"get key:1\r\n")
            read_until(s, b"", b"END\r\n")
            s.close()
            ops += 1
        out.put(ops)
        return
    s = connect(port, tls)
    while time.monotonic() < deadline:
        req, end, n = request_for(workload, i)
        s.sendall(req)
        if end is None:
            buf = b""
            while buf.count(b"END\r\n") < n:
                buf += s.recv(1 << 16)
        else:
            read_until(s, b"", end)
        ops += n
        i += 1
    s.close()
    out.put(ops)


def preload(port, tls):
    s = connect(port, tls)
    for i in range(KEYS):
        s.sendall(b"set key:%d 0 0 100 noreply\r\n" % i + VALUE + b"\r\n")
    s.sendall(b"mn\r\n")
    read_until(s, b"", b"MN\r\n")
    s.close()


def measure(port, tls, workload, duration, procs):
    q = mp.Queue()
    ps = [mp.Process(target=client, args=(port, tls, workload, duration, q)) for _ in range(procs)]
    t0 = time.monotonic()
    for p in ps:
        p.start()
    total = sum(q.get() for _ in ps)
    for p in ps:
        p.join()
    return total / max(time.monotonic() - t0, duration)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "bench"))
    ap.add_argument("--workloads", default="get,set,mget10,pipelined,conns")
    args = ap.parse_args()
    if not shutil.which("openssl"):
        sys.exit("tls.py: needs the openssl command")
    workloads = args.workloads.split(",")
    results = {}
    with tempfile.TemporaryDirectory() as d:
        crt, key = make_cert(d)
        for tls in (True, False):
            for kind, binary in (("ours", OURS), ("memcached", ORACLE)):
                port = free_port()
                proc = start(binary, port, crt, key, tls)
                try:
                    preload(port, tls)
                    for w in workloads:
                        rate = measure(port, tls, w, args.duration, args.procs)
                        results[f"{'tls' if tls else 'plain'}/{w}/{kind}"] = rate
                        print(f"  {'tls  ' if tls else 'plain'} {w:10} {kind:10} {rate:10.0f} /s",
                              flush=True)
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=10)
    print("\nworkload    TLS ours/memcached   plaintext ours/memcached")
    for w in workloads:
        t = results[f"tls/{w}/ours"] / results[f"tls/{w}/memcached"]
        p = results[f"plain/{w}/ours"] / results[f"plain/{w}/memcached"]
        print(f"{w:10}  {t:18.2f}   {p:24.2f}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "tls.json"), "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
