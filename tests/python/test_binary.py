"""The binary protocol with real clients: libmemcached's conformance tester
in binary mode, pylibmc in binary mode (every operation, against ours and
the oracle), pylibmc with SASL (right and wrong passwords), and the -vv
trace of binary sessions compared line by line with the oracle."""

import glob
import os
import re
import shutil
import socket
import struct
import subprocess
import sys

import pytest

from mc_helpers import normalise_trace, recv_all_until_close

# ---------------------------------------------------------------------------
# memccapable -b
# ---------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("memccapable") is None,
                    reason="memccapable not installed (apt-get install libmemcached-tools)")
@pytest.mark.parametrize("opts", [(), ("-B", "binary")])
def test_memccapable_binary(start_server, opts):
    srv = start_server("ours", *opts)
    run = subprocess.run(
        ["memccapable", "-h", "127.0.0.1", "-p", str(srv.port), "-b"],
        capture_output=True, timeout=120)
    out = run.stdout.decode() + run.stderr.decode()
    assert run.returncode == 0, out
    assert "All tests passed" in out, out
    assert "[fail]" not in out, out
    assert "binary stat" in out, out


# ---------------------------------------------------------------------------
# pylibmc, binary protocol
# ---------------------------------------------------------------------------


def _pylibmc():
    return pytest.importorskip(
        "pylibmc", reason="pylibmc not installed: pip install pylibmc")


def exercise_every_operation(pylibmc, c):
    assert c.set("a", b"hello")
    assert c.get("a") == b"hello"
    assert c.get("missing") is None
    assert c.add("a", b"x") is False
    assert c.add("b", b"bee")
    assert c.replace("b", b"BEE")
    with pytest.raises(pylibmc.NotFound):  # binary replies "not found"
        c.replace("nope", b"x")
    assert c.append("a", b" world")
    assert c.prepend("a", b">> ")
    assert c.get("a") == b">> hello world"
    assert c.set("n", 10)
    assert c.get("n") == 10
    assert c.incr("n", 5) == 15
    assert c.decr("n", 100) == 0
    with pytest.raises(pylibmc.NotFound):
        c.incr("nope")
    value, cas = c.gets("b")
    assert value == b"BEE"
    assert c.cas("b", b"new", cas)
    assert not c.cas("b", b"newer", cas)
    assert c.get("b") == b"new"
    assert c.touch("b", 100)
    assert not c.touch("nope", 100)
    assert c.delete("b")
    assert not c.delete("b")
    assert c.set_multi({"m1": b"1", "m2": b"2", "m3": b"3"}) == []
    assert c.get_multi(["m1", "m2", "m3", "m4"]) == {"m1": b"1", "m2": b"2", "m3": b"3"}
    assert c.delete_multi(["m1", "m2"])
    assert c.get_multi(["m1", "m2", "m3"]) == {"m3": b"3"}
    big = bytes(range(256)) * 2000
    assert c.set("big", big)
    assert c.get("big") == big
    st = c.get_stats()
    assert st and st[0][1]["curr_items"] == b"4", st  # a, n, m3, big
    assert st[0][1]["version"] == b"1.6.18"
    c.flush_all()
    assert c.get("a") is None


def test_pylibmc_binary_protocol(start_server, kind):
    pylibmc = _pylibmc()
    srv = start_server(kind)
    c = pylibmc.Client(["127.0.0.1:%d" % srv.port], binary=True,
                       behaviors={"cas": True, "tcp_nodelay": True})
    try:
        exercise_every_operation(pylibmc, c)
    finally:
        c.disconnect_all()


# ---------------------------------------------------------------------------
# SASL
# ---------------------------------------------------------------------------


def _sasl_client_env():
    """pylibmc's wheel bundles a libsasl2 that looks for its mechanism
    plugins where its build machine kept them, and reads SASL_PATH once,
    when pylibmc is imported: so SASL clients run in a child process told
    where Debian's plugins (libsasl2-modules) are."""
    env = dict(os.environ)
    if "SASL_PATH" not in env:
        plugins = glob.glob("/usr/lib/*/sasl2/libplain.so")
        if not plugins:
            pytest.skip("no SASL PLAIN plugin: apt-get install libsasl2-modules")
        env["SASL_PATH"] = os.path.dirname(plugins[0])
    return env


SASL_CLIENT = """
import sys, pylibmc
import test_binary
port, user, password = sys.argv[1:]
c = pylibmc.Client(["127.0.0.1:" + port], binary=True, username=user, password=password,
                   behaviors={"cas": True})
try:
    test_binary.exercise_every_operation(pylibmc, c)
    print("OK")
except pylibmc.Error as e:
    print("ERROR", e)
"""


def sasl_client(port, user, password):
    _pylibmc()
    run = subprocess.run(
        [sys.executable, "-c", SASL_CLIENT, str(port), user, password],
        capture_output=True, timeout=60, env=_sasl_client_env(),
        cwd=os.path.dirname(os.path.abspath(__file__)))
    assert run.returncode == 0, run.stderr.decode()
    return run.stdout.decode().strip()


@pytest.fixture
def sasl_server(start_server, tmp_path):
    pwdb = tmp_path / "pwdb"
    pwdb.write_text("alice:secret\nbob:hunter2:extra\n")
    return start_server("ours", "-S", env={"MEMCACHED_SASL_PWDB": str(pwdb)})


def test_pylibmc_sasl_right_password(sasl_server):
    assert sasl_client(sasl_server.port, "alice", "secret") == "OK"
    # A line may carry more fields after the password.
    assert sasl_client(sasl_server.port, "bob", "hunter2") == "OK"


@pytest.mark.parametrize("user,password", [
    ("alice", "wrong"), ("alice", "secre"), ("alice", "secretx"), ("carol", "secret"),
])
def test_pylibmc_sasl_wrong_password(sasl_server, user, password):
    got = sasl_client(sasl_server.port, user, password)
    assert got.startswith("ERROR") and "AUTHENTICATION FAILURE" in got, got


def binary_request(opcode, key=b"", extras=b"", value=b"", opaque=0):
    body = extras + key + value
    return struct.pack(">BBHBBHIIQ", 0x80, opcode, len(key), len(extras), 0, 0,
                       len(body), opaque, 0) + body


def test_sasl_refuses_commands_before_auth(sasl_server):
    with socket.create_connection(("127.0.0.1", sasl_server.port), timeout=5) as s:
        s.sendall(binary_request(0x00, b"key"))
        reply, _how = recv_all_until_close(s)
    assert reply[:8] == bytes([0x81, 0x00, 0, 0, 0, 0, 0, 0x20]), reply
    assert reply.endswith(b"Auth failure."), reply


def test_sasl_ascii_is_not_spoken(sasl_server):
    """With -S the protocol is binary only: an ascii request is read as a
    binary header with a bad magic byte, and the connection closes."""
    with socket.create_connection(("127.0.0.1", sasl_server.port), timeout=5) as s:
        s.sendall(b"get a\r\nget b\r\nget c\r\nget d\r\n")
        assert recv_all_until_close(s)[0] == b""


def parse_packets(reply):
    packets = []
    while reply:
        bodylen = struct.unpack(">I", reply[8:12])[0]
        keylen = struct.unpack(">H", reply[2:4])[0]
        body = reply[24 + reply[4]:24 + bodylen]
        packets.append((reply[1], struct.unpack(">H", reply[6:8])[0],
                        body[:keylen], body[keylen:]))
        reply = reply[24 + bodylen:]
    return packets


def test_sasl_raw_auth_then_commands(sasl_server):
    with socket.create_connection(("127.0.0.1", sasl_server.port), timeout=5) as s:
        s.sendall(binary_request(0x20)
                  + binary_request(0x21, b"PLAIN", value=b"\0alice\0nope")
                  + binary_request(0x21, b"PLAIN", value=b"\0alice\0secret")
                  + binary_request(0x0b) + binary_request(0x10) + binary_request(0x07))
        reply, _how = recv_all_until_close(s)
    packets = parse_packets(reply)
    assert packets[:4] == [(0x20, 0, b"", b"PLAIN"), (0x21, 0x20, b"", b"Auth failure."),
                           (0x21, 0, b"", b"Authenticated"), (0x0b, 0, b"", b"1.6.18")]
    stats = {k: v for op, _, k, v in packets[4:-1]}
    assert (stats[b"auth_cmds"], stats[b"auth_errors"]) == (b"2", b"1"), stats
    assert stats[b"cmd_get"] == b"0"
    assert packets[-1] == (0x07, 0, b"", b"")


# ---------------------------------------------------------------------------
# -vv trace of binary sessions
# ---------------------------------------------------------------------------

def _set(key, value, flags=0, exptime=0, opcode=0x01):
    return binary_request(opcode, key, struct.pack(">II", flags, exptime), value)


def _arith(opcode, key, delta, initial, exptime):
    return binary_request(opcode, key, struct.pack(">QQI", delta, initial, exptime))


SESSIONS = {
    "storage": _set(b"k", b"v", 5) + binary_request(0x00, b"k") + binary_request(0x0c, b"k")
    + binary_request(0x00, b"missing") + binary_request(0x0c, b"missing")
    + _set(b"k", b"x", opcode=0x02) + _set(b"nope", b"x", opcode=0x03)
    + binary_request(0x0e, b"k", value=b"tail") + binary_request(0x04, b"k")
    + binary_request(0x04, b"k") + binary_request(0x07),
    "quiet-and-arith": _set(b"q", b"1", opcode=0x11) + binary_request(0x09, b"nope")
    + _arith(0x05, b"q", 5, 0, 0) + _arith(0x15, b"c", 1, 10, 0)
    + _arith(0x06, b"nope", 1, 0, 0xffffffff) + _set(b"s", b"abc")
    + _arith(0x05, b"s", 1, 0, 0) + binary_request(0x0a) + binary_request(0x17),
    "touch-stats-flush": _set(b"t", b"v") + binary_request(0x1c, b"t", b"\0\0\0\x10")
    + binary_request(0x1d, b"t", b"\0\0\0\x10") + binary_request(0x23, b"nope", b"\0\0\0\x10")
    + binary_request(0x10, b"items") + binary_request(0x10, b"bogus")
    + binary_request(0x08) + binary_request(0x0b) + binary_request(0x07),
    "errors": binary_request(0x50) + binary_request(0x20)
    + binary_request(0x00, b"k" * 251),
}


def _closes(lines, end):
    return sum(1 for line in lines if line.endswith(end))


def _session_trace(srv, payload, verbose="-vv"):
    """The trace of one session, from its connection to its close, fd
    numbers normalised. (At -vvv a close ends with a last state change.)"""
    end = b" to conn_closed" if verbose == "-vvv" else b" connection closed."
    srv.stderr.wait_for(lambda ls: _closes(ls, end) >= 1, timeout=5)
    start = len(srv.stderr.lines())
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        recv_all_until_close(s)
    ok = srv.stderr.wait_for(lambda ls: _closes(ls[start:], end) >= 1, timeout=5)
    lines = [re.sub(rb"connection \d+$", b"connection FD", normalise_trace(l))
             for l in srv.stderr.lines()[start:] if not l.startswith(b"LRU")]
    assert ok, f"{srv.describe()}: session never closed:\n" + b"\n".join(lines).decode()
    return lines


@pytest.mark.parametrize("name", sorted(SESSIONS))
@pytest.mark.parametrize("protocol", ["auto", "binary"])
@pytest.mark.parametrize("verbose", ["-vv", "-vvv"])
def test_vv_binary_trace_matches_oracle(start_server, name, protocol, verbose):
    ours = start_server("ours", verbose, "-B", protocol)
    oracle = start_server("oracle", verbose, "-B", protocol)
    want = _session_trace(oracle, SESSIONS[name], verbose)
    got = _session_trace(ours, SESSIONS[name], verbose)
    assert any(b"Writing bin response:" in l for l in want)
    assert any(b"Read binary protocol data:" in l for l in want)
    assert got == want


@pytest.mark.parametrize("protocol", ["ascii", "auto"])
def test_vv_ascii_connection_trace_matches_oracle(start_server, protocol):
    """`-B ascii` fixes the protocol without negotiating: a binary header is
    then just a bad command line."""
    payload = b"get a\r\n" + binary_request(0x0b) + b"\r\nversion\r\n"
    ours = start_server("ours", "-vv", "-B", protocol)
    oracle = start_server("oracle", "-vv", "-B", protocol)
    want = _session_trace(oracle, payload)
    got = _session_trace(ours, payload)
    assert got == want


SASL_SESSIONS = {
    "refused": binary_request(0x0b) + binary_request(0x00, b"k"),
    "unknown-user": binary_request(0x20)
    + binary_request(0x21, b"PLAIN", value=b"\0nobody\0pw")
    + binary_request(0x22, b"PLAIN", value=b"x") + binary_request(0x0a),
    "bad-mechanism-name": binary_request(0x21, b"M" * 40, value=b"data")
    + binary_request(0x0a),
    "other-mechanism": binary_request(0x21, b"CRAM-MD5", value=b"")
    + binary_request(0x0a),
    "plain-without-separators": binary_request(0x21, b"PLAIN", value=b"garbage")
    + binary_request(0x0a),
    "plain-without-password": binary_request(0x21, b"PLAIN", value=b"\0alice")
    + binary_request(0x0a),
    "plain-extra-separator": binary_request(0x21, b"PLAIN", value=b"\0a\0b\0c")
    + binary_request(0x0a),
    "plain-blank-user": binary_request(0x21, b"plain", value=b"x\0 \0pw")
    + binary_request(0x0a),
    "plain-in-a-step": binary_request(0x21, b"PLAIN")
    + binary_request(0x22, b"PLAIN", value=b"\0nobody\0pw")
    + binary_request(0x22, b"PLAIN", value=b"\0nobody\0pw") + binary_request(0x0a),
}


@pytest.mark.parametrize("name", sorted(SASL_SESSIONS))
def test_vv_sasl_trace_matches_oracle(start_server, tmp_path, name):
    """Debian's memcached (Cyrus SASL) needs a configuration to start with
    -S; given one offering PLAIN, its refusals trace as ours do."""
    (tmp_path / "memcached.conf").write_text("mech_list: plain\n")
    (tmp_path / "pwdb").write_text("alice:secret\n")
    env = {"SASL_CONF_PATH": str(tmp_path), "MEMCACHED_SASL_PWDB": str(tmp_path / "pwdb")}
    ours = start_server("ours", "-vv", "-S", env=env)
    oracle = start_server("oracle", "-vv", "-S", env=env)
    want = _session_trace(oracle, SASL_SESSIONS[name])
    got = _session_trace(ours, SASL_SESSIONS[name])
    assert any(b"authenticated() in cmd" in l for l in want)
    assert got == want


def _sasl_start_output(kind, env, *args):
    """stderr and exit code of a -S server that is expected to stop on its
    own (start-up refused) or is stopped after 1 s."""
    from mc_helpers import binary_for, free_port
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("SASL_CONF_PATH", "MEMCACHED_SASL_PWDB")}
    full_env.update(env)
    cmd = [str(binary_for(kind)), "-u", "root", "-l", "127.0.0.1",
           "-p", str(free_port()), "-S", *args]
    proc = subprocess.Popen(cmd, env=full_env, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=1)
    except subprocess.TimeoutExpired:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        return err, "running"
    return err, proc.returncode


@pytest.mark.skipif(any(os.path.exists(f"/etc/{d}/memcached.conf") for d in ("sasl", "sasl2")),
                    reason="a system SASL configuration for memcached exists")
@pytest.mark.parametrize("verbose", [(), ("-v",)])
def test_sasl_without_any_configuration_refuses_to_start(verbose):
    want = _sasl_start_output("oracle", {}, *verbose)
    got = _sasl_start_output("ours", {}, *verbose)
    assert want[1] == 1 and b"Error initializing sasl." in want[0]
    assert got == want


def test_sasl_configuration_is_reported_at_v(tmp_path):
    env = {"SASL_CONF_PATH": str(tmp_path)}
    want = _sasl_start_output("oracle", env, "-v")
    got = _sasl_start_output("ours", env, "-v")
    first = [f"Reading configuration from: <{tmp_path}>".encode(), b"Initialized SASL."]
    assert want[0].splitlines()[:2] == first
    assert got[0].splitlines()[:2] == first and got[1] == want[1] == "running"


def test_sasl_password_file_alone_is_enough_for_ours(tmp_path):
    """Our extension: PLAIN against MEMCACHED_SASL_PWDB needs no Cyrus
    configuration (Debian's memcached is built without that option)."""
    (tmp_path / "pwdb").write_text("alice:secret\n")
    err, status = _sasl_start_output("ours", {"MEMCACHED_SASL_PWDB": str(tmp_path / "pwdb")}, "-v")
    assert status == "running", err
    assert err.splitlines()[:2] == [b"Failed to locate a config path", b"Initialized SASL."]
