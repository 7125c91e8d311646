//! A process whose memory grows steadily, for the memory-exhaustion tests.
//!
//! `tp-memhog [--rate-mib N] [--max-mib M] [--seconds S] [--stamp FILE] [churn]`
//!
//! Allocates and touches N MiB per second (default 20) up to M MiB
//! (default 256), then holds it; `churn` frees everything at M and
//! starts again (legitimate memory churn). Prints `grown mib=<n>` after
//! each step and exits by itself after S seconds (default 60, at most 600).

#![forbid(unsafe_code)]

use std::io::Write;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

fn main() {
    let args = selfheal_testprogs::Args::from_env();
    let rate = args.num("rate-mib", 20).max(1) as usize;
    let max = args.num("max-mib", 256) as usize;
    let seconds = args.num("seconds", 60).min(600);
    let churn = args.words.iter().any(|w| w == "churn");
    selfheal_testprogs::stamp(args.stamp_file().as_deref(), "start");
    let end = Instant::now() + Duration::from_secs(seconds);
    let step = Duration::from_millis(100);
    let per_step = (rate * MIB / 10).max(4096);
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    let mut out = std::io::stdout();
    while Instant::now() < end {
        let t = Instant::now();
        if total + per_step <= max * MIB {
            // Touch every page so the memory is really resident.
            let mut chunk = vec![0u8; per_step];
            for i in (0..chunk.len()).step_by(4096) {
                chunk[i] = 1;
            }
            total += chunk.len();
            held.push(chunk);
            let _ = writeln!(out, "grown mib={}", total / MIB);
            let _ = out.flush();
        } else if churn {
            held.clear();
            total = 0;
        }
        std::thread::sleep(step.saturating_sub(t.elapsed()));
    }
    std::hint::black_box(&held);
}
