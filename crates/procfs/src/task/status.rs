//! /proc/PID/status: context switch counts, memory, ids.

/// Fields of `status` that selfheal uses; each may be absent on some kernels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskStatus {
    /// `Name`.
    pub name: Option<String>,
    /// `State` letter.
    pub state: Option<char>,
    /// `Tgid`: the process this thread belongs to.
    pub tgid: Option<i32>,
    /// `PPid`.
    pub ppid: Option<i32>,
    /// Real uid (first of `Uid`).
    pub uid: Option<u32>,
    /// Effective uid (second of `Uid`): the one permission checks use.
    pub euid: Option<u32>,
    /// `VmRSS` in bytes.
    pub rss_bytes: Option<u64>,
    /// `Threads`.
    pub threads: Option<u64>,
    /// `voluntary_ctxt_switches`.
    pub voluntary_ctxt_switches: Option<u64>,
    /// `nonvoluntary_ctxt_switches`.
    pub nonvoluntary_ctxt_switches: Option<u64>,
    /// `Kthread` (6.x+): 1 for kernel threads.
    pub kthread: Option<bool>,
}

/// Parses `status` text; unknown lines are ignored.
pub fn parse_task_status(text: &str) -> TaskStatus {
    let mut s = TaskStatus::default();
    for line in text.lines() {
        let Some((key, val)) = line.split_once(':') else {
            continue;
        };
        let val = val.trim();
        let first = || val.split_whitespace().next();
        let num = || first().and_then(|v| v.parse::<u64>().ok());
        match key {
            "Name" => s.name = Some(val.to_string()),
            "State" => s.state = val.chars().next(),
            "Tgid" => s.tgid = num().map(|v| v as i32),
            "PPid" => s.ppid = num().map(|v| v as i32),
            "Uid" => {
                s.uid = num().map(|v| v as u32);
                s.euid = val.split_whitespace().nth(1).and_then(|v| v.parse().ok());
            }
            "VmRSS" => s.rss_bytes = num().map(|kb| kb * 1024),
            "Threads" => s.threads = num(),
            "voluntary_ctxt_switches" => s.voluntary_ctxt_switches = num(),
            "nonvoluntary_ctxt_switches" => s.nonvoluntary_ctxt_switches = num(),
            "Kthread" => s.kthread = num().map(|v| v == 1),
            _ => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured() {
        let text = "Name:\tcat\nState:\tR (running)\nTgid:\t5090\nPPid:\t5076\nUid:\t0\t0\t0\t0\n\
                    Kthread:\t0\nVmRSS:\t    1752 kB\nThreads:\t1\nvoluntary_ctxt_switches:\t3\n\
                    nonvoluntary_ctxt_switches:\t1\n";
        let s = parse_task_status(text);
        assert_eq!(s.name.as_deref(), Some("cat"));
        assert_eq!(s.state, Some('R'));
        assert_eq!((s.tgid, s.ppid, s.uid), (Some(5090), Some(5076), Some(0)));
        assert_eq!(s.euid, Some(0));
        assert_eq!(s.rss_bytes, Some(1752 * 1024));
        assert_eq!(
            (s.voluntary_ctxt_switches, s.nonvoluntary_ctxt_switches),
            (Some(3), Some(1))
        );
        assert_eq!(s.kthread, Some(false));
    }

    #[test]
    fn a_setuid_program_has_its_own_effective_uid() {
        let s = parse_task_status("Name:\tpasswd\nUid:\t1000\t0\t0\t0\n");
        assert_eq!((s.uid, s.euid), (Some(1000), Some(0)));
    }

    #[test]
    fn kernel_thread_has_no_rss() {
        let s = parse_task_status("Name:\tkthreadd\nState:\tS (sleeping)\nKthread:\t1\n");
        assert_eq!(s.rss_bytes, None);
        assert_eq!(s.kthread, Some(true));
    }
}
