#!/usr/bin/env bash
# Soak of the fork-bomb bystander test: many bombs, one after another, next
# to same-named processes of the same uid in a sibling cgroup, under the
# real `selfheal watch` with the default recovery ladders. The bug this
# guards against: a follow-up diagnosis counting the bomb's zombies plus
# every other `bash` on the machine and blaming the oldest of them (here
# bash in another login's cgroup). On this machine the code before the fix
# (4ed8985) showed it in 2 of 30 rounds (and 2 of 10 in earlier runs);
# at 1 in 10, 30 rounds find it with probability 1 - 0.9^30 = 96 %.
#
#   bench/hang/bystanders-soak.sh [ROUNDS]     (default 30; root only)
#
# Prints one line per round (time from the bomb's start to its stop) and
# the test's verdict; exits non-zero on the first namesake touched.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-30}
[ "$(id -u)" = 0 ] || { echo "run as root: the soak runs fork bombs in cgroup sandboxes" >&2; exit 2; }
echo "machine: $(nproc) CPUs, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD)"
SELFHEAL_BYSTANDER_ROUNDS=$rounds cargo test -q -p selfheal-cli --test bystanders_load \
  fork_bombs_are_stopped_and_their_namesakes_untouched -- --nocapture --test-threads 1 2>&1 |
  grep -E "round|test result|panicked|namesake|action outside|verdict about"
