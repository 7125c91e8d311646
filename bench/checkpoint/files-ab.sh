#!/bin/bash
# What file tracking costs, side by side: each workload unsupervised,
# checkpointed at INTERVAL with file tracking (the default) and without
# (--no-file-tracking), REPS rounds interleaved so drifts of a shared
# machine hit all three alike. Prints medians, overheads against the
# unsupervised median, and the calls the seccomp filter asked about.
#
#   bench/checkpoint/files-ab.sh [REPS] [INTERVAL] [OUT_DIR]
#
# Workloads: churn (100 MB resident, ~22 MB/s of dirty pages, writes no
# files: the <= 3 % budget) and emit (~20 MB/s of output through stdout in
# 4 KiB and 64 KiB write()s) to a file and to a pipe. Needs root (cgroup
# sandbox of 2 GiB) and cc.
set -euo pipefail
REPS=${1:-5}
INTERVAL=${2:-50ms}
OUT=${3:-$(mktemp -d /tmp/ckpt-files-ab.XXXXXX)}
mkdir -p "$OUT"
[ "$(id -u)" = 0 ] || { echo "needs root for the cgroup sandbox" >&2; exit 1; }
. "$(dirname "$0")/ckpt-bin.sh"
cc -O2 -o "$OUT/churn" "$ROOT/bench/checkpoint/churn.c"
cc -O2 -o "$OUT/emit" "$ROOT/bench/checkpoint/emit.c"

# name | command | where stdout goes (file or pipe)
WORKLOADS=(
  "churn 100 MB, 2 pages/round (no files)|./churn 100 8000 2|file"
  "emit 20 KB/round in 4 KiB writes, to a file|./emit 5000 20 4096|file"
  "emit 20 KB/round in 4 KiB writes, to a pipe|./emit 5000 20 4096|pipe"
  "emit 20 KB/round in 64 KiB writes, to a file|./emit 5000 20 65536|file"
)
CONFIGS=(none files nofiles)

echo "machine: $(nproc) CPUs, $(uname -r), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)   interval: $INTERVAL   reps: $REPS   raw: $OUT"
for r in $(seq 1 "$REPS"); do
    for w in "${!WORKLOADS[@]}"; do
        IFS='|' read -r name cmd dest <<<"${WORKLOADS[$w]}"
        for cfg in "${CONFIGS[@]}"; do
            case $cfg in
                none) opts=(--no-checkpoint) ;;
                files) opts=(--interval "$INTERVAL" --keep 8) ;;
                nofiles) opts=(--interval "$INTERVAL" --keep 8 --no-file-tracking) ;;
            esac
            sum="$OUT/w$w.$cfg.$r.json"
            # shellcheck disable=SC2086
            if [ "$dest" = pipe ]; then
                (cd "$OUT" && timeout 600 "$CKPT" --sandbox 2048 --summary "$sum" "${opts[@]}" -- $cmd 2>/dev/null | cat > /dev/null)
            else
                (cd "$OUT" && timeout 600 "$CKPT" --sandbox 2048 --summary "$sum" "${opts[@]}" -- $cmd > "$OUT/out.$w" 2>/dev/null)
            fi
        done
    done
done
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$OUT" "$REPS" "${#WORKLOADS[@]}" "${WORKLOADS[@]}" <<'PY'
import json, statistics, sys
out, reps, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names = [w.split('|')[0] for w in sys.argv[4:4 + n]]
print()
print("| workload | unsupervised s | with file tracking | without | tracking's share | filter calls/s | output MB/s |")
print("|---|---|---|---|---|---|---|")
for w, name in enumerate(names):
    med = {}
    calls = []
    for cfg in ("none", "files", "nofiles"):
        runs = [json.load(open(f"{out}/w{w}.{cfg}.{r}.json")) for r in range(1, reps + 1)]
        med[cfg] = statistics.median(x["wall_ms"] for x in runs) / 1e3
        if cfg == "files":
            calls = [x.get("file_calls", 0) / (x["wall_ms"] / 1e3) for x in runs]
    base = med["none"]
    pct = lambda v: f"{100 * (v - base) / base:+.1f}%"
    mbs = "-"
    if name.startswith("emit"):
        # 5000 rounds x 20 KiB
        mbs = f"{5000 * 20 / 1024 / base:.1f}"
    print(f"| {name} | {base:.2f} | {med['files']:.2f} ({pct(med['files'])}) | "
          f"{med['nofiles']:.2f} ({pct(med['nofiles'])}) | "
          f"{100 * (med['files'] - med['nofiles']) / base:+.1f} pts | "
          f"{statistics.median(calls):.0f} | {mbs} |")
PY
