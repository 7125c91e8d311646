#!/bin/sh
# Supervisor latency benchmark: crash -> restart, watchdog and probe
# deadline -> hang detection, measured against the test programs' own
# wall-clock stamps. Targets: restart within 50 ms plus the configured
# backoff; hang declared within 50 ms of the watchdog or probe deadline.
#
# Usage: bench/supervise/run.sh [--runs N] [--backoff-ms B]
# (defaults: 30 runs per measurement, a 100 ms backoff for the second
# crash measurement). Runs unprivileged; the programs it starts are benign
# (they exit, go silent, or stop answering) and are killed on the way out.
set -eu
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
exec cargo bench --quiet -p selfheal-supervise --bench latency -- "$@"
