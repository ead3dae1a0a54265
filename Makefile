# memcached in Rust: build, run, test.
#
#   make run    build (release) and start the server on 127.0.0.1:11211
#   make test   every test: unit, differential against Debian's memcached,
#               client scenarios, then memcached's own test suite
#               (`make test-upstream`); first installs what they need if it
#               is missing (`make deps`: Debian packages and Python clients)
#   make install    install the release binary, the man page, the start
#               script, the config file (kept if present) and the systemd units
#               under $(DESTDIR)$(PREFIX) (PREFIX defaults to /usr/local;
#               see SYSCONFDIR, UNITDIR); make uninstall removes them
#   make deb    a Debian package, target/deb/memcached-rs_*.deb (dpkg-deb)
#   make bench  throughput, latency, CPU and memory against Debian's
#               memcached (-t 1) and a null server, TLS, extstore; by hand,
#               ~12 minutes, needs 2 cores (see bench/README.md)

CARGO   ?= cargo
PYTHON  ?= python3
BIN     := target/release/memcached
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  := $(DESTDIR)$(PREFIX)/bin
MAN1DIR := $(DESTDIR)$(PREFIX)/share/man/man1
# The config lives in /etc for PREFIX=/usr, else in $(PREFIX)/etc.
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR    ?= $(PREFIX)/lib/systemd/system
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
SCRIPTDIR  := $(PREFIX)/share/memcached/scripts
# The paths the start script and the unit name, as installed.
SUBST   := sed -e 's|@BINDIR@|$(PREFIX)/bin|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	       -e 's|@SCRIPTDIR@|$(SCRIPTDIR)|g'
# memcached refuses to run as root without -u; so does ours.
RUN_AS  := $(if $(filter 0,$(shell id -u)),-u nobody,)
RUN_ARGS ?= -l 127.0.0.1 -p 11211 -vv

.PHONY: all build run test test-rust test-python test-upstream deps lint fmt clean install install-files uninstall deb

all: build

build:
	$(CARGO) build --release

run: build
	$(BIN) $(RUN_AS) $(RUN_ARGS)

test: deps test-rust test-python test-upstream

# The oracle and the clients the tests drive. Installed only when missing,
# so a prepared machine (or CI, which installs them itself) skips it.
# libsasl2-modules: the PLAIN plugin SASL clients (pylibmc) need; strace
# holds a warm-restart save at one system call for the kill -9 tests.
# memcached's own suite (tests/upstream): dpkg-dev to unpack its source
# package, perl for prove and the t/ files, gcc for its timedrun, iproute2
# to bring loopback up in each file's network namespace; systemd for
# systemd-socket-activate and systemd-analyze (no systemd needs to run as
# init); libio-socket-ssl-perl
# for its run over TLS. To build: pkg-config and libssl-dev (the `tls`
# feature links the system's OpenSSL; openssl, the command, makes the TLS
# tests' certificates and is their s_client).
DEB_DEPS := memcached libmemcached-tools netcat-openbsd groff-base nutcracker libsasl2-modules strace \
	dpkg-dev perl gcc libc6-dev iproute2 libio-socket-ssl-perl pkg-config libssl-dev openssl systemd
deps:
	@if command -v memcached >/dev/null && command -v memccapable >/dev/null \
	    && command -v nutcracker >/dev/null \
	    && command -v dpkg-source >/dev/null && command -v prove >/dev/null \
	    && command -v gcc >/dev/null && command -v ip >/dev/null && command -v strace >/dev/null \
	    && command -v systemd-socket-activate >/dev/null \
	    && ls /usr/lib/*/sasl2/libplain.so >/dev/null 2>&1 \
	    && perl -MIO::Socket::SSL -e1 2>/dev/null && pkg-config --exists openssl \
	    && command -v openssl >/dev/null \
	    && $(PYTHON) -c "import pytest, pymemcache, memcache, debian.copyright, prometheus_client" 2>/dev/null; then :; \
	else \
	    echo "installing test dependencies: $(DEB_DEPS) and tests/python/requirements.txt"; \
	    apt-get update -q && apt-get install -y -q $(DEB_DEPS) && \
	    $(PYTHON) -m pip install -q -r tests/python/requirements.txt; \
	fi

# Also: a server built without TLS (--no-default-features) compiles, is
# lint-clean and passes the option tests; the default build is rebuilt last
# so the binary the other tests run has TLS.
test-rust:
	$(CARGO) build
	$(CARGO) test
	$(CARGO) clippy --all-targets --no-default-features -- -D warnings
	$(CARGO) test --no-default-features --lib
	$(CARGO) build

test-python:
	$(CARGO) build
	$(PYTHON) -m pytest -q tests/python

# memcached 1.6.18's own t/*.t, unmodified, against target/debug/memcached
# (tests/upstream/run.py): the source comes from Debian's source package,
# fetched once into target/upstream/ (tests/upstream/fetch.sh); each file
# runs in its own network namespace, two at a time, bounded per file and
# as a whole. Fails on any file that does not pass and is not in
# tests/upstream/known-failures.txt. UPSTREAM_ARGS=--oracle runs Debian's
# memcached instead; file names select some files. Then the suite again over
# TLS (--ssl: SSL_TEST=1, every server with -Z), against
# tests/upstream/known-failures-ssl.txt.
UPSTREAM_ARGS ?=
test-upstream: deps
	$(CARGO) build
	$(PYTHON) tests/upstream/run.py $(UPSTREAM_ARGS)
	$(PYTHON) tests/upstream/run.py --ssl $(UPSTREAM_ARGS)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

# The load generator is its own package (bench/loadgen), so the server's
# dependencies stay libc/nix. BENCH_ARGS go to bench/run.py,
# EXT_BENCH_ARGS to bench/extstore.py (e.g. --scale 0.25 --rounds 3).
.PHONY: bench
bench: build
	$(CARGO) build --release --manifest-path bench/loadgen/Cargo.toml
	$(PYTHON) bench/run.py $(BENCH_ARGS)
	$(CARGO) build --release --no-default-features --target-dir target/notls
	$(PYTHON) bench/tls.py $(TLS_BENCH_ARGS)
	$(PYTHON) bench/extstore.py $(BIN) $(EXT_BENCH_ARGS)

# The append-only file: set throughput per sync policy, recovery time.
.PHONY: bench-aof
bench-aof: build
	$(CARGO) build --release --manifest-path bench/loadgen/Cargo.toml
	$(PYTHON) bench/aof.py $(BENCH_ARGS)

install: build install-files

install-files:
	install -d $(BINDIR) $(MAN1DIR) $(DESTDIR)$(SCRIPTDIR) $(DESTDIR)$(SYSCONFDIR) \
	    $(DESTDIR)$(UNITDIR) $(DESTDIR)$(TMPFILESDIR)
	install -m 755 $(BIN) $(BINDIR)/memcached
	install -m 644 man/memcached.1 $(MAN1DIR)/memcached.1
	$(SUBST) packaging/start-memcached > $(DESTDIR)$(SCRIPTDIR)/start-memcached
	chmod 755 $(DESTDIR)$(SCRIPTDIR)/start-memcached
	$(SUBST) packaging/memcached.service > $(DESTDIR)$(UNITDIR)/memcached.service
	$(SUBST) packaging/memcached.socket > $(DESTDIR)$(UNITDIR)/memcached.socket
	chmod 644 $(DESTDIR)$(UNITDIR)/memcached.service $(DESTDIR)$(UNITDIR)/memcached.socket
	install -m 644 packaging/memcached.tmpfiles $(DESTDIR)$(TMPFILESDIR)/memcached.conf
	@# An existing configuration is the administrator's: never overwritten.
	test -e $(DESTDIR)$(SYSCONFDIR)/memcached.conf || \
	    install -m 644 packaging/memcached.conf $(DESTDIR)$(SYSCONFDIR)/memcached.conf

# The configuration goes only if it is still the one installed.
uninstall:
	rm -f $(BINDIR)/memcached $(MAN1DIR)/memcached.1 $(DESTDIR)$(SCRIPTDIR)/start-memcached \
	    $(DESTDIR)$(UNITDIR)/memcached.service $(DESTDIR)$(UNITDIR)/memcached.socket \
	    $(DESTDIR)$(TMPFILESDIR)/memcached.conf
	-rmdir $(DESTDIR)$(SCRIPTDIR) $(DESTDIR)$(PREFIX)/share/memcached 2>/dev/null
	! cmp -s packaging/memcached.conf $(DESTDIR)$(SYSCONFDIR)/memcached.conf || \
	    rm -f $(DESTDIR)$(SYSCONFDIR)/memcached.conf

deb: build
	MAKE="$(MAKE)" sh packaging/build-deb.sh target/deb

clean:
	$(CARGO) clean

# Fuzzing (fuzz/README.md): libFuzzer targets built on the stable toolchain
# with the flags cargo-fuzz passes (RUSTC_BOOTSTRAP=1 unlocks the address
# sanitizer); each target runs FUZZ_SECONDS from its seeds in
# fuzz/corpus/<target>, new inputs kept in fuzz/target/corpus/<target>.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= text meta options binary records auth watch
FUZZ_TRIPLE  := $(shell rustc -vV | sed -n 's/^host: //p')
FUZZ_BIN     := fuzz/target/$(FUZZ_TRIPLE)/release
FUZZ_FLAGS   := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
	-Cllvm-args=-sanitizer-coverage-pc-table \
	-Cllvm-args=-sanitizer-coverage-trace-compares \
	--cfg fuzzing -Zsanitizer=address -Cdebug-assertions -Coverflow-checks
.PHONY: fuzz fuzz-build
fuzz-build:
	cd fuzz && RUSTC_BOOTSTRAP=1 RUSTFLAGS="$(FUZZ_FLAGS)" \
	    $(CARGO) build --release --target $(FUZZ_TRIPLE)
fuzz: fuzz-build
	@for t in $(FUZZ_TARGETS); do \
	    mkdir -p fuzz/target/corpus/$$t fuzz/target/artifacts/$$t; \
	    echo "fuzz $$t for $(FUZZ_SECONDS) s"; \
	    $(FUZZ_BIN)/$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	        -artifact_prefix=fuzz/target/artifacts/$$t/ \
	        fuzz/target/corpus/$$t fuzz/corpus/$$t || exit 1; \
	done

# The server under valgrind's memcheck (tools/valgrind-memcached) while the
# differential suites, the stress test and a set of client scenarios run
# against it; tools/valgrind-report fails on any memory error. By hand,
# ~10 minutes.
VALGRIND_LOGS ?= /tmp/memcached-valgrind
VALGRIND_PY   ?= tests/python/test_seed.py tests/python/test_auth.py \
	tests/python/test_clients.py tests/python/test_memccapable.py \
	tests/python/test_operator.py tests/python/test_meta.py tests/python/test_crawler.py \
	tests/python/test_binary.py tests/python/test_unix_socket.py \
	tests/python/test_listeners.py tests/python/test_warm_restart.py
VALGRIND_ENV  := MEMCACHED_BIN=$(CURDIR)/tools/valgrind-memcached VALGRIND_LOGS=$(VALGRIND_LOGS)
.PHONY: valgrind
valgrind:
	@command -v valgrind >/dev/null || (apt-get update -q && apt-get install -y -q valgrind)
	$(CARGO) build --tests
	rm -rf $(VALGRIND_LOGS)
	$(VALGRIND_ENV) $(CARGO) test --test diff --test diff_meta --test diff_stats
	$(VALGRIND_ENV) STRESS_OPS=500 $(CARGO) test --test stress
	$(VALGRIND_ENV) $(PYTHON) -m pytest -q -k "not oracle]" $(VALGRIND_PY)
	$(PYTHON) tools/valgrind-report $(VALGRIND_LOGS)
