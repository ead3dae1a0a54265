# memcached in Rust: build, run, test.
#
#   make run    build (release) and start the server on 127.0.0.1:11211
#   make test   every test: unit, differential against Debian's memcached,
#               client scenarios; first installs what they need if it is
#               missing (`make deps`: Debian packages and Python clients)
#   make install    install the release binary and the man page under
#               $(DESTDIR)$(PREFIX) (PREFIX defaults to /usr/local);
#               make uninstall removes them
#   make bench  throughput, latency, CPU and memory against Debian's
#               memcached (-t 1) and a null server; by hand, ~10 minutes,
#               needs 2 cores (see bench/README.md)

CARGO   ?= cargo
PYTHON  ?= python3
BIN     := target/release/memcached
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  := $(DESTDIR)$(PREFIX)/bin
MAN1DIR := $(DESTDIR)$(PREFIX)/share/man/man1
# memcached refuses to run as root without -u; so does ours.
RUN_AS  := $(if $(filter 0,$(shell id -u)),-u nobody,)
RUN_ARGS ?= -l 127.0.0.1 -p 11211 -vv

.PHONY: all build run test test-rust test-python deps lint fmt clean install uninstall

all: build

build:
	$(CARGO) build --release

run: build
	$(BIN) $(RUN_AS) $(RUN_ARGS)

test: deps test-rust test-python

# The oracle and the clients the tests drive. Installed only when missing,
# so a prepared machine (or CI, which installs them itself) skips it.
DEB_DEPS := memcached libmemcached-tools netcat-openbsd groff-base
deps:
	@if command -v memcached >/dev/null && command -v memccapable >/dev/null \
	    && $(PYTHON) -c "import pytest, pymemcache, memcache" 2>/dev/null; then :; \
	else \
	    echo "installing test dependencies: $(DEB_DEPS) and tests/python/requirements.txt"; \
	    apt-get update -q && apt-get install -y -q $(DEB_DEPS) && \
	    $(PYTHON) -m pip install -q -r tests/python/requirements.txt; \
	fi

test-rust:
	$(CARGO) build
	$(CARGO) test

test-python:
	$(CARGO) build
	$(PYTHON) -m pytest -q tests/python

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

# The load generator is its own package (bench/loadgen), so the server's
# dependencies stay libc/nix. BENCH_ARGS go to bench/run.py.
.PHONY: bench
bench: build
	$(CARGO) build --release --manifest-path bench/loadgen/Cargo.toml
	$(PYTHON) bench/run.py $(BENCH_ARGS)

install: build
	install -d $(BINDIR) $(MAN1DIR)
	install -m 755 $(BIN) $(BINDIR)/memcached
	install -m 644 man/memcached.1 $(MAN1DIR)/memcached.1

uninstall:
	rm -f $(BINDIR)/memcached $(MAN1DIR)/memcached.1

clean:
	$(CARGO) clean

# Fuzzing (fuzz/README.md): libFuzzer targets built on the stable toolchain
# with the flags cargo-fuzz passes (RUSTC_BOOTSTRAP=1 unlocks the address
# sanitizer); each target runs FUZZ_SECONDS from its seeds in
# fuzz/corpus/<target>, new inputs kept in fuzz/target/corpus/<target>.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= text meta options
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
	tests/python/test_operator.py tests/python/test_meta.py tests/python/test_crawler.py
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
