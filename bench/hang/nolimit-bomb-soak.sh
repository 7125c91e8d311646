#!/usr/bin/env bash
# Soak of the no-limit fork-bomb bystander test
# (a_fork_bomb_without_a_pids_limit_is_stopped_and_its_namesakes_untouched)
# beside LOOPS CPU-bound loops: the load under which the daemon sees the
# bomb late, after it filled its 3000-task safety net, and must still find
# it (held at the limit, not growing) and kill all of it (no remnant left to
# rebuild it after a step reported "recovered").
#
#   bench/hang/nolimit-bomb-soak.sh [RUNS] [LOOPS]   (default 10 runs, 4 loops; root only)
#
# One line per run: time from the bomb's start to its stop, forks its
# sandbox refused, which path found it, the ladder's steps. Stops at the
# first failure and keeps its log (path printed).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-10}
loops=${2:-4}
[ "$(id -u)" = 0 ] || { echo "run as root: the soak runs fork bombs in cgroup sandboxes" >&2; exit 2; }
case "$runs$loops" in *[!0-9]*) echo "usage: $0 [RUNS] [LOOPS] (numbers)" >&2; exit 2 ;; esac
test_bin=$(cargo test -q -p selfheal-cli --test bystanders_load --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*bystanders_load[^"]*\)".*/\1/p' | tail -1)
[ -x "$test_bin" ] || { echo "cannot build the bystander test" >&2; exit 1; }
echo "machine: $(nproc) CPUs, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD), $loops loops beside"
pids=()
for _ in $(seq 1 "$loops"); do sh -c 'while :; do :; done' & pids+=($!); done
trap 'kill "${pids[@]}" 2>/dev/null' EXIT
log=$(mktemp /tmp/nolimit-bomb-soak.XXXXXX)
passed=0 held=0 net=0
for i in $(seq 1 "$runs"); do
  # The test binary runs from the crate directory, as cargo test would.
  if (cd crates/cli && "$test_bin" --exact --nocapture --test-threads 1 \
      a_fork_bomb_without_a_pids_limit_is_stopped_and_its_namesakes_untouched) >"$log" 2>&1; then
    passed=$((passed + 1))
  else
    echo "run $i FAILED; log: $log"
    grep -m3 -E "panicked|bomb left|not stopped" "$log" || true
    echo "summary: $passed of $i passed"
    exit 1
  fi
  grep -q "not growing: held at the pids limit" "$log" && held=$((held + 1))
  grep -q "reached its safety net" "$log" && net=$((net + 1))
  echo "run $i: $(grep -ho 'stopped [0-9]* ms after it started[^)]*)' "$log");" \
    "$(grep -ho 'diagnosis: fork_bomb: .*' "$log" | sed 's/; oldest.*//' | cut -c12-190);" \
    "steps: $(grep -ho 'step [0-9] "[a-z_]*" "[a-z_]*"' "$log" | sed 's/"//g; s/step //' | paste -sd, -)"
done
rm -f "$log"
echo "summary: $passed of $runs passed; found held at the limit (not growing) $held, by the cgroup path after the safety net $net"
