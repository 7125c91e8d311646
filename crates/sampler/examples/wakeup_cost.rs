//! What the light thread's reads cost per 100 ms wake-up in Rust, to set
//! beside `bench/wakeup-floor.c` mode 3 (the same reads from a C thread):
//! the difference is the reader's own parsing and bookkeeping.
//!
//!   cargo run --release -p selfheal-sampler --example wakeup_cost [reader|sampler] [WAKEUPS]
//!
//! Prints the wall time of one read and this thread's run time per
//! wake-up (schedstat, kernel time included), at normal priority.

use std::time::{Duration, Instant};

use selfheal_procfs::system::SystemReader;
use selfheal_sampler::Sampler;

fn run_ns() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let what = std::env::args().nth(1).unwrap_or_else(|| "reader".into());
    let n: u32 = match std::env::args().nth(2) {
        Some(s) => s
            .parse()
            .map_err(|_| format!("WAKEUPS must be a number, not `{s}`"))?,
        None => 200,
    };
    let mut reader = SystemReader::new("/proc")?;
    let mut counters = reader.new_counters();
    let mut sampler = Sampler::new("/proc")?;
    let mut sample = sampler.new_sample();
    let (mut wall, mut fresh) = (Duration::ZERO, 0);
    let run0 = run_ns();
    let mut next = Instant::now();
    for _ in 0..n {
        next += Duration::from_millis(100);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let t0 = Instant::now();
        if what == "sampler" {
            sampler.sample(&mut sample)?;
        } else {
            reader.read(&mut counters)?;
            fresh += u32::from(counters.mem_fresh);
        }
        wall += t0.elapsed();
    }
    let fresh = if what == "sampler" {
        String::new()
    } else {
        format!(" (meminfo read on {fresh})")
    };
    println!(
        "{what}: {:.1} us per read, thread {:.1} us per wake-up over {n} wake-ups{fresh}",
        wall.as_secs_f64() * 1e6 / f64::from(n),
        (run_ns() - run0) / 1000.0 / f64::from(n),
    );
    Ok(())
}
