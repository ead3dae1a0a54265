"""What a `watch fetchers` reader costs: the time for 1,000 pipelined
100-key gets (100,000 lookups, all hits), median of 3 runs, without a
watcher and then with one that reads everything; prints the logger stats.

    python3 bench/watch.py BINARY PORT

Not part of `make bench`: a quick, noisy comparison on a shared machine.
"""
import socket, subprocess, time, sys, threading, statistics
binp=sys.argv[1]; port=int(sys.argv[2])
p = subprocess.Popen([binp, "-u", "root", "-l", "127.0.0.1", "-U", "0", "-p", str(port), "-t", "1", "-m", "64"], stderr=subprocess.DEVNULL)
time.sleep(0.4)
c = socket.create_connection(("127.0.0.1", port)); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
v = b"x" * 100
c.sendall(b"".join(b"set k%d 0 0 100 noreply\r\n" % i + v + b"\r\n" for i in range(100)))
batch = b"get " + b" ".join(b"k%d" % i for i in range(100)) + b"\r\n"
def rounds(n):
    t = time.perf_counter()
    for _ in range(n):
        c.sendall(batch)
        buf = b""
        while not buf.endswith(b"END\r\n"):
            buf += c.recv(1 << 20)
    return time.perf_counter() - t
rounds(200)
def measure():
    return statistics.median(rounds(1000) for _ in range(3))
base = measure()
w = socket.create_connection(("127.0.0.1", port)); w.sendall(b"watch fetchers\r\n")
got = [0]
def reader():
    while True:
        d = w.recv(1 << 20)
        if not d: return
        got[0] += d.count(b"\n")
threading.Thread(target=reader, daemon=True).start()
time.sleep(0.2)
watched = measure()
c.sendall(b"stats\r\n"); time.sleep(0.3); st = c.recv(65536)
print(f"{binp}: 100,000 key lookups per run: no watcher {base:.3f}s, fetchers watcher {watched:.3f}s "
      f"({watched/base:.2f}x); watcher received {got[0]} lines; " +
      " ".join(l.decode() for l in st.split(b"\r\n") if b"log_" in l))
p.kill()
