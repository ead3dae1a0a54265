#!/usr/bin/env python3
"""Soak: a replicated pair with `aof_sync=always` under mixed load, kill -9
of a random node every ~20 s, and a disk that fills and frees every few
minutes, checked against a model of acknowledged writes.

Run by hand, as root (it mounts a small tmpfs for the AOF files):

    cargo build --release
    sudo python3 bench/soak.py --minutes 30

Shape:
- Two nodes, `-x 127.0.0.1:<peer's -X> -X <own port>`, each with
  `-o aof=<tmpfs>/<node>.aof,aof_sync=always,aof_rewrite_min=4m` (small, so
  AOF rewrites happen too). Loopback, free ports; everything is stopped by
  pid at the end and the tmpfs unmounted.
- Workers (threads) each own a disjoint set of keys and do one request at a
  time: set (a value unique to that write), delete, and get. A key's writes
  always go to its home node (even keys node a, odd keys node b); when the
  home node is down the write is skipped. Writes to one key on two nodes
  one after the other are, under the pair's rule, ordered by CAS (a Lamport
  clock), not by when the client saw them acknowledged, so a model of
  "the last acknowledged value" holds only per node of origin.
- The model: STORED / DELETED makes the key's value the one
  written (or absent) and certain; a `SERVER_ERROR` (refused: the disk is
  full), no answer, or a cut connection adds the value to the key's
  possible values (it may or may not have been applied).
- Reads: a get goes to a random node; if that node does not answer, the
  other is asked. A read neither node answers is counted (must be 0).
- Kills: every ~`--kill-every` s a random node is kill -9'd and restarted
  at once with the same command line (it recovers from its AOF and rejoins
  the pair); about half-way to the next kill, a checkpoint pauses the
  workers, waits for both nodes to report `repl_connected 1` and
  `repl_lag_records 0`, and reads every key of the model on both nodes.
- Disk: every ~`--fill-every` s the tmpfs is filled with a filler file
  (writes are refused: `SERVER_ERROR aof write failed; writes refused`),
  held `--fill-hold` s, then the filler is deleted.
- At the end: a checkpoint, then both nodes are killed -9 and restarted
  and a last checkpoint is made.

A key whose value on a node is not one of its possible values is *lost*
(possible values only shrink on an acknowledged write: a refused write kept
in memory, README "When the file fails", may vanish at a restart),
unless it is a documented limitation: a delete acknowledged by a node that
was killed before the delete reached its peer can come back (tombstones
live in memory, README "Replication"); those are counted apart, with the
delete's age at the kill. Two nodes in sync holding different values are a
*divergence*. Exit status 1 when anything is lost or diverged, a server did
not come back, or a read went unanswered.
"""

import argparse
import errno
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MISSING = None
# Counters summed over every incarnation of both nodes (each as last seen at
# a checkpoint: a lower bound).
# A delete acknowledged this long before its node's kill -9 may not have
# reached the peer (on loopback the link takes well under a millisecond).
UNREPLICATED_WINDOW = 0.1
COUNTERS = ("aof_rewrites", "aof_rewrite_failures", "aof_write_errors", "repl_resyncs")


def short(value):
    """A value as its unique head (`key=seq:`), without the padding."""
    return None if value is None else value.split(b"x", 1)[0].decode(errors="replace")


def show(history):
    return [(f"{t:.3f}", op, short(v), "ab"[n], out) for t, op, v, n, out in history]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Node:
    """One server; restarted with exactly the same command line."""

    def __init__(self, name, binary, port, repl_port, peer_repl_port, aof, logdir):
        self.name = name
        self.port = port
        self.cmd = [
            binary, "-u", "root", "-l", "127.0.0.1", "-p", str(port), "-U", "0",
            "-m", "64", "-x", f"127.0.0.1:{peer_repl_port}", "-X", str(repl_port),
            "-o", f"aof={aof},aof_sync=always,aof_rewrite_min=4m",
        ]
        self.logpath = os.path.join(logdir, f"{name}.log")
        self.proc = None
        self.sample = {}
        self.starts = 0
        self.last_kill = None

    def start(self):
        self.starts += 1
        with open(self.logpath, "ab") as f:
            f.write(f"=== start {self.starts} at {time.time():.3f}\n".encode())
            f.flush()
            self.proc = subprocess.Popen(self.cmd, stdout=f, stderr=f)

    def wait_listening(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return True
            except OSError:
                time.sleep(0.02)
        return False

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.last_kill = time.time()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


def connect(node, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", node.port), 1.0)
    s.settimeout(timeout)
    return s


def read_until(s, buf, done):
    while not done(buf):
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed by server")
        buf += chunk
    return buf


def parse_values(reply):
    """{key: value} from a get reply ending in END."""
    out = {}
    i = 0
    while True:
        j = reply.index(b"\r\n", i)
        line = reply[i:j]
        if line == b"END":
            return out
        parts = line.split()
        if parts[0] != b"VALUE":
            raise ValueError(f"unexpected line {line!r}")
        n = int(parts[3])
        out[parts[1].decode()] = reply[j + 2:j + 2 + n]
        i = j + 2 + n + 2


def get_many(node, keys):
    """{key: value} for keys on node (absent keys left out); raises on failure."""
    out = {}
    with connect(node, 10.0) as s:
        for i in range(0, len(keys), 100):
            batch = keys[i:i + 100]
            s.sendall(("get " + " ".join(batch) + "\r\n").encode())
            reply = read_until(s, b"", lambda b: b.endswith(b"END\r\n")
                               and (b.count(b"\r\n") >= 1))
            # A value never contains "END\r\n" (ours are key=seq plus 'x's).
            out.update(parse_values(reply))
    return out


def stats(node):
    with connect(node, 5.0) as s:
        s.sendall(b"stats\r\n")
        reply = read_until(s, b"", lambda b: b.endswith(b"END\r\n"))
    d = {}
    for line in reply.decode().split("\r\n"):
        p = line.split(" ", 2)
        if len(p) == 3 and p[0] == "STAT":
            d[p[1]] = p[2]
    return d


class Key:
    __slots__ = ("value", "possible", "history", "last_ack")

    def __init__(self):
        self.value = MISSING
        self.possible = {MISSING}
        self.history = []
        self.last_ack = None

    def note(self, what):
        self.history.append(what)
        del self.history[:-24]


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = dict.fromkeys([
            "set_acked", "delete_acked", "delete_not_found", "not_found_stale",
            "refused", "unanswered", "skipped_home_down",
            "reads", "reads_failed_over", "reads_unanswered"], 0)

    def add(self, name, n=1):
        with self.lock:
            self.c[name] += n


class Pause:
    """The controller stops every worker between requests for a checkpoint."""

    def __init__(self, workers):
        self.cond = threading.Condition()
        self.want = False
        self.paused = 0
        self.workers = workers
        self.stop = False

    def point(self):
        """Waits while a checkpoint holds the workers; true once they must stop."""
        with self.cond:
            if self.want:
                self.paused += 1
                self.cond.notify_all()
                while self.want and not self.stop:
                    self.cond.wait()
                self.paused -= 1
            return self.stop

    def hold(self):
        with self.cond:
            self.want = True
            while self.paused < self.workers:
                self.cond.wait(0.5)

    def release(self):
        with self.cond:
            self.want = False
            self.cond.notify_all()


class Worker(threading.Thread):
    def __init__(self, idx, nodes, keys, model, counts, pause, rng_seed, value_size,
                 any_node):
        super().__init__(daemon=True)
        self.idx = idx
        self.nodes = nodes
        self.keys = keys
        self.model = model
        self.counts = counts
        self.pause = pause
        self.rng = random.Random(rng_seed)
        self.value_size = value_size
        self.any_node = any_node
        self.conns = [None, None]
        self.seq = 0

    def conn(self, n):
        if self.conns[n] is None:
            self.conns[n] = connect(self.nodes[n])
        return self.conns[n]

    def drop(self, n):
        if self.conns[n] is not None:
            try:
                self.conns[n].close()
            except OSError:
                pass
            self.conns[n] = None

    def run(self):
        while not self.pause.point():
            r = self.rng.random()
            key = self.rng.choice(self.keys)
            if r < 0.55:
                self.write(key, "set")
            elif r < 0.70:
                self.write(key, "delete")
            else:
                self.read(key)

    def write(self, key, op):
        home = int(key.rsplit(":", 1)[1]) % 2
        if self.any_node:
            home = self.rng.randrange(2)
        k = self.model[key]
        if op == "set":
            self.seq += 1
            head = f"{key}={self.seq}:".encode()
            value = head + b"x" * max(0, self.value_size - len(head))
            req = f"set {key} 0 0 {len(value)}\r\n".encode() + value + b"\r\n"
        else:
            value = MISSING
            req = f"delete {key}\r\n".encode()
        try:
            s = self.conn(home)
        except OSError:
            self.counts.add("skipped_home_down")
            time.sleep(0.01)
            return
        t = time.time()
        try:
            s.sendall(req)
            line = read_until(s, b"", lambda b: b.endswith(b"\r\n"))
        except OSError as e:
            self.drop(home)
            k.possible.add(value)
            k.note((t, op, value, home, f"unanswered: {e}"))
            self.counts.add("unanswered")
            return
        if line in (b"STORED\r\n", b"DELETED\r\n"):
            k.value = value
            k.possible = {value}
            k.note((t, op, value, home, line.strip().decode()))
            k.last_ack = k.history[-1]
            self.counts.add("set_acked" if op == "set" else "delete_acked")
        elif line == b"NOT_FOUND\r\n":
            # Not a write: nothing changed. The key's possible values stay;
            # a node answering that it lacks a key the model says it must
            # hold is counted (the checkpoint judges the key itself).
            k.note((t, op, value, home, "NOT_FOUND"))
            self.counts.add("delete_not_found")
            if MISSING not in k.possible:
                self.counts.add("not_found_stale")
                log(f"stale NOT_FOUND: delete {key} on {self.nodes[home].name}, possible "
                    f"{sorted(map(repr, map(short, k.possible)))}")
        elif line.startswith(b"SERVER_ERROR"):
            self.drop(home)
            k.possible.add(value)
            k.note((t, op, value, home, line.strip().decode()))
            self.counts.add("refused")
        else:
            raise AssertionError(f"unexpected reply to {op} {key}: {line!r}")

    def read(self, key):
        first = self.rng.randrange(2)
        for n in (first, 1 - first):
            try:
                s = self.conn(n)
                s.sendall(f"get {key}\r\n".encode())
                read_until(s, b"", lambda b: b.endswith(b"END\r\n"))
                self.counts.add("reads")
                if n != first:
                    self.counts.add("reads_failed_over")
                return
            except OSError:
                self.drop(n)
        self.counts.add("reads_unanswered")


class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.dir = tempfile.mkdtemp(prefix="soak-")
        self.mnt = os.path.join(self.dir, "fs")
        os.mkdir(self.mnt)
        self.findings = []
        self.checkpoints = 0
        self.kills = 0
        self.fills = 0
        self.lost = 0
        self.diverged = 0
        self.undone_deletes = 0
        self.undone_ages = []
        self.sync_waits = []
        self.filled = False
        self.totals = {}

    def mount(self):
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.args.tmpfs}",
                        "tmpfs", self.mnt], check=True)

    def fill(self):
        path = os.path.join(self.mnt, "filler")
        with open(path, "wb", buffering=0) as f:
            for size in (1 << 20, 65536, 512):
                chunk = b"\0" * size
                try:
                    while True:
                        f.write(chunk)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
        self.filled = True
        self.fills += 1

    def free(self):
        os.unlink(os.path.join(self.mnt, "filler"))
        self.filled = False

    def finding(self, msg):
        log("FINDING: " + msg)
        self.findings.append(msg)

    def wait_sync(self, timeout):
        t0 = time.monotonic()
        last = None
        while time.monotonic() - t0 < timeout:
            try:
                sts = [stats(n) for n in self.nodes]
                last = [(s.get("repl_role"), s.get("repl_connected"),
                         s.get("repl_lag_records")) for s in sts]
                if all(s.get("repl_connected") == "1" and s.get("repl_lag_records") == "0"
                       for s in sts):
                    self.sync_waits.append(time.monotonic() - t0)
                    return True
            except OSError as e:
                last = repr(e)
            time.sleep(0.05)
        self.finding(f"pair not in sync after {timeout} s: {last}")
        return False

    def checkpoint(self, why, keep_paused=False):
        self.pause.hold()
        try:
            if not self.wait_sync(self.args.sync_timeout):
                return
            keys = sorted(self.model)
            seen = [get_many(n, keys) for n in self.nodes]
            bad = 0
            for key in keys:
                k = self.model[key]
                got = [s.get(key, MISSING) for s in seen]
                for n, g in enumerate(got):
                    if g not in k.possible:
                        bad += 1
                        self.judge(key, k, n, g)
                if got[0] != got[1] and all(g in k.possible for g in got):
                    self.diverged += 1
                    self.finding(f"{key}: nodes in sync hold different values {list(map(short, got))}; "
                                 f"history {show(k.history)}")
            self.checkpoints += 1
            uncertain = sum(1 for k in self.model.values() if len(k.possible) > 1)
            log(f"checkpoint {self.checkpoints} ({why}): {len(keys)} keys on both nodes, "
                f"{bad} bad, sync wait {self.sync_waits[-1]:.2f} s, "
                f"{uncertain} left uncertain; {self.counts.c}")
            self.sample_stats()
        finally:
            if not keep_paused:
                self.pause.release()

    def sample_stats(self):
        """Keeps each incarnation's latest counters (a kill -9 takes them)."""
        for n in self.nodes:
            try:
                n.sample = stats(n)
            except OSError:
                pass

    def bank(self, n):
        for name in COUNTERS:
            self.totals[name] = self.totals.get(name, 0) + int(n.sample.get(name, 0))
        n.sample = {}

    def judge(self, key, k, n, got):
        node = self.nodes[n]
        last = k.last_ack
        # A delete acknowledged by node X, X killed before the delete reached
        # its peer: the peer's older item comes back at the rejoin (README:
        # tombstones do not survive a restart).
        if last and last[1] == "delete" and got not in k.possible:
            origin = self.nodes[last[3]]
            age = None if origin.last_kill is None else origin.last_kill - last[0]
            if age is not None and 0 <= age < UNREPLICATED_WINDOW:
                self.undone_deletes += 1
                self.undone_ages.append(age)
                log(f"delete undone (documented: it had not reached the peer): "
                    f"{key} on {node.name}: got {short(got)!r}, deleted on {origin.name} "
                    f"{age:.3f} s before its kill; history "
                    f"{show(k.history)}")
                return
        self.lost += 1
        self.finding(f"LOST {key} on {node.name}: got {short(got)!r}, possible "
                     f"{sorted(map(repr, map(short, k.possible)))}; history (time, op, value, "
                     f"node, outcome) {show(k.history)}")

    def run(self):
        a = self.args
        log(f"seed {a.seed}; dir {self.dir}")
        self.mount()
        pa, pb, ra, rb = free_ports(4)
        self.nodes = [
            Node("a", a.binary, pa, ra, rb, os.path.join(self.mnt, "a.aof"), self.dir),
            Node("b", a.binary, pb, rb, ra, os.path.join(self.mnt, "b.aof"), self.dir),
        ]
        try:
            self.main()
        finally:
            for n in self.nodes:
                if n.alive():
                    n.proc.send_signal(signal.SIGKILL)
                    n.proc.wait()
            subprocess.run(["umount", "-l", self.mnt], check=False)
        return self.report()

    def start_node(self, n):
        n.start()
        if not n.wait_listening():
            self.finding(f"node {n.name} did not come back (exit {n.proc.poll()}); "
                         f"see {n.logpath}")
            raise SystemExit(2)

    def main(self):
        a = self.args
        for n in self.nodes:
            self.start_node(n)
        self.wait_sync(a.sync_timeout)
        self.model = {}
        per = a.keys // a.workers
        self.counts = Counts()
        self.pause = Pause(a.workers)
        workers = []
        for w in range(a.workers):
            keys = [f"soak:{w}:{i}" for i in range(w * per, (w + 1) * per)]
            for key in keys:
                self.model[key] = Key()
            workers.append(Worker(w, self.nodes, keys, self.model, self.counts,
                                  self.pause, self.rng.random(), a.value_size,
                                  a.any_node))
        for w in workers:
            w.start()
        t0 = time.monotonic()
        end = t0 + a.minutes * 60
        next_kill = t0 + a.kill_every * self.rng.uniform(0.75, 1.25)
        next_fill = t0 + a.fill_every * self.rng.uniform(0.4, 0.6)
        free_at = None
        check_at = None
        while time.monotonic() < end:
            now = time.monotonic()
            for w in workers:
                if not w.is_alive():
                    self.finding(f"worker {w.idx} died")
                    raise SystemExit(2)
            if now >= next_kill:
                n = self.rng.choice(self.nodes)
                n.kill9()
                self.bank(n)
                self.kills += 1
                self.start_node(n)
                log(f"kill {self.kills}: node {n.name} kill -9, restarted, listening "
                    f"after {time.time() - n.last_kill:.2f} s"
                    f"{' (disk full)' if self.filled else ''}")
                next_kill = now + a.kill_every * self.rng.uniform(0.75, 1.25)
                check_at = now + a.kill_every * 0.5
            elif free_at is None and now >= next_fill:
                self.fill()
                free_at = now + a.fill_hold
                log(f"disk full {self.fills}: filler written; holding {a.fill_hold} s")
            elif free_at is not None and now >= free_at:
                self.free()
                free_at = None
                next_fill = now + a.fill_every * self.rng.uniform(0.75, 1.25)
                log("disk freed")
            elif check_at is not None and now >= check_at and free_at is None:
                check_at = None
                self.checkpoint("after a restart")
            else:
                time.sleep(0.05)
        if free_at is not None:
            self.free()
        if a.self_test:
            # A write behind the model's back: the checker must call it lost.
            with connect(self.nodes[0]) as s:
                s.sendall(b"set soak:0:0 0 0 6\r\nbehind\r\n")
                read_until(s, b"", lambda b: b.endswith(b"\r\n"))
        self.checkpoint("end of load", keep_paused=True)
        for n in self.nodes:
            n.kill9()
            self.bank(n)
        for n in self.nodes:
            self.start_node(n)
        log("both nodes killed -9 and restarted")
        self.checkpoint("after restarting both", keep_paused=True)
        for n in self.nodes:
            self.bank(n)
        self.pause.stop = True
        self.pause.release()
        for w in workers:
            w.join(10)

    def report(self):
        c = self.counts.c
        minutes = self.args.minutes
        log("RESULT")
        print(f"  minutes {minutes}, seed {self.args.seed}")
        print(f"  writes acknowledged {c['set_acked'] + c['delete_acked']} "
              f"(sets {c['set_acked']}, deletes {c['delete_acked']}), "
              f"refused {c['refused']}, unanswered {c['unanswered']}, "
              f"skipped (home node down) {c['skipped_home_down']}")
        print(f"  deletes answered NOT_FOUND {c['delete_not_found']}, of which for a key "
              f"the model said must be there {c['not_found_stale']}")
        print(f"  reads answered {c['reads']} ({c['reads_failed_over']} by the other node), "
              f"unanswered {c['reads_unanswered']}")
        print(f"  kills {self.kills}, disk-full phases {self.fills}, "
              f"checkpoints {self.checkpoints}, sync wait max "
              f"{max(self.sync_waits, default=0):.2f} s")
        print(f"  lost {self.lost}, diverged {self.diverged}, "
              f"deletes undone by a kill (documented) {self.undone_deletes}"
              f"{' (acked %.3f-%.3f s before the kill)' % (min(self.undone_ages), max(self.undone_ages)) if self.undone_ages else ''}")
        print("  both nodes, all incarnations (as of their last checkpoint): " + ", ".join(
            f"{k} {self.totals.get(k, 0)}" for k in COUNTERS))
        for n in self.nodes:
            with open(n.logpath, "rb") as f:
                text = f.read().decode(errors="replace")
            print(f"  node {n.name}: {n.starts} starts, log lines: "
                  f"{text.count('AOF write failed')} 'AOF write failed', "
                  f"{text.count('succeed again')} 'succeed again', "
                  f"{text.count('AOF rewrite failed')} 'AOF rewrite failed', "
                  f"{text.count('panicked')} panics")
        print(f"  logs: {self.dir}/a.log, {self.dir}/b.log")
        for f in self.findings:
            print("  finding: " + f)
        bad = self.findings or c["reads_unanswered"]
        return 1 if bad else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--kill-every", type=float, default=20, help="seconds, +-25%%")
    p.add_argument("--fill-every", type=float, default=180, help="seconds, +-25%%")
    p.add_argument("--fill-hold", type=float, default=15, help="seconds the disk stays full")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--keys", type=int, default=8000)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--tmpfs", default="64m")
    p.add_argument("--sync-timeout", type=float, default=90)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--any-node", action="store_true",
                   help="send each write to a random node instead of the key's home node "
                        "(measures what the CAS rule does to a client's real-time order)")
    p.add_argument("--self-test", action="store_true",
                   help="write one key behind the model's back at the end: must report lost")
    p.add_argument("--binary", default=os.path.join(ROOT, "target/release/memcached"))
    args = p.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1 << 32)
    if os.geteuid() != 0:
        sys.exit("soak.py mounts a tmpfs: run it as root")
    sys.exit(Soak(args).run())


if __name__ == "__main__":
    main()
