#!/usr/bin/env bash
# Per-thread CPU cost of a running process over DURATION seconds, from each
# thread's schedstat: run time (ns) and times scheduled in (≈ wake-ups).
# On a VM a wake-up costs tens of microseconds whatever the thread then
# does, so the wake-up rate is what to look at first.
#
#   bench/hang/threads.sh PID [DURATION_SECONDS]   (default 60)
#
# Prints one row per thread (name, run time, % of one core, wake-ups per
# second, µs per wake-up), the total, the load average at the end and how
# much of the machine's CPU time was idle meanwhile (on-demand stall
# canaries only run on CPUs without idle time).
set -euo pipefail
pid=$1
duration=${2:-60}
[ -r "/proc/$pid/task/$pid/schedstat" ] || {
  echo "no /proc/$pid/task/$pid/schedstat (needs CONFIG_SCHED_INFO)" >&2
  exit 2
}
snap() {
  for t in /proc/"$pid"/task/*; do
    printf '%s %s %s\n' "$(basename "$t")" "$(tr ' ' '_' <"$t/comm")" "$(cat "$t/schedstat" 2>/dev/null || echo '0 0 0')"
  done
}
# Share of the machine's CPU time that was idle (idle + iowait), from /proc/stat.
cpu_line() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print $5 + $6, t }' /proc/stat; }
a=$(snap)
c0=$(cpu_line)
s0=$(date +%s.%N)
sleep "$duration"
b=$(snap)
c1=$(cpu_line)
s1=$(date +%s.%N)
idle=$(awk -v a="$c0" -v b="$c1" 'BEGIN { split(a, x); split(b, y); printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2]) }')
awk -v w0="$s0" -v w1="$s1" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" -v idle="$idle" '
  FNR == NR { run[$1] = $3; n[$1] = $5; next }
  {
    wall = w1 - w0
    dr = ($3 - run[$1]) / 1e9; dn = $5 - n[$1]
    name[$1] = $2; r[$1] = dr; k[$1] = dn; tr += dr; tn += dn
  }
  END {
    printf "%-20s %10s %10s %10s %12s\n", "thread", "run_ms", "%core", "wakeups/s", "us/wakeup"
    for (t in name) {
      printf "%-20s %10.2f %10.4f %10.2f %12.1f\n", name[t], 1000 * r[t], 100 * r[t] / wall, k[t] / wall, (k[t] ? 1e6 * r[t] / k[t] : 0)
    }
    printf "%-20s %10.2f %10.4f %10.2f %12.1f\n", "TOTAL", 1000 * tr, 100 * tr / wall, tn / wall, (tn ? 1e6 * tr / tn : 0)
    printf "over %.1f s; load average %s; machine idle %s%% of the time\n", wall, load, idle
  }' <(echo "$a") <(echo "$b")
