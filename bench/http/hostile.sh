#!/usr/bin/env bash
# /healthz and /metrics under hostile clients (issue #17): a real
# `selfheal watch` on loopback, 500 idle connections (re-opened when the
# server's 5 s header timeout closes them), 50 slowloris connections and a
# stream of garbage requests, for SECONDS (default 60). Reports latency
# p50/p99/max of /healthz and /metrics, the daemon's RSS, and the server's
# own counters. Targets: p99 <= 1 s, RSS <= 20 MB.
#
#   bench/http/hostile.sh [SECONDS] [IDLE] [SLOW]
#   SELFHEAL_BIN=path  measures a prebuilt binary instead of building one
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
idle=${2:-500}
slow=${3:-50}
if [ -z "${SELFHEAL_BIN:-}" ]; then
  cargo build --release -q -p selfheal-cli
fi
bin=${SELFHEAL_BIN:-target/release/selfheal}
ulimit -n 8192
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
"$bin" watch --dry-run --store "$tmp/s.db" --listen 127.0.0.1:0 2>"$tmp/log" &
pid=$!
addr=
for _ in $(seq 100); do
  addr=$(sed -n 's|.*serving http://\([^/]*\)/.*|\1|p' "$tmp/log" | head -1)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { cat "$tmp/log"; exit 1; }
echo "machine: $(nproc) CPUs, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
echo "daemon: $bin (pid $pid) on $addr; RSS before: $(awk '/^VmRSS/ {print $2/1024 " MB"}' /proc/$pid/status)"
python3 bench/http/hostile.py "$addr" "$pid" "$secs" "$idle" "$slow"
echo "server counters:"
python3 - "$addr" <<'PY'
import socket, sys
h, p = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((h, int(p)), timeout=5)
s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
for line in data.decode().splitlines():
    if line.startswith("selfheal_http_"):
        print("  " + line)
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
