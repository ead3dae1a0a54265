"""Fixtures for the scenario/client tests.

Servers:
  * "ours"   -- target/debug/memcached, or $MEMCACHED_BIN
  * "oracle" -- /usr/bin/memcached (Debian's memcached 1.6.18), or
                $MEMCACHED_ORACLE

Every server is started as `BIN -u root -l 127.0.0.1 -U 0 -p PORT <opts>` on
a free port, readiness is a connect poll loop (plus a check that the
listening socket belongs to the started PID), and teardown kills the started
PID. Run the suite against the oracle alone (to validate the tests
themselves) with MEMCACHED_BIN=/usr/bin/memcached.
"""

import resource

import pytest

from mc_helpers import Server, ours_path, oracle_path


def _require_binary(kind):
    path = ours_path() if kind == "ours" else oracle_path()
    if not path.is_file():
        if kind == "ours":
            pytest.fail(
                f"our server binary {path} does not exist: run `cargo build` "
                f"first or set MEMCACHED_BIN"
            )
        pytest.skip(f"oracle {path} not installed (apt-get install memcached)")


@pytest.fixture
def start_server(request):
    """start_server(kind, *opts, stdout=False, env=None) -> Server; killed
    at teardown. `env` adds variables to the server's environment."""
    started = []

    def start(kind, *opts, stdout=False, env=None):
        _require_binary(kind)
        srv = Server(kind, opts, stdout=stdout, env=env)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.kill()


@pytest.fixture(params=["ours", "oracle"])
def kind(request):
    """Parametrises a test over our server and the oracle."""
    return request.param


@pytest.fixture
def ours(start_server):
    return start_server("ours")


@pytest.fixture
def oracle(start_server):
    return start_server("oracle")


@pytest.fixture
def many_fds():
    """Raise this process's RLIMIT_NOFILE soft limit for tests that open
    thousands of sockets; restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192
    if hard != resource.RLIM_INFINITY and hard < want:
        want = hard
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield want
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
