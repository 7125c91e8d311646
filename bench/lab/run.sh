#!/bin/sh
# Runs the hang lab and files the results under lab/results/<kind>-<date>/.
#   bench/lab/run.sh quick            # ~12 min on a 2-core host, first time included
#   bench/lab/run.sh full [RUNS]      # RUNS injections per class (default 20), both threshold profiles
# Extra arguments after these go to `selfheal-lab run` (e.g. --calibrate 60).
set -eu
kind=${1:-quick}
[ $# -gt 0 ] && shift
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cargo build --release -p selfheal-lab
out="lab/results/$kind-$(date -u +%Y-%m-%d)"
case "$kind" in
quick) exec "${CARGO_TARGET_DIR:-target}"/release/selfheal-lab run --quick --out "$out" "$@" ;;
full)
    runs=${1:-20}
    [ $# -gt 0 ] && shift
    exec "${CARGO_TARGET_DIR:-target}"/release/selfheal-lab run --runs "$runs" --profiles both --out "$out" "$@" ;;
*) echo "usage: $0 quick|full [RUNS] [selfheal-lab run options]" >&2; exit 2 ;;
esac
