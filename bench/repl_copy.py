#!/usr/bin/env python3
"""Time a full copy: 1,000,000 100-byte items on a master (release build,
-m 1024), then a replica started; prints the time until both report
repl_connected 1 and the latency of gets served by the master meanwhile.
Uses ports 26001-26002 and 27001-27002 on 127.0.0.1.

    make build && cargo build --release --manifest-path bench/loadgen/Cargo.toml
    python3 bench/repl_copy.py
"""
import socket, subprocess, time, sys
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
BIN = str(ROOT / "target/release/memcached")
LG = str(ROOT / "bench/loadgen/target/release/loadgen")
def stats(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"stats\r\n"); buf=b""
        while not buf.endswith(b"END\r\n"): buf+=s.recv(65536)
    return dict(l.split(" ",2)[1:] for l in buf.decode().split("\r\n") if l.startswith("STAT "))
a=subprocess.Popen([BIN,"-u","root","-l","127.0.0.1","-p","26001","-m","1024","-x","127.0.0.1:27002","--repl-port","27001"])
time.sleep(0.5)
subprocess.run([LG,"run","--server","127.0.0.1:26001","--keys","1000000","--preload","--duration","0","--conns","20"],capture_output=True)
print("items on a:", stats(26001)["curr_items"])
# a client measuring get latency during the copy
t0=time.monotonic()
b=subprocess.Popen([BIN,"-u","root","-l","127.0.0.1","-p","26002","-m","1024","-x","127.0.0.1:27001","--repl-port","27002"])
lat=[]
s=socket.create_connection(("127.0.0.1",26001)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY,1)
while True:
    t=time.monotonic(); s.sendall(b"get key:0000001\r\n"); buf=b""
    while not buf.endswith(b"END\r\n"): buf+=s.recv(65536)
    lat.append(time.monotonic()-t)
    try:
        if len(lat)%50==0 and stats(26001).get("repl_connected")=="1" and stats(26002).get("repl_connected")=="1": break
    except OSError: pass
t1=time.monotonic()
lat.sort()
print("copy time %.2fs, items on b %s, gets during copy %d, p50 %.0fus p99 %.0fus max %.0fus" % (t1-t0, stats(26002)["curr_items"], len(lat), lat[len(lat)//2]*1e6, lat[int(len(lat)*.99)]*1e6, lat[-1]*1e6))
a.kill(); b.kill()
