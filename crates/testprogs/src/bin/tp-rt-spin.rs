//! A real-time busy loop for the RT-hog tests and benchmarks.
//!
//! `tp-rt-spin [--priority P] [--cpu C] [--seconds S] [--policy fifo|other] [--stamp FILE]`
//!
//! Pins itself to CPU C (default 1), switches to SCHED_FIFO priority P
//! (default 20), prints `spinning pid=<pid> tid=<tid> wall_ms=<ms>` and
//! spins (stamping `spin`). It exits on its own after S seconds (default 10, at most 60) so a
//! test that loses track of it can never leave a CPU hogged for long.

#![forbid(unsafe_code)]

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let args = selfheal_testprogs::Args::from_env();
    let priority = args.num("priority", 20) as i32;
    let cpu = args.num("cpu", 1) as usize;
    let seconds = args.num("seconds", 10);
    let policy = args.get("policy").unwrap_or("fifo").to_string();
    let stamp = args.stamp_file();
    let seconds = seconds.min(60);
    if let Err(e) = selfheal_sys::sched::pin_to_cpu(0, cpu) {
        eprintln!("tp-rt-spin: cannot pin to cpu {cpu}: {e}");
        std::process::exit(2);
    }
    let set = match policy.as_str() {
        "fifo" => selfheal_sys::sched::set_fifo(0, priority),
        "other" => Ok(()),
        other => {
            eprintln!("tp-rt-spin: unknown policy {other}");
            std::process::exit(2);
        }
    };
    if let Err(e) = set {
        eprintln!("tp-rt-spin: cannot switch to SCHED_FIFO {priority}: {e}");
        std::process::exit(3);
    }
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    selfheal_testprogs::stamp(stamp.as_deref(), "spin");
    println!(
        "spinning pid={} tid={} wall_ms={wall}",
        std::process::id(),
        selfheal_sys::sched::gettid()
    );
    let _ = std::io::stdout().flush();
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut x = 0u64;
    while Instant::now() < end {
        for i in 0..10_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        std::hint::black_box(x);
    }
}
