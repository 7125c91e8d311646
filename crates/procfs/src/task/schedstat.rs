//! /proc/PID/task/TID/schedstat: CPU time in nanoseconds.

/// A task's `schedstat` line (CONFIG_SCHED_INFO): exact CPU time, unlike
/// `stat`'s clock ticks, so a thread that ran for a millisecond shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSchedstat {
    /// Time spent on a CPU, ns.
    pub run_ns: u64,
    /// Time spent runnable waiting for a CPU, ns (0 without schedstats).
    pub wait_ns: u64,
    /// Times it was scheduled in.
    pub timeslices: u64,
}

/// Parses `run_ns wait_ns timeslices`; `None` when malformed.
pub fn parse_task_schedstat(text: &str) -> Option<TaskSchedstat> {
    let mut it = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some(TaskSchedstat {
        run_ns: it.next()??,
        wait_ns: it.next()??,
        timeslices: it.next()??,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_line() {
        // /proc/1/schedstat on kernel 6.18.
        assert_eq!(
            parse_task_schedstat("192705324 12534808 414\n"),
            Some(TaskSchedstat {
                run_ns: 192_705_324,
                wait_ns: 12_534_808,
                timeslices: 414
            })
        );
        assert_eq!(parse_task_schedstat(""), None);
        assert_eq!(parse_task_schedstat("1 2 x"), None);
    }
}
