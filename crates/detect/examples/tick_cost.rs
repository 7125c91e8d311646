//! Where a light-detector tick's CPU time goes, on this machine's real
//! /proc: the sampler's reads and arithmetic, and the rules' evaluation,
//! each timed with the thread's CPU clock, at the daemon's 100 ms period.
//!
//!     cargo run --release -p selfheal-detect --example tick_cost -- [TICKS] [PERIOD_MS]

use std::time::Duration;

use selfheal_detect::light::LightDetector;
use selfheal_sampler::{ReaderOptions, Sampler};
use selfheal_sys::cputime::thread_cputime;

fn main() {
    let mut args = std::env::args().skip(1);
    let ticks: usize = args.next().map_or(300, |a| a.parse().expect("TICKS"));
    let period = Duration::from_millis(args.next().map_or(100, |a| a.parse().expect("PERIOD_MS")));
    let _ = selfheal_sys::sched::set_fifo(0, 50);
    let mut sampler = Sampler::with_options(
        "/proc",
        ReaderOptions {
            sys_root: Some("/sys".into()),
            ..ReaderOptions::default()
        },
    )
    .expect("sampler");
    let mut detector = LightDetector::new(
        selfheal_config::default_rules(),
        sampler.cpus(),
        50.0,
        Duration::from_secs(30),
    )
    .expect("rules");
    let mut sample = sampler.new_sample();
    // (sample µs, evaluate µs, stat read)
    let mut rows: Vec<(f64, f64, bool)> = Vec::with_capacity(ticks);
    let mut alerts = 0;
    for _ in 0..ticks {
        std::thread::sleep(period);
        let t0 = thread_cputime().unwrap();
        sampler.sample(&mut sample).expect("sample");
        let t1 = thread_cputime().unwrap();
        detector.evaluate(&sample, &mut |_| alerts += 1);
        let t2 = thread_cputime().unwrap();
        rows.push((
            (t1 - t0).as_secs_f64() * 1e6,
            (t2 - t1).as_secs_f64() * 1e6,
            sample.stat_read,
        ));
    }
    let clock = {
        let a = thread_cputime().unwrap();
        let b = thread_cputime().unwrap();
        (b - a).as_secs_f64() * 1e6
    };
    for (label, stat) in [("/proc/stat reads", true), ("idle reads (uptime)", false)] {
        let mut s: Vec<f64> = rows.iter().filter(|r| r.2 == stat).map(|r| r.0).collect();
        let mut e: Vec<f64> = rows.iter().filter(|r| r.2 == stat).map(|r| r.1).collect();
        if s.is_empty() {
            println!("{label}: none");
            continue;
        }
        s.sort_by(f64::total_cmp);
        e.sort_by(f64::total_cmp);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        println!(
            "{label}: {} ticks; sample median {:.1} us mean {:.1} us; evaluate median {:.1} us mean {:.1} us",
            s.len(),
            s[s.len() / 2],
            mean(&s),
            e[e.len() / 2],
            mean(&e)
        );
    }
    println!("thread-clock read itself: {clock:.2} us; alerts {alerts}");
}
