//! How long `kill_all` takes to empty a sandbox holding a 20-task fork bomb,
//! with `cgroup.kill` (unified hierarchy) and with the v1 freeze–SIGKILL–thaw
//! loop. Each run needs a fresh bomb (≈0.1–1 s to fill), which criterion's
//! iteration planning cannot accommodate, so this is a plain harness that
//! prints percentiles. Needs root; prints why it skips otherwise.
//!
//! `cargo bench -p selfheal-cgroup --bench kill_latency` (RUNS=n to change the count)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use selfheal_cgroup::{Sandbox, SandboxConfig};

const FORK_BOMB: &str = "f() { while :; do f & done; }; f";

fn one_run(unified: bool) -> Option<(Duration, u32)> {
    let config = SandboxConfig::new("bench-bomb")
        .pids_max(20)
        .memory_max_bytes(256 << 20)
        .cpus(Some(0.5))
        .use_unified(unified);
    let sandbox = match Sandbox::new(config) {
        Ok(s) => s,
        Err(e) if e.is_unavailable() => {
            eprintln!("SKIP kill_latency: {e}");
            return None;
        }
        Err(e) => panic!("{e}"),
    };
    let mut child = sandbox
        .spawn(
            Command::new("bash")
                .args(["-c", FORK_BOMB])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap();
    let start = Instant::now();
    while sandbox.cgroup().pids().unwrap().unwrap().current < 20 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "bomb did not fill the sandbox"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let report = sandbox.kill_all().unwrap();
    child.wait().unwrap();
    sandbox.close().unwrap();
    Some((report.elapsed, report.rounds))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not: run once then.
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(if std::env::args().any(|a| a == "--bench") {
            30
        } else {
            1
        });
    for (name, unified) in [
        ("cgroup.kill (unified)", true),
        ("v1 freeze-kill-thaw loop", false),
    ] {
        let mut times = Vec::new();
        let mut rounds = Vec::new();
        for _ in 0..runs {
            let Some((t, r)) = one_run(unified) else {
                return;
            };
            times.push(t);
            rounds.push(r);
        }
        times.sort();
        println!(
            "kill_all of a 20-task fork bomb via {name}: n={runs} median {:?} p90 {:?} max {:?}; rounds max {}",
            percentile(&times, 0.5),
            percentile(&times, 0.9),
            times[times.len() - 1],
            rounds.iter().max().unwrap()
        );
    }
}
