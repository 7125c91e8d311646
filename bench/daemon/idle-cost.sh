#!/usr/bin/env bash
# Idle cost of `selfheal watch` next to its floor, in one run (issue #13
# item 6: at the default configuration on an idle machine the daemon costs
# at most 2x a bare thread waking every 100 ms).
#
#   bench/daemon/idle-cost.sh [SECONDS]          (default 120 per phase)
#   SELFHEAL_BIN=path  measures a prebuilt binary instead of building one
#   ROUNDS=N           repeats floor/daemon/floor N times (default 1)
#   LIMITED_CGROUPS=N  first creates N empty cgroups with a memory and a
#                      pids limit (under selfheal-idle-bench-PID, removed at
#                      exit), as a systemd host has one per service with
#                      TasksMax/MemoryMax: the sweep reads each one's
#                      counters every second (default 0; needs root)
#   SELFHEAL_BIN2=path alternates a second binary with the first in each
#                      round (floor, A, floor, B, floor): before/after pairs
#
# Each round runs, one after the other for SECONDS each:
#   floor   bench/wakeup-floor.c mode 0: a C thread that wakes every 100 ms
#           (clock_nanosleep, absolute deadlines) and does nothing else
#   daemon  `selfheal watch` with an empty config file (every default: light
#           detector, parked stall canaries, sweep, watchdog chain, kmsg,
#           store writer, HTTP on loopback), measured after a 5 s warm-up
#   floor   again, so a drift of the machine shows
#   reads   bench/wakeup-floor.c mode 3: the same C thread making the light
#           detector's reads at idle (/proc/stat each wake-up, the slow
#           files every 5th), so the light thread's us/wakeup splits into
#           floor + kernel reads + selfheal's own work
#   rt reads  mode 6 under `chrt -f 50`: the reads the light thread makes
#           at idle now (/proc/uptime, /proc/stat and the slow files every
#           10th) from a SCHED_FIFO C thread; the daemon's cost against it
#           is printed too (the floor of any real-time 10 Hz reader)
# and prints the daemon's CPU time as a share of one core, the floor's, and
# their ratio (daemon / mean of the two floors), then the daemon's
# per-thread breakdown: run time from schedstat (ns) and utime+stime from
# /proc/PID/task/TID/stat (clock ticks, a cross-check), wake-ups per second
# and microseconds per wake-up. The machine's idle share and load average
# are printed with every phase: on a shared machine, compare ratios.
#
# The daemon runs with --dry-run: at its defaults recovery may act on any
# process on the machine, and a benchmark must never touch what it did not
# start (an unconfined run once aborted other tests' FUSE mounts and killed
# their fork bombs). Dry run changes what recovery does, not what the
# daemon reads or how often it wakes.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-120}
rounds=${ROUNDS:-1}
case $secs in ''|*[!0-9]*) echo "SECONDS must be a whole number, not '$secs'" >&2; exit 2 ;; esac
case $rounds in ''|*[!0-9]*) echo "ROUNDS must be a whole number, not '$rounds'" >&2; exit 2 ;; esac
if [ -z "${SELFHEAL_BIN:-}" ]; then
  cargo build --release -q -p selfheal-cli --bin selfheal
fi
bin=${SELFHEAL_BIN:-${CARGO_TARGET_DIR:-target}/release/selfheal}
tmp=$(mktemp -d)
pid=
bench_cgroups=()
remove_cgroups() {
  local i
  for ((i = ${#bench_cgroups[@]} - 1; i >= 0; i--)); do rmdir "${bench_cgroups[i]}" 2>/dev/null || true; done
}
trap '[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null; wait 2>/dev/null; remove_cgroups; rm -rf "$tmp"' EXIT
limited=${LIMITED_CGROUPS:-0}
case $limited in ''|*[!0-9]*) echo "LIMITED_CGROUPS must be a whole number, not '$limited'" >&2; exit 2 ;; esac
if [ "$limited" -gt 0 ]; then
  # v1 (separate memory and pids hierarchies) or v2 (one, controllers
  # enabled for the children).
  if [ -d /sys/fs/cgroup/pids ] && [ -d /sys/fs/cgroup/memory ]; then
    parents=(/sys/fs/cgroup/memory/selfheal-idle-bench-$$ /sys/fs/cgroup/pids/selfheal-idle-bench-$$)
  else
    parents=(/sys/fs/cgroup/selfheal-idle-bench-$$)
  fi
  for p in "${parents[@]}"; do
    mkdir "$p" || { echo "LIMITED_CGROUPS: cannot create $p (needs root and a writable cgroup hierarchy)" >&2; exit 2; }
    bench_cgroups+=("$p")
    [ -f "$p/cgroup.subtree_control" ] && echo "+memory +pids" >"$p/cgroup.subtree_control"
    for i in $(seq 1 "$limited"); do
      mkdir "$p/c$i"
      bench_cgroups+=("$p/c$i")
      for f in memory.limit_in_bytes memory.max; do [ -f "$p/c$i/$f" ] && echo $((1 << 30)) >"$p/c$i/$f"; done
      [ -f "$p/c$i/pids.max" ] && echo 1000 >"$p/c$i/pids.max"
    done
  done
fi
cc -O2 -o "$tmp/floor" bench/wakeup-floor.c
: >"$tmp/defaults.toml"
hz=$(getconf CLK_TCK)
# The first whole disk, as the light detector reads it (sysfs per device).
disk=$(ls /sys/block 2>/dev/null | grep -Ev '^(loop|ram|zram|dm-|md|sr)' | head -1 || true)

# Machine idle share (idle + iowait) between two /proc/stat snapshots.
cpu_line() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print $5 + $6, t }' /proc/stat; }
idle_pct() { awk -v a="$1" -v b="$2" 'BEGIN { split(a, x); split(b, y); printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2]) }'; }

floor() {
  local c0 c1 out
  c0=$(cpu_line)
  out=$("$tmp/floor" 0 $((secs * 10)))
  c1=$(cpu_line)
  # "<label> <us> us/wake-up  <pct> % of one core at 100 ms"
  awk '{ for (i = 1; i <= NF; i++) if ($i == "us/wake-up") us = $(i - 1); for (i = 1; i <= NF; i++) if ($i == "%") pct = $(i - 1) } END { print pct, us }' <<<"$out"
  echo "  floor: $out; machine idle $(idle_pct "$c0" "$c1") %, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
}

# One line per thread: tid name run_ns slices utime+stime_ticks
snap() {
  local t
  for t in /proc/"$pid"/task/*; do
    printf '%s %s %s %s\n' "$(basename "$t")" "$(tr ' ' '_' <"$t/comm")" \
      "$(awk '{print $1, $3}' "$t/schedstat" 2>/dev/null || echo '0 0')" \
      "$(sed 's/.*) //' "$t/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0)"
  done
}

daemon() {
  local a b c0 c1 s0 s1 bin=$1
  "$bin" watch --dry-run -c "$tmp/defaults.toml" --store "$tmp/s.db" --listen 127.0.0.1:0 \
    --event-log "$tmp/events.jsonl" 2>"$tmp/log" &
  pid=$!
  sleep 5
  kill -0 "$pid" || { cat "$tmp/log" >&2; exit 1; }
  local before
  before=$(wc -l <"$tmp/events.jsonl" 2>/dev/null || echo 0)
  a=$(snap); c0=$(cpu_line); s0=$(date +%s.%N)
  sleep "$secs"
  b=$(snap); c1=$(cpu_line); s1=$(date +%s.%N)
  local ev
  ev=$(tail -n +"$((before + 1))" "$tmp/events.jsonl" 2>/dev/null || true)
  count() { printf '%s\n' "$ev" | grep -c "\"kind\":\"$1\"" || true; }
  kill -TERM "$pid"; wait "$pid" || true; pid=
  rm -f "$tmp"/s.db* "$tmp/events.jsonl"
  awk -v w0="$s0" -v w1="$s1" -v hz="$hz" -v out="$tmp/daemon.pct" '
    FNR == NR { run[$1] = $3; n[$1] = $4; tk[$1] = $5; next }
    {
      wall = w1 - w0
      dr = ($3 - run[$1]) / 1e9; dn = $4 - n[$1]; dt = ($5 - tk[$1]) / hz
      name[$1] = $2; r[$1] = dr; k[$1] = dn; st[$1] = dt; tr += dr; tn += dn; tt += dt
    }
    END {
      printf "%.4f\n", 100 * tr / wall > out
      printf "  %-22s %9s %9s %11s %10s %10s\n", "thread", "run_ms", "%core", "stat_%core", "wakeups/s", "us/wakeup" > "/dev/stderr"
      for (t in name)
        printf "  %-22s %9.2f %9.4f %11.4f %10.2f %10.1f\n", name[t], 1000 * r[t], 100 * r[t] / wall, 100 * st[t] / wall, k[t] / wall, (k[t] ? 1e6 * r[t] / k[t] : 0) > "/dev/stderr"
      printf "  %-22s %9.2f %9.4f %11.4f %10.2f %10.1f\n", "TOTAL", 1000 * tr, 100 * tr / wall, 100 * tt / wall, tn / wall, (tn ? 1e6 * tr / tn : 0) > "/dev/stderr"
      printf "  over %.1f s\n", wall > "/dev/stderr"
    }' <(echo "$a") <(echo "$b")
  echo "  machine idle $(idle_pct "$c0" "$c1") %, load average $(cut -d' ' -f1-3 /proc/loadavg); events meanwhile: $(count alert) alerts, $(count diagnosis) diagnoses, $(count dismissed) dismissed, $(count kernel) kernel reports" >&2
}

bin2=${SELFHEAL_BIN2:-}
echo "binary: $bin ($(git rev-parse --short HEAD 2>/dev/null || echo '?'))${bin2:+; B: $bin2}"
echo "machine: $(nproc) CPUs, $(uname -r), $(date -u +%Y-%m-%dT%H:%M:%SZ), ${secs} s per phase, $limited limited cgroups added"
ratio() {
  awk -v who="$1" -v d="$2" -v f1="$3" -v f2="$4" -v u1="$5" -v u2="$6" 'BEGIN {
    f = (f1 + f2) / 2
    printf "%sfloor %.4f %% of one core (%.1f and %.1f us per wake-up); daemon %.4f %%; ratio %.2fx (target <= 2x)\n", who, f, u1, u2, d, d / f
  }'
}
for round in $(seq 1 "$rounds"); do
  echo "== round $round"
  if [ -n "$bin2" ]; then
    # Floor, A, floor, B, floor in odd rounds; B first in even ones.
    if ((round % 2)); then order=(A B); else order=(B A); fi
    read -r f1 us1 < <(floor)
    for who in "${order[@]}"; do
      if [ "$who" = A ]; then b=$bin; else b=$bin2; fi
      echo "  -- $who: $b" >&2
      daemon "$b"
      d=$(cat "$tmp/daemon.pct")
      read -r f2 us2 < <(floor)
      ratio "$who " "$d" "$f1" "$f2" "$us1" "$us2"
      f1=$f2 us1=$us2
    done
    continue
  fi
  read -r f1 us1 < <(floor)
  daemon "$bin"
  d=$(cat "$tmp/daemon.pct")
  read -r f2 us2 < <(floor)
  reads=$("$tmp/floor" 3 $((secs * 10)) $disk)
  echo "  reads: $reads; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  ratio "" "$d" "$f1" "$f2" "$us1" "$us2"
  # The light thread's idle reads today (mode 6) made by a real-time C
  # thread, as the light thread is: what any 10 Hz SCHED_FIFO detector
  # reading the same files pays, a floor the daemon can be held to.
  if rt=$(chrt -f 50 "$tmp/floor" 6 $((secs * 10)) $disk 2>/dev/null); then
    awk -v d="$d" -v line="$rt" 'BEGIN {
      n = split(line, w, " "); for (i = 1; i <= n; i++) if (w[i] == "%") p = w[i - 1]
      printf "rt reads: %s\nrt reads floor %.4f %% of one core; daemon / rt reads %.2fx\n", line, p, d / p
    }'
  fi
done
