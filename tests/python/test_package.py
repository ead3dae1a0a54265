"""The Debian package (`make deb`): its control data and file list, its
contents unpacked with `dpkg -x`, and a real `dpkg -i` / `-r` / `--purge`
into a scratch root (dpkg --root with maintainer scripts run chrootless),
where the packaged start script starts the daemon with a pid file and the
test stops it by that pid file.

The package replaces Debian's memcached (Conflicts/Replaces/Provides), so
installing it on this machine for real would remove the oracle the other
tests compare against: the scratch root is where it is installed."""

import gzip
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from daemon_helpers import Reaper, answers, poll_until, read_pid, wait_gone
from mc_helpers import REPO_ROOT, ends_with, free_port, request

EXPECTED_FILES = {
    "etc/memcached.conf",
    "lib/systemd/system/memcached.service",
    "lib/systemd/system/memcached.socket",
    "usr/bin/memcached",
    "usr/lib/tmpfiles.d/memcached.conf",
    "usr/share/doc/memcached-rs/copyright",
    "usr/share/man/man1/memcached.1.gz",
    "usr/share/memcached/scripts/start-memcached",
}
EXECUTABLES = {"usr/bin/memcached", "usr/share/memcached/scripts/start-memcached"}
SCRIPT = "usr/share/memcached/scripts/start-memcached"
UNIT = "lib/systemd/system/memcached.service"


def need(*tools):
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


@pytest.fixture(scope="module")
def deb():
    need("dpkg-deb", "make")
    out = subprocess.run(
        ["make", "-C", str(REPO_ROOT), "--no-print-directory", "deb"],
        capture_output=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    path = REPO_ROOT / out.stdout.decode().strip().splitlines()[-1]
    assert path.is_file() and path.name.startswith("memcached-rs_")
    return path


@pytest.fixture(scope="module")
def unpacked(deb, tmp_path_factory):
    root = tmp_path_factory.mktemp("deb-x")
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, timeout=60)
    return root


def deb_field(deb, name):
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), name], capture_output=True, check=True, timeout=30
    ).stdout.decode().strip()


def files_in(root):
    return {
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()
    }


def test_control_fields(deb):
    assert deb_field(deb, "Package") == "memcached-rs"
    assert re.fullmatch(r"\d+\.\d+\.\d+-\d+", deb_field(deb, "Version"))
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, check=True
    ).stdout.decode().strip()
    assert deb_field(deb, "Architecture") == arch
    # It takes memcached's place rather than sitting beside it.
    assert deb_field(deb, "Provides") == "memcached (= 1.6.18)"
    assert deb_field(deb, "Conflicts") == "memcached"
    assert deb_field(deb, "Replaces") == "memcached"
    # The default build has TLS: it links OpenSSL 3, as Debian's memcached.
    assert re.fullmatch(r"libc6 \(>= 2\.\d+\), libgcc-s1, libssl3 \(>= 3\.0\.0\), passwd",
                        deb_field(deb, "Depends"))
    installed_kb = int(deb_field(deb, "Installed-Size"))
    assert 100 < installed_kb < 10_000


def test_file_list_owners_and_modes(deb):
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], capture_output=True, check=True, timeout=30
    ).stdout.decode().splitlines()
    files = {}
    for line in listing:
        mode, owner, _size, _date, _time, name = line.split(None, 5)
        assert owner == "root/root", line
        if not mode.startswith("d"):
            files[name.removeprefix("./")] = mode
    assert set(files) == EXPECTED_FILES
    for name, mode in files.items():
        assert mode == ("-rwxr-xr-x" if name in EXECUTABLES else "-rw-r--r--"), name


def test_conffiles_and_maintainer_scripts(deb, tmp_path):
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path)], check=True, timeout=30)
    assert (tmp_path / "conffiles").read_text() == "/etc/memcached.conf\n"
    for script in ("preinst", "postinst", "prerm", "postrm"):
        path = tmp_path / script
        assert os.access(path, os.X_OK)
        # Valid sh; `set -e` so a failed step fails the install.
        subprocess.run(["sh", "-n", str(path)], check=True)
        assert "\nset -e\n" in path.read_text()


def test_md5sums_match_the_payload(deb, unpacked, tmp_path):
    subprocess.run(["dpkg-deb", "-e", str(deb), str(tmp_path)], check=True, timeout=30)
    sums = dict(
        reversed(line.split(None, 1)) for line in (tmp_path / "md5sums").read_text().splitlines()
    )
    assert set(sums) == EXPECTED_FILES
    for name, digest in sums.items():
        assert hashlib.md5((unpacked / name).read_bytes()).hexdigest() == digest, name


def test_unpacked_contents(unpacked):
    assert files_in(unpacked) == EXPECTED_FILES
    page = gzip.decompress((unpacked / "usr/share/man/man1/memcached.1.gz").read_bytes())
    assert page == (REPO_ROOT / "man" / "memcached.1").read_bytes()
    conf = (unpacked / "etc/memcached.conf").read_bytes()
    assert conf == (REPO_ROOT / "packaging" / "memcached.conf").read_bytes()
    script = (unpacked / SCRIPT).read_text()
    unit = (unpacked / UNIT).read_text()
    # The install-time paths were filled in.
    assert not re.search(r"@[A-Z]+@", script + unit)
    assert "${MEMCACHED:-/usr/bin/memcached}" in script
    assert "config=${1:-/etc/memcached.conf}" in script
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1)
    assert exec_start == f"/{SCRIPT} --foreground /etc/memcached.conf"
    out = subprocess.run(
        [str(unpacked / "usr/bin/memcached"), "-V"], capture_output=True, timeout=10
    )
    assert out.stdout == b"memcached 1.6.18\n"


def test_copyright_is_machine_readable_bsd_3_clause(unpacked):
    """The copyright file parses as DEP-5 (python-debian's parser, as
    Debian's tools read it), covers every file under BSD-3-Clause, and
    carries the licence text of the source's LICENSE, word for word."""
    copyright_mod = pytest.importorskip("debian.copyright")
    text = (unpacked / "usr/share/doc/memcached-rs/copyright").read_text()
    parsed = copyright_mod.Copyright(text.splitlines(keepends=True), strict=True)
    assert parsed.header.upstream_name == "memcached-rs"
    stanza = parsed.find_files_paragraph("usr/bin/memcached")
    assert stanza is not None and stanza.files == ("*",)
    assert stanza.license.synopsis == "BSD-3-Clause"
    assert "2026 The memcached-rs authors" in stanza.copyright
    standalone = [p for p in parsed.all_license_paragraphs() if p.license.synopsis == "BSD-3-Clause"]
    assert len(standalone) == 1
    licence = (REPO_ROOT / "LICENSE").read_text()
    assert "Copyright (c) 2026, The memcached-rs authors" in licence
    body = licence[licence.index("Redistribution") :]
    assert standalone[0].license.text.split() == body.split()
    cargo = (REPO_ROOT / "Cargo.toml").read_text()
    assert re.search(r'^license = "BSD-3-Clause"$', cargo, re.M)


def test_packaged_man_page_renders_without_warnings(unpacked):
    need("groff")
    page = gzip.decompress((unpacked / "usr/share/man/man1/memcached.1.gz").read_bytes())
    out = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww"], input=page, capture_output=True, timeout=30
    )
    assert out.returncode == 0
    assert out.stderr == b""
    text = re.sub(rb".\x08", b"", out.stdout)  # overstrike bold
    assert b"SIGUSR1" in text and b"SIGHUP" in text


def test_unit_is_hardened_and_verifies(unpacked, tmp_path):
    unit = (unpacked / UNIT).read_text()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if re.match(r"^[A-Z]\w*=", line)
    )
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "User": "memcache",
        "MemoryDenyWriteExecute": "yes",
    }.items():
        assert settings.get(key) == value, key
    need("systemd-analyze")
    # verify wants ExecStart to exist: point it at the unpacked script.
    copy = tmp_path / "memcached.service"
    copy.write_text(unit.replace(f"/{SCRIPT}", str(unpacked / SCRIPT)))
    out = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, timeout=60
    )
    assert out.returncode == 0, out.stderr.decode()
    assert b"memcached.service" not in out.stderr, out.stderr.decode()


def test_socket_unit_verifies_beside_the_service(unpacked, tmp_path):
    """The socket unit listens where the configuration's default does and
    activates memcached.service (the unit of the same name)."""
    need("systemd-analyze")
    socket_unit = (unpacked / "lib/systemd/system/memcached.socket").read_text()
    assert "\nListenStream=127.0.0.1:11211\n" in socket_unit
    assert "\nWantedBy=sockets.target\n" in socket_unit
    service = (unpacked / UNIT).read_text()
    (tmp_path / "memcached.service").write_text(
        service.replace(f"/{SCRIPT}", str(unpacked / SCRIPT))
    )
    (tmp_path / "memcached.socket").write_text(socket_unit)
    out = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "memcached.socket")],
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr.decode()
    assert b"memcached.s" not in out.stderr, out.stderr.decode()


# --- a real install into a scratch root ------------------------------------


def scratch_root(path):
    """An empty root that dpkg can install into: a database that knows only
    the packages ours depends on (copied from this machine's), and the
    account files the postinst adds the service account to."""
    admin = path / "var/lib/dpkg"
    for sub in ("info", "updates", "triggers"):
        (admin / sub).mkdir(parents=True)
    (admin / "available").touch()
    stanzas = open("/var/lib/dpkg/status").read().split("\n\n")
    wanted = [s for s in stanzas
              if re.search(r"^Package: (libc6|libgcc-s1|libssl3|passwd)$", s, re.M)]
    (admin / "status").write_text("\n\n".join(wanted) + "\n")
    # Empty file lists (dpkg warns when they are missing); multi-arch
    # libraries' lists carry the architecture.
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, check=True
    ).stdout.decode().strip()
    for pkg in ("libc6", "libgcc-s1", "libssl3", "passwd"):
        for name in (pkg, f"{pkg}:{arch}"):
            (admin / "info" / f"{name}.list").touch()
    etc = path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "shadow").write_text("root:*:20000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\n")
    return path


def dpkg(root, *args):
    out = subprocess.run(
        ["dpkg", f"--root={root}", "--force-script-chrootless", *args],
        stdin=subprocess.DEVNULL,  # a conffile prompt fails instead of hanging
        capture_output=True,
        timeout=120,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    assert out.returncode == 0, out.stderr.decode()
    return out


def is_root_on_debian():
    return os.geteuid() == 0 and os.path.exists("/var/lib/dpkg/status")


def scratch_install_possible():
    if not is_root_on_debian():
        pytest.skip("needs root on a Debian machine (dpkg --root)")
    need("dpkg", "useradd")


@pytest.fixture
def installed(deb, tmp_path):
    scratch_install_possible()
    root = scratch_root(tmp_path / "root")
    dpkg(root, "-i", str(deb))
    return root


def start_script(root, conf, pid_file):
    return subprocess.run(
        ["sh", str(root / SCRIPT), str(conf), str(pid_file)],
        capture_output=True,
        timeout=30,
        env={**os.environ, "MEMCACHED": str(root / "usr/bin/memcached")},
    )


def test_dpkg_install_registers_files_conffile_and_account(installed):
    status = subprocess.run(
        ["dpkg-query", f"--root={installed}", "-W", "-f=${Status}", "memcached-rs"],
        capture_output=True, check=True,
    ).stdout
    assert status == b"install ok installed"
    listed = subprocess.run(
        ["dpkg-query", f"--root={installed}", "-L", "memcached-rs"],
        capture_output=True, check=True,
    ).stdout.decode().splitlines()
    assert {f"/{name}" for name in EXPECTED_FILES} <= set(listed)
    conffiles = subprocess.run(
        ["dpkg-query", f"--root={installed}", "-W", "-f=${Conffiles}", "memcached-rs"],
        capture_output=True, check=True,
    ).stdout.decode().split()
    assert conffiles[0] == "/etc/memcached.conf"
    # The postinst created the service account in the scratch root only.
    passwd = (installed / "etc/passwd").read_text()
    assert re.search(r"^memcache:x:\d+:\d+:memcached:/nonexistent:/usr/sbin/nologin$", passwd, re.M)
    assert re.search(r"^memcache:x:\d+:$", (installed / "etc/group").read_text(), re.M)


def test_start_script_starts_the_daemon_and_the_pid_file_stops_it(installed):
    reaper = Reaper()
    port = free_port()
    # The packaged configuration, on a free port, as root (the account is in
    # the scratch root, not on this machine), logging into the scratch root.
    conf = installed / "etc/memcached.conf"
    text = conf.read_text()
    text = re.sub(r"^-p 11211$", f"-p {port}", text, flags=re.M)
    text = re.sub(r"^-u memcache$", "-u root", text, flags=re.M)
    text = re.sub(r"^logfile .*$", f"logfile {installed}/memcached.log", text, flags=re.M)
    text = text.replace("# -v\n", "-v\n")
    conf.write_text(text)
    pid_file = installed / "run/memcached/memcached.pid"
    try:
        out = start_script(installed, conf, pid_file)
        assert out.returncode == 0, out.stderr.decode()
        pid = reaper.track(read_pid(pid_file))
        assert pid is not None
        assert answers(port)
        exe = os.readlink(f"/proc/{pid}/exe")
        assert exe == str(installed / "usr/bin/memcached")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            reply = request(s, b"set k 0 0 2\r\nhi\r\nget k\r\n", ends_with(b"END\r\n"))
            assert reply == b"STORED\r\nVALUE k 0 2\r\nhi\r\nEND\r\n"
        # A second start finds it running and leaves it alone.
        again = start_script(installed, conf, pid_file)
        assert again.returncode == 0
        assert b"already running" in again.stderr
        assert read_pid(pid_file) == pid
        # Stopped by its pid file, it removes the pid file.
        os.kill(read_pid(pid_file), signal.SIGTERM)
        wait_gone(pid)
        assert not pid_file.exists()
        # -v went to the configured log file.
        assert b"Exiting normally" in (installed / "memcached.log").read_bytes()
    finally:
        reaper.kill_all()


def test_start_script_fails_when_the_server_cannot_start(installed):
    pid_file = installed / "run/memcached/memcached.pid"
    conf = installed / "etc/memcached.conf"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        text = conf.read_text().replace("-p 11211\n", f"-p {port}\n")
        conf.write_text(text.replace("-u memcache\n", "-u root\n").replace("# -v\n", "-v\n"))
        out = start_script(installed, conf, pid_file)
    assert out.returncode != 0
    assert b"did not start" in out.stderr
    assert not pid_file.exists()


def test_dpkg_remove_keeps_the_conffile_and_purge_removes_everything(installed):
    conf = installed / "etc/memcached.conf"
    conf.write_text(conf.read_text() + "-c 2048\n")
    dpkg(installed, "-r", "memcached-rs")
    left = files_in(installed / "usr") | files_in(installed / "lib")
    assert not left
    assert conf.read_text().endswith("-c 2048\n")
    dpkg(installed, "--purge", "memcached-rs")
    assert not conf.exists()
    assert "memcache:" not in (installed / "etc/passwd").read_text()
    assert "memcache:" not in (installed / "etc/group").read_text()
    query = subprocess.run(
        ["dpkg-query", f"--root={installed}", "-W", "memcached-rs"], capture_output=True
    )
    assert query.returncode != 0


def test_install_over_debians_config_keeps_it_without_a_prompt(deb, tmp_path):
    """Switching from Debian's memcached: its /etc/memcached.conf belongs to
    no package; the install must keep it and not stop at a conffile prompt
    (stdin is /dev/null, so a prompt would fail the install)."""
    scratch_install_possible()
    root = scratch_root(tmp_path / "root")
    theirs = b"# left by Debian's memcached\n-d\n-m 128\n-u memcache\n"
    (root / "etc/memcached.conf").write_bytes(theirs)
    out = dpkg(root, "-i", str(deb))
    assert b"kept the existing /etc/memcached.conf" in out.stdout
    assert (root / "etc/memcached.conf").read_bytes() == theirs
    ours = (REPO_ROOT / "packaging" / "memcached.conf").read_bytes()
    assert (root / "etc/memcached.conf.dpkg-dist").read_bytes() == ours
    assert not (root / "etc/memcached.conf.memcached-rs-kept").exists()
    dpkg(root, "--purge", "memcached-rs")
    assert not list((root / "etc").glob("memcached.conf*"))


@pytest.fixture
def request_cleanup():
    made = []
    yield made.append
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def test_foreground_start_as_the_service_account(unpacked, request_cleanup):
    """What the systemd unit does: start-memcached --foreground run as an
    unprivileged account execs the server in place (same pid, no -d, no
    pid file even though the config names one), and -u is ignored."""
    need("setpriv")
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged account")
    # pytest's tmp_path is private to root: work where the account can read.
    shared = Path(tempfile.mkdtemp(prefix="memcached-rs-fg-", dir="/tmp"))
    request_cleanup(shared)
    shared.chmod(0o755)
    binary = shared / "memcached"
    shutil.copy(unpacked / "usr/bin/memcached", binary)
    script = shared / "start-memcached"
    shutil.copy(unpacked / SCRIPT, script)
    port = free_port()
    pid_file = shared / "memcached.pid"
    conf = shared / "memcached.conf"
    text = (unpacked / "etc/memcached.conf").read_text()
    text = text.replace("-p 11211\n", f"-p {port}\n")
    conf.write_text(text.replace("-P /run/memcached/memcached.pid", f"-P {pid_file}"))
    proc = subprocess.Popen(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
         "sh", str(script), "--foreground", str(conf)],
        env={**os.environ, "MEMCACHED": str(binary)},
        stderr=subprocess.PIPE,
    )
    try:
        poll_until(lambda: proc.poll() is not None or answers(port), 10, "the server")
        assert proc.poll() is None, proc.stderr.read()
        assert os.readlink(f"/proc/{proc.pid}/exe") == str(binary)
        status = open(f"/proc/{proc.pid}/status").read()
        assert re.search(r"^Uid:\s+65534\s", status, re.M)
        assert not pid_file.exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_make_install_places_config_script_and_unit(tmp_path):
    need("make")
    dest = tmp_path / "dest"
    make = ["make", "-C", str(REPO_ROOT), "--no-print-directory", f"DESTDIR={dest}"]
    out = subprocess.run([*make, "install"], capture_output=True, timeout=900)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    local = dest / "usr/local"
    conf = local / "etc/memcached.conf"
    script = local / "share/memcached/scripts/start-memcached"
    unit = local / "lib/systemd/system/memcached.service"
    assert conf.read_bytes() == (REPO_ROOT / "packaging/memcached.conf").read_bytes()
    assert os.access(script, os.X_OK)
    assert "${MEMCACHED:-/usr/local/bin/memcached}" in script.read_text()
    assert (
        f"ExecStart=/usr/local/share/memcached/scripts/start-memcached --foreground "
        f"/usr/local/etc/memcached.conf\n" in unit.read_text()
    )
    assert (local / "lib/tmpfiles.d/memcached.conf").is_file()
    # A second install keeps an edited configuration...
    conf.write_text(conf.read_text() + "-c 4096\n")
    out = subprocess.run([*make, "install-files"], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    assert conf.read_text().endswith("-c 4096\n")
    # ...and so does uninstall, which removes everything else.
    out = subprocess.run([*make, "uninstall"], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    assert files_in(dest) == {"usr/local/etc/memcached.conf"}
