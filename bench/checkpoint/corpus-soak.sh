#!/bin/bash
# The real-program corpus under fire: N SIGSEGVs per program, each program
# run under `selfheal run --checkpoint-interval 50ms --keep 8` with the
# signals sent from outside at random moments, every output compared with
# a fault-free run of the same command (crates/cli/tests/corpus_harness).
# Prints a Markdown table per program: injections, rollbacks done,
# refusals and restarts with their reasons, runs whose result differs,
# crashed program processes no rollback event names, runs that did not
# end within the deadline (hung), and silently wrong runs (exit 0,
# different result: must be 0).
#
#   bench/checkpoint/corpus-soak.sh [N] [OUT_DIR] [PROGRAMS]
#
# N: injections per program (default 20; 4 per run). PROGRAMS: a comma
# list of case names (default: all; see CASES in corpus_harness/mod.rs).
# Raw results: OUT_DIR/corpus-soak.jsonl, one JSON line per run.
# SELFHEAL_CORPUS_SCALE (default 1.0) sizes the inputs: 1.0 gives each
# program one to three seconds of CPU time unsupervised.
#
# Safety: the signals go only to the program that this run's own
# `selfheal run` started, found in the cgroup sandbox created for that run
# (512 MiB, 128 pids), and are sent through a pidfd. Needs root, and the
# programs (scripts/install-deps); missing ones are skipped and listed.
set -euo pipefail
N=${1:-20}
OUT=${2:-$(mktemp -d /tmp/ckpt-corpus-soak.XXXXXX)}
ONLY=${3:-}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "needs root (ptrace, userfaultfd, cgroup sandbox)" >&2; exit 1; }
mkdir -p "$OUT"
RES=$OUT/corpus-soak.jsonl
: > "$RES"
echo "machine: $(nproc) CPUs, $(uname -r), $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$ROOT" rev-parse --short HEAD)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)   injections per program: $N   raw: $RES"
status=0
(cd "$ROOT" && SELFHEAL_CORPUS_SOAK=$N SELFHEAL_CORPUS_RESULTS=$RES SELFHEAL_CORPUS_ONLY=$ONLY \
    cargo test -q -p selfheal-cli --test corpus -- --ignored --exact soak --nocapture) \
    > "$OUT/test.log" 2>&1 || status=$?
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
grep '^SKIP' "$OUT/test.log" | sort -u || true
py=0
python3 - "$RES" <<'PY' || py=$?
import collections, json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = collections.OrderedDict()
for r in runs:
    by.setdefault(r["case"], []).append(r)
print()
print("| program | runs | injected | rollbacks | refused (reason × n) | restarts | differing runs (all explained?) | crashed processes without event | hung | silently wrong | longest run s |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
tot = collections.Counter()
for case, rs in by.items():
    reasons = collections.Counter(x for r in rs for x in r["impossible"])
    differ = [r for r in rs if not r["identical"]]
    unexplained = [r for r in differ if not r["impossible"]]
    wrong = sum(r["silently_wrong"] for r in rs)
    c = collections.Counter(
        runs=len(rs), injected=sum(r["injected"] for r in rs),
        rollbacks=sum(r["rolled_back"] for r in rs),
        refused=sum(reasons.values()), restarts=sum(r["restarts"] for r in rs),
        differ=len(differ), unexplained=len(unexplained), wrong=wrong,
        hung=sum(r.get("hung", False) for r in rs),
        noevent=sum(len(r.get("unaccounted", [])) for r in rs))
    tot.update(c)
    why = ", ".join(f"{k} × {v}" for k, v in reasons.most_common()) or "-"
    print(f"| {case} | {c['runs']} | {c['injected']} | {c['rollbacks']} | {c['refused']}: {why} | "
          f"{c['restarts']} | {c['differ']} ({'yes' if not unexplained else f'{len(unexplained)} not'}) | "
          f"{c['noevent']} | {c['hung']} | {wrong} | {max(r['wall_ms'] for r in rs) / 1e3:.1f} |")
print(f"| **all** | {tot['runs']} | {tot['injected']} | {tot['rollbacks']} | {tot['refused']} | "
      f"{tot['restarts']} | {tot['differ']} ({tot['unexplained']} unexplained) | {tot['noevent']} | {tot['hung']} | **{tot['wrong']}** | |")
nonzero = [r for r in runs if r["exit"] != 0]
if nonzero:
    print()
    print("Runs that did not exit 0:", ", ".join(f"{r['case']} (exit {r['exit']}, {r['impossible']})" for r in nonzero))
sys.exit(1 if tot["wrong"] or tot["unexplained"] or tot["hung"] or tot["noevent"] else 0)
PY
[ "$status" = 0 ] || { echo "the soak test failed (exit $status): see $OUT/test.log" >&2; tail -20 "$OUT/test.log" >&2; }
[ "$status" = 0 ] && [ "$py" = 0 ]
