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
    /// All of QEMU's threads, ns (threads that exited are not counted).
    total_ns: u64,
    /// Times any of them was scheduled in.
    slices: u64,
    /// Per vCPU: (index, ns).
    vcpus: Vec<(u32, u64)>,
}

/// CPU-time samples of one QEMU process.
#[derive(Debug)]
pub struct HostProbe {
    proc_root: PathBuf,
    pid: i32,
    vcpus: Vec<(u32, i32)>,
    samples: VecDeque<Sample>,
}

impl HostProbe {
    /// Probes `pid` under `proc_root`.
    pub fn new(proc_root: PathBuf, pid: i32) -> HostProbe {
        HostProbe {
            proc_root,
            pid,
            vcpus: Vec::new(),
            samples: VecDeque::new(),
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

    /// (CPU ns, times scheduled in) of one thread.
    fn thread(&self, tid: i32) -> Option<(u64, u64)> {
        let t = TaskDir::thread(&self.proc_root, self.pid, tid);
        match t.schedstat() {
            Ok(s) => Some((s.run_ns, s.timeslices)),
            // 10 ms per USER_HZ tick (100 Hz on every Linux we run on);
            // context switches from status stand in for timeslices.
            Err(_) => {
                let ns = t.stat().ok()?.cpu_ticks() * 10_000_000;
                let st = t.status().ok()?;
                let cs = st.voluntary_ctxt_switches.unwrap_or(0)
                    + st.nonvoluntary_ctxt_switches.unwrap_or(0);
                Some((ns, cs))
            }
        }
    }

    /// Takes a sample now.
    pub fn sample(&mut self, now: Instant) {
        let Ok(tids) = list_tids(&self.proc_root, self.pid) else {
            return;
        };
        let (mut total_ns, mut slices) = (0, 0);
        for (ns, n) in tids.iter().filter_map(|t| self.thread(*t)) {
            total_ns += ns;
            slices += n;
        }
        let vcpus = self
            .vcpus
            .iter()
            .filter_map(|(i, tid)| Some((*i, self.thread(*tid)?.0)))
            .collect();
        self.samples.push_back(Sample {
            at: now,
            total_ns,
            slices,
            vcpus,
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
        let vcpus = last
            .vcpus
            .iter()
            .map(|(i, ns)| {
                let before = first
                    .vcpus
                    .iter()
                    .find(|(j, _)| j == i)
                    .map_or(*ns, |(_, b)| *b);
                let share = ns.saturating_sub(before) as f64 / span.as_nanos() as f64;
                (*i, (share * 1000.0).round() / 1000.0)
            })
            .collect();
        Some(Usage {
            span,
            cpu_ms,
            scheduled,
            vcpus,
        })
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
        let mut x = 0u64;
        while t0.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        p.sample(Instant::now());
        let u = p.over(Duration::from_secs(10)).unwrap();
        assert!(u.cpu_ms >= 10.0, "{u:?}");
        assert!(u.scheduled >= 1, "{u:?}");
        assert_eq!(u.vcpus[0].0, 0);
        assert!(u.vcpus[0].1 > 0.1, "{u:?}");
    }

    #[test]
    fn a_gone_process_yields_no_samples() {
        let mut p = HostProbe::new(PathBuf::from("/proc"), i32::MAX - 7);
        p.sample(Instant::now());
        p.sample(Instant::now());
        assert!(p.over(Duration::from_secs(1)).is_none());
    }
}
