#!/usr/bin/env bash
# Profiles one server under one workload; run by hand after `make bench`
# has built the binaries (or `cargo build --release` in both packages).
#
#   bench/profile.sh ours [loadgen run options...]        e.g. --pipeline 16
#   bench/profile.sh memcached [loadgen run options...]
#   PROFILE_BIN=/path/to/memcached bench/profile.sh ours ...   (a build with
#       symbols: CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
#       RUSTFLAGS="-C force-frame-pointers=yes" cargo build --release
#       --target-dir /tmp/prof-target)
#
# The server runs on core 0, the load generator on core 1 (50 connections,
# 100,000 preloaded keys, 1.5 s warm-up). Over a 3 s window it counts the
# server's syscalls (perf tracepoints) and samples it (perf record -e
# cpu-clock -g; hardware counters are usually missing in a VM), then prints
# syscalls per request and the top symbols. Files go to target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:?usage: bench/profile.sh ours|memcached [loadgen options]}
shift
case $which in
    ours) bin=${PROFILE_BIN:-target/release/memcached} ;;
    memcached) bin=/usr/bin/memcached ;;
    *) echo "ours or memcached" >&2; exit 2 ;;
esac
lg=bench/loadgen/target/release/loadgen
out=target/bench
mkdir -p "$out"
tag="$which$(printf '%s' "$*" | tr -c 'a-zA-Z0-9' '_')"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
user=()
[ "$(id -u)" = 0 ] && user=(-u nobody)

taskset -c 0 "$bin" -t 1 -m 1024 -l 127.0.0.1 -p "$port" "${user[@]}" &
srv=$!
lgpid=
cleanup() {
    [ -n "$lgpid" ] && kill "$lgpid" 2>/dev/null || true
    kill "$srv" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT
sleep 0.5

taskset -c 1 "$lg" run --server "127.0.0.1:$port" --preload --warmup 1.5 \
    --duration 8 --server-pid "$srv" "$@" >"$out/profile-$tag.loadgen" &
lgpid=$!
sleep 2
events=syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_write,syscalls:sys_enter_sendto,syscalls:sys_enter_sendmsg,syscalls:sys_enter_writev,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl
perf stat -x, -e "$events" -p "$srv" -- sleep 3 2>"$out/profile-$tag.syscalls" >/dev/null || true
perf record -q -e cpu-clock -F 4999 -g -p "$srv" -o "$out/profile-$tag.perf" -- sleep 3 >/dev/null 2>&1 || true
wait "$lgpid"
lgpid=

grep -E 'ops/s|server cpu' "$out/profile-$tag.loadgen"
ops=$(sed -n 's/^RESULT .*"ops_per_sec":\([0-9.]*\).*/\1/p' "$out/profile-$tag.loadgen")
echo "syscalls per request (3 s window, requests from ops/s):"
awk -F, -v ops="$ops" '$1 ~ /^[0-9]+$/ && $1 > 0 {
    split($3, n, ":"); printf "  %-22s %6.3f\n", n[2], $1 / (ops * 3) }' "$out/profile-$tag.syscalls"
if [ -s "$out/profile-$tag.perf" ]; then
    echo "where the time goes (perf, self):"
    perf report -i "$out/profile-$tag.perf" --no-children --sort dso -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -4
    perf report -i "$out/profile-$tag.perf" --no-children --sort sym -g none 2>/dev/null |
        grep -v '^#' | grep -v '^$' | head -15
fi
