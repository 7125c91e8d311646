//! The D-state check of the sweep: which threads sit in uninterruptible
//! sleep without being scheduled, and since when.
//!
//! Every sweep reads each thread's `stat` (one small read per thread); for
//! threads in `D` it also reads `schedstat`, whose third field counts the
//! times the thread was scheduled in. A thread that stays in D with that
//! count unchanged made no progress at all: it is the kernel hung-task
//! detector's criterion, applied after seconds instead of 120 s, and also
//! to killable waits (NFS, FUSE) that the kernel's detector skips.
//!
//! When the kernel has `/proc/PID/sched` (SCHED_DEBUG), a thread's
//! `se.exec_start` (when it last ran, on its CPU's scheduler task clock)
//! dates the block, so a hang is reported at the bound even if the sweep
//! first saw it later; otherwise "since" is the first sweep that saw it.
//! Each CPU's task clock leaves out the irq and steal time of that CPU, so
//! the clocks of two CPUs drift apart with uptime (measured here: 200 ms
//! after 2 h). A stamp is therefore only compared with the reading
//! thread's own clock on the same CPU, or through that CPU's offset to the
//! monotonic clock measured in the last [`OFFSET_FRESH`] (the reading
//! thread notes its CPU's offset at every scan). Otherwise the block is
//! dated from the first sweep that saw it: later, never too early.
//!
//! With the eBPF tracer ([`crate::dwait`]) none of that scanning is needed
//! after start-up: [`DStateTracker::observe_traced`] takes the tracer's
//! list of tasks in D with the exact time each blocked, reads nothing for
//! blocks younger than the bound, and confirms the others from `/proc`
//! (still in D, which process, where it sleeps). Blocks found by a full
//! scan (those that began before the tracer started) are re-read one by
//! one until they end.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use selfheal_procfs::task::{list_pids, list_tids, parse_task_stat, parse_task_status, TaskStat};

use crate::dwait::DWait;
use crate::pseudo_file::read_small;
use crate::snapshot::parse_schedstat;

/// A CPU's task-clock offset older than this is not used (the offset
/// grows with that CPU's irq and steal time).
pub const OFFSET_FRESH: Duration = Duration::from_secs(2);

/// A thread in D state without progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StuckTask {
    /// Process id.
    pub pid: i32,
    /// Thread id.
    pub tid: i32,
    /// Command name.
    pub comm: String,
    /// Thread start time (identity).
    pub starttime: u64,
    /// When it was first seen in D with its current switch count.
    pub since: Instant,
    /// How long that is (a lower bound: it may have blocked up to one sweep earlier).
    pub stuck_for: Duration,
    /// Kernel thread.
    pub kernel_thread: bool,
    /// Where it sleeps, when readable.
    pub wchan: Option<String>,
}

#[derive(Debug, Clone)]
struct Entry {
    pid: i32,
    comm: String,
    since: Instant,
    /// `since` is when it last ran (else: when first seen in D).
    dated: bool,
    progress: u64,
    kernel_thread: bool,
    wchan: Option<String>,
    seen: bool,
    /// Found by the tracer (its block ends when the tracer stops listing
    /// it), else by a scan (re-read until it ends).
    traced: bool,
}

/// Tracks D-state threads across sweeps.
#[derive(Debug)]
pub struct DStateTracker {
    root: PathBuf,
    entries: HashMap<(i32, u64), Entry>,
    /// Per CPU: (monotonic ms since `base` minus task-clock ms, when measured).
    offsets: HashMap<u32, (f64, Instant)>,
    base: Instant,
    /// Threads read by the last scan (for the cost report).
    pub last_scanned: usize,
    /// Traced blocks younger than the bound: (tid, since).
    pending: Vec<(i32, Instant)>,
}

/// The reading thread's position on its CPU's task clock.
#[derive(Debug, Clone, Copy)]
struct Clock {
    cpu: u32,
    task_ms: f64,
}

impl DStateTracker {
    /// A tracker of tasks under `proc_root`.
    pub fn new(proc_root: &Path) -> DStateTracker {
        DStateTracker {
            root: proc_root.to_path_buf(),
            entries: HashMap::new(),
            offsets: HashMap::new(),
            base: Instant::now(),
            last_scanned: 0,
            pending: Vec::new(),
        }
    }

    /// Takes the tracer's list of tasks in D (`waits`, with when each
    /// blocked). Blocks at least `bound` old are confirmed from `/proc`;
    /// younger ones are only remembered for [`DStateTracker::next_due`].
    /// Traced blocks the tracer no longer lists are over; blocks found by
    /// an earlier scan are re-read one by one.
    pub fn observe_traced(&mut self, waits: &[DWait], now: Instant, bound: Duration) {
        let listed: HashMap<i32, Instant> = waits.iter().map(|w| (w.tid, w.since)).collect();
        self.entries
            .retain(|&(tid, _), e| !e.traced || listed.get(&tid) == Some(&e.since));
        let known: HashSet<i32> = self
            .entries
            .iter()
            .filter(|(_, e)| e.traced)
            .map(|(&(tid, _), _)| tid)
            .collect();
        self.pending.clear();
        let root = self.root.clone();
        for w in waits {
            if known.contains(&w.tid) {
                continue;
            }
            if now.saturating_duration_since(w.since) < bound {
                self.pending.push((w.tid, w.since));
                continue;
            }
            // Due: is it still in D, and who is it? (A task that woke but
            // has not run yet is still listed; it is not stuck.)
            let Some(stat) = read_stat(&root.join(w.tid.to_string()).join("stat")) else {
                continue;
            };
            if stat.state != 'D' {
                continue;
            }
            let pid = read_small(&root.join(w.tid.to_string()).join("status"))
                .and_then(|t| parse_task_status(&t).tgid)
                .unwrap_or(w.tid);
            let dir = task_dir(&root, pid, w.tid);
            let progress = read_small(&dir.join("schedstat"))
                .and_then(|t| parse_schedstat(&t))
                .map_or(stat.cpu_ticks(), |s| s.timeslices);
            let wchan = read_wchan(&dir);
            // A scan may have found this block first: the tracer's date wins.
            self.entries.insert(
                (w.tid, stat.starttime_ticks),
                Entry {
                    pid,
                    comm: stat.comm.clone(),
                    since: w.since,
                    dated: true,
                    progress,
                    kernel_thread: stat.is_kernel_thread(),
                    wchan,
                    seen: true,
                    traced: true,
                },
            );
        }
        self.recheck_scanned();
    }

    /// Re-reads each block a scan found: over when the thread left D or
    /// was scheduled since (the tracer sees its next block, if any).
    fn recheck_scanned(&mut self) {
        let root = self.root.clone();
        self.entries.retain(|&(tid, starttime), e| {
            if e.traced {
                return true;
            }
            let dir = task_dir(&root, e.pid, tid);
            let Some(stat) = read_stat(&dir.join("stat")) else {
                return false;
            };
            let progress = read_small(&dir.join("schedstat"))
                .and_then(|t| parse_schedstat(&t))
                .map_or(stat.cpu_ticks(), |s| s.timeslices);
            stat.state == 'D' && stat.starttime_ticks == starttime && progress == e.progress
        });
    }

    /// Reads every thread's state once; `now` is the scan time.
    pub fn scan(&mut self, now: Instant) {
        let root = self.root.clone();
        self.scan_root(&root, now);
    }

    /// [`DStateTracker::scan`] of another procfs root (replaying recorded
    /// snapshots in tests).
    pub fn scan_root(&mut self, root: &Path, now: Instant) {
        for e in self.entries.values_mut() {
            e.seen = false;
        }
        let mut scanned = 0;
        // The scheduler clock now on our CPU, as our own thread's last
        // start, and that CPU's offset to the monotonic clock.
        let clock_now = own_clock(root);
        if let Some(c) = clock_now {
            let mono_ms = now.saturating_duration_since(self.base).as_secs_f64() * 1000.0;
            self.offsets.insert(c.cpu, (mono_ms - c.task_ms, now));
        }
        let offsets = &self.offsets;
        let base = self.base;
        // Threads in D, found with one read per thread: most processes
        // have a single thread, whose state their own `stat` shows, so
        // their task directory is not even listed.
        let mut blocked: Vec<(i32, i32, PathBuf, TaskStat)> = Vec::new();
        for pid in list_pids(root).unwrap_or_default() {
            let pdir = root.join(pid.to_string());
            if let Some(st) = read_stat(&pdir.join("stat")).filter(|s| s.num_threads == 1) {
                scanned += 1;
                if st.state == 'D' {
                    blocked.push((pid, pid, pdir.join("task").join(pid.to_string()), st));
                }
                continue;
            }
            let Ok(tids) = list_tids(root, pid) else {
                continue;
            };
            for tid in tids {
                scanned += 1;
                let dir = pdir.join("task").join(tid.to_string());
                if let Some(st) = read_stat(&dir.join("stat")).filter(|s| s.state == 'D') {
                    blocked.push((pid, tid, dir, st));
                }
            }
        }
        for (pid, tid, dir, stat) in blocked {
            // Progress: times scheduled in; without schedstat, CPU time.
            let progress = read_small(&dir.join("schedstat"))
                .and_then(|t| parse_schedstat(&t))
                .map_or(stat.cpu_ticks(), |s| s.timeslices);
            let key = (tid, stat.starttime_ticks);
            // When it last ran, if that can be told on a comparable clock.
            let last_ran = || {
                let ran = exec_start_ms(&dir.join("sched"))?;
                let ago_ms = match (clock_now, stat.processor) {
                    // Same CPU, same clock.
                    (Some(c), Some(cpu)) if c.cpu == cpu => c.task_ms - ran,
                    // Another CPU: through its recent offset, if any.
                    (_, Some(cpu)) => match offsets.get(&cpu) {
                        Some(&(offset, at))
                            if now.saturating_duration_since(at) <= OFFSET_FRESH =>
                        {
                            let mono_ms =
                                now.saturating_duration_since(base).as_secs_f64() * 1000.0;
                            mono_ms - (ran + offset)
                        }
                        _ => return None,
                    },
                    _ => return None,
                };
                let ago = Duration::from_secs_f64((ago_ms / 1000.0).clamp(0.0, 600.0));
                Some(now.checked_sub(ago).unwrap_or(now))
            };
            let entry = self.entries.entry(key).or_insert_with(|| {
                let ran = last_ran();
                Entry {
                    pid,
                    comm: stat.comm.clone(),
                    since: ran.unwrap_or(now),
                    dated: ran.is_some(),
                    progress,
                    kernel_thread: stat.is_kernel_thread(),
                    wchan: None,
                    seen: true,
                    traced: false,
                }
            });
            if entry.progress != progress {
                let ran = last_ran();
                entry.progress = progress;
                entry.since = ran.unwrap_or(now);
                entry.dated = ran.is_some();
            } else if !entry.dated {
                // First seen from another CPU: date it once we can.
                if let Some(ran) = last_ran() {
                    entry.since = entry.since.min(ran);
                    entry.dated = true;
                }
            }
            entry.seen = true;
            if entry.wchan.is_none() {
                entry.wchan = read_wchan(&dir);
            }
        }
        // A traced block stays until the tracer says it ended.
        self.entries.retain(|_, e| e.seen || e.traced);
        self.last_scanned = scanned;
    }

    /// Threads in D without progress for at least `bound`, oldest first.
    pub fn stuck(&self, now: Instant, bound: Duration) -> Vec<StuckTask> {
        let mut out: Vec<StuckTask> = self
            .entries
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.since) >= bound)
            .map(|(&(tid, starttime), e)| StuckTask {
                pid: e.pid,
                tid,
                comm: e.comm.clone(),
                starttime,
                since: e.since,
                stuck_for: now.saturating_duration_since(e.since),
                kernel_thread: e.kernel_thread,
                wchan: e.wchan.clone(),
            })
            .collect();
        out.sort_by_key(|s| (s.since, s.tid));
        out
    }

    /// Threads currently in D (any duration).
    pub fn in_d_state(&self) -> usize {
        self.entries.len()
    }

    /// When the next tracked thread reaches `bound`, skipping those `skip`
    /// says are already dealt with (by tid and start time).
    pub fn next_due(&self, bound: Duration, skip: impl Fn(i32, u64) -> bool) -> Option<Instant> {
        self.entries
            .iter()
            .filter(|(&(tid, st), _)| !skip(tid, st))
            .map(|(_, e)| e.since + bound)
            .chain(self.pending.iter().map(|&(_, since)| since + bound))
            .min()
    }
}

/// The reading thread's CPU and its `se.exec_start` (when it was last
/// scheduled in or accounted: at most a tick ago while it runs).
fn own_clock(root: &Path) -> Option<Clock> {
    let task_ms = exec_start_ms(&root.join("thread-self/sched"))?;
    let stat = read_small(&root.join("thread-self/stat"))?;
    let cpu = parse_task_stat(&stat)?.processor?;
    Some(Clock { cpu, task_ms })
}

fn task_dir(root: &Path, pid: i32, tid: i32) -> PathBuf {
    root.join(pid.to_string())
        .join("task")
        .join(tid.to_string())
}

fn read_wchan(dir: &Path) -> Option<String> {
    read_small(&dir.join("wchan"))
        .map(|w| w.trim().to_string())
        .filter(|w| !w.is_empty() && w != "0")
}

fn read_stat(path: &Path) -> Option<TaskStat> {
    parse_task_stat(&read_small(path)?)
}

/// `se.exec_start` (ms on the scheduler clock) from a `sched` file.
fn exec_start_ms(path: &Path) -> Option<f64> {
    let text = read_small(path)?;
    text.lines()
        .find_map(|l| l.strip_prefix("se.exec_start"))
        .and_then(|r| r.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat line captured on the host, with state and CPU edited.
    fn stat_line(tid: i32, state: char, cpu: u32) -> String {
        format!(
            "{tid} (cat) {state} 5076 5076 1033 0 -1 4194304 98 0 0 0 0 0 0 0 20 0 1 0 39187 3133440 381 18446744073709551615 1 1 1 0 0 0 0 0 0 0 0 0 17 {cpu} 0 0 0 0 0\n"
        )
    }

    /// A fake /proc with one thread (last run on CPU 1) whose stat state
    /// and schedstat we set.
    fn put(root: &Path, pid: i32, tid: i32, state: char, slices: u64) {
        let dir = root.join(format!("{pid}/task/{tid}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stat"), stat_line(tid, state, 1)).unwrap();
        // Single-threaded: the process's own stat says the same (the scan
        // then skips listing its task directory).
        if pid == tid {
            std::fs::write(root.join(format!("{pid}/stat")), stat_line(tid, state, 1)).unwrap();
        }
        std::fs::write(dir.join("schedstat"), format!("100 200 {slices}\n")).unwrap();
        std::fs::write(dir.join("wchan"), "folio_wait_bit_common").unwrap();
    }

    /// Our own thread on `cpu`, last scheduled in at `ms` on its clock.
    fn reader_at(root: &Path, cpu: u32, ms: f64) {
        std::fs::create_dir_all(root.join("thread-self")).unwrap();
        std::fs::write(
            root.join("thread-self/sched"),
            format!("head (10862, #threads: 1)\n---\nse.exec_start                                :       {ms:.6}\n"),
        )
        .unwrap();
        std::fs::write(root.join("thread-self/stat"), stat_line(10862, 'R', cpu)).unwrap();
    }

    #[test]
    fn block_is_dated_from_the_scheduler_clock() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        put(root, 10, 10, 'D', 5);
        // Captured /proc/PID/sched lines (6.18): we ran at 4336087.66 ms
        // on the stuck thread's CPU, which it last ran on 1.5 s earlier.
        reader_at(root, 1, 4336087.662408);
        std::fs::write(
            root.join("10/task/10/sched"),
            "cat (10, #threads: 1)\n---\nse.exec_start                                :       4334587.662408\n",
        )
        .unwrap();
        let mut t = DStateTracker::new(root);
        let now = Instant::now() + Duration::from_secs(10);
        t.scan(now);
        let stuck = t.stuck(now, Duration::from_secs(1));
        assert_eq!(stuck.len(), 1);
        let ms = stuck[0].stuck_for.as_millis();
        assert!((1490..=1510).contains(&ms), "dated {ms} ms ago");
        assert!(exec_start_ms(&root.join("nonexistent")).is_none());
    }

    #[test]
    fn another_cpus_clock_is_used_only_through_a_fresh_offset() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        // CPUs' task clocks drift apart (irq and steal time): here CPU 0's
        // reads 200 ms less than CPU 1's at the same instant, as measured
        // on the test VM after 2 h of uptime.
        put(root, 10, 10, 'D', 5);
        std::fs::write(
            root.join("10/task/10/sched"),
            "cat (10, #threads: 1)\n---\nse.exec_start                                :       5000.0\n",
        )
        .unwrap();
        let t0 = Instant::now() + Duration::from_secs(10);
        // We are on CPU 0 and have never run on CPU 1: the stamp cannot be
        // compared, the block dates from now.
        reader_at(root, 0, 6300.0);
        let mut t = DStateTracker::new(root);
        t.scan(t0);
        assert_eq!(t.stuck(t0, Duration::ZERO)[0].stuck_for, Duration::ZERO);
        // Next sweep, on CPU 1 (its clock 1500 ms past the stamp): dated
        // 1.5 s back after all, and CPU 1's offset is known from now on.
        let t1 = t0 + Duration::from_millis(100);
        reader_at(root, 1, 6500.0);
        t.scan(t1);
        let ms = t.stuck(t1, Duration::ZERO)[0].stuck_for.as_millis();
        assert!((1499..=1501).contains(&ms), "dated {ms} ms ago");
        // Back on CPU 0, 500 ms later: through CPU 1's fresh offset the
        // block is 2 s old (not 1.8 s, as CPU 0's own clock would say).
        let t2 = t1 + Duration::from_millis(500);
        reader_at(root, 0, 6800.0);
        t.entries.clear();
        t.scan(t2);
        let ms = t.stuck(t2, Duration::ZERO)[0].stuck_for.as_millis();
        assert!((1999..=2001).contains(&ms), "dated {ms} ms ago");
        // An offset older than OFFSET_FRESH is not trusted.
        let t3 = t1 + OFFSET_FRESH + Duration::from_millis(1);
        t.entries.clear();
        t.scan(t3);
        assert_eq!(t.stuck(t3, Duration::ZERO)[0].stuck_for, Duration::ZERO);
    }

    #[test]
    fn stuck_only_without_progress_for_the_bound() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        put(root, 10, 10, 'D', 5); // stuck
        put(root, 20, 20, 'D', 7); // will make progress
        put(root, 30, 30, 'S', 1); // sleeping normally
        let mut t = DStateTracker::new(root);
        let t0 = Instant::now();
        t.scan(t0);
        assert_eq!(t.in_d_state(), 2);
        assert_eq!(t.last_scanned, 3);
        put(root, 20, 20, 'D', 8);
        t.scan(t0 + Duration::from_secs(1));
        put(root, 20, 20, 'D', 9);
        let t2 = t0 + Duration::from_millis(2100);
        t.scan(t2);
        let stuck = t.stuck(t2, Duration::from_secs(2));
        assert_eq!(stuck.len(), 1, "{stuck:?}");
        assert_eq!((stuck[0].pid, stuck[0].comm.as_str()), (10, "cat"));
        assert_eq!(stuck[0].wchan.as_deref(), Some("folio_wait_bit_common"));
        assert!(stuck[0].stuck_for >= Duration::from_secs(2));
        assert_eq!(
            t.next_due(Duration::from_secs(2), |_, _| false),
            Some(t0 + Duration::from_secs(2)),
            "the stuck thread has been due since t0 + 2 s"
        );
        assert_eq!(
            t.next_due(Duration::from_secs(2), |tid, _| tid == 10),
            Some(t0 + Duration::from_millis(4100))
        );
        // It wakes up: no longer tracked.
        put(root, 10, 10, 'S', 6);
        t.scan(t2 + Duration::from_secs(1));
        assert!(t
            .stuck(t2 + Duration::from_secs(1), Duration::ZERO)
            .iter()
            .all(|s| s.pid != 10));
    }

    #[test]
    fn traced_blocks_are_read_only_when_due_and_keep_their_date() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        put(root, 10, 10, 'D', 5); // blocked 2.5 s ago, per the tracer
        put(root, 20, 20, 'D', 7); // blocked 0.5 s ago
        put(root, 30, 30, 'S', 1); // woke, not run yet: listed, not stuck
        let now = Instant::now() + Duration::from_secs(10);
        let bound = Duration::from_secs(2);
        let w = |tid, ago_ms| DWait {
            tid,
            since: now - Duration::from_millis(ago_ms),
        };
        let mut t = DStateTracker::new(root);
        t.observe_traced(&[w(10, 2500), w(20, 500), w(30, 3000)], now, bound);
        let stuck = t.stuck(now, bound);
        assert_eq!(stuck.len(), 1, "{stuck:?}");
        assert_eq!(stuck[0].tid, 10);
        assert_eq!(stuck[0].stuck_for, Duration::from_millis(2500));
        assert_eq!(stuck[0].wchan.as_deref(), Some("folio_wait_bit_common"));
        // The young block is not read, but its due time is known.
        assert_eq!(
            t.next_due(bound, |tid, _| tid == 10),
            Some(now + Duration::from_millis(1500))
        );
        // 1.5 s later, 20 is due and confirmed with its true age.
        let later = now + Duration::from_millis(1500);
        t.observe_traced(&[w(10, 2500), w(20, 500)], later, bound);
        let stuck = t.stuck(later, bound);
        assert_eq!(
            stuck.iter().map(|s| s.tid).collect::<Vec<_>>(),
            vec![10, 20]
        );
        assert_eq!(stuck[1].stuck_for, Duration::from_millis(2000));
        // 10 ran again (the tracer dropped it): its block is over.
        t.observe_traced(&[w(20, 500)], later, bound);
        assert_eq!(t.stuck(later, bound).len(), 1);
    }

    #[test]
    fn blocks_found_by_a_scan_end_when_the_thread_runs() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        put(root, 40, 40, 'D', 3);
        let mut t = DStateTracker::new(root);
        let t0 = Instant::now();
        t.scan(t0);
        assert_eq!(t.in_d_state(), 1);
        // Not in the tracer's map (it blocked before the tracer started):
        // kept while it stays in D without being scheduled …
        t.observe_traced(&[], t0 + Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(t.in_d_state(), 1);
        // … and dropped once it was scheduled.
        put(root, 40, 40, 'D', 4);
        t.observe_traced(&[], t0 + Duration::from_secs(2), Duration::from_secs(2));
        assert_eq!(t.in_d_state(), 0);
    }
}
