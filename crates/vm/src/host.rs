//! What the host sees of a running QEMU: CPU time of its threads and of
//! each vCPU thread, and how often its threads were scheduled in, sampled
//! from `/proc/PID/task/TID/schedstat` (ns; `stat`'s clock ticks as a
//! fallback). Before acting on a silent guest the policy asks what QEMU
//! got over the silence: never scheduled in means QEMU is stopped, frozen
//! or starved on the host — not a hung guest. (An idle QEMU still wakes for
//! its timers several times a second.)

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use selfheal_procfs::task::{list_tids, TaskDir};

/// Samples kept (at the runner's 250 ms: a minute).
const KEEP: usize = 240;

#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    /// CPU time of QEMU's threads since the probe began, ns: summed per
    /// thread from one sample to the next, so a thread that exits takes
    /// nothing back (its time since the sample before is lost, but the
    /// counter never goes down).
    total_ns: u64,
    /// Times any of them was scheduled in, counted the same way.
    slices: u64,
    /// Per vCPU: (index, ns).
    vcpus: Vec<(u32, u64)>,
    /// The vCPU threads' time runnable waiting for a CPU, summed, ns.
    vcpu_wait_ns: u64,
    /// Every thread was stopped (T or t) when sampled.
    stopped: bool,
}

/// CPU-time samples of one QEMU process.
#[derive(Debug)]
pub struct HostProbe {
    proc_root: PathBuf,
    pid: i32,
    vcpus: Vec<(u32, i32)>,
    samples: VecDeque<Sample>,
    /// Each thread's (tid, CPU ns, times scheduled in) at the last sample.
    last_threads: Vec<(i32, u64, u64)>,
}

impl HostProbe {
    /// Probes `pid` under `proc_root`.
    pub fn new(proc_root: PathBuf, pid: i32) -> HostProbe {
        HostProbe {
            proc_root,
            pid,
            vcpus: Vec::new(),
            samples: VecDeque::new(),
            last_threads: Vec::new(),
        }
    }

    /// The vCPU threads (cpu index, tid), from QMP `query-cpus-fast`.
    pub fn set_vcpus(&mut self, vcpus: Vec<(u32, i32)>) {
        self.vcpus = vcpus;
    }

    /// The vCPU threads known.
    pub fn vcpus(&self) -> &[(u32, i32)] {
        &self.vcpus
    }

    /// (CPU ns, ns waiting for a CPU, times scheduled in) of one thread.
    fn thread(&self, tid: i32) -> Option<(u64, u64, u64)> {
        let t = TaskDir::thread(&self.proc_root, self.pid, tid);
        match t.schedstat() {
            Ok(s) => Some((s.run_ns, s.wait_ns, s.timeslices)),
            // 10 ms per USER_HZ tick (100 Hz on every Linux we run on);
            // context switches from status stand in for timeslices; no
            // wait time without schedstat.
            Err(_) => {
                let ns = t.stat().ok()?.cpu_ticks() * 10_000_000;
                let st = t.status().ok()?;
                let cs = st.voluntary_ctxt_switches.unwrap_or(0)
                    + st.nonvoluntary_ctxt_switches.unwrap_or(0);
                Some((ns, 0, cs))
            }
        }
    }

    /// Takes a sample now.
    pub fn sample(&mut self, now: Instant) {
        let Ok(tids) = list_tids(&self.proc_root, self.pid) else {
            return;
        };
        // Threads come and go (QEMU's worker pool): a plain sum over the
        // threads there now drops when one with a long history exits, and
        // would read as "never scheduled in". Count what each thread did
        // since the last sample instead (all of it for a new thread).
        let threads: Vec<(i32, u64, u64)> = tids
            .iter()
            .filter_map(|t| self.thread(*t).map(|(ns, _, n)| (*t, ns, n)))
            .collect();
        let (mut d_ns, mut d_slices) = (0u64, 0u64);
        for &(tid, ns, n) in &threads {
            let (ns0, n0) = self
                .last_threads
                .iter()
                .find(|(t, _, _)| *t == tid)
                .map_or((0, 0), |&(_, ns0, n0)| (ns0, n0));
            d_ns += ns.saturating_sub(ns0);
            d_slices += n.saturating_sub(n0);
        }
        self.last_threads = threads;
        let (total_ns, slices) = self.samples.back().map_or((d_ns, d_slices), |b| {
            (b.total_ns + d_ns, b.slices + d_slices)
        });
        // Every thread in a job-control or ptrace stop. (Under the
        // checkpoint engine a SIGSTOPped QEMU is still scheduled in for
        // the engine's stops, so its CPU counters alone do not show it.)
        let stopped = !tids.is_empty()
            && tids.iter().all(|t| {
                TaskDir::thread(&self.proc_root, self.pid, *t)
                    .stat()
                    .is_ok_and(|s| matches!(s.state, 'T' | 't'))
            });
        let mut vcpu_wait_ns = 0;
        let vcpus = self
            .vcpus
            .iter()
            .filter_map(|(i, tid)| {
                let (run, wait, _) = self.thread(*tid)?;
                vcpu_wait_ns += wait;
                Some((*i, run))
            })
            .collect();
        self.samples.push_back(Sample {
            at: now,
            total_ns,
            slices,
            vcpus,
            vcpu_wait_ns,
            stopped,
        });
        while self.samples.len() > KEEP {
            self.samples.pop_front();
        }
    }

    /// What QEMU got within the last `window` (only samples inside it, so
    /// the interval never reaches back before a stop or hang began): CPU
    /// ms, times its threads were scheduled in, and each vCPU's share of
    /// the interval (0–1). `None` without two samples in the window.
    pub fn over(&self, window: Duration) -> Option<Usage> {
        let last = self.samples.back()?;
        let since = last.at.checked_sub(window).unwrap_or(last.at);
        let first = self.samples.iter().find(|s| s.at >= since)?;
        let span = last.at.saturating_duration_since(first.at);
        if span.is_zero() {
            return None;
        }
        let cpu_ms = last.total_ns.saturating_sub(first.total_ns) as f64 / 1e6;
        let scheduled = last.slices.saturating_sub(first.slices);
        let mut vcpu_run_ns = 0;
        let vcpus = last
            .vcpus
            .iter()
            .map(|(i, ns)| {
                let before = first
                    .vcpus
                    .iter()
                    .find(|(j, _)| j == i)
                    .map_or(*ns, |(_, b)| *b);
                vcpu_run_ns += ns.saturating_sub(before);
                let share = ns.saturating_sub(before) as f64 / span.as_nanos() as f64;
                (*i, (share * 1000.0).round() / 1000.0)
            })
            .collect();
        let known = !last.vcpus.is_empty() && first.vcpus.len() == last.vcpus.len();
        Some(Usage {
            span,
            cpu_ms,
            scheduled,
            vcpus,
            vcpu_run_ms: known.then_some(vcpu_run_ns as f64 / 1e6),
            vcpu_wait_ms: known
                .then(|| last.vcpu_wait_ns.saturating_sub(first.vcpu_wait_ns) as f64 / 1e6),
        })
    }
}

impl HostProbe {
    /// Of the time since `since`, how long QEMU could run the guest's
    /// vCPUs, ms: each sampling interval counts for the share of the CPU
    /// time the vCPU threads wanted (ran + waited runnable) that they got;
    /// in full when they wanted next to none (an idle or halted guest), not
    /// at all when no QEMU thread was scheduled in (frozen) or every thread
    /// was stopped at both ends (SIGSTOP; a checkpoint's stop at both ends
    /// by chance only delays a verdict).
    /// `None` without two samples after `since`.
    pub fn runnable_since(&self, since: Instant) -> Option<f64> {
        let mut total = 0.0;
        let mut any = false;
        let pairs = self.samples.iter().zip(self.samples.iter().skip(1));
        for (a, b) in pairs.filter(|(_, b)| b.at > since) {
            any = true;
            let dt =
                b.at.saturating_duration_since(a.at.max(since))
                    .as_secs_f64()
                    * 1e3;
            let span = b.at.saturating_duration_since(a.at).as_secs_f64() * 1e3;
            let share = if b.slices == a.slices || (a.stopped && b.stopped) {
                0.0
            } else if b.vcpus.is_empty() || a.vcpus.len() != b.vcpus.len() {
                1.0
            } else {
                let run: u64 = b
                    .vcpus
                    .iter()
                    .zip(&a.vcpus)
                    .map(|((_, x), (_, y))| x.saturating_sub(*y))
                    .sum();
                let run = run as f64 / 1e6;
                let wait = b.vcpu_wait_ns.saturating_sub(a.vcpu_wait_ns) as f64 / 1e6;
                if run + wait < 0.05 * span {
                    1.0
                } else {
                    run / (run + wait)
                }
            };
            total += dt * share;
        }
        any.then_some(total)
    }
}

/// What QEMU got over an interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    /// The interval measured.
    pub span: Duration,
    /// CPU time of all its threads, ms.
    pub cpu_ms: f64,
    /// Times its threads were scheduled in.
    pub scheduled: u64,
    /// Per vCPU: (index, share of the interval it ran, 0–1).
    pub vcpus: Vec<(u32, f64)>,
    /// CPU time of the vCPU threads, summed, ms (None: vCPUs unknown).
    pub vcpu_run_ms: Option<f64>,
    /// Their time runnable waiting for a CPU, summed, ms.
    pub vcpu_wait_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_of_our_own_shows_cpu_and_a_share() {
        let pid = std::process::id() as i32;
        let me = selfheal_sys::sched::gettid();
        let mut p = HostProbe::new(PathBuf::from("/proc"), pid);
        p.set_vcpus(vec![(0, me)]);
        let t0 = Instant::now();
        p.sample(t0);
        // Spin until this thread has had 20 ms of CPU (however long that
        // takes on a busy host; 30 s at most).
        let own_ns = || {
            std::fs::read_to_string("/proc/thread-self/schedstat")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        };
        let start = own_ns();
        let mut x = 0u64;
        while own_ns().saturating_sub(start) < 20_000_000 && t0.elapsed() < Duration::from_secs(30)
        {
            for _ in 0..10_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        p.sample(Instant::now());
        let u = p.over(Duration::from_secs(60)).unwrap();
        assert!(u.cpu_ms >= 10.0, "{u:?}");
        assert!(u.scheduled >= 1, "{u:?}");
        assert_eq!(u.vcpus[0].0, 0);
        assert!(u.vcpus[0].1 > 0.0, "{u:?}");
        assert!(u.vcpu_run_ms.unwrap() >= 10.0, "{u:?}");
        assert!(u.vcpu_wait_ms.unwrap() >= 0.0, "{u:?}");
    }

    #[test]
    fn a_thread_that_exits_takes_nothing_back() {
        let pid = std::process::id() as i32;
        let mut p = HostProbe::new(PathBuf::from("/proc"), pid);
        // A thread with a history of its own: it spins, then waits to end.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut x = 0u64;
            while t0.elapsed() < Duration::from_millis(50) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                if x == 0 {
                    std::thread::yield_now();
                }
            }
            std::hint::black_box(x);
            let _ = rx.recv();
        });
        std::thread::sleep(Duration::from_millis(100));
        p.sample(Instant::now());
        let before = p.samples.back().unwrap().clone();
        drop(tx);
        worker.join().unwrap();
        p.sample(Instant::now());
        let after = p.samples.back().unwrap();
        assert!(after.total_ns >= before.total_ns, "{before:?} -> {after:?}");
        assert!(after.slices >= before.slices, "{before:?} -> {after:?}");
    }

    #[test]
    fn runnable_time_counts_what_the_vcpus_could_run() {
        let t0 = Instant::now();
        let mut p = HostProbe::new(PathBuf::from("/proc"), 1);
        let ms = |v: u64| Duration::from_millis(v);
        // (at ms, slices, vCPU 0 run ms, vCPU 1 run ms, vCPU wait ms,
        // stopped)
        for (at, slices, r0, r1, wait, stopped) in [
            (0, 10, 0, 0, 0, false),
            // Spinning with the CPU to itself: 250 ms count.
            (250, 20, 250, 0, 0, false),
            // Idle (halted) vCPUs: they wanted nothing, 250 ms count.
            (500, 30, 251, 1, 0, false),
            // Starved: ran 50 ms, waited 200 ms: a fifth counts.
            (750, 40, 301, 1, 200, false),
            // Frozen: no thread scheduled in; nothing counts.
            (1000, 40, 301, 1, 200, false),
            // Stopped from here on; the interval into the stop looks
            // idle and counts, 250 ms.
            (1250, 45, 301, 1, 200, true),
            // Stopped at both ends, though the engine ran it: nothing.
            (1500, 50, 301, 1, 200, true),
        ] {
            p.samples.push_back(Sample {
                at: t0 + ms(at),
                total_ns: 0,
                slices,
                vcpus: vec![(0, r0 * 1_000_000), (1, r1 * 1_000_000)],
                vcpu_wait_ns: wait * 1_000_000,
                stopped,
            });
        }
        let r = p.runnable_since(t0).unwrap();
        assert!((r - 800.0).abs() < 1e-6, "{r}");
        // From the middle of the first interval on.
        let r = p.runnable_since(t0 + ms(125)).unwrap();
        assert!((r - 675.0).abs() < 1e-6, "{r}");
        assert_eq!(p.runnable_since(t0 + ms(1500)), None);
    }

    #[test]
    fn a_gone_process_yields_no_samples() {
        let mut p = HostProbe::new(PathBuf::from("/proc"), i32::MAX - 7);
        p.sample(Instant::now());
        p.sample(Instant::now());
        assert!(p.over(Duration::from_secs(1)).is_none());
    }
}
