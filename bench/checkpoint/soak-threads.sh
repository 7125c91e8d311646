#!/bin/bash
# Rollback soak: the 4-thread barrier program of the checkpoint tests
# (crates/checkpoint/tests/progs/threads.c) crashed from outside six times
# per run with SIGSEGV, RUNS runs; every run must print the fault-free
# answer. Runs in a 1 GiB cgroup sandbox; needs root.
#
#   bench/checkpoint/soak-threads.sh [RUNS] [INTERVAL] [extra selfheal-ckpt args...]
#   bench/checkpoint/soak-threads.sh 20 20ms --no-precopy
set -euo pipefail
RUNS=${1:-20}
INTERVAL=${2:-20ms}
shift 2 || true
. "$(dirname "$0")/ckpt-bin.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -pthread -o "$tmp/threads" "$ROOT/crates/checkpoint/tests/progs/threads.c"
cd "$tmp"
expected=$(./threads 2000)
bad=0 rollbacks=0
for i in $(seq 1 "$RUNS"); do
    rm -f run.events
    timeout 120 "$CKPT" --sandbox 1024 --interval "$INTERVAL" --events run.events \
        --summary run.json "$@" -- ./threads 2000 > run.out &
    sup=$! pid=""
    for _ in $(seq 1 100); do
        pid=$(python3 -c "import json,sys
for l in open(sys.argv[1]):
    e=json.loads(l)
    if e.get('event')=='started': print(e['pid']); break" run.events 2>/dev/null || true)
        [ -n "$pid" ] && break
        sleep 0.05
    done
    for _ in 1 2 3 4 5 6; do
        sleep "0.$((RANDOM % 3 + 1))"
        kill -SEGV "$pid" 2>/dev/null || break
    done
    wait "$sup" || true
    n=$(grep -c rolled_back run.events || true)
    rollbacks=$((rollbacks + n))
    if [ "$(cat run.out)" != "$expected" ]; then
        bad=$((bad + 1))
        echo "run $i: wrong answer '$(cat run.out)' (expected '$expected'), $n rollbacks"
        cp run.events "$ROOT/soak-threads-bad-$i.events"
    fi
done
echo "soak: $RUNS runs, $rollbacks rollbacks, $bad wrong answers (interval $INTERVAL ${*:-})"
[ "$bad" -eq 0 ]
