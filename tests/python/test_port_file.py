"""MEMCACHED_PORT_FILENAME: the file of bound ports memcached writes at
start (`TCP INET: <port>` lines, TCP before UDP, written to NAME.lck and
renamed). Compared with the oracle; each server's own port is written
as PORT so the two can be compared."""

import os
import socket
import subprocess

import pytest

from daemon_helpers import poll_until
from mc_helpers import binary_for, have_ipv6_loopback, recv_until


def port_file(start_server, tmp_path, kind, *opts, stale=None):
    """Starts `kind` with the variable set; returns the file's text (the
    server's port as PORT) and whether the .lck file is gone."""
    path = tmp_path / f"ports.{kind}"
    if stale is not None:
        (tmp_path / f"ports.{kind}.lck").write_text(stale)
    srv = start_server(kind, *opts, env={"MEMCACHED_PORT_FILENAME": str(path)})
    # The rename comes right after the binds; the server is answering by
    # now, but the file is polled rather than assumed.
    poll_until(path.exists, 5, f"{kind} writes {path}")
    text = path.read_text().replace(f": {srv.port}\n", ": PORT\n")
    return text, not (tmp_path / f"ports.{kind}.lck").exists()


@pytest.mark.parametrize(
    "opts",
    [
        (),
        ("-U", "{port}"),
        pytest.param(
            ("-l", "::1", "-U", "{port}"),
            marks=pytest.mark.skipif(not have_ipv6_loopback(), reason="no ::1"),
        ),
    ],
    ids=["tcp", "tcp-udp", "ipv6"],
)
def test_ports_written_as_memcached_writes_them(start_server, tmp_path, opts):
    theirs = port_file(start_server, tmp_path, "oracle", *opts)
    ours = port_file(start_server, tmp_path, "ours", *opts)
    assert ours == theirs
    assert theirs[0].startswith("TCP INET: PORT\n") and theirs[1]


def test_a_stale_lck_file_is_appended_to(start_server, tmp_path):
    stale = "left over\n"
    theirs = port_file(start_server, tmp_path, "oracle", stale=stale)
    ours = port_file(start_server, tmp_path, "ours", stale=stale)
    assert ours == theirs == ("left over\nTCP INET: PORT\n", True)


def test_an_unopenable_file_is_reported_and_the_server_starts(start_server, tmp_path):
    path = tmp_path / "missing-dir" / "ports"
    for kind in ("oracle", "ours"):
        srv = start_server(kind, env={"MEMCACHED_PORT_FILENAME": str(path)})
        assert srv.alive()
        assert f'Failed to open "{path}.lck": No such file or directory\n' in srv.stderr.text()
    assert not path.parent.exists()


def test_no_file_under_a_unix_socket(tmp_path):
    """Under -s memcached listens on no port and writes no file."""
    for kind in ("oracle", "ours"):
        sock = tmp_path / f"{kind}.sock"
        path = tmp_path / f"ports.{kind}"
        proc = subprocess.Popen(
            [str(binary_for(kind)), "-u", "root", "-s", str(sock)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "MEMCACHED_PORT_FILENAME": str(path)},
        )
        try:
            poll_until(sock.exists, 5, f"{kind} listens on {sock}")
            # An answer means start-up, where the file would be written,
            # is over.
            with socket.socket(socket.AF_UNIX) as c:
                c.settimeout(10)
                c.connect(str(sock))
                c.sendall(b"version\r\n")
                assert c.recv(100) == b"VERSION 1.6.18\r\n"
            assert not path.exists() and not (tmp_path / f"ports.{kind}.lck").exists()
        finally:
            proc.kill()
            proc.wait(timeout=10)


def test_minus_one_asks_for_ephemeral_ports(tmp_path):
    """`-p -1 -U -1`: memcached binds ports the kernel picks (it turns -1
    into 0) and `stats settings` still says -1. Two servers started this way
    at once must both start (a fixed port such as 65535 would collide)."""
    procs, ports = [], {}
    try:
        for kind in ("oracle", "ours"):
            path = tmp_path / f"ports.{kind}"
            procs.append(subprocess.Popen(
                [str(binary_for(kind)), "-u", "root", "-l", "127.0.0.1", "-p", "-1", "-U", "-1"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env={**os.environ, "MEMCACHED_PORT_FILENAME": str(path)},
            ))
            poll_until(path.exists, 5, f"{kind} writes {path}")
            lines = dict(line.split(": ") for line in path.read_text().splitlines())
            assert set(lines) == {"TCP INET", "UDP INET"}
            ports[kind] = int(lines["TCP INET"]), int(lines["UDP INET"])
        for kind, (tcp, udp) in ports.items():
            assert 0 < tcp < 65535 and 0 < udp < 65535, (kind, tcp, udp)
            with socket.create_connection(("127.0.0.1", tcp), timeout=10) as c:
                c.sendall(b"stats settings\r\n")
                reply = recv_until(c, lambda b: b.endswith(b"END\r\n"))
            assert b"STAT tcpport -1\r\n" in reply and b"STAT udpport -1\r\n" in reply
        assert ports["ours"][0] != ports["oracle"][0]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)
