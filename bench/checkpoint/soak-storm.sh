#!/bin/bash
# SIGSEGV storms on multi-threaded programs under `selfheal run`: RUNS runs
# of each program, a SIGSEGV from outside every 30-600 ms (random) for the
# whole run, sent only to the program this script's selfheal started. Every
# run must end on its own within LIMIT seconds (a run still going then is a
# HANG: the script ends it with SIGTERM, SIGKILL 10 s later, and counts it)
# and print exactly what a fault-free run prints, byte for byte - after a
# restart too (restart_output=truncate, the default, cuts the output back to
# where the killed run started).
#
#   bench/checkpoint/soak-storm.sh [RUNS] [PROGRAMS...]
#   bench/checkpoint/soak-storm.sh 100 sort > bench/checkpoint/soak-storm-$(date +%F).txt
#
# Programs: sort (GNU sort --parallel=2 -S 4M on SORT_LINES lines, 24 MB
# by default: two threads, temporary files), threads (the 4-thread barrier program of the
# checkpoint tests). Counted per run: SIGSEGVs sent, rollbacks done,
# rollbacks refused (with the reasons from the events), restarts.
#
# Everything runs in a cgroup sandbox (memory 2 GiB, 256 tasks, one CPU)
# that the script creates and removes; it signals only processes it
# started (children of its own selfheal; leftovers in its own sandbox).
# Needs root. Results go to stdout, one line per run and a summary; bad
# runs keep their logs in $KEEP (default /tmp/soak-storm-bad).
set -euo pipefail
RUNS=${1:-20}
shift || true
PROGRAMS=${*:-sort threads}
LIMIT=${LIMIT:-120}
# selfheal run options (word-split).
OPTS=${OPTS:---checkpoint-interval 50ms --keep 8 --max-rollbacks 0 --max-restarts 0}
KEEP=${KEEP:-/tmp/soak-storm-bad}
[ "$(id -u)" = 0 ] || { echo "needs root (cgroup sandbox, ptrace)" >&2; exit 2; }
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# PROFILE=debug soaks the debug build (slower tracer: longer stops, more
# signals landing in them).
PROFILE=${PROFILE:-release}
case $PROFILE in
    release) (cd "$ROOT" && cargo build --release -q -p selfheal-cli --bin selfheal) ;;
    debug) (cd "$ROOT" && cargo build -q -p selfheal-cli --bin selfheal) ;;
    *) echo "PROFILE is release or debug" >&2; exit 2 ;;
esac
SELFHEAL=$CARGO_TARGET_DIR/$PROFILE/selfheal

tmp=$(mktemp -d)
name=selfheal-soak-storm-$$
cgdirs=()
cleanup() {
    for d in "${cgdirs[@]}"; do
        # Anything left in the sandbox is ours: end it before removing it.
        if [ -f "$d/cgroup.procs" ]; then
            for p in $(cat "$d/cgroup.procs"); do kill -KILL "$p" 2>/dev/null || true; done
        fi
    done
    sleep 0.2
    for d in "${cgdirs[@]}"; do rmdir "$d" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap "exit 130" INT TERM

# The sandbox: cgroup v2 if mounted as the root hierarchy, else v1.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    d=/sys/fs/cgroup/$name
    mkdir "$d"; cgdirs+=("$d")
    echo $((2 << 30)) > "$d/memory.max"
    echo 256 > "$d/pids.max"
    echo "100000 100000" > "$d/cpu.max"
else
    for c in memory pids cpu; do
        d=/sys/fs/cgroup/$c/$name
        mkdir "$d"; cgdirs+=("$d")
    done
    echo $((2 << 30)) > "/sys/fs/cgroup/memory/$name/memory.limit_in_bytes"
    echo 256 > "/sys/fs/cgroup/pids/$name/pids.max"
    echo 100000 > "/sys/fs/cgroup/cpu/$name/cpu.cfs_quota_us"
fi
# Runs "$@" inside the sandbox.
sandboxed() {
    local d
    for d in "${cgdirs[@]}"; do echo "$BASHPID" > "$d/cgroup.procs"; done
    exec "$@"
}

cd "$tmp"
cc -O2 -pthread -o threads "$ROOT/crates/checkpoint/tests/progs/threads.c"
# SORT_LINES pseudo-random lines (the same every time; 1200000 = 24 MB).
SORT_LINES=${SORT_LINES:-1200000}
awk -v n="$SORT_LINES" 'BEGIN { srand(12); for (i = 0; i < n; i++) printf "%08x %d %s\n", int(rand() * 4294967295), i, (i % 7 ? "abc" : "zzzz") }' > sort.in
mkdir -p sorttmp
cmd_sort=(sort --parallel=2 -S 4M -T "$tmp/sorttmp" "$tmp/sort.in")
cmd_threads=("$tmp/threads" 3000)

# Ends whatever is left in the sandbox (ours: only this script puts tasks
# there), e.g. a program its killed supervisor left behind.
sweep() {
    local d p
    for d in "${cgdirs[@]}"; do
        for p in $(cat "$d/cgroup.procs" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    done
}

echo "machine: $(nproc) CPUs, $(uname -r), $(date -u +%Y-%m-%dT%H:%M:%SZ), load $(cut -d' ' -f1-3 /proc/loadavg), commit $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- crates || echo +changes)"
echo "selfheal ($PROFILE build) run $OPTS; limit ${LIMIT}s per run; SIGSEGV every 30-600 ms"
runs=0 hangs=0 wrong=0 restarted=0 crashes=0 rollbacks=0 refused=0 restarts_all=0
declare -A reasons=()
for prog in $PROGRAMS; do
    declare -n cmd="cmd_$prog"
    comm=$(basename "${cmd[0]}")
    t0=$(date +%s.%N)
    "${cmd[@]}" > "$prog.expected"
    echo "$prog: fault-free run $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s unsupervised, $(stat -c %s "$prog.expected") bytes of output, sha256 $(sha256sum < "$prog.expected" | cut -c1-16)"
    for i in $(seq 1 "$RUNS"); do
        rm -rf store.db run.out run.err run.events sorttmp/*
        t0=$(date +%s.%N)
        # timeout is the deadline: SIGTERM to selfheal at LIMIT, SIGKILL
        # 10 s later (exit 124 or 137 then).
        ( sandboxed timeout -k 10 "$LIMIT" "$SELFHEAL" run --store store.db --name "$prog" \
            $OPTS -- "${cmd[@]}" ) \
            > run.out 2> run.err &
        sup=$!
        n=0
        # The storm: SIGSEGV to the program (a child of our selfheal,
        # named as the program) every 30-600 ms until selfheal ends.
        while kill -0 "$sup" 2>/dev/null; do
            sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.3f", 0.03 + (r % 571) / 1000 }')"
            # $sup is timeout (the subshell exec'd it), its child selfheal.
            spid=$(pgrep -P "$sup" -x selfheal || true)
            ppid=$( [ -n "$spid" ] && pgrep -P "$spid" -x "$comm" || true)
            for p in $ppid; do kill -SEGV "$p" 2>/dev/null && n=$((n + 1)) || true; done
        done
        set +e; wait "$sup"; code=$?; set -e
        secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
        sweep
        "$SELFHEAL" events --store store.db --json -n 100000 > run.events 2>/dev/null || true
        rb=$(grep -c '"kind":"rollback"' run.events || true)
        done_rb=$(grep '"kind":"rollback"' run.events | grep -c '"outcome":"done"' || true)
        restarts=$(grep -c '"kind":"app_restart"' run.events || true)
        runs=$((runs + 1)) crashes=$((crashes + n)) rollbacks=$((rollbacks + done_rb))
        refused=$((refused + rb - done_rb)) restarted=$((restarted + (restarts > 0)))
        restarts_all=$((restarts_all + restarts))
        verdict=ok
        if [ "$code" = 124 ] || [ "$code" = 137 ] ||
            awk -v s="$secs" -v l="$LIMIT" 'BEGIN { exit !(s >= l) }'; then
            verdict="HANG (killed at the ${LIMIT} s limit$([ "$code" = 137 ] && echo ', SIGTERM did not end it'))"
            hangs=$((hangs + 1))
        elif ! cmp -s run.out "$prog.expected"; then
            verdict="WRONG ($(stat -c %s run.out) bytes, $(cmp run.out "$prog.expected" 2>&1 | head -1))"
            wrong=$((wrong + 1))
        elif [ "$code" != 0 ]; then
            verdict="FAILED (exit $code)"; wrong=$((wrong + 1))
        fi
        # Why rollbacks were refused (the events' reason tags), and gave_up.
        why=$(python3 -c "import json,sys,collections
c=collections.Counter()
for l in open(sys.argv[1]):
    e=json.loads(l)
    d=e.get('details') or {}
    if e.get('kind')=='rollback' and d.get('outcome')!='done': c[d.get('reason') or d.get('outcome')]+=1
print(' '.join(f'{k}={v}' for k,v in sorted(c.items())))" run.events 2>/dev/null || true)
        for kv in $why; do reasons[${kv%%=*}]=$(( ${reasons[${kv%%=*}]:-0} + ${kv#*=} )); done
        echo "$prog run $i: ${secs}s, $n SIGSEGV, $done_rb rolled back, $((rb - done_rb)) refused${why:+ ($why)}, $restarts restarts, exit $code: $verdict"
        if [ "$verdict" != ok ]; then
            mkdir -p "$KEEP"
            cp run.err "$KEEP/$prog-$i.err"; cp run.events "$KEEP/$prog-$i.events"
            cp run.out "$KEEP/$prog-$i.out"
        fi
    done
done
why_all=$(for k in "${!reasons[@]}"; do echo -n "$k=${reasons[$k]} "; done)
echo "end: $(date -u +%Y-%m-%dT%H:%M:%SZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "soak-storm: $runs runs ($PROGRAMS), $crashes SIGSEGVs sent, $rollbacks rollbacks done, $refused refused${why_all:+ (${why_all% })}, $restarts_all restarts in $restarted runs, $hangs hangs, $wrong wrong or failed"
[ "$hangs" = 0 ] && [ "$wrong" = 0 ]
