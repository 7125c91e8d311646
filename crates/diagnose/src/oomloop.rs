//! Memory cgroups in a fill-and-kill loop: a program fills the cgroup, the
//! kernel's OOM killer kills it at the limit, its parent starts it again.
//! Between two sweeps such a cgroup can look fine (the kill freed the
//! memory), so the limit check alone misses it; the kernel's own verdicts
//! (`oom-kill:constraint=CONSTRAINT_MEMCG,…,oom_memcg=…,task=…,pid=…`)
//! do not. Kills are counted per `oom_memcg` over a sliding window.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use selfheal_kmsg::{KernelReport, VerdictKind};

/// One kernel OOM kill inside a memory cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomKill {
    /// The victim.
    pub pid: Option<i32>,
    /// Its command.
    pub comm: Option<String>,
    /// Its own memory cgroup (the limited one or below it).
    pub task_cgroup: Option<String>,
    /// When the report arrived.
    pub at: Instant,
}

/// A memory cgroup whose processes the kernel OOM-killed repeatedly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomLoop {
    /// The memory cgroup whose limit was hit (`oom_memcg`).
    pub cgroup: String,
    /// The kills in the window, oldest first.
    pub kills: Vec<OomKill>,
    /// The window.
    pub window: Duration,
}

impl OomLoop {
    /// The command killed most often, and how often.
    pub fn program(&self) -> Option<(String, usize)> {
        let mut n: HashMap<&str, usize> = HashMap::new();
        for k in &self.kills {
            if let Some(c) = &k.comm {
                *n.entry(c.as_str()).or_default() += 1;
            }
        }
        n.into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
            .map(|(c, k)| (c.to_string(), k))
    }
}

/// Counts memory-cgroup OOM kills.
#[derive(Debug)]
pub struct OomLoops {
    min_kills: usize,
    window: Duration,
    by_cgroup: HashMap<String, VecDeque<OomKill>>,
}

/// Most cgroups followed at once (each keeps at most its window's kills).
const MAX_CGROUPS: usize = 256;

impl OomLoops {
    /// A loop is `min_kills` kills (0: never) within `window`.
    pub fn new(min_kills: u32, window: Duration) -> OomLoops {
        OomLoops {
            min_kills: min_kills as usize,
            window,
            by_cgroup: HashMap::new(),
        }
    }

    /// Records a kernel report; returns the cgroup when it (now) loops.
    ///
    /// The kernel prints its full report (with the `oom-kill:` line naming
    /// the cgroup) at most 10 times per 5 s; beyond that only `Memory
    /// cgroup out of memory: Killed process N (comm)`. Such a line counts
    /// for the cgroup where the same command was last killed in the window.
    pub fn record(&mut self, r: &KernelReport, now: Instant) -> Option<String> {
        if self.min_kills == 0 || r.kind != VerdictKind::OomKill {
            return None;
        }
        let cgroup = match r.oom_constraint.as_deref() {
            Some("CONSTRAINT_MEMCG") => r.oom_memcg.clone().or_else(|| r.cgroup.clone())?,
            None if r.headline.contains("Memory cgroup out of memory") => {
                self.last_cgroup_of(r.comm.as_deref()?, now)?
            }
            _ => return None,
        };
        if !self.by_cgroup.contains_key(&cgroup) && self.by_cgroup.len() >= MAX_CGROUPS {
            self.prune(now);
            if self.by_cgroup.len() >= MAX_CGROUPS {
                return None;
            }
        }
        let kills = self.by_cgroup.entry(cgroup.clone()).or_default();
        kills.push_back(OomKill {
            pid: r.pid,
            comm: r.comm.clone(),
            task_cgroup: r.cgroup.clone(),
            at: now,
        });
        while kills
            .front()
            .is_some_and(|k| now.saturating_duration_since(k.at) > self.window)
        {
            kills.pop_front();
        }
        (kills.len() >= self.min_kills).then_some(cgroup)
    }

    /// The cgroup where `comm` was last killed within the window.
    fn last_cgroup_of(&self, comm: &str, now: Instant) -> Option<String> {
        self.by_cgroup
            .iter()
            .filter_map(|(cg, kills)| {
                kills
                    .iter()
                    .rev()
                    .find(|k| k.comm.as_deref() == Some(comm))
                    .filter(|k| now.saturating_duration_since(k.at) <= self.window)
                    .map(|k| (k.at, cg))
            })
            .max_by_key(|(at, _)| *at)
            .map(|(_, cg)| cg.clone())
    }

    /// The cgroups looping now.
    pub fn looping(&mut self, now: Instant) -> Vec<OomLoop> {
        self.prune(now);
        let mut out: Vec<OomLoop> = self
            .by_cgroup
            .iter()
            .filter(|(_, k)| k.len() >= self.min_kills.max(1))
            .map(|(cg, k)| OomLoop {
                cgroup: cg.clone(),
                kills: k.iter().cloned().collect(),
                window: self.window,
            })
            .collect();
        out.sort_by(|a, b| a.cgroup.cmp(&b.cgroup));
        out
    }

    fn prune(&mut self, now: Instant) {
        let window = self.window;
        for kills in self.by_cgroup.values_mut() {
            kills.retain(|k| now.saturating_duration_since(k.at) <= window);
        }
        self.by_cgroup.retain(|_, k| !k.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kill(pid: i32, comm: &str, constraint: &str, memcg: &str) -> KernelReport {
        KernelReport {
            kind: VerdictKind::OomKill,
            seq: 0,
            ts_us: 0,
            level: 3,
            cpu: None,
            pid: Some(pid),
            comm: Some(comm.into()),
            cgroup: Some(format!("{memcg}/leaf")),
            oom_constraint: Some(constraint.into()),
            oom_memcg: Some(memcg.into()),
            stuck_for_s: None,
            headline: String::new(),
            lines: Vec::new(),
            wall_unix_ms: None,
        }
    }

    #[test]
    fn repeated_memcg_kills_in_the_window_are_a_loop() {
        let mut l = OomLoops::new(3, Duration::from_secs(30));
        let t0 = Instant::now();
        assert_eq!(
            l.record(&kill(10, "tail", "CONSTRAINT_MEMCG", "/a"), t0),
            None
        );
        // A global OOM kill is not a cgroup's loop.
        assert_eq!(
            l.record(&kill(11, "tail", "CONSTRAINT_NONE", "/a"), t0),
            None
        );
        assert_eq!(
            l.record(&kill(12, "tail", "CONSTRAINT_MEMCG", "/b"), t0),
            None
        );
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            l.record(&kill(13, "tail", "CONSTRAINT_MEMCG", "/a"), t1),
            None
        );
        assert_eq!(
            l.record(&kill(14, "cc1", "CONSTRAINT_MEMCG", "/a"), t1),
            Some("/a".into())
        );
        let loops = l.looping(t1);
        assert_eq!(loops.len(), 1);
        assert_eq!(loops[0].cgroup, "/a");
        assert_eq!(loops[0].program(), Some(("tail".into(), 2)));
        assert_eq!(loops[0].kills[0].task_cgroup.as_deref(), Some("/a/leaf"));
        // The first kill leaves the window: no longer a loop.
        assert!(l.looping(t0 + Duration::from_secs(31)).is_empty());
        // Past the kernel's rate limit only the victim line is printed: it
        // counts where its command was last killed.
        let mut lone = kill(15, "tail", "", "/a");
        lone.oom_constraint = None;
        lone.oom_memcg = None;
        lone.cgroup = None;
        lone.headline = "Memory cgroup out of memory: Killed process 15 (tail)".into();
        assert_eq!(l.record(&lone, t1), Some("/a".into()));
        assert_eq!(l.looping(t1)[0].kills.len(), 3);
        lone.comm = Some("never-seen".into());
        assert_eq!(l.record(&lone, t1), None);
        // Off.
        let mut off = OomLoops::new(0, Duration::from_secs(30));
        assert_eq!(
            off.record(&kill(1, "x", "CONSTRAINT_MEMCG", "/a"), t0),
            None
        );
    }
}
