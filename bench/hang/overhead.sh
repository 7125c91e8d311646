#!/usr/bin/env bash
# CPU cost of `selfheal watch` at idle, all detectors together (light
# detector, stall canaries, sweep, watchdog chain, kmsg follower, hang
# pipeline), then the light detector alone for comparison; per-thread
# shares show what each part costs. Uses bench/daemon-overhead.sh.
#
#   bench/hang/overhead.sh [DURATION_SECONDS]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-60}
cargo build --release -q -p selfheal-cli --bin selfheal
export SELFHEAL_BIN=${CARGO_TARGET_DIR:-target}/release/selfheal
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '[stall]\nenabled = false\n[heavy]\nsweep_interval = "0"\n[kmsg]\nenabled = false\n' >"$tmp/light-only.toml"
echo "== all detectors (default configuration)"
bench/daemon-overhead.sh "$duration"
echo "== light detector only (stall canaries, sweep and kmsg off)"
bench/daemon-overhead.sh "$duration" -c "$tmp/light-only.toml"
