#!/usr/bin/env bash
# Cost of a running `selfheal watch` window by window, next to how idle
# each CPU was: on a shared machine other work keeps CPUs busy part of the
# time, and on-demand stall canaries tick only on busy CPUs, so the idle
# cost shows in the windows where the CPUs had idle time.
#
#   bench/hang/windows.sh PID [DURATION_SECONDS [STEP_SECONDS]]   (default 600, 10)
#
# One row per window: each CPU's idle share (idle + iowait), the daemon's
# total CPU (% of one core) and wake-ups/s, and per thread group (light,
# canaries, hang pipeline, watchdog, the rest) % of one core and wake-ups/s.
# A summary groups the windows by the busier CPU's idle share.
set -euo pipefail
pid=$1
duration=${2:-600}
step=${3:-10}
snap() {
  # thread-group run_ns wakeups, summed per group
  for t in /proc/"$pid"/task/*; do
    printf '%s %s\n' "$(cat "$t/comm")" "$(cat "$t/schedstat" 2>/dev/null || echo '0 0 0')"
  done | awk '{
      g = $1; sub(/[0-9]+$/, "", g)
      if (g == "selfheal-canary") g = "canaries"; else if (g == "selfheal-light") g = "light";
      else if (g == "selfheal-hang") g = "hang"; else if (g == "selfheal-watchd") g = "watchdog"; else g = "other"
      r[g] += $2; n[g] += $4
    } END { for (g in r) printf "%s %d %d\n", g, r[g], n[g] }'
  awk '$1 ~ /^cpu[0-9]+$/ { t = 0; for (i = 2; i <= 9; i++) t += $i; printf "%s %d %d\n", $1, $5 + $6, t }' /proc/stat
}
rows=$(mktemp)
trap 'rm -f "$rows"' EXIT
printf '%-8s %-14s %8s %8s | %-15s %-15s %-15s %-15s %-15s\n' "t_s" "cpu_idle_%" "%core" "wake/s" \
  "light" "canaries" "hang" "watchdog" "other"
prev=$(snap)
t0=$(date +%s.%N)
end=$(($(date +%s) + duration))
while [ "$(date +%s)" -lt "$end" ] && [ -d "/proc/$pid" ]; do
  sleep "$step"
  cur=$(snap)
  t1=$(date +%s.%N)
  awk -v w="$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" -v now="$t1" -v start="${start:-$t0}" '
    FNR == NR { a[$1] = $2; b[$1] = $3; next }
    {
      if ($1 ~ /^cpu/) { idle = idle sprintf("%s%.0f", (idle == "" ? "" : "/"), 100 * ($2 - a[$1]) / ($3 - b[$1] + 1e-9)); next }
      dr = ($2 - a[$1]) / 1e9; dn = $3 - b[$1]; tr += dr; tn += dn
      cell[$1] = sprintf("%.4f%% %5.1f/s", 100 * dr / w, dn / w)
    }
    END {
      split("light canaries hang watchdog other", gs, " ")
      for (i in gs) if (!(gs[i] in cell)) cell[gs[i]] = "0.0000% 0.0/s"
      printf "%-8.0f %-14s %7.4f%% %8.1f | %-15s %-15s %-15s %-15s %-15s\n", now - start, idle, 100 * tr / w, tn / w,
        cell["light"], cell["canaries"], cell["hang"], cell["watchdog"], cell["other"]
    }' <(echo "$prev") <(echo "$cur") | tee -a "$rows"
  prev=$cur
  start=${start:-$t0}
  t0=$t1
done
echo "summary by the busier CPU's idle share (windows, mean % of one core: total, light, canaries, hang, watchdog, other):"
awk '{
    split($2, c, "/"); m = 100; for (i in c) if (c[i] + 0 < m) m = c[i] + 0
    b = (m >= 50 ? ">=50% idle" : (m >= 20 ? "20-50% idle" : "<20% idle"))
    k[b]++; tot[b] += $3
    light[b] += $6; can[b] += $8; hang[b] += $10; wd[b] += $12; oth[b] += $14
  } END {
    for (b in k) printf "  %-12s n=%-3d total %.4f%%  light %.4f%%  canaries %.4f%%  hang %.4f%%  watchdog %.4f%%  other %.4f%%\n",
      b, k[b], tot[b] / k[b], light[b] / k[b], can[b] / k[b], hang[b] / k[b], wd[b] / k[b], oth[b] / k[b]
  }' "$rows"
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
