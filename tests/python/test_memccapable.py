"""libmemcached's protocol conformance tester, ascii mode."""

import shutil
import subprocess

import pytest


@pytest.mark.skipif(shutil.which("memccapable") is None,
                    reason="memccapable not installed (apt-get install libmemcached-tools)")
def test_memccapable_ascii(ours):
    run = subprocess.run(
        ["memccapable", "-h", "127.0.0.1", "-p", str(ours.port), "-a"],
        capture_output=True, timeout=120)
    out = run.stdout.decode() + run.stderr.decode()
    assert run.returncode == 0, out
    assert "All tests passed" in out, out
    assert "[fail]" not in out, out
