//! /proc/PID/stat and /proc/PID/task/TID/stat.

/// The kernel-thread flag in the `flags` field (PF_KTHREAD).
const PF_KTHREAD: u64 = 0x0020_0000;

/// Fields of a task's `stat` line that selfheal uses. Times are in clock
/// ticks (USER_HZ), memory in pages, as the kernel reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStat {
    /// pid (or tid for a thread's file).
    pub pid: i32,
    /// Command name (up to 15 bytes, may contain spaces and parentheses).
    pub comm: String,
    /// One-letter state: R, S, D, T, t, Z, X, I, …
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// Process group.
    pub pgrp: i32,
    /// Session id.
    pub session: i32,
    /// Kernel flags (PF_*).
    pub flags: u64,
    /// Major faults.
    pub majflt: u64,
    /// User-mode time, ticks.
    pub utime_ticks: u64,
    /// Kernel-mode time, ticks.
    pub stime_ticks: u64,
    /// Nice value.
    pub nice: i64,
    /// Threads in the process.
    pub num_threads: i64,
    /// Start time after boot, ticks.
    pub starttime_ticks: u64,
    /// Resident set, pages.
    pub rss_pages: u64,
    /// CPU last run on.
    pub processor: Option<u32>,
    /// Real-time priority (0 for normal tasks).
    pub rt_priority: u32,
    /// Scheduling policy number (0 OTHER, 1 FIFO, 2 RR, 3 BATCH, 5 IDLE, 6 DEADLINE).
    pub policy: u32,
    /// Aggregated block I/O delay, ticks (when delay accounting is on).
    pub blkio_ticks: Option<u64>,
}

impl TaskStat {
    /// True for kernel threads (never a recovery target).
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }

    /// utime + stime.
    pub fn cpu_ticks(&self) -> u64 {
        self.utime_ticks + self.stime_ticks
    }

    /// True for SCHED_FIFO and SCHED_RR.
    pub fn is_realtime(&self) -> bool {
        self.policy == 1 || self.policy == 2
    }
}

/// Parses one stat line. `None` when it is malformed (or empty, as for a
/// task that exited while being read).
pub fn parse_task_stat(text: &str) -> Option<TaskStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let pid: i32 = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_string();
    // Fields after the comm, numbered from 3 (state) as in proc(5).
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).copied();
    let num = |n: usize| field(n).and_then(|s| s.parse::<u64>().ok());
    let inum = |n: usize| field(n).and_then(|s| s.parse::<i64>().ok());
    Some(TaskStat {
        pid,
        comm,
        state: field(3)?.chars().next()?,
        ppid: inum(4)? as i32,
        pgrp: inum(5)? as i32,
        session: inum(6)? as i32,
        flags: num(9)?,
        majflt: num(12)?,
        utime_ticks: num(14)?,
        stime_ticks: num(15)?,
        nice: inum(19)?,
        num_threads: inum(20)?,
        starttime_ticks: num(22)?,
        rss_pages: num(24)?,
        processor: num(39).map(|c| c as u32),
        rt_priority: num(40).unwrap_or(0) as u32,
        policy: num(41).unwrap_or(0) as u32,
        blkio_ticks: num(42),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from `cat /proc/self/stat` on the 6.18 host.
    const CAT: &str = "5089 (cat) R 5076 5076 1033 0 -1 4194304 98 0 0 0 0 0 0 0 20 0 1 0 39187 3133440 381 18446744073709551615 94813647134720 94813647154601 140726375667216 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 94813647170608 94813647172224 94814684057600 140726375668200 140726375668220 140726375668220 140726375669739 0\n";

    #[test]
    fn captured_line() {
        let s = parse_task_stat(CAT).unwrap();
        assert_eq!(
            (s.pid, s.comm.as_str(), s.state, s.ppid),
            (5089, "cat", 'R', 5076)
        );
        assert_eq!(s.processor, Some(0));
        assert_eq!((s.rt_priority, s.policy), (0, 0));
        assert_eq!(s.rss_pages, 381);
        assert!(!s.is_kernel_thread() && !s.is_realtime());
    }

    #[test]
    fn hostile_comm() {
        let line = CAT.replace("(cat)", "(a) R 1 (b)");
        let s = parse_task_stat(&line).unwrap();
        assert_eq!(s.comm, "a) R 1 (b");
        assert_eq!(s.ppid, 5076);
    }

    #[test]
    fn kernel_thread_and_fifo() {
        // kthreadd-like flags with SCHED_FIFO priority 50.
        let line = "15 (rcu_preempt) I 2 0 0 0 -1 2129984 0 0 0 0 0 37 0 0 -51 0 1 0 3 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 17 1 50 1 0 0 0 0 0 0 0 0 0 0 0\n";
        let s = parse_task_stat(line).unwrap();
        assert!(s.is_kernel_thread());
        assert!(s.is_realtime());
        assert_eq!((s.processor, s.rt_priority), (Some(1), 50));
    }

    #[test]
    fn malformed() {
        assert!(parse_task_stat("").is_none());
        assert!(parse_task_stat("12 (x").is_none());
        assert!(parse_task_stat("12 (x) R").is_none());
    }

    #[test]
    fn own_thread_live() {
        let dir = super::super::TaskDir::process(
            std::path::Path::new("/proc"),
            std::process::id() as i32,
        );
        let s = dir.stat().unwrap();
        assert_eq!(s.pid, std::process::id() as i32);
        assert!(s.num_threads >= 1);
        assert!(!dir.comm().unwrap().is_empty());
    }
}
