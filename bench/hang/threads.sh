#!/usr/bin/env bash
# Per-thread CPU cost of a running process over DURATION seconds, from each
# thread's schedstat: run time (ns) and times scheduled in (≈ wake-ups).
# On a VM a wake-up costs tens of microseconds whatever the thread then
# does, so the wake-up rate is what to look at first.
#
#   bench/hang/threads.sh PID [DURATION_SECONDS]   (default 60)
#
# Prints one row per thread (name, run time, % of one core, wake-ups per
# second, µs per wake-up), the total, and the load average at the end.
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
a=$(snap)
s0=$(date +%s.%N)
sleep "$duration"
b=$(snap)
s1=$(date +%s.%N)
awk -v w0="$s0" -v w1="$s1" -v load="$(cut -d' ' -f1-3 /proc/loadavg)" '
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
    printf "over %.1f s; load average %s\n", wall, load
  }' <(echo "$a") <(echo "$b")
