"""extstore, ours against Debian's memcached -t 1 with the same options on the
same file system: 30,000 values of 4-15 KB (240 MB) into -m 64 over a 1 GB
ext file (ext_item_age=0), then how many are readable, RSS, evictions, and
8 clients' random gets for 8 s (most values on flash).

    python3 bench/extstore.py target/release/memcached [only]

A rough figure on a shared machine; nothing asserts on it."""
import socket, subprocess, time, sys, random, threading, os
def run(binary, label, extra):
    path = "/tmp/extstore-bench-%s.ext" % label
    probe = socket.socket(); probe.bind(("127.0.0.1", 0)); port = probe.getsockname()[1]; probe.close()
    p = subprocess.Popen([binary, "-u", "root", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64",
        "-o", "ext_path=%s:1G,ext_item_age=0" % path] + extra, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    s = socket.create_connection(("127.0.0.1", port))
    def req(d, end):
        s.sendall(d); b = b""
        while not b.endswith(end): b += s.recv(1 << 20)
        return b
    N = 30000
    rnd = random.Random(1)
    for base in range(0, N, 500):
        s.sendall(b"".join(b"set k%d 0 0 %d noreply\r\n%s\r\n" % (i, 4096 + (i % 12) * 1024, b"v" * (4096 + (i % 12) * 1024)) for i in range(base, base + 500)))
    req(b"version\r\n", b"\r\n")
    def st():
        r = req(b"stats\r\n", b"END\r\n").decode()
        return dict(l.split(" ")[1:3] for l in r.split("\r\n") if l.startswith("STAT"))
    last = -1
    while True:
        w = int(st()["extstore_objects_written"])
        if w == last: break
        last = w; time.sleep(1.0)
    x = st()
    readable = 0
    for base in range(0, N, 100):
        r = req(b"get " + b" ".join(b"k%d" % i for i in range(base, base + 100)) + b"\r\n", b"END\r\n")
        readable += r.count(b"VALUE ")
    rss = int([l for l in open("/proc/%d/status" % p.pid) if l.startswith("VmRSS")][0].split()[1])
    count = [0]
    stop = time.time() + 8
    def worker(seed):
        c = socket.create_connection(("127.0.0.1", port)); r = random.Random(seed)
        n = 0
        while time.time() < stop:
            c.sendall(b"get k%d\r\n" % r.randrange(N)); b = b""
            while not b.endswith(b"END\r\n"): b += c.recv(1 << 16)
            n += 1
        count[0] += n
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    [t.start() for t in ts]; [t.join() for t in ts]
    print(label, "evictions", x["evictions"], "written", x["extstore_objects_written"], "readable", readable, "of", N, "rss_kb", rss,
          "gets/s", count[0] // 8, "get_extstore", st().get("get_extstore"))
    p.kill(); p.wait(); os.unlink(path)
run(sys.argv[1], "ours", [])
if len(sys.argv) < 3: run("/usr/bin/memcached", "memcached_t1", ["-t", "1"])
