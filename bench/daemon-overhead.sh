#!/usr/bin/env bash
# Measures what `selfheal watch` costs the machine at the default 100 ms period:
# CPU time of all its threads as a share of one core, and resident memory,
# over DURATION seconds (default 60) after a 5 s warm-up.
#
#   bench/daemon-overhead.sh [DURATION_SECONDS] [extra `selfheal watch` args…]
#
# Prints one summary line per metric and a final JSON line. Targets (issue #2):
# ≤ 0.1 % of one core, ≤ 20 MB RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-60}
shift || true
# SELFHEAL_BIN=path measures a prebuilt binary instead of building one.
if [ -z "${SELFHEAL_BIN:-}" ]; then
  cargo build --release -q -p selfheal-cli
fi
bin=${SELFHEAL_BIN:-target/release/selfheal}
tmp=$(mktemp -d)
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
"$bin" watch --dry-run --store "$tmp/s.db" --listen 127.0.0.1:0 "$@" 2>"$tmp/log" &
pid=$!
sleep 5
hz=$(getconf CLK_TCK)
# CPU time in ns: the exact per-thread run time from schedstat (CONFIG_SCHED_INFO)
# when the kernel has it, else utime+stime from stat (tick resolution).
if [ -r "/proc/$pid/task/$pid/schedstat" ]; then
  source_desc="per-thread schedstat run time (ns resolution)"
  cpu_ns() { cat /proc/"$pid"/task/*/schedstat | awk '{s += $1} END {printf "%d", s}'; }
else
  source_desc="utime+stime from /proc/PID/stat (1/${hz} s resolution)"
  cpu_ns() { awk -v hz="$hz" '{printf "%d", ($14 + $15) * 1e9 / hz}' "/proc/$pid/stat"; }
fi
declare -A per0
for t in /proc/"$pid"/task/*; do per0[$(basename "$t")]=$(awk '{print $1}' "$t/schedstat" 2>/dev/null || echo 0); done
t0=$(cpu_ns); s0=$(date +%s.%N)
sleep "$duration"
t1=$(cpu_ns); s1=$(date +%s.%N)
rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
hwm_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
threads=$(awk '/^Threads/ {print $2}' "/proc/$pid/status")
read -r cpu_pct cpu_s wall_s < <(awk -v a="$t0" -v b="$t1" -v s0="$s0" -v s1="$s1" \
  'BEGIN { c=(b-a)/1e9; w=s1-s0; printf "%.4f %.4f %.1f\n", 100*c/w, c, w }')
per_thread=""
for t in /proc/"$pid"/task/*; do
  tid=$(basename "$t"); now=$(awk '{print $1}' "$t/schedstat" 2>/dev/null || echo 0)
  per_thread+="$(cat "$t/comm")=$(awk -v a="${per0[$tid]:-0}" -v b="$now" -v w="$wall_s" 'BEGIN{printf "%.4f%%", 100*(b-a)/1e9/w}') "
done
echo "machine: $(nproc) CPUs, $(uname -r), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "cpu:     ${cpu_s} s of CPU in ${wall_s} s = ${cpu_pct} % of one core (target <= 0.1 %)"
echo "memory:  RSS ${rss_kb} kB now, peak ${hwm_kb} kB (target <= 20480 kB); ${threads} threads"
echo "threads: ${per_thread}"
echo "source:  ${source_desc}; load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '{"duration_s":%s,"cpu_seconds":%s,"cpu_percent_of_one_core":%s,"rss_kb":%s,"peak_rss_kb":%s,"threads":%s}\n' \
  "$wall_s" "$cpu_s" "$cpu_pct" "$rss_kb" "$hwm_kb" "$threads"
