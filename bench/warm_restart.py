"""Warm restart (-e) time with N items.

    python3 bench/warm_restart.py BIN N [MEGABYTES]

Fills N items (12-byte keys, 32-byte values) into BIN started with
`-m MEGABYTES -e FILE -v`, stops it with SIGUSR1, restarts it with the same
options and reports the time from spawn to the first accepted connection
and between the `[restart] recovery start/end` stamps it prints, then
checks that the items are back. Works with Debian's memcached as BIN too.
"""
import os, re, signal, socket, subprocess, sys, tempfile, time
BIN = sys.argv[1]; N = int(sys.argv[2]); MEM = sys.argv[3] if len(sys.argv) > 3 else "1024"
workdir = tempfile.TemporaryDirectory(prefix="warm-restart-")
path = os.path.join(workdir.name, "cache.mem")
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def start(port):
    t0 = time.monotonic()
    p = subprocess.Popen([BIN, "-u", "root", "-l", "127.0.0.1", "-U", "0", "-p", str(port), "-m", MEM, "-e", path, "-v"],
                         stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close(); break
        except OSError:
            if p.poll() is not None: raise SystemExit(p.stderr.read())
            time.sleep(0.002)
    return p, time.monotonic() - t0
port = free_port()
p, t = start(port)
s = socket.create_connection(("127.0.0.1", port))
batch = 2000
t0 = time.monotonic()
for base in range(0, N, batch):
    buf = b"".join(b"set key:%08d 0 0 32 noreply\r\n%032d\r\n" % (i, i) for i in range(base, min(N, base + batch)))
    s.sendall(buf)
s.sendall(b"mn\r\n"); d = b""
while not d.endswith(b"MN\r\n"): d += s.recv(65536)
s.sendall(b"stats\r\n"); d = b""
while not d.endswith(b"END\r\n"): d += s.recv(65536)
items = int(re.search(rb"curr_items (\d+)", d).group(1))
print(f"filled {items} items in {time.monotonic()-t0:.1f}s")
s.close()
t0 = time.monotonic(); p.send_signal(signal.SIGUSR1); p.wait(); stop = time.monotonic() - t0
print(f"graceful stop (msync + metadata) {stop:.2f}s; file {os.path.getsize(path)>>20} MB, meta {os.path.getsize(path+'.meta')} bytes")
time.sleep(1.1)
p, t = start(port)
time.sleep(0.2)
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"stats\r\n"); d = b""
while not d.endswith(b"END\r\n"): d += s.recv(65536)
items2 = int(re.search(rb"curr_items (\d+)", d).group(1))
s.sendall(b"get key:00000007 key:%08d\r\n" % (N - 1)); d = b""
while not d.endswith(b"END\r\n"): d += s.recv(65536)
p.send_signal(signal.SIGTERM); p.wait()
err = p.stderr.read().decode()
st = re.search(r"recovery start \[(\d+)\.(\d+)\]", err); en = re.search(r"recovery end \[(\d+)\.(\d+)\]", err)
rec = (int(en.group(1)) + int(en.group(2))/1e6) - (int(st.group(1)) + int(st.group(2))/1e6)
print(f"restart: {items2} items back, spawn->accepting {t:.2f}s, recovery (start..end stamps) {rec:.3f}s; values ok: {d.count(b'VALUE')==2}")
