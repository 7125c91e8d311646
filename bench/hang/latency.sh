#!/usr/bin/env bash
# Detection latency of `selfheal watch` for an RT hog and a D-state hang:
# median and p95 over N injections each (default 20), against the real
# daemon, faults in cgroup sandboxes (root only). Compare with the kernel's
# own detectors: soft lockup after 20 s (2 x watchdog_thresh 10 s) and
# hung_task after 120 s (which never reports killable waits such as FUSE).
#
#   bench/hang/latency.sh [N]
#   SERIES="rt_hog:200:100:true" bench/hang/latency.sh 5     # one series
#
# Runs four series (case:bound_ms:tick_ms:on_demand):
#   rt_hog  defaults: bound 200 ms, tick 100 ms, canaries armed on demand
#           (parked until the light detector sees CPU 1 busy)
#   rt_hog  bound 200 ms, tick 100 ms, canaries always armed (the old default)
#   rt_hog  bound 50 ms, tick 10 ms, always armed (the fast setting)
#   d_state with the default D-state bound 2 s (times reported after the bound)
# The RT hog runs with RT throttling off (restored after each injection and
# by a guard process after 10 s at most), pinned to CPU 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-20}
[ "$(id -u)" = 0 ] || { echo "run as root: the benchmark injects faults in cgroup sandboxes" >&2; exit 2; }
cargo build --release -q -p selfheal-cli --bin selfheal
cargo build --release -q -p selfheal-testprogs --bins
cargo build --release -q -p selfheal-hangwatch --example hang_bench
t=${CARGO_TARGET_DIR:-target}/release
echo "machine: $(nproc) CPUs, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
series=${SERIES:-rt_hog:200:100:true rt_hog:200:100:false rt_hog:50:10:false d_state:200:100:true}
for spec in $series; do
  IFS=: read -r case bound tick on_demand <<<"$spec"
  echo "== $case bound ${bound} ms tick ${tick} ms on_demand=$on_demand; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  "$t/examples/hang_bench" --selfheal "$t/selfheal" --bin-dir "$t" \
    --case "$case" --bound "$bound" --tick "$tick" --on-demand "$on_demand" --injections "$n"
done
