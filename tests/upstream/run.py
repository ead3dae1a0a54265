#!/usr/bin/env python3
"""memcached's own test suite (the t/*.t files of 1.6.18), unmodified,
against our binary.

The suite comes from Debian's source package (tests/upstream/fetch.sh,
cached under target/upstream/). What the suite expects, and how it is met:

- t/lib/MemcachedTest.pm starts `./memcached-debug` from the working
  directory through `./timedrun` (which bounds each server to 600 s): each
  run gets a scratch directory with a fresh copy of t/, timedrun built from
  the source's timedrun.c, and memcached-debug pointing at the binary.
- It adds `-o relaxed_privileges` (only memcached's debug builds know it;
  ours accepts it as a no-op) and, as root, `-u root`. Debian's release
  build refuses the key, so with --oracle memcached-debug is a wrapper that
  drops it before starting /usr/bin/memcached.
- It picks features by grepping `-h` (extstore, TLS, SASL, proxy).
- Several files bind 11211 or 0.0.0.0: each file runs in a network
  namespace of its own with only loopback (`unshare -n`), so nothing on the
  machine is disturbed and files can run side by side (--jobs).

Each file has a time bound (--file-timeout) and the whole run one
(--timeout). The exceptions are tests/upstream/known-failures.txt: one line
per file that does not pass yet, with what it expects (`fail` or `skip`),
the issue that will fix it and why. The run fails if a file not listed
does not pass, or a file listed `skip` fails; a listed file that passes is
reported (so the list can be shortened) but does not fail the run.

The last line is `N passed, M failed, K skipped`: passed are the files that
passed, failed those that fail the verdict, skipped the listed files that
did not pass (as the list expects).

    tests/upstream/run.py                    # every file, our debug binary
    tests/upstream/run.py lru.t stats.t      # some files
    tests/upstream/run.py --oracle           # Debian's /usr/bin/memcached
    tests/upstream/run.py --ssl              # over TLS (SSL_TEST=1)

With --ssl the suite runs as memcached's `make test_tls` runs it:
SSL_TEST=1, so MemcachedTest.pm starts every server with -Z and the
certificates in t/ and connects with IO::Socket::SSL (Perl's
libio-socket-ssl-perl); the exceptions are known-failures-ssl.txt.
"""

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
HERE = os.path.join(ROOT, "tests", "upstream")
WORK = os.path.join(ROOT, "target", "upstream")
ORACLE = "/usr/bin/memcached"

# The oracle is a release build: it refuses the debug build's key.
ORACLE_WRAPPER = """#!/bin/sh
# Debian's memcached is a release build: it refuses -o relaxed_privileges,
# which t/lib/MemcachedTest.pm adds for the debug build. Drop that pair.
n=$#
while [ "$n" -gt 0 ]; do
    a=$1; shift; n=$((n - 1))
    if [ "$a" = -o ] && [ "$n" -gt 0 ] && [ "$1" = relaxed_privileges ]; then
        shift; n=$((n - 1)); continue
    fi
    set -- "$@" "$a"
done
exec %s "$@"
"""

# Variables that would change what the suite does (a daemon to test
# instead, TLS, valgrind): never inherited.
SCRUB = ("T_MEMD_USE_DAEMON", "SSL_TEST", "VALGRIND_TEST", "VALGRIND_ARGS",
         "VALGRIND_EXTRA_ARGS", "MEMCACHED_PORT_FILENAME")


def fetch():
    out = subprocess.run([os.path.join(HERE, "fetch.sh")], cwd=ROOT,
                         stdout=subprocess.PIPE, check=True, text=True).stdout
    return os.path.join(ROOT, out.strip().splitlines()[-1])


def build_timedrun(src):
    exe = os.path.join(WORK, "timedrun")
    c = os.path.join(src, "timedrun.c")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(c):
        subprocess.run(["gcc", "-O2", "-o", exe, c], check=True)
    return exe


def scratch(src, label, binary, oracle):
    """A working directory as the suite expects its build directory."""
    d = os.path.join(WORK, "run", label)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "logs"))
    shutil.copytree(os.path.join(src, "t"), os.path.join(d, "t"), symlinks=True)
    # t/line-lengths.t reads doc/protocol.txt.
    shutil.copytree(os.path.join(src, "doc"), os.path.join(d, "doc"), symlinks=True)
    os.symlink(build_timedrun(src), os.path.join(d, "timedrun"))
    exe = os.path.join(d, "memcached-debug")
    if oracle:
        with open(exe, "w") as f:
            f.write(ORACLE_WRAPPER % binary)
        os.chmod(exe, 0o755)
    else:
        os.symlink(binary, exe)
    return d


def read_list(path):
    """known-failures.txt: `file expect #issue reason...`, # comments."""
    listed = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 3)
            if len(parts) < 4 or parts[1] not in ("fail", "skip", "omit") \
                    or not (parts[2].startswith("#") or parts[2] == "-"):
                sys.exit(f"{path}:{n}: want `file fail|skip|omit #issue|- reason`")
            listed[parts[0]] = (parts[1], parts[2], parts[3])
    return listed


def kill_namespace(ns):
    """SIGKILL every process still in the file's network namespace: only
    what that file started lives there."""
    if not ns:
        return
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{pid}/ns/net") == ns:
                os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass


def namespace_parents(ns):
    """pid -> parent pid of every live (not zombie) process in the network
    namespace `ns`."""
    parents = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{pid}/ns/net") != ns:
                continue
            with open(f"/proc/{pid}/stat") as f:
                # "pid (comm) state ppid ...": comm may hold spaces.
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
            # An exited test stays a zombie child of prove until prove has
            # read its output to the end: it no longer runs.
            if state != "Z":
                parents[int(pid)] = int(ppid)
        except (OSError, IndexError, ValueError):
            pass
    return parents


def kill_orphans(ns, prove_pid):
    """Once the test script is gone (prove, the namespace's first process,
    has no child left), what remains in the namespace is a server whose
    timedrun died before it could kill it: MemcachedTest's DESTROY sends
    SIGINT to timedrun, and a timedrun that has not yet installed its
    handlers (a server that wrote its port file within microseconds of
    being forked, on a loaded machine) dies of it, orphaning the server.
    The orphan holds the test's stdout open, so prove waits for an EOF
    that never comes; timedrun would have killed it, so the harness does."""
    parents = namespace_parents(ns)
    if any(ppid == prove_pid for ppid in parents.values()):
        return
    for pid in parents:
        if pid != prove_pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def wait_for_file(proc, bound, held):
    """Waits up to `bound` seconds for the file's prove to end, killing
    orphaned servers meanwhile; False if the bound was reached."""
    deadline = time.monotonic() + bound
    while True:
        try:
            proc.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            return True
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                return False
            if held is not None:
                kill_orphans(held[0], proc.pid)


def hold_namespace(proc, nsfile):
    """Opens the file's network namespace while its shell is in it, so the
    namespace (and its id) lives until the file is done and its leftovers
    are killed: a namespace freed when its last process exits may have its
    id given to the next file's, whose processes must not be killed in its
    place. None if the shell ended first (nothing of it can be left)."""
    give_up = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < give_up:
        try:
            with open(nsfile) as f:
                ns = f.read().strip()
        except OSError:
            ns = ""
        if ns:
            try:
                fd = os.open(f"/proc/{proc.pid}/ns/net", os.O_RDONLY)
            except OSError:
                return None
            if os.readlink(f"/proc/{proc.pid}/ns/net") == ns:
                return ns, fd
            os.close(fd)
            return None
        time.sleep(0.005)
    return None


class Runner:
    def __init__(self, workdir, file_timeout, deadline, ssl):
        self.ssl = ssl
        self.workdir = workdir
        self.file_timeout = file_timeout
        self.deadline = deadline
        self.lock = threading.Lock()
        self.procs = set()
        self.stopping = False

    def run(self, name):
        log = os.path.join(self.workdir, "logs", name + ".log")
        nsfile = os.path.join(self.workdir, "logs", name + ".netns")
        env = {k: v for k, v in os.environ.items() if k not in SCRUB}
        if self.ssl:
            env["SSL_TEST"] = "1"
        script = ('ip link set lo up && readlink /proc/self/ns/net > "$1" '
                  '&& exec prove -v "t/$2"')
        started = time.monotonic()
        bound = min(self.file_timeout, self.deadline - started)
        if bound <= 0 or self.stopping:
            return dict(name=name, state="not run", seconds=0.0, ok=0,
                        not_ok=0, planned=None, skip_all=None,
                        note="the harness's time bound was reached first")
        with open(log, "w") as out:
            proc = subprocess.Popen(
                ["unshare", "-n", "sh", "-c", script, "sh", nsfile, name],
                cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            with self.lock:
                self.procs.add(proc)
            held = hold_namespace(proc, nsfile)
            timed_out = not wait_for_file(proc, bound, held)
            if timed_out:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            with self.lock:
                self.procs.discard(proc)
        seconds = time.monotonic() - started
        if held is not None:
            ns, fd = held
            kill_namespace(ns)
            os.close(fd)
        with open(log, errors="replace") as f:
            result = parse(f.read())
        result.update(name=name, seconds=seconds)
        if timed_out:
            result.update(state="fail",
                          note=f"killed after {bound:.0f} s (time bound)")
        elif proc.returncode == 0:
            result["state"] = "skip" if result["skip_all"] is not None else "pass"
        else:
            result["state"] = "fail"
        return result

    def stop(self):
        self.stopping = True
        with self.lock:
            for proc in self.procs:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass


def parse(tap):
    ok = not_ok = 0
    planned = skip_all = None
    for line in tap.splitlines():
        if re.match(r"ok \d+", line):
            ok += 1
        elif re.match(r"not ok \d+", line):
            not_ok += 1
        elif re.match(r"t/\S+ \.+ skipped: ", line):
            skip_all = line.split("skipped: ", 1)[1].strip()
            planned = 0
        else:
            m = re.match(r"1\.\.(\d+)(.*)", line)
            if m:
                planned = int(m.group(1))
                s = re.match(r"\s*#\s*skip\w*\s*(.*)", m.group(2), re.I)
                if planned == 0 and s:
                    skip_all = s.group(1).strip() or "skipped"
    return dict(ok=ok, not_ok=not_ok, planned=planned, skip_all=skip_all,
                note="")


def durations_path(label):
    return os.path.join(WORK, f"durations-{label}.json")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", help="t/ files (default: all)")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "memcached"),
                    help="the server under test (default: target/debug/memcached)")
    ap.add_argument("--oracle", action="store_true",
                    help="run Debian's /usr/bin/memcached instead; no verdict")
    ap.add_argument("--ssl", action="store_true",
                    help="run every file over TLS (SSL_TEST=1)")
    ap.add_argument("--list", default=None,
                    help="the exceptions list (known-failures.txt; "
                         "known-failures-ssl.txt with --ssl)")
    ap.add_argument("--jobs", type=int, default=2, help="files at a time (2)")
    ap.add_argument("--file-timeout", type=float, default=300,
                    help="seconds for one file (300)")
    ap.add_argument("--timeout", type=float, default=900,
                    help="seconds for the whole run (900)")
    args = ap.parse_args()
    if args.list is None:
        name = "known-failures-ssl.txt" if args.ssl else "known-failures.txt"
        args.list = os.path.join(HERE, name)

    for tool in ("unshare", "ip", "prove", "gcc"):
        if not shutil.which(tool):
            sys.exit(f"run.py: {tool} is missing")
    src = fetch()
    binary = ORACLE if args.oracle else os.path.realpath(args.bin)
    if not os.access(binary, os.X_OK):
        sys.exit(f"run.py: {binary} is not an executable")
    label = ("oracle" if args.oracle else "ours") + ("-ssl" if args.ssl else "")
    workdir = scratch(src, label, binary, args.oracle)

    every = sorted(f for f in os.listdir(os.path.join(src, "t")) if f.endswith(".t"))
    names = [os.path.basename(f) for f in args.files] or every
    for n in names:
        if n not in every:
            sys.exit(f"run.py: no t/{n} in memcached's suite")
    listed = {} if args.oracle else read_list(args.list)
    for n in listed:
        if n not in every:
            sys.exit(f"run.py: {args.list} names {n}, which the suite does not have")
    # `omit`: not run at all (unless named), e.g. a file that only ends at
    # the time bound for Debian's memcached too.
    omitted = [n for n in names if listed.get(n, ("",))[0] == "omit"]
    if not args.files:
        names = [n for n in names if n not in omitted]

    # Longest first (as last measured), so the slow files do not end last.
    try:
        with open(durations_path(label)) as f:
            before = json.load(f)
    except (OSError, ValueError):
        before = {}
    names.sort(key=lambda n: -before.get(n, 0))

    print(f"memcached's t/ ({os.path.relpath(src, ROOT)}) against {binary}"
          f"{' over TLS' if args.ssl else ''}: "
          f"{len(names)} files, {args.jobs} at a time", flush=True)
    start = time.monotonic()
    runner = Runner(workdir, args.file_timeout, start + args.timeout, args.ssl)
    results = {}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs)
    try:
        futures = {pool.submit(runner.run, n): n for n in names}
        for fut in concurrent.futures.as_completed(futures):
            r = fut.result()
            results[r["name"]] = r
            print(f"  {r['state']:7} {r['name']:28} {r['seconds']:6.1f} s  "
                  f"{subtests(r)}", flush=True)
    except KeyboardInterrupt:
        runner.stop()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    wall = time.monotonic() - start

    before.update({n: r["seconds"] for n, r in results.items() if r["state"] != "not run"})
    with open(durations_path(label), "w") as f:
        json.dump(before, f, indent=1, sort_keys=True)

    return report(names, results, listed, args, workdir, wall)


def subtests(r):
    planned = "?" if r["planned"] is None else r["planned"]
    if r["skip_all"] is not None:
        text = f"skipped whole: {r['skip_all']}"
    else:
        text = f"{r['ok']}/{planned} subtests ok"
        if r["not_ok"]:
            text += f", {r['not_ok']} not ok"
    return text + (f" ({r['note']})" if r["note"] else "")


def report(names, results, listed, args, workdir, wall):
    by_state = {}
    for n in names:
        by_state.setdefault(results[n]["state"], []).append(n)
    ok = sum(r["ok"] for r in results.values())
    not_ok = sum(r["not_ok"] for r in results.values())
    print()
    print(f"files: {len(by_state.get('pass', []))} passed, "
          f"{len(by_state.get('fail', []))} failed, "
          f"{len(by_state.get('skip', []))} skipped whole, "
          f"{len(by_state.get('not run', []))} not run, of {len(names)}")
    print(f"subtests: {ok} ok, {not_ok} not ok")
    print(f"wall time: {wall:.0f} s; logs in {os.path.relpath(workdir, ROOT)}/logs/")

    if args.oracle:
        print(f"{len(by_state.get('pass', []))} passed, "
              f"{len(by_state.get('fail', [])) + len(by_state.get('not run', []))} failed, "
              f"{len(by_state.get('skip', []))} skipped")
        return 0

    passed, bad, known, stale = [], [], [], []
    for n in names:
        state = results[n]["state"]
        expect = listed.get(n, (None,))[0]
        if state == "pass":
            passed.append(n)
            if expect:
                stale.append(n)
        elif expect in ("fail", "omit") or (expect == "skip" and state == "skip"):
            known.append(n)
        else:
            bad.append(n)
    if known:
        fails = sum(results[n]["state"] == "fail" for n in known)
        print(f"\nlisted in {os.path.relpath(args.list, ROOT)}, not passing yet as "
              f"expected: {len(known)} ({fails} fail, {len(known) - fails} skip whole)")
        order = list(listed)
        for n in sorted(known, key=order.index):
            expect, issue, reason = listed[n]
            print(f"  {n:26} {results[n]['state']:4} {issue:3} {reason}")
    if stale:
        print(f"\nlisted but now passing (take them off {os.path.relpath(args.list, ROOT)}):")
        for n in stale:
            print(f"  {n}")
    if bad:
        print("\nFAILED (not in the list, or not as the list expects):")
        for n in bad:
            r = results[n]
            print(f"  {n:28} {r['state']:7} {subtests(r)}")
            log = os.path.join(workdir, "logs", n + ".log")
            if os.path.exists(log):
                with open(log, errors="replace") as f:
                    lines = [l for l in f.read().splitlines()
                             if l.startswith("not ok") or l.startswith("#")]
                for l in lines[:15]:
                    print(f"      {l[:160]}")
    print(f"{len(passed)} passed, {len(bad)} failed, {len(known)} skipped")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
