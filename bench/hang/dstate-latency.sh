#!/usr/bin/env bash
# D-state detection latency of `selfheal watch` (default config, recovery
# confined to the benchmark's sandboxes): N injections (default 20) of each
#   d_state         cat of a FUSE file whose read is never answered (a page
#                   lock wait: the kernel counts it as I/O wait)
#   dstate_lookup   a lookup stuck behind a FUSE lookup that is never
#                   answered: D outside block I/O, which procs_blocked does
#                   not count (before the eBPF tracer: first seen up to
#                   10 s late, at the full scan)
#   dstate_blockio  dd (O_DIRECT) of a loop device whose backing file is on
#                   that FUSE mount: the bio never completes (submit_bio_wait)
# For each: median and p95 of the time from the task's onset (polled by
# the benchmark every ms) to the diagnosis, after the 2 s bound, and of the
# error of the onset the daemon states. Then, for comparison, OFF_N
# (default 5) injections of dstate_lookup with the tracer off
# (heavy.dstate_tracer = false: the /proc scans it replaces). Root only.
#
#   bench/hang/dstate-latency.sh [N]
#   CASES="dstate_lookup" bench/hang/dstate-latency.sh 5
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-20}
[ "$(id -u)" = 0 ] || { echo "run as root: the benchmark injects faults in cgroup sandboxes" >&2; exit 2; }
for tool in losetup dd stat cat; do
  command -v "$tool" >/dev/null || { echo "dstate-latency: $tool is missing (scripts/install-deps)" >&2; exit 2; }
done
cargo build --release -q -p selfheal-cli --bin selfheal
cargo build --release -q -p selfheal-testprogs --bins
cargo build --release -q -p selfheal-hangwatch --example hang_bench
t=${CARGO_TARGET_DIR:-target}/release
echo "machine: $(nproc) CPUs, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD)"
for case in ${CASES:-d_state dstate_lookup dstate_blockio}; do
  echo "== $case; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  "$t/examples/hang_bench" --selfheal "$t/selfheal" --bin-dir "$t" --case "$case" --injections "$n"
done
off=${OFF_N:-5}
if [ "$off" -gt 0 ]; then
  echo "== dstate_lookup with the tracer off; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  "$t/examples/hang_bench" --selfheal "$t/selfheal" --bin-dir "$t" --case dstate_lookup --tracer false --injections "$off"
fi
echo "end: load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
