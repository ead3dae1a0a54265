# memcached in Rust: build, run, test.
#
#   make run    build (release) and start the server on 127.0.0.1:11211
#   make test   every test: unit, differential against Debian's memcached,
#               client scenarios (needs `memcached` and the Python clients,
#               see .ci/run)

CARGO   ?= cargo
PYTHON  ?= python3
BIN     := target/release/memcached
# memcached refuses to run as root without -u; so does ours.
RUN_AS  := $(if $(filter 0,$(shell id -u)),-u nobody,)
RUN_ARGS ?= -l 127.0.0.1 -p 11211 -vv

.PHONY: all build run test test-rust test-python lint fmt clean

all: build

build:
	$(CARGO) build --release

run: build
	$(BIN) $(RUN_AS) $(RUN_ARGS)

test: test-rust test-python

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

clean:
	$(CARGO) clean
