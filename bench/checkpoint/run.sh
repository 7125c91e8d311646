#!/bin/bash
# Checkpoint benchmark: real programs of different memory behaviour, run
# unsupervised and under selfheal-ckpt at 50 ms, 100 ms and 1 s intervals;
# then rollback time at ~100 MB resident.
#
#   bench/checkpoint/run.sh [REPS] [OUT_DIR]
#
# Needs root (cgroup sandbox), cc, xz, bzip2, sort, python3. Every program
# runs in a cgroup sandbox (2 GiB, 64 tasks) and is bounded in time.
# Prints a Markdown table; raw JSON summaries stay in OUT_DIR.
set -euo pipefail
REPS=${1:-3}
OUT=${2:-$(mktemp -d /tmp/ckpt-bench.XXXXXX)}
mkdir -p "$OUT"
for tool in cc xz bzip2 sort python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "needs root for the cgroup sandbox" >&2; exit 1; }

. "$(dirname "$0")/ckpt-bin.sh"
cc -O2 -o "$OUT/churn" "$ROOT/bench/checkpoint/churn.c"

# Inputs: 12 MB of text (xz/bzip2), 600 k random lines (sort); each run takes
# a few seconds on an idle 2-core machine.
python3 - "$OUT" <<'EOF'
import random, sys
random.seed(7)
words = [''.join(random.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(random.randint(3, 9))) for _ in range(5000)]
with open(sys.argv[1] + '/text.txt', 'w') as f:
    n = 0
    while n < 12 << 20:
        line = ' '.join(random.choice(words) for _ in range(12)) + '\n'
        f.write(line); n += len(line)
with open(sys.argv[1] + '/lines.txt', 'w') as f:
    for i in range(600_000):
        f.write('%016x %s\n' % (random.getrandbits(64), random.choice(words)))
EOF
head -c 4000000 "$OUT/text.txt" > "$OUT/text4.txt"

# name | command (run from $OUT)
WORKLOADS=(
  "xz-6 (4 MB)|xz -6 -T1 -c text4.txt"
  "bzip2-9 (12 MB)|bzip2 -9 -c text.txt"
  "sort (600k lines)|sort -S 256M lines.txt"
  "churn 100 MB, 2 pages/round|./churn 100 20000 2"
  "churn 100 MB, 8 pages/round|./churn 100 20000 8"
  "churn 8 MB, 1 page/round|./churn 8 20000 1"
)
CONFIGS=("none" "50ms" "100ms" "1s")

run_one() { # name cfg rep cmd...
    local name=$1 cfg=$2 rep=$3; shift 3
    local tag=${name//[^A-Za-z0-9.-]/_}.$cfg.$rep
    local opts=(--sandbox 2048 --summary "$OUT/$tag.json")
    if [ "$cfg" = none ]; then opts+=(--no-checkpoint); else opts+=(--interval "$cfg" --keep 8); fi
    (cd "$OUT" && timeout 600 "$CKPT" "${opts[@]}" -- "$@" > /dev/null)
}

for w in "${WORKLOADS[@]}"; do
    name=${w%%|*}; cmd=${w#*|}
    for rep in $(seq 1 "$REPS"); do
        for cfg in "${CONFIGS[@]}"; do
            # shellcheck disable=SC2086
            run_one "$name" "$cfg" "$rep" $cmd
        done
    done
done

# Rollback time at ~100 MB resident: crash the churner from outside 6 times.
# "newest": crashes 1.5 s apart, after the 1 s recurrence window in which
# checkpoints are suspended, so each rollback goes to a checkpoint at most
# one interval old (the common case). "window": crashes 0.6 s apart, inside
# the window, so each rollback undoes ~0.6 s of writes (the worst case of
# this schedule).
rollback_run() { # tag spacing_s
    local tag=$1 gap=$2
    rm -f "$OUT/$tag.events"
    (cd "$OUT" && timeout 600 "$CKPT" --sandbox 2048 --interval 50ms --summary "$OUT/$tag.json" \
        --events "$OUT/$tag.events" -- ./churn 100 20000 4 > /dev/null) &
    local sup=$! pid=""
    for _ in $(seq 1 200); do
        pid=$(python3 -c "import json,sys
for l in open(sys.argv[1]):
    e=json.loads(l)
    if e.get('event')=='started': print(e['pid']); break" "$OUT/$tag.events" 2>/dev/null || true)
        [ -n "$pid" ] && break
        sleep 0.05
    done
    sleep 1.5
    for _ in 1 2 3 4 5 6; do kill -SEGV "$pid" 2>/dev/null || break; sleep "$gap"; done
    wait $sup || true
}
rollback_run rollback 1.5
rollback_run rollback-window 0.6

python3 "$ROOT/bench/checkpoint/report.py" "$OUT" "$REPS" "${WORKLOADS[@]}"
echo "raw results in $OUT"
