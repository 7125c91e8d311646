//! The reader's idle reads (/proc/uptime instead of /proc/stat while every
//! CPU is idle) must not change what the light detector and the stall
//! canaries see when a CPU turns busy: two samplers read the same /proc-like
//! tree at the same moments, one with idle reads (the default
//! `slow_every = 5`) and one taking /proc/stat every time (`slow_every = 1`),
//! and the tree's CPUs run in real time: idle, then CPU 1 spinning in the
//! kernel. Both raise `kernel_spin` and arm CPU 1's canary on the same
//! sample, from the same shares.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use selfheal_config::{default_rules, Level};
use selfheal_detect::stall::free_percent;
use selfheal_detect::LightDetector;
use selfheal_sampler::{CpuMetric, ReaderOptions, Sample, Sampler};

/// A /proc-like tree whose CPUs run in real time: each step adds the wall
/// time since the previous one to every CPU, as idle or as system time, to
/// /proc/stat and /proc/uptime alike.
struct LiveTree {
    dir: PathBuf,
    last: Instant,
    /// Per CPU: (system ns, idle ns).
    ns: Vec<(u128, u128)>,
}

impl LiveTree {
    fn new(cpus: usize) -> LiveTree {
        let dir = std::env::temp_dir().join(format!("selfheal-idle-reads-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vmstat"), "pgmajfault 5\n").unwrap();
        std::fs::write(
            dir.join("meminfo"),
            "MemTotal: 1000000 kB\nMemFree: 900000 kB\nMemAvailable: 900000 kB\nCached: 0 kB\n",
        )
        .unwrap();
        let t = LiveTree {
            dir,
            last: Instant::now(),
            ns: vec![(0, 1_000_000_000_000); cpus],
        };
        t.write();
        t
    }

    fn step(&mut self, busy: &[usize]) {
        let now = Instant::now();
        let d = now.duration_since(self.last).as_nanos();
        self.last = now;
        for (i, c) in self.ns.iter_mut().enumerate() {
            if busy.contains(&i) {
                c.0 += d;
            } else {
                c.1 += d;
            }
        }
        self.write();
    }

    fn write(&self) {
        let hz = u128::from(selfheal_sys::sched::clock_ticks_per_second());
        let ticks = |ns: u128| ns * hz / 1_000_000_000;
        let (sys, idle) = self.ns.iter().fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
        let mut stat = format!("cpu  0 0 {} {} 0 0 0 0 0 0\n", ticks(sys), ticks(idle));
        for (i, c) in self.ns.iter().enumerate() {
            stat += &format!("cpu{i} 0 0 {} {} 0 0 0 0 0 0\n", ticks(c.0), ticks(c.1));
        }
        stat += "intr 1\nctxt 1\nprocesses 1\nprocs_running 1\nprocs_blocked 0\n";
        std::fs::write(self.dir.join("stat"), stat).unwrap();
        let up = format!(
            "5000.00 {}.{:02}\n",
            idle / 1_000_000_000,
            idle / 10_000_000 % 100
        );
        std::fs::write(self.dir.join("uptime"), up).unwrap();
    }
}

impl Drop for LiveTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sampler(root: &Path, slow_every: u64) -> Sampler {
    Sampler::with_options(
        root,
        ReaderOptions {
            sys_root: None,
            slow_every,
        },
    )
    .unwrap()
}

#[test]
fn idle_reads_raise_the_alert_full_reads_raise() {
    let mut tree = LiveTree::new(2);
    let (mut cheap, mut full) = (sampler(&tree.dir, 5), sampler(&tree.dir, 1));
    let rules = default_rules();
    let spin = rules.iter().position(|r| r.name == "kernel_spin").unwrap();
    let detector = || LightDetector::new(rules.clone(), 2, 50.0, Duration::from_secs(30)).unwrap();
    let (mut det_cheap, mut det_full) = (detector(), detector());
    let (mut s_cheap, mut s_full) = (cheap.new_sample(), full.new_sample());
    // Samples 1-7 idle (the first slow read, a quiet one, three that may
    // be idle, a slow one, one more that may be idle), then CPU 1 spins in
    // the kernel from just after sample 7 on: sample 8 is the first to
    // show it, right after an idle read.
    let onset = 8;
    let mut first_alert: [Option<u64>; 2] = [None, None];
    let mut idle_before_onset = 0;
    for seq in 1..=14u64 {
        std::thread::sleep(Duration::from_millis(100));
        tree.step(if seq >= onset { &[1] } else { &[] });
        cheap.sample(&mut s_cheap).unwrap();
        full.sample(&mut s_full).unwrap();
        assert!(s_full.stat_read, "slow_every = 1 always reads /proc/stat");
        if seq == onset - 1 {
            idle_before_onset = cheap.idle_reads();
        }
        if seq >= onset {
            assert!(
                s_cheap.stat_read,
                "sample {seq}: CPU 1 busy, yet an idle read"
            );
            same_shares(seq, &s_cheap, &s_full);
        }
        if seq == onset {
            for s in [&s_cheap, &s_full] {
                let free = free_percent(s, 1).unwrap();
                assert!(
                    free < 20.0,
                    "sample {seq}: CPU 1 {free} % free: canary not armed"
                );
            }
        }
        for (k, (det, s)) in [(&mut det_cheap, &s_cheap), (&mut det_full, &s_full)]
            .into_iter()
            .enumerate()
        {
            det.evaluate(s, &mut |a| {
                if a.rule_index as usize == spin && first_alert[k].is_none() {
                    assert_eq!(a.level, Level::Light);
                    first_alert[k] = Some(s.seq);
                }
            });
        }
    }
    // The cheap path was taken: on a machine too busy to run the steps on
    // time a read may fall back to /proc/stat, but not all of them.
    assert!(
        idle_before_onset >= 2,
        "{idle_before_onset} idle reads before the onset"
    );
    let (a, b) = (first_alert[0].unwrap(), first_alert[1].unwrap());
    assert!(
        a >= onset && b >= onset,
        "alerts at {a} and {b}, onset at {onset}"
    );
    // kernel_spin holds for 200 ms, two periods: which of two samples
    // ends it depends on microseconds between the two readers.
    assert!(
        a.abs_diff(b) <= 1,
        "idle reads alert at {a}, full reads at {b}"
    );
    assert!(a <= onset + 3 && b <= onset + 3, "{a} {b}");
}

/// Per-CPU shares within a tick (10 points at 100 Hz over 100 ms, plus
/// the microseconds between the two readers).
fn same_shares(seq: u64, a: &Sample, b: &Sample) {
    for cpu in 0..2 {
        for m in [
            CpuMetric::SystemPercent,
            CpuMetric::IdlePercent,
            CpuMetric::AccountedPercent,
        ] {
            let (x, y) = (a.cpu(cpu, m), b.cpu(cpu, m));
            assert!(
                (x - y).abs() <= 15.0,
                "sample {seq} cpu {cpu} {m:?}: idle reads {x}, full reads {y}"
            );
        }
    }
    let (x, y) = (a.interval.as_secs_f64(), b.interval.as_secs_f64());
    assert!((x - y).abs() < 0.02, "sample {seq}: intervals {x} and {y}");
}
