"""The man page: it renders without groff warnings, it documents every
option that `memcached -h` prints, and `make install`/`make uninstall`
put it (and the binary) in place and take them away again."""

import os
import re
import shutil
import stat
import subprocess

import pytest

from mc_helpers import REPO_ROOT, ours_path

MANPAGE = REPO_ROOT / "man" / "memcached.1"


def _help_text():
    binary = ours_path()
    if not binary.exists():
        pytest.skip(f"{binary} not built (run `cargo build`)")
    out = subprocess.run(
        [str(binary), "-h"], capture_output=True, timeout=10, check=True
    )
    return out.stdout.decode()


def _page_words():
    """The page source with roff escapes that split option names removed:
    `\\-` becomes `-`, font changes and `\\&` disappear."""
    src = MANPAGE.read_text()
    src = re.sub(r"\\f[BIRP]", "", src)
    src = src.replace("\\&", "").replace("\\-", "-")
    return src


def test_manpage_renders_without_warnings():
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed (apt-get install groff-base)")
    out = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", str(MANPAGE)],
        capture_output=True,
        timeout=30,
    )
    assert out.returncode == 0
    assert out.stderr.decode() == ""
    assert b"memcached" in out.stdout


def test_manpage_documents_every_option():
    text = _help_text()
    shorts = set(re.findall(r"^-([A-Za-z])\b", text, re.M))
    longs = set(re.findall(r"--([a-z][a-z_-]*)", text))
    okeys = set(re.findall(r"^\s+- ([a-z_]+):", text, re.M))
    # Sanity: the parse found what -h obviously prints.
    assert {"p", "U", "o", "D"} <= shorts
    assert {"port", "extended", "disable-watch"} <= longs
    assert {"maxconns_fast", "sock_cookie_id"} <= okeys

    page = _page_words()
    missing = [f"-{s}" for s in sorted(shorts)
               if not re.search(rf"(?<![\w-])-{s}(?![\w-])", page)]
    missing += [f"--{l}" for l in sorted(longs)
                if not re.search(rf"--{re.escape(l)}(?![\w-])", page)]
    missing += [f"-o {k}" for k in sorted(okeys)
                if not re.search(rf"(?<![\w]){re.escape(k)}(?![\w])", page)]
    assert not missing, f"options printed by -h but not in the man page: {missing}"


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_make_install_and_uninstall(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dest = tmp_path / "root"
    make_vars = [f"DESTDIR={dest}", "PREFIX=/usr"]
    out = subprocess.run(
        ["make", "-C", str(REPO_ROOT), "install", *make_vars],
        capture_output=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]

    binary = dest / "usr" / "bin" / "memcached"
    page = dest / "usr" / "share" / "man" / "man1" / "memcached.1"
    assert binary.is_file()
    assert page.is_file()
    assert _mode(binary) == 0o755
    assert _mode(page) == 0o644
    assert page.read_bytes() == MANPAGE.read_bytes()

    out = subprocess.run(
        ["make", "-C", str(REPO_ROOT), "uninstall", *make_vars],
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert not binary.exists()
    assert not page.exists()
