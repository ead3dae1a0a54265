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

# The append-only file: set throughput per sync policy, recovery time.
.PHONY: bench-aof
bench-aof: build
	$(CARGO) build --release --manifest-path bench/loadgen/Cargo.toml
	$(PYTHON) bench/aof.py $(BENCH_ARGS)

install: build
	install -d $(BINDIR) $(MAN1DIR)
	install -m 755 $(BIN) $(BINDIR)/memcached
	install -m 644 man/memcached.1 $(MAN1DIR)/memcached.1

uninstall:
	rm -f $(BINDIR)/memcached $(MAN1DIR)/memcached.1

clean:
	$(CARGO) clean
