//! No-progress heuristics that need nothing from the program, computed
//! from per-thread /proc counters sampled every `period`:
//!
//! - **spin** (suspected infinite loop): a thread stays runnable, never
//!   blocks (no voluntary context switch) and uses CPU almost only in user
//!   mode (system time at most a tenth of its CPU time, so next to no
//!   system calls), for longer than the bound. An episode starts with an
//!   interval in which it ran at least a quarter of the time; contention
//!   or a CPU quota that starves it later does not end the episode, only
//!   evidence of progress does (blocking, sleeping, system calls);
//! - **deadlock**: every thread sleeps without using CPU and without being
//!   woken (no voluntary context switch) for longer than the bound, each
//!   in a futex wait (a lock or condition variable) or, with
//!   `blocked_waits = "any"`, in any wait; a thread in uninterruptible
//!   sleep (D) always counts.
//!
//! These are suspicions: a long computation also spins, a program waiting
//! for a peer that never answers also sleeps. [`Analyzer`] is pure (it is
//! fed samples) so it is tested on constructed inputs; [`sample_threads`]
//! does the reading.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use selfheal_config::{BlockedWaits, ProgressConfig};
use selfheal_procfs::task::{list_tids, TaskDir};
use selfheal_procfs::ProcError;

/// Which heuristic fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SuspicionKind {
    /// A thread spins on CPU without system calls.
    Spin,
    /// Every thread is blocked with no CPU time.
    Deadlock,
}

impl SuspicionKind {
    /// `spin` or `deadlock`: the detector's name in events and metrics
    /// ([`HangDetector::as_str`](crate::HangDetector::as_str)).
    pub fn as_str(self) -> &'static str {
        crate::HangDetector::from(self).as_str()
    }
}

/// What the sampler tells the supervision thread.
#[derive(Debug, Clone)]
pub enum ProgressReport {
    /// A heuristic has held for its bound (sent once per episode).
    Suspected {
        /// Which.
        kind: SuspicionKind,
        /// Since when it has held.
        since: Instant,
        /// The threads and counters that show it.
        evidence: SuspicionEvidence,
    },
    /// A reported suspicion stopped holding.
    Cleared {
        /// Which.
        kind: SuspicionKind,
    },
}

/// One thread's counters at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadSample {
    /// Thread id.
    pub tid: i32,
    /// Thread name.
    pub comm: String,
    /// State letter (R, S, D, T, Z, …).
    pub state: char,
    /// CPU time used (user + system), nanoseconds.
    pub cpu_ns: u64,
    /// System-mode CPU time, nanoseconds (tick resolution).
    pub system_ns: u64,
    /// Voluntary context switches (it blocked or yielded).
    pub voluntary_switches: Option<u64>,
    /// The system call it sleeps in, as `/proc/…/syscall`'s first field.
    pub syscall: Option<String>,
    /// The kernel function it sleeps in.
    pub wchan: Option<String>,
}

impl ThreadSample {
    fn in_futex(&self) -> Option<bool> {
        if let Some(nr) = self.syscall.as_deref().and_then(|s| s.parse::<i64>().ok()) {
            return Some(nr == libc::SYS_futex || nr == FUTEX_WAITV);
        }
        self.wchan.as_deref().map(|w| w.contains("futex"))
    }
}

/// `futex_waitv(2)` (Linux 5.16), the same number on every architecture.
const FUTEX_WAITV: i64 = 449;

/// Turns samples into suspicions.
#[derive(Debug)]
pub struct Analyzer {
    spin_bound: Option<Duration>,
    deadlock_bound: Option<Duration>,
    waits: BlockedWaits,
    prev: HashMap<i32, ThreadSample>,
    prev_at: Option<Instant>,
    /// Threads qualifying as spinning, since when.
    spinning: HashMap<i32, Instant>,
    spin_reported: bool,
    blocked_since: Option<Instant>,
    deadlock_reported: bool,
}

fn bound(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

impl Analyzer {
    /// An analyzer for `cfg`.
    pub fn new(cfg: &ProgressConfig) -> Analyzer {
        Analyzer {
            spin_bound: bound(cfg.spin.get()),
            deadlock_bound: bound(cfg.deadlock.get()),
            waits: cfg.blocked_waits,
            prev: HashMap::new(),
            prev_at: None,
            spinning: HashMap::new(),
            spin_reported: false,
            blocked_since: None,
            deadlock_reported: false,
        }
    }

    /// Feeds the threads seen at `now`; returns what changed.
    pub fn observe(&mut self, now: Instant, threads: Vec<ThreadSample>) -> Vec<ProgressReport> {
        let mut out = Vec::new();
        let Some(prev_at) = self.prev_at else {
            self.remember(now, threads);
            return out;
        };
        let dt = now.saturating_duration_since(prev_at).as_nanos() as u64;
        if dt == 0 {
            return out;
        }
        let live: Vec<&ThreadSample> = threads
            .iter()
            .filter(|t| !matches!(t.state, 'Z' | 'X'))
            .collect();
        let deltas: Vec<(&ThreadSample, Option<Delta>)> = live
            .iter()
            .map(|t| (*t, self.prev.get(&t.tid).map(|p| Delta::between(p, t))))
            .collect();

        if let Some(spin_bound) = self.spin_bound {
            let mut still = HashMap::new();
            for (t, d) in &deltas {
                let Some(d) = d else { continue };
                // Progress is positive evidence: it blocked, it slept, or it
                // made system calls. Merely getting little CPU (contention,
                // a CPU quota) is not progress, so it does not end an
                // episode, but an episode only starts with real CPU use.
                let no_progress =
                    t.state == 'R' && d.voluntary == Some(0) && d.system_ns * 10 <= d.cpu_ns.max(1);
                let since = match self.spinning.get(&t.tid) {
                    Some(since) if no_progress => Some(*since),
                    None if no_progress && d.cpu_ns * 4 >= dt => Some(prev_at),
                    _ => None,
                };
                if let Some(since) = since {
                    still.insert(t.tid, since);
                }
            }
            self.spinning = still;
            let longest = self
                .spinning
                .iter()
                .min_by_key(|(_, since)| **since)
                .map(|(tid, since)| (*tid, *since));
            match longest {
                Some((tid, since))
                    if now.saturating_duration_since(since) >= spin_bound
                        && !self.spin_reported =>
                {
                    self.spin_reported = true;
                    out.push(ProgressReport::Suspected {
                        kind: SuspicionKind::Spin,
                        since,
                        evidence: evidence(SuspicionKind::Spin, now, since, dt, &deltas, Some(tid)),
                    });
                }
                Some(_) => {}
                None if self.spin_reported => {
                    self.spin_reported = false;
                    out.push(ProgressReport::Cleared {
                        kind: SuspicionKind::Spin,
                    });
                }
                None => {}
            }
        }

        if let Some(deadlock_bound) = self.deadlock_bound {
            let all_blocked = !deltas.is_empty()
                && deltas.iter().all(|(t, d)| {
                    let Some(d) = d else { return false };
                    let asleep = match t.state {
                        'D' => true,
                        'S' => match self.waits {
                            BlockedWaits::Any => true,
                            BlockedWaits::Futex => t.in_futex() == Some(true),
                        },
                        _ => false,
                    };
                    // Under 1% of the interval: a sleeping thread uses none.
                    asleep && d.cpu_ns * 100 <= dt && d.voluntary == Some(0)
                });
            if all_blocked {
                let since = *self.blocked_since.get_or_insert(prev_at);
                if now.saturating_duration_since(since) >= deadlock_bound && !self.deadlock_reported
                {
                    self.deadlock_reported = true;
                    out.push(ProgressReport::Suspected {
                        kind: SuspicionKind::Deadlock,
                        since,
                        evidence: evidence(SuspicionKind::Deadlock, now, since, dt, &deltas, None),
                    });
                }
            } else {
                self.blocked_since = None;
                if self.deadlock_reported {
                    self.deadlock_reported = false;
                    out.push(ProgressReport::Cleared {
                        kind: SuspicionKind::Deadlock,
                    });
                }
            }
        }
        self.remember(now, threads);
        out
    }

    fn remember(&mut self, now: Instant, threads: Vec<ThreadSample>) {
        self.prev = threads.into_iter().map(|t| (t.tid, t)).collect();
        self.prev_at = Some(now);
    }
}

/// Counter changes of one thread over one interval.
#[derive(Debug, Clone, Copy)]
struct Delta {
    cpu_ns: u64,
    system_ns: u64,
    voluntary: Option<u64>,
}

impl Delta {
    fn between(p: &ThreadSample, t: &ThreadSample) -> Delta {
        Delta {
            cpu_ns: t.cpu_ns.saturating_sub(p.cpu_ns),
            system_ns: t.system_ns.saturating_sub(p.system_ns),
            voluntary: match (p.voluntary_switches, t.voluntary_switches) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            },
        }
    }
}

/// The `evidence` of a no-progress suspicion: the heuristic, how long it
/// has held and every thread's counters over the last interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuspicionEvidence {
    /// `spin` or `deadlock`.
    pub heuristic: String,
    pub held_ms: u64,
    /// The spinning thread (`null` for a deadlock).
    pub tid: Option<i32>,
    pub threads: Vec<ThreadEvidence>,
}

/// One thread in a [`SuspicionEvidence`]; counters it has no previous
/// sample for are `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreadEvidence {
    pub tid: i32,
    pub comm: String,
    /// State letter (R, S, D, …).
    pub state: String,
    /// CPU use over the interval, one decimal.
    pub cpu_percent: Option<f64>,
    pub system_percent: Option<f64>,
    pub voluntary_switches: Option<u64>,
    pub syscall: Option<String>,
    pub wchan: Option<String>,
}

/// A percentage of `dt_ns`, one decimal.
fn percent(ns: u64, dt_ns: u64) -> f64 {
    (ns as f64 * 100.0 / dt_ns as f64 * 10.0).round() / 10.0
}

fn evidence(
    kind: SuspicionKind,
    now: Instant,
    since: Instant,
    dt_ns: u64,
    deltas: &[(&ThreadSample, Option<Delta>)],
    culprit: Option<i32>,
) -> SuspicionEvidence {
    let threads = deltas
        .iter()
        .map(|(t, d)| ThreadEvidence {
            tid: t.tid,
            comm: t.comm.clone(),
            state: t.state.to_string(),
            cpu_percent: d.map(|d| percent(d.cpu_ns, dt_ns)),
            system_percent: d.map(|d| percent(d.system_ns, dt_ns)),
            voluntary_switches: d.and_then(|d| d.voluntary),
            syscall: t.syscall.clone(),
            wchan: t.wchan.clone(),
        })
        .collect();
    SuspicionEvidence {
        heuristic: kind.as_str().into(),
        held_ms: now.saturating_duration_since(since).as_millis() as u64,
        tid: culprit,
        threads,
    }
}

/// Reads every thread of `pid` under `proc_root`. Threads that end while
/// being read are left out; `Gone` when the process itself has ended.
pub fn sample_threads(proc_root: &Path, pid: i32) -> Result<Vec<ThreadSample>, ProcError> {
    let tick_ns = 1_000_000_000 / selfheal_sys::sched::clock_ticks_per_second().max(1);
    let mut out = Vec::new();
    for tid in list_tids(proc_root, pid)? {
        let dir = TaskDir::thread(proc_root, pid, tid);
        match sample_thread(&dir, tid, tick_ns) {
            Ok(s) => out.push(s),
            Err(e) if e.is_gone() => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn sample_thread(dir: &TaskDir, tid: i32, tick_ns: u64) -> Result<ThreadSample, ProcError> {
    let stat = dir.stat()?;
    let status = dir.status()?;
    // schedstat's first field is nanoseconds on CPU, far finer than ticks;
    // absent without CONFIG_SCHED_INFO.
    let cpu_ns = dir
        .read_text("schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(stat.cpu_ticks() * tick_ns);
    let sleeping = matches!(stat.state, 'S' | 'D');
    Ok(ThreadSample {
        tid,
        comm: stat.comm.clone(),
        state: stat.state,
        cpu_ns,
        system_ns: stat.stime_ticks * tick_ns,
        voluntary_switches: status.voluntary_ctxt_switches,
        syscall: if sleeping { dir.syscall()? } else { None },
        wchan: if sleeping { dir.wchan()? } else { None },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_config::HumanDuration;
    use selfheal_event::details_value;

    fn cfg(spin_ms: u64, deadlock_ms: u64, waits: BlockedWaits) -> ProgressConfig {
        ProgressConfig {
            spin: HumanDuration::from_millis(spin_ms),
            deadlock: HumanDuration::from_millis(deadlock_ms),
            blocked_waits: waits,
            ..ProgressConfig::default()
        }
    }

    fn t(tid: i32, state: char, cpu_ms: u64, sys_ms: u64, vol: u64, syscall: &str) -> ThreadSample {
        ThreadSample {
            tid,
            comm: format!("t{tid}"),
            state,
            cpu_ns: cpu_ms * 1_000_000,
            system_ns: sys_ms * 1_000_000,
            voluntary_switches: Some(vol),
            syscall: (!syscall.is_empty()).then(|| syscall.to_string()),
            wchan: None,
        }
    }

    /// The evidence is exactly the document the old `json!` literals
    /// built (a thread without a previous sample has `null` counters),
    /// and that document reads back.
    #[test]
    fn evidence_matches_the_old_json_and_reads_back() {
        let t0 = Instant::now();
        let spin = t(2, 'R', 500, 0, 3, "");
        let new = t(3, 'S', 0, 0, 0, "7");
        let d = Delta {
            cpu_ns: 333_333_333,
            system_ns: 0,
            voluntary: Some(0),
        };
        let v = evidence(
            SuspicionKind::Spin,
            t0 + Duration::from_millis(1500),
            t0,
            1_000_000_000,
            &[(&spin, Some(d)), (&new, None)],
            Some(2),
        );
        let old = serde_json::json!({
            "heuristic": "spin", "held_ms": 1500, "tid": 2,
            "threads": [
                {"tid": 2, "comm": "t2", "state": "R", "cpu_percent": 33.3,
                 "system_percent": 0.0, "voluntary_switches": 0, "syscall": null, "wchan": null},
                {"tid": 3, "comm": "t3", "state": "S", "cpu_percent": null,
                 "system_percent": null, "voluntary_switches": null, "syscall": "7", "wchan": null},
            ],
        });
        assert_eq!(details_value(&v), old);
        let typed: SuspicionEvidence = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(typed.threads[1].syscall.as_deref(), Some("7"));
        assert_eq!(details_value(&typed), old);
    }

    const FUTEX: &str = if cfg!(target_arch = "x86_64") {
        "202"
    } else {
        "98"
    };

    #[test]
    fn spinning_thread_is_suspected_after_the_bound_and_cleared_after() {
        let mut a = Analyzer::new(&cfg(1000, 0, BlockedWaits::Futex));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // Thread 2 spins: +500 ms CPU per 500 ms, no system time, no switches.
        let mut reports = Vec::new();
        for i in 0..4u64 {
            reports.extend(a.observe(
                ms(i * 500),
                vec![
                    t(1, 'S', 5, 1, 3, FUTEX),
                    t(2, 'R', 10 + i * 480, 2, 7, "running"),
                ],
            ));
            if i < 2 {
                assert!(reports.is_empty(), "reported after {} ms", i * 500);
            }
        }
        assert_eq!(reports.len(), 1, "{reports:?}");
        let ProgressReport::Suspected { kind, evidence, .. } = &reports[0] else {
            panic!("{reports:?}")
        };
        assert_eq!(*kind, SuspicionKind::Spin);
        assert_eq!(evidence.tid, Some(2));
        assert!(evidence.held_ms >= 1000);
        // It starts making system calls: cleared.
        let r = a.observe(
            ms(2000),
            vec![t(1, 'S', 5, 1, 3, FUTEX), t(2, 'R', 1900, 300, 9, "")],
        );
        assert!(
            matches!(
                r[..],
                [ProgressReport::Cleared {
                    kind: SuspicionKind::Spin
                }]
            ),
            "{r:?}"
        );
    }

    #[test]
    fn starving_a_spinner_does_not_clear_it() {
        let mut a = Analyzer::new(&cfg(1000, 0, BlockedWaits::Futex));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // Full speed, then throttled to almost nothing, still never blocking.
        let cpu = [0, 450, 460, 470, 480, 490];
        let mut reports = Vec::new();
        for (i, c) in cpu.iter().enumerate() {
            reports.extend(a.observe(ms(i as u64 * 500), vec![t(2, 'R', *c, 0, 1, "")]));
        }
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert!(matches!(
            reports[0],
            ProgressReport::Suspected {
                kind: SuspicionKind::Spin,
                ..
            }
        ));
        // A thread that is runnable but barely ran never starts an episode.
        let mut b = Analyzer::new(&cfg(500, 0, BlockedWaits::Futex));
        for i in 0..6u64 {
            assert!(b
                .observe(ms(i * 500), vec![t(3, 'R', i * 10, 0, 1, "")])
                .is_empty());
        }
    }

    #[test]
    fn busy_thread_with_syscalls_or_sleeps_is_not_spinning() {
        let mut a = Analyzer::new(&cfg(500, 0, BlockedWaits::Futex));
        let t0 = Instant::now();
        for i in 0..6u64 {
            // Lots of system time (a syscall loop), or voluntary switches.
            let r = a.observe(
                t0 + Duration::from_millis(i * 500),
                vec![
                    t(1, 'R', i * 480, i * 200, 0, ""),
                    t(2, 'R', i * 480, 0, i * 10, ""),
                ],
            );
            assert!(r.is_empty(), "{r:?}");
        }
    }

    #[test]
    fn deadlock_needs_every_thread_stuck_in_futex() {
        let mut a = Analyzer::new(&cfg(0, 1000, BlockedWaits::Futex));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let stuck = || {
            vec![
                t(1, 'S', 30, 5, 4, FUTEX),
                t(2, 'S', 20, 5, 6, FUTEX),
                t(3, 'S', 1, 0, 2, FUTEX),
            ]
        };
        let mut reports = Vec::new();
        for i in 0..4 {
            reports.extend(a.observe(ms(i * 500), stuck()));
        }
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert!(matches!(
            reports[0],
            ProgressReport::Suspected {
                kind: SuspicionKind::Deadlock,
                ..
            }
        ));

        // An idle server in accept(2) is not a deadlock with the default.
        let mut idle = Analyzer::new(&cfg(0, 500, BlockedWaits::Futex));
        for i in 0..5 {
            let r = idle.observe(
                ms(i * 500),
                vec![t(1, 'S', 30, 5, 4, "43"), t(2, 'S', 2, 1, 1, FUTEX)],
            );
            assert!(r.is_empty(), "{r:?}");
        }
        // ... but is with blocked_waits = "any".
        let mut any = Analyzer::new(&cfg(0, 500, BlockedWaits::Any));
        let n: usize = (0..5)
            .map(|i| {
                any.observe(ms(i * 500), vec![t(1, 'S', 30, 5, 4, "43")])
                    .len()
            })
            .sum();
        assert_eq!(n, 1);
    }

    #[test]
    fn a_wakeup_resets_the_deadlock_clock() {
        let mut a = Analyzer::new(&cfg(0, 1000, BlockedWaits::Futex));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut total = 0;
        for i in 0..8u64 {
            // Woken every 750 ms (a timed wait): never 1000 ms blocked.
            let vol = i / 2;
            total += a
                .observe(ms(i * 375), vec![t(1, 'S', 1, 0, vol, FUTEX)])
                .len();
        }
        assert_eq!(total, 0);
    }

    #[test]
    fn samples_own_process() {
        // schedstat's run time is brought up to date at a context switch or
        // a tick: a fresh test thread may read 0 until it has been switched
        // out once. Use some CPU, then sleep, so it has been.
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(5) {
            std::hint::spin_loop();
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        let me = std::process::id() as i32;
        let threads = sample_threads(Path::new("/proc"), me).unwrap();
        assert!(threads.iter().any(|t| t.tid == me));
        // This thread is running this very code: it has used CPU.
        let this = selfheal_sys::sched::gettid();
        let t = threads.iter().find(|t| t.tid == this).unwrap();
        assert_eq!(t.state, 'R');
        assert!(t.cpu_ns > 0 && t.voluntary_switches.is_some(), "{t:?}");
        let gone = sample_threads(Path::new("/proc"), 0x3fff_fff0).unwrap_err();
        assert!(gone.is_gone());
    }
}
