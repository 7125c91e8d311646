#!/bin/bash
# Interleaved A/B of one program: unsupervised and checkpointed at
# INTERVAL in several configurations, REPS rounds in turn (so drifts of a
# shared machine hit all alike). Prints each run and the medians with
# overheads against the unsupervised median.
#
#   bench/checkpoint/ab.sh [REPS] [INTERVAL] -- CMD [ARGS...]
#   bench/checkpoint/ab.sh 7 50ms -- ./churn 100 20000 2    (from OUT of run.sh)
#   CONFIGS="none precopy no-files" bench/checkpoint/ab.sh 9 50ms -- ./churn 100 20000 2
#
# CONFIGS (default "none precopy no-precopy"): none (unsupervised),
# precopy (the defaults: pre-copy, file tracking by seccomp user
# notification), no-precopy, no-files (pre-copy, no file tracking),
# base (the defaults, run by the selfheal-ckpt binary in CKPT_B: another
# build, say the commit before a change, compared in the same rounds).
#
#   CKPT_B=/tmp/ckpt-old CONFIGS="none base precopy" bench/checkpoint/ab.sh 9 50ms -- ./churn 100 20000 2
#
# Needs root (cgroup sandbox of 2 GiB, as run.sh).
set -euo pipefail
REPS=${1:-5}
INTERVAL=${2:-50ms}
shift 2 || true
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: $0 [REPS] [INTERVAL] -- CMD [ARGS...]" >&2; exit 2; }
. "$(dirname "$0")/ckpt-bin.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "machine: $(nproc) CPUs, $(uname -r), $(date -u +%Y-%m-%dT%H:%M:%SZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
CONFIGS=${CONFIGS:-none precopy no-precopy}
case " $CONFIGS " in *" none "*) ;; *) echo "CONFIGS must include none (the baseline)" >&2; exit 2 ;; esac
case " $CONFIGS " in
    *" base "*)
        [ -x "${CKPT_B:-}" ] || { echo "CONFIGS has base: set CKPT_B to another selfheal-ckpt binary" >&2; exit 2; }
        echo "base: $CKPT_B ($(stat -c '%y' "$CKPT_B" | cut -d. -f1))" ;;
esac
echo "program: $*   interval: $INTERVAL   reps: $REPS   commit: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- crates || echo +changes)"
for r in $(seq 1 "$REPS"); do
    for cfg in $CONFIGS; do
        case $cfg in
            none) opts=(--no-checkpoint) ;;
            precopy) opts=(--interval "$INTERVAL" --keep 8) ;;
            no-precopy) opts=(--interval "$INTERVAL" --keep 8 --no-precopy) ;;
            no-files) opts=(--interval "$INTERVAL" --keep 8 --no-file-tracking) ;;
            base) opts=(--interval "$INTERVAL" --keep 8) ;;
            *) echo "unknown configuration $cfg" >&2; exit 2 ;;
        esac
        bin=$CKPT
        [ "$cfg" = base ] && bin=$CKPT_B
        timeout 600 "$bin" --sandbox 2048 --summary "$tmp/$cfg.$r.json" "${opts[@]}" -- "$@" > /dev/null
    done
done
python3 - "$tmp" "$REPS" $CONFIGS <<'PY'
import json, statistics, sys
tmp, reps = sys.argv[1], int(sys.argv[2])
res = {}
for cfg in ["none"] + [c for c in sys.argv[3:] if c != "none"]:
    runs = [json.load(open(f"{tmp}/{cfg}.{r}.json")) for r in range(1, reps + 1)]
    res[cfg] = runs
base = statistics.median(r["wall_ms"] for r in res["none"])
for cfg, runs in res.items():
    walls = [r["wall_ms"] / 1e3 for r in runs]
    med = statistics.median(walls)
    line = f"{cfg:11s} wall s median {med:.3f} (runs {' '.join(f'{w:.2f}' for w in walls)})"
    if cfg != "none":
        pauses = [r["pause_us"]["mean"] * r["checkpoints"] / r["wall_ms"] / 10 for r in runs]
        p99 = statistics.median(r["pause_us"]["p99"] for r in runs) / 1e3
        longest = statistics.median(r["pause_us"]["max"] for r in runs) / 1e3
        # Each run against the unsupervised run of its own round: the
        # ratio a shared machine's drifts disturb least.
        paired = statistics.median(r["wall_ms"] / n["wall_ms"] for r, n in zip(runs, res["none"]))
        line += (f"  overhead {100 * (med * 1e3 - base) / base:+.1f}%"
                 f" (paired {100 * (paired - 1):+.1f}%)"
                 f"  pause share {statistics.median(pauses):.1f}%  pause p99 {p99:.2f} ms"
                 f"  longest {longest:.1f} ms")
    print(line)
PY
