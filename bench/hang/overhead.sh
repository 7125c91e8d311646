#!/usr/bin/env bash
# CPU cost of `selfheal watch` at idle, per thread (run time and wake-ups
# from schedstat, see bench/hang/threads.sh), in three configurations:
#   defaults   every detector (light, on-demand stall canaries, sweep,
#              watchdog chain, kmsg follower, hang pipeline)
#   no-alerts  the same with the light detector's rules off: what the
#              periodic work alone costs, without heavy-detector runs that
#              alerts raised by other work on a shared machine trigger
#   light-only stall canaries, sweep and kmsg off
#   no-tracer  the defaults without the eBPF D-state tracer
#              (heavy.dstate_tracer = false: the sweep scans /proc for D
#              states instead, every 10 s and whenever tasks wait for I/O)
# The tracer's program runs in the kernel on every context switch and is
# charged to whichever task switches, not to the daemon: while a run lasts
# the script turns on kernel.bpf_stats_enabled (restored after) and prints
# the program's own run time from the daemon's fdinfo of it.
# Each configuration runs ROUNDS times (default 1) for DURATION seconds
# (default 60) after a 5 s warm-up; the load average is printed with each
# run, and the events the daemon recorded (alerts, heavy-detector verdicts)
# are counted, since they cost CPU too.
#
# LOAD=N runs N CPU-bound busy loops at nice 19 meanwhile (started and
# stopped by this script, bounded by `timeout`): the cost of the daemon on a
# machine that has work to do, where its wake-ups no longer bring a CPU out
# of idle. That is the case where its CPU time is taken from someone; at
# idle, on a VM, most of a wake-up's cost is leaving idle (bench/wakeup-floor.sh).
#
#   bench/hang/overhead.sh [DURATION_SECONDS]
#   ROUNDS=3 CONFIGS="defaults no-alerts" SELFHEAL_BIN=path bench/hang/overhead.sh 60
#   LOAD=2 CONFIGS=light-only bench/hang/overhead.sh 60
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-60}
rounds=${ROUNDS:-1}
configs=${CONFIGS:-defaults no-tracer no-alerts light-only}
load=${LOAD:-0}
case $load in ''|*[!0-9]*) echo "LOAD must be a number of busy loops, not '$load'" >&2; exit 2 ;; esac
if [ -z "${SELFHEAL_BIN:-}" ]; then
  cargo build --release -q -p selfheal-cli --bin selfheal
fi
bin=${SELFHEAL_BIN:-${CARGO_TARGET_DIR:-target}/release/selfheal}
tmp=$(mktemp -d)
pid=
spinners=()
trap '[ -n "$pid" ] && kill -TERM $pid 2>/dev/null; [ ${#spinners[@]} -gt 0 ] && kill ${spinners[*]} 2>/dev/null; wait 2>/dev/null; [ -n "${stats_was:-}" ] && echo "$stats_was" >/proc/sys/kernel/bpf_stats_enabled; rm -rf "$tmp"' EXIT
printf '' >"$tmp/defaults.toml"
printf '[light]\ndefault_rules = false\n' >"$tmp/no-alerts.toml"
printf '[stall]\nenabled = false\n[heavy]\nsweep_interval = "0"\n[kmsg]\nenabled = false\n' >"$tmp/light-only.toml"
printf '[heavy]\ndstate_tracer = false\n' >"$tmp/no-tracer.toml"
stats_was=$(cat /proc/sys/kernel/bpf_stats_enabled 2>/dev/null || echo)
[ -n "$stats_was" ] && echo 1 >/proc/sys/kernel/bpf_stats_enabled 2>/dev/null || stats_was=
# The daemon's BPF program's cumulative run time (ns) and runs, if it has one.
bpf_prog() {
  for f in /proc/"$1"/fdinfo/*; do
    grep -q '^run_time_ns:' "$f" 2>/dev/null && { awk '/^run_time_ns:/ {t=$2} /^run_cnt:/ {c=$2} END {print t, c}' "$f"; return; }
  done
  echo ""
}
echo "binary: $bin ($(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo "machine: $(nproc) CPUs, $(uname -r), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
if [ "$load" -gt 0 ]; then
  # Bounded: each loop ends on its own after the whole benchmark's length.
  limit=$(( (duration + 10) * rounds * $(echo $configs | wc -w) + 30 ))
  for _ in $(seq 1 "$load"); do
    timeout "$limit" nice -n 19 sh -c 'while :; do :; done' &
    spinners+=($!)
  done
  echo "load: $load busy loops at nice 19 (pids ${spinners[*]})"
fi
for round in $(seq 1 "$rounds"); do
  for cfg in $configs; do
    rm -f "$tmp/s.db"* "$tmp/events.jsonl"
    "$bin" watch --dry-run -c "$tmp/$cfg.toml" --store "$tmp/s.db" --listen 127.0.0.1:0 \
      --event-log "$tmp/events.jsonl" 2>"$tmp/log" &
    pid=$!
    sleep 5
    echo "== $cfg (round $round), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    before=$(wc -l <"$tmp/events.jsonl" 2>/dev/null || echo 0)
    bpf0=$(bpf_prog "$pid")
    bench/hang/threads.sh "$pid" "$duration"
    bpf1=$(bpf_prog "$pid")
    if [ -n "$bpf0" ] && [ -n "$bpf1" ]; then
      awk -v a="$bpf0" -v b="$bpf1" -v d="$duration" 'BEGIN { split(a, x); split(b, y); t = (y[1] - x[1]) / 1e9; n = y[2] - x[2];
        printf "D-state tracer program (in the kernel, on every context switch): %.2f ms run time, %.4f %% of one core, %.0f runs/s, %.0f ns/run\n", 1000 * t, 100 * t / d, n / d, (n ? 1e9 * t / n : 0) }'
    fi
    ev=$(tail -n +"$((before + 1))" "$tmp/events.jsonl" 2>/dev/null || true)
    count() { printf '%s\n' "$ev" | grep -c "\"kind\":\"$1\"" || true; }
    echo "events meanwhile: $(count alert) alerts, $(count diagnosis) diagnoses, $(count dismissed) dismissed, $(count kernel) kernel reports"
    kill -TERM "$pid"
    wait "$pid" || true
    pid=
  done
done
