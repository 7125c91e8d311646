#!/usr/bin/env bash
# What a thread waking every 100 ms costs on this machine before doing any
# work, next to the same thread reading the light detector's /proc files:
# the floor under `selfheal watch`'s idle overhead (bench/hang/overhead.sh).
# On a VM a wake-up from idle is expensive (timer interrupt, VM exit, cold
# caches), and no detector with a 100 ms period can cost less than it.
#
#   bench/wakeup-floor.sh [WAKEUPS]   (default 300 = 30 s per mode)
set -euo pipefail
cd "$(dirname "$0")"
n=${1:-300}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -o "$tmp/floor" wakeup-floor.c
echo "machine: $(nproc) CPUs, $(uname -r), $(date -u +%Y-%m-%dT%H:%M:%SZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
disk=$(ls /sys/block 2>/dev/null | grep -Ev '^(loop|ram|zram|dm-|md|sr)' | head -1 || true)
for mode in 0 1 2 3; do
  "$tmp/floor" "$mode" "$n" $disk
done
