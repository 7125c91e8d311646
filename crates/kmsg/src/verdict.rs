//! Recognising the kernel's verdicts in printk text.
//!
//! [`classify`] looks at a report's first line; [`context_of`] at the lines
//! that follow it (`CPU: 1 PID: 121 Comm: x`, the hung-task `task:x
//! state:D … pid:N` line, the OOM killer's `oom-kill:…` line, RCU's
//! per-CPU stall line). The formats are the kernel's, from 6.1 to 6.18;
//! every pattern is tested on captured text.

use serde::{Deserialize, Serialize};

/// Which kernel detector spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    /// `watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [comm:pid]`.
    SoftLockup,
    /// `Watchdog detected hard LOCKUP on cpu 1`.
    HardLockup,
    /// `INFO: task comm:pid blocked for more than 120 seconds.`
    HungTask,
    /// `rcu: INFO: rcu_preempt self-detected stall on CPU` and friends.
    RcuStall,
    /// The OOM killer (global or memory cgroup) killed a process.
    OomKill,
    /// `kernel BUG at …`, `BUG: unable to handle page fault`, `BUG: workqueue lockup`, ….
    Bug,
    /// `Oops: …`.
    Oops,
    /// `WARNING: CPU: 1 PID: 123 at file:line func`.
    Warning,
    /// `Kernel panic - not syncing: …`.
    Panic,
    /// `sched: RT throttling activated`: real-time tasks used up their budget.
    RtThrottling,
    /// `cgroup: fork rejected by pids controller in /path`.
    ForkRejected,
}

impl VerdictKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [VerdictKind] = &[
        VerdictKind::SoftLockup,
        VerdictKind::HardLockup,
        VerdictKind::HungTask,
        VerdictKind::RcuStall,
        VerdictKind::OomKill,
        VerdictKind::Bug,
        VerdictKind::Oops,
        VerdictKind::Warning,
        VerdictKind::Panic,
        VerdictKind::RtThrottling,
        VerdictKind::ForkRejected,
    ];

    /// The stable name used as the event's `rule` and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::SoftLockup => "soft_lockup",
            VerdictKind::HardLockup => "hard_lockup",
            VerdictKind::HungTask => "hung_task",
            VerdictKind::RcuStall => "rcu_stall",
            VerdictKind::OomKill => "oom_kill",
            VerdictKind::Bug => "bug",
            VerdictKind::Oops => "oops",
            VerdictKind::Warning => "warning",
            VerdictKind::Panic => "panic",
            VerdictKind::RtThrottling => "rt_throttling",
            VerdictKind::ForkRejected => "fork_rejected",
        }
    }

    /// True for verdicts that mean a CPU stopped making progress.
    pub fn is_cpu_stall(self) -> bool {
        matches!(
            self,
            VerdictKind::SoftLockup | VerdictKind::HardLockup | VerdictKind::RcuStall
        )
    }
}

/// What a report's first line says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// The detector; `None` only inside [`Context`] merging.
    pub kind: Option<VerdictKind>,
    /// CPU named by the line.
    pub cpu: Option<u32>,
    /// Task id named by the line.
    pub pid: Option<i32>,
    /// Command named by the line.
    pub comm: Option<String>,
    /// cgroup named by the line (fork rejection).
    pub cgroup: Option<String>,
    /// How long the kernel says it has been stuck, seconds.
    pub stuck_for_s: Option<u64>,
    /// True for the OOM killer's opening line (`… invoked oom-killer:`):
    /// the report is complete only once `Killed process` follows.
    pub opens_oom: bool,
}

/// Recognises the first line of a kernel report. Lines that merely continue
/// a report, or are not verdicts at all, give `None`.
pub fn classify(text: &str) -> Option<Verdict> {
    let t = text.trim_end();
    let v = |kind| Verdict {
        kind: Some(kind),
        ..Verdict::default()
    };
    if let Some(rest) = after(t, "BUG: soft lockup - CPU#") {
        // "BUG: soft lockup - CPU#1 stuck for 22s! [comm:pid]"
        let (comm, pid) = bracket_task(t);
        return Some(Verdict {
            cpu: leading_num(rest),
            stuck_for_s: after(rest, "stuck for ").and_then(leading_num),
            comm,
            pid,
            ..v(VerdictKind::SoftLockup)
        });
    }
    if let Some(rest) = after(t, "detected hard LOCKUP on cpu ") {
        return Some(Verdict {
            cpu: leading_num(rest),
            ..v(VerdictKind::HardLockup)
        });
    }
    if let Some(rest) = t.strip_prefix("INFO: task ") {
        if let Some((task, tail)) = rest.split_once(" blocked for more than ") {
            let (comm, pid) = split_comm_pid(task);
            return Some(Verdict {
                comm,
                pid,
                stuck_for_s: leading_num(tail),
                ..v(VerdictKind::HungTask)
            });
        }
    }
    let rcu = t.strip_prefix("rcu: ").unwrap_or(t);
    if rcu.starts_with("INFO: rcu")
        && (rcu.contains("self-detected stall") || rcu.contains("detected stalls"))
        || rcu.contains("detected expedited stalls")
    {
        return Some(v(VerdictKind::RcuStall));
    }
    if t.contains(" invoked oom-killer: ") {
        return Some(Verdict {
            opens_oom: true,
            ..v(VerdictKind::OomKill)
        });
    }
    if let Some(rest) = after(t, "out of memory: Killed process ")
        .or_else(|| after(t, "Out of memory: Killed process "))
    {
        // "Out of memory: Killed process 120 (sleep) total-vm:2260kB, …"
        let pid = leading_num(rest);
        let comm = rest
            .split_once(" (")
            .and_then(|(_, r)| r.rsplit_once(") total-vm").or_else(|| r.split_once(')')))
            .map(|(c, _)| c.to_string());
        return Some(Verdict {
            pid,
            comm,
            ..v(VerdictKind::OomKill)
        });
    }
    if t.starts_with("Kernel panic - not syncing") {
        return Some(v(VerdictKind::Panic));
    }
    if let Some(rest) = t.strip_prefix("WARNING: CPU: ") {
        // "WARNING: CPU: 1 PID: 123 at kernel/foo.c:12 func+0x1/0x2"
        return Some(Verdict {
            cpu: leading_num(rest),
            pid: after(rest, "PID: ").and_then(leading_num),
            ..v(VerdictKind::Warning)
        });
    }
    if t.starts_with("WARNING: at ") {
        return Some(v(VerdictKind::Warning));
    }
    if t.starts_with("Oops: ") || t.contains("general protection fault") && t.contains("[#") {
        return Some(v(VerdictKind::Oops));
    }
    if t.starts_with("kernel BUG at ") || t.starts_with("BUG: ") {
        // "BUG: scheduling while atomic: comm/pid/0x…",
        // "BUG: workqueue lockup - pool cpus=1 … stuck for 31s!"
        return Some(Verdict {
            stuck_for_s: after(t, "stuck for ").and_then(leading_num),
            ..v(VerdictKind::Bug)
        });
    }
    if t.starts_with("sched: RT throttling activated") {
        return Some(v(VerdictKind::RtThrottling));
    }
    if let Some(path) = t.strip_prefix("cgroup: fork rejected by pids controller in ") {
        return Some(Verdict {
            cgroup: Some(path.trim().to_string()),
            ..v(VerdictKind::ForkRejected)
        });
    }
    None
}

/// Facts a continuation line of a report adds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Context {
    /// CPU the line is about.
    pub cpu: Option<u32>,
    /// Task id.
    pub pid: Option<i32>,
    /// Command.
    pub comm: Option<String>,
    /// cgroup (OOM: the victim's memory cgroup).
    pub cgroup: Option<String>,
    /// The OOM killer's constraint (`CONSTRAINT_MEMCG`, `CONSTRAINT_NONE`, …).
    pub oom_constraint: Option<String>,
    /// The memory cgroup whose limit was hit (`oom_memcg=`; an ancestor of
    /// the victim's cgroup, or the same).
    pub oom_memcg: Option<String>,
}

/// Parses the context lines the kernel prints after a report's first line.
pub fn context_of(text: &str) -> Option<Context> {
    let t = text.trim_end();
    if let Some(rest) = t.strip_prefix("CPU: ") {
        // 6.1:  "CPU: 1 PID: 121 Comm: lab_preempt_loo Tainted: G …"
        // 6.18: "CPU: 0 UID: 0 PID: 27202 Comm: tail Not tainted 6.18.44 …"
        let comm = after(rest, "Comm: ").map(|c| {
            let end = [" Tainted: ", " Not tainted"]
                .iter()
                .filter_map(|m| c.find(m))
                .min()
                .unwrap_or(c.len());
            c[..end].trim().to_string()
        });
        return Some(Context {
            cpu: leading_num(rest),
            pid: after(rest, "PID: ").and_then(leading_num),
            comm,
            ..Context::default()
        });
    }
    if let Some(rest) = t.strip_prefix("task:") {
        // "task:lab_dwaiter     state:D stack:0     pid:713   ppid:1 …"
        let comm = rest.split(" state:").next().map(|c| c.trim().to_string());
        return Some(Context {
            comm,
            pid: after(rest, " pid:")
                .map(str::trim_start)
                .and_then(leading_num),
            ..Context::default()
        });
    }
    if let Some(rest) = t.strip_prefix("oom-kill:") {
        // "oom-kill:constraint=CONSTRAINT_MEMCG,…,task_memcg=/x,task=tail,pid=27202,uid=0"
        let field = |key: &str| {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix(key))
                .map(str::to_string)
        };
        return Some(Context {
            cgroup: field("task_memcg="),
            comm: field("task="),
            pid: field("pid=").and_then(|p| p.parse().ok()),
            oom_constraint: field("constraint="),
            oom_memcg: field("oom_memcg="),
            ..Context::default()
        });
    }
    if let Some(rest) = t.strip_prefix("NMI backtrace for cpu ") {
        return Some(Context {
            cpu: leading_num(rest),
            ..Context::default()
        });
    }
    if let Some(rest) = t.strip_prefix("rcu: ") {
        // "rcu: \t1-....: (465 ticks this GP) idle=…": the stalled CPU.
        let r = rest.trim_start();
        let digits = r.len() - r.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 && r[digits..].starts_with('-') && r.contains("ticks this GP") {
            return Some(Context {
                cpu: r[..digits].parse().ok(),
                ..Context::default()
            });
        }
    }
    None
}

/// The text after the first occurrence of `marker`.
fn after<'a>(s: &'a str, marker: &str) -> Option<&'a str> {
    s.find(marker).map(|i| &s[i + marker.len()..])
}

/// The leading decimal number of `s`.
fn leading_num<T: std::str::FromStr>(s: &str) -> Option<T> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

/// `comm:pid`, where comm may itself contain ':'.
fn split_comm_pid(task: &str) -> (Option<String>, Option<i32>) {
    match task.rsplit_once(':') {
        Some((comm, pid)) => (Some(comm.to_string()), pid.trim().parse().ok()),
        None => (Some(task.to_string()), None),
    }
}

/// The `[comm:pid]` at the end of a soft-lockup line.
fn bracket_task(line: &str) -> (Option<String>, Option<i32>) {
    match line.rsplit_once('[') {
        Some((_, task)) => split_comm_pid(task.trim_end_matches(']')),
        None => (None, None),
    }
}

#[cfg(test)]
mod tests;
