#!/bin/bash
# VM-μCheckpoint numbers on a real TCG guest: overhead on a guest workload
# at 50 ms vs no checkpoints (alternating pairs in one run), checkpoint
# pause p50/p99, rollback time of the running guest, and detection to
# rollback for hangs and panics under `selfheal vm`. See the header of
# crates/vm/examples/vm-bench.rs for what each number is.
#
#   bench/vm/run.sh [vm-bench options]    e.g. --pairs 3 --window 30 --mem 512
#
# Needs root, qemu-system-x86_64 and busybox-static (scripts/install-deps);
# the guest kernel comes from the hang lab's cache (fetched with apt-get
# download if missing). Prints the numbers and keeps a copy in
# bench/vm/results/bench-DATE.txt with the machine and its load.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
(cd "$ROOT" && cargo build --release -q -p selfheal-vm --example vm-bench)
OUT=$ROOT/bench/vm/results/bench-$(date -u +%F).txt
{
    echo "# bench/vm/run.sh $* -- $(date -u '+%F %H:%M UTC')"
    echo "# host: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r), $(qemu-system-x86_64 --version | head -1)"
    echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    "$CARGO_TARGET_DIR/release/examples/vm-bench" "$@"
    echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
} 2>&1 | tee "$OUT"
