#!/usr/bin/env bash
# Detection latency of `selfheal watch` for an RT hog and a D-state hang:
# median and p95 over N injections each (default 20), against the real
# daemon, faults in cgroup sandboxes (root only). Compare with the kernel's
# own detectors: soft lockup after 20 s (2 x watchdog_thresh 10 s) and
# hung_task after 120 s (which never reports killable waits such as FUSE).
#
#   bench/hang/latency.sh [N]
#
# Runs three series:
#   rt_hog  with the default stall bound 200 ms, canary tick 100 ms
#   rt_hog  with bound 50 ms, tick 10 ms (the fast setting)
#   d_state with the default D-state bound 2 s (times reported after the bound)
# The RT hog runs with RT throttling off (restored after each injection and
# by a guard process after 10 s at most), pinned to CPU 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-20}
[ "$(id -u)" = 0 ] || { echo "run as root: the benchmark injects faults in cgroup sandboxes" >&2; exit 2; }
cargo build --release -q -p selfheal-cli --bin selfheal
cargo build --release -q -p selfheal-testprogs --bins
cargo build --release -q -p selfheal-diagnose --example hang_bench
t=${CARGO_TARGET_DIR:-target}/release
echo "machine: $(nproc) CPUs, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
for spec in "rt_hog 200 100" "rt_hog 50 10" "d_state 200 100"; do
  set -- $spec
  echo "== $1"
  "$t/examples/hang_bench" --selfheal "$t/selfheal" --bin-dir "$t" \
    --case "$1" --bound "$2" --tick "$3" --injections "$n"
done
