//! What the sweep's cgroup reads cost per wake-up, with the counter files
//! kept open (the default) against opened on every read (as before), in
//! one run: rounds of `SCANS` wake-ups 100 ms apart alternate three modes
//! — `none` (wake up only), `reopen` and `kept` — so a drift of a shared
//! machine touches all three. Each wake-up scans like the sweep
//! (`CgroupScanner::scan` with `memory.stat` skipped below 90 %, the list
//! re-walked every 5 s). Prints this thread's run time per wake-up
//! (schedstat, kernel time included) per round and the medians.
//!
//!   cargo run --release -p selfheal-diagnose --example sweep_cost [ROUNDS [SCANS]]
//!
//! The cgroups read are the machine's limited ones;
//! `LIMITED_CGROUPS=N bench/daemon/idle-cost.sh` shows how to add some.

use std::time::{Duration, Instant};

use selfheal_diagnose::cgroups::{CgroupRoots, CgroupScanner, KEPT_FILES_MAX};

/// This thread's run time so far. The kernel adds the running slice to
/// it at a switch, so yield first (sched_yield accounts it).
fn run_ns() -> f64 {
    std::thread::yield_now();
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn arg(n: usize, default: u32, what: &str) -> Result<u32, String> {
    match std::env::args().nth(n) {
        Some(s) => s
            .parse()
            .map_err(|_| format!("{what} must be a whole number, not `{s}`")),
        None => Ok(default),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), String> {
    let rounds = arg(1, 5, "ROUNDS")?.max(1);
    let scans = arg(2, 50, "SCANS")?.max(1);
    let mut scanner = CgroupScanner::new(CgroupRoots::detect(), Duration::from_secs(5));
    scanner.set_detail_above(Some(90.0));
    let watched = scanner.scan().len();
    println!(
        "{watched} limited cgroups; {rounds} rounds of {scans} wake-ups per mode, 100 ms apart"
    );
    let modes = ["none", "reopen", "kept"];
    let mut per: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut walks = Vec::new();
    let mut lists = Vec::new();
    let mut next = Instant::now();
    for r in 0..rounds {
        let mut line = format!("round {}:", r + 1);
        for (m, mode) in modes.iter().enumerate() {
            scanner.set_kept_files_max(if *mode == "kept" { KEPT_FILES_MAX } else { 0 });
            if *mode != "none" {
                scanner.scan(); // the walk after a mode change is not timed
            }
            let run0 = run_ns();
            for _ in 0..scans {
                next += Duration::from_millis(100);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                if *mode != "none" {
                    std::hint::black_box(scanner.scan());
                }
            }
            let us = (run_ns() - run0) / 1000.0 / f64::from(scans);
            per[m].push(us);
            line += &format!("  {mode} {us:.1} us");
        }
        // The walk that finds limited cgroups (every 5 s in the daemon),
        // back to back: it reads every cgroup directory's limit file.
        let run0 = run_ns();
        for _ in 0..10 {
            scanner.walk();
        }
        let walk = (run_ns() - run0) / 1000.0 / 10.0;
        walks.push(walk);
        // Listing the same directories without reading a limit file: the
        // share a v2 walk (one hierarchy for both controllers) lists once
        // instead of twice.
        let run0 = run_ns();
        for _ in 0..10 {
            std::hint::black_box(dirs());
        }
        let list = (run_ns() - run0) / 1000.0 / 10.0;
        lists.push(list);
        println!(
            "{line}  walk {walk:.0} us, listing alone {list:.0} us  (open now: {})",
            scanner.open_files()
        );
    }
    let med: Vec<f64> = per.iter_mut().map(|v| median(v)).collect();
    println!(
        "median us per wake-up: none {:.1}, reopen {:.1}, kept {:.1}; the scan itself: reopen {:.1}, kept {:.1} ({:.1} and {:.1} per cgroup)",
        med[0],
        med[1],
        med[2],
        med[1] - med[0],
        med[2] - med[0],
        (med[1] - med[0]) / watched.max(1) as f64,
        (med[2] - med[0]) / watched.max(1) as f64,
    );
    println!(
        "median walk {:.0} us, listing alone {:.0} us, over {} cgroup directories ({} listed by the walk)",
        median(&mut walks),
        median(&mut lists),
        dirs(),
        scanner.last_walk_dirs()
    );
    Ok(())
}

/// Cgroup directories in the memory and pids hierarchies (what a walk lists).
fn dirs() -> usize {
    let roots = CgroupRoots::detect();
    let mut n = 0;
    let mut stack: Vec<std::path::PathBuf> = [roots.memory, roots.pids]
        .into_iter()
        .flatten()
        .map(|(r, _)| r)
        .collect();
    while let Some(d) = stack.pop() {
        n += 1;
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    n
}
