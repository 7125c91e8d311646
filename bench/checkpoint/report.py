#!/usr/bin/env python3
"""Summarises bench/checkpoint/run.sh results as a Markdown table.

Usage: report.py OUT_DIR REPS "name|cmd" ...
Overhead compares best-of-N wall times (the least disturbed run on a shared
machine) and, in parentheses, medians. Pause percentiles are over all checkpoints of all
repetitions; "steady" leaves out checkpoints that copied more than 4096
pages (16 MB: the program filling its memory for the first time).
"dirty MB/s" is pages copied per second of native run time (base copy
included), "pause share" the sum of pauses over the run's wall time.
"""
import json
import re
import statistics
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def pct(v, p):
    if not v:
        return 0
    v = sorted(v)
    return v[round((len(v) - 1) * p)]


def main():
    out, reps, workloads = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    print("| program | interval | wall s best (median) | overhead best (median) | pause p50 ms | pause p99 ms | steady p99 ms | steady CPU p50/p99 ms | pages/ckpt mean | dirty MB/s | pause share | memory held MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for w in workloads:
        name = w.split("|", 1)[0]
        tag = re.sub(r"[^A-Za-z0-9.-]", "_", name)
        base = [load(f"{out}/{tag}.none.{r}.json") for r in range(1, reps + 1)]
        base_wall = statistics.median(b["wall_ms"] for b in base if b) / 1e3
        base_min = min(b["wall_ms"] for b in base if b) / 1e3
        print(f"| {name} | none | {base_min:.2f} ({base_wall:.2f}) | - | | | | | | | | |")
        for cfg in ("50ms", "100ms", "1s"):
            runs = [load(f"{out}/{tag}.{cfg}.{r}.json") for r in range(1, reps + 1)]
            runs = [r for r in runs if r]
            if not runs:
                continue
            wall = statistics.median(r["wall_ms"] for r in runs) / 1e3
            wall_min = min(r["wall_ms"] for r in runs) / 1e3
            # Per-checkpoint pauses are only summarised per run: combine
            # the runs' percentiles (median of p50, max of p99).
            p50 = statistics.median(r["pause_us"]["p50"] for r in runs) / 1e3
            p99 = max(r["pause_us"]["p99"] for r in runs) / 1e3
            steady = max(r.get("steady_pause_us", {}).get("p99", 0) for r in runs) / 1e3
            cpu50 = statistics.median(r.get("steady_cpu_us", {}).get("p50", 0) for r in runs) / 1e3
            cpu99 = max(r.get("steady_cpu_us", {}).get("p99", 0) for r in runs) / 1e3
            pages = statistics.mean(r["pages_copied"]["mean"] for r in runs)
            n = statistics.mean(r["checkpoints"] for r in runs)
            dirty = pages * n * 4096 / (1 << 20) / base_wall
            mem = max(r["memory_held_max_bytes"] for r in runs) / (1 << 20)
            over = (wall / base_wall - 1) * 100
            over_min = (wall_min / base_min - 1) * 100
            share = statistics.median(
                r["pause_us"]["mean"] * r["checkpoints"] / (r["wall_ms"] * 1e3) * 100 for r in runs)
            print(f"| {name} | {cfg} | {wall_min:.2f} ({wall:.2f}) | {over_min:+.1f}% ({over:+.1f}%) | {p50:.2f} | {p99:.2f} | {steady:.2f} | {cpu50:.2f}/{cpu99:.2f} | {pages:.0f} | {dirty:.0f} | {share:.1f}% | {mem:.0f} |")
    for tag, what in (("rollback", "to the newest checkpoint (crashes 1.5 s apart)"),
                      ("rollback-window", "crashes 0.6 s apart, inside the 1 s recurrence window")):
        rb = load(f"{out}/{tag}.json")
        if not rb:
            continue
        times = [r["duration_us"] / 1e3 for r in rb["rollbacks"]]
        pages = [r["pages_restored"] for r in rb["rollbacks"]]
        ages = [r["checkpoint_age_ms"] for r in rb["rollbacks"]]
        print()
        print(f"Rollback at ~100 MB resident (churn 100 MB), {what}: {len(times)} rollbacks, "
              f"time ms min/median/max = {min(times, default=0):.2f}/{statistics.median(times) if times else 0:.2f}/"
              f"{max(times, default=0):.2f}, pages restored median {statistics.median(pages) if pages else 0}, "
              f"checkpoint age ms median {statistics.median(ages) if ages else 0}")

if __name__ == "__main__":
    main()
