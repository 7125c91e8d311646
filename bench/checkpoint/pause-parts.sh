#!/bin/bash
# Where a checkpoint's pause goes, per part (stop, maps, look, read, store,
# regs+brk, fds, misc), for one or more selfheal-ckpt builds run in turn on
# the same program, REPS rounds (so drifts of a shared machine hit all
# alike). Prints the median of each part over every checkpoint of every
# round, in microseconds, one line per build. The parts come from the
# engine's debug log (SELFHEAL_CKPT_DEBUG); the pause itself does not
# depend on the machine's load as much as wall time does.
#
#   bench/checkpoint/pause-parts.sh REPS INTERVAL BIN[,BIN...] -- CMD [ARGS...]
#   bench/checkpoint/pause-parts.sh 3 50ms /tmp/ckpt-old,target/release/selfheal-ckpt -- ./churn 100 5000 2
#
# Needs root (a cgroup sandbox of 2 GiB, as run.sh).
set -euo pipefail
[ $# -ge 4 ] || { echo "usage: $0 REPS INTERVAL BIN[,BIN...] -- CMD [ARGS...]" >&2; exit 2; }
REPS=$1 INTERVAL=$2 BINS=$3
shift 3
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: $0 REPS INTERVAL BIN[,BIN...] -- CMD [ARGS...]" >&2; exit 2; }
IFS=, read -r -a bins <<< "$BINS"
for b in "${bins[@]}"; do
    [ -x "$b" ] || { echo "$b: not an executable selfheal-ckpt" >&2; exit 2; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "machine: $(nproc) CPUs, $(uname -r), $(date -u +%Y-%m-%dT%H:%M:%SZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "program: $*   interval: $INTERVAL   reps: $REPS"
for r in $(seq 1 "$REPS"); do
    for i in "${!bins[@]}"; do
        SELFHEAL_CKPT_DEBUG="$tmp/$i.log" timeout 600 "${bins[$i]}" --sandbox 2048 \
            --interval "$INTERVAL" --keep 8 -- "$@" > /dev/null 2> "$tmp/err" \
            || { echo "${bins[$i]} failed:" >&2; cat "$tmp/err" >&2; exit 1; }
    done
done
python3 - "$tmp" "${bins[@]}" <<'PY'
import re, statistics, sys
tmp, bins = sys.argv[1], sys.argv[2:]
unit = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}
def us(v):
    m = re.fullmatch(r"([0-9.]+)(ns|µs|us|ms|s)", v)
    return float(m.group(1)) * unit[m.group(2)]
parts = ["stop", "maps", "look", "read", "store", "regs+brk", "fds", "misc"]
for i, b in enumerate(bins):
    got = {p: [] for p in parts}
    for line in open(f"{tmp}/{i}.log", errors="replace"):
        if not re.match(r".*checkpoint \d+: stop ", line):
            continue
        for p in parts:
            m = re.search(re.escape(p) + r" ([0-9.]+(?:ns|µs|us|ms|s))", line)
            if m:
                got[p].append(us(m.group(1)))
    n = len(got["stop"])
    if n == 0:
        print(f"{b}: no checkpoint lines in the debug log")
        continue
    total = statistics.median([sum(got[p][k] for p in parts) for k in range(n)])
    cells = "  ".join(f"{p} {statistics.median(got[p]):.0f}" for p in parts if got[p])
    print(f"{b}: {n} checkpoints, median µs: {cells}  (sum {total:.0f})")
PY
