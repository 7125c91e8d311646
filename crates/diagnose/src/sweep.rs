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
//! `se.exec_start` (when it last ran, on the scheduler clock) compared with
//! the reading thread's own dates the block, so a hang is reported at the
//! bound even if the sweep first saw it later; otherwise "since" is the
//! first sweep that saw it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use selfheal_procfs::task::{list_pids, list_tids, parse_task_stat};

use crate::snapshot::parse_schedstat;

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
    progress: u64,
    kernel_thread: bool,
    wchan: Option<String>,
    seen: bool,
}

/// Tracks D-state threads across sweeps.
#[derive(Debug)]
pub struct DStateTracker {
    root: PathBuf,
    entries: HashMap<(i32, u64), Entry>,
    /// Threads read by the last scan (for the cost report).
    pub last_scanned: usize,
}

impl DStateTracker {
    /// A tracker of tasks under `proc_root`.
    pub fn new(proc_root: &Path) -> DStateTracker {
        DStateTracker {
            root: proc_root.to_path_buf(),
            entries: HashMap::new(),
            last_scanned: 0,
        }
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
        // The scheduler clock now, as our own thread's last start.
        let clock_now = exec_start_ms(&root.join("thread-self/sched"));
        let pids = list_pids(root).unwrap_or_default();
        for pid in pids {
            let Ok(tids) = list_tids(root, pid) else {
                continue;
            };
            for tid in tids {
                scanned += 1;
                let dir = root
                    .join(pid.to_string())
                    .join("task")
                    .join(tid.to_string());
                let Some(stat) = std::fs::read_to_string(dir.join("stat"))
                    .ok()
                    .and_then(|t| parse_task_stat(&t))
                else {
                    continue;
                };
                if stat.state != 'D' {
                    continue;
                }
                // Progress: times scheduled in; without schedstat, CPU time.
                let progress = std::fs::read_to_string(dir.join("schedstat"))
                    .ok()
                    .and_then(|t| parse_schedstat(&t))
                    .map_or(stat.cpu_ticks(), |s| s.timeslices);
                let key = (tid, stat.starttime_ticks);
                let last_ran = || {
                    let (Some(clock), Some(ran)) = (clock_now, exec_start_ms(&dir.join("sched")))
                    else {
                        return now;
                    };
                    let ago = Duration::from_secs_f64(((clock - ran) / 1000.0).clamp(0.0, 600.0));
                    now.checked_sub(ago).unwrap_or(now)
                };
                let entry = self.entries.entry(key).or_insert_with(|| Entry {
                    pid,
                    comm: stat.comm.clone(),
                    since: last_ran(),
                    progress,
                    kernel_thread: stat.is_kernel_thread(),
                    wchan: None,
                    seen: true,
                });
                if entry.progress != progress {
                    entry.progress = progress;
                    entry.since = last_ran();
                }
                entry.seen = true;
                if entry.wchan.is_none() {
                    entry.wchan = std::fs::read_to_string(dir.join("wchan"))
                        .ok()
                        .map(|w| w.trim().to_string())
                        .filter(|w| !w.is_empty() && w != "0");
                }
            }
        }
        self.entries.retain(|_, e| e.seen);
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
            .min()
    }
}

/// `se.exec_start` (ms on the scheduler clock) from a `sched` file.
fn exec_start_ms(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("se.exec_start"))
        .and_then(|r| r.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake /proc with one thread whose stat state and schedstat we set.
    fn put(root: &Path, pid: i32, tid: i32, state: char, slices: u64) {
        let dir = root.join(format!("{pid}/task/{tid}"));
        std::fs::create_dir_all(&dir).unwrap();
        // A stat line captured on the host, with state and start time edited.
        let stat = format!(
            "{tid} (cat) {state} 5076 5076 1033 0 -1 4194304 98 0 0 0 0 0 0 0 20 0 1 0 39187 3133440 381 18446744073709551615 1 1 1 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
        );
        std::fs::write(dir.join("stat"), stat).unwrap();
        std::fs::write(dir.join("schedstat"), format!("100 200 {slices}\n")).unwrap();
        std::fs::write(dir.join("wchan"), "folio_wait_bit_common").unwrap();
    }

    #[test]
    fn block_is_dated_from_the_scheduler_clock() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        put(root, 10, 10, 'D', 5);
        // Captured /proc/PID/sched lines (6.18): we ran at 4336087.66 ms,
        // the stuck thread last ran 1.5 s earlier.
        std::fs::create_dir_all(root.join("thread-self")).unwrap();
        std::fs::write(
            root.join("thread-self/sched"),
            "head (10862, #threads: 1)\n---\nse.exec_start                                :       4336087.662408\n",
        )
        .unwrap();
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
}
