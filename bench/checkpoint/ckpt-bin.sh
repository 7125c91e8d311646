# Sourced by the checkpoint benchmarks: builds selfheal-ckpt (release) and
# sets ROOT (the repository) and CKPT (the binary). Honours CARGO_TARGET_DIR.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
(cd "$ROOT" && cargo build --release -q -p selfheal-checkpoint --bin selfheal-ckpt)
CKPT=$CARGO_TARGET_DIR/release/selfheal-ckpt
