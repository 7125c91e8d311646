//! Helpers shared by the real-cgroup tests.
#![allow(dead_code)]

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use selfheal_cgroup::{read_pid_cgroup, Sandbox, SandboxConfig};

/// A sandbox, or `None` after printing why this machine cannot host one.
pub fn sandbox_or_skip(test: &str, config: SandboxConfig) -> Option<Sandbox> {
    match Sandbox::new(config) {
        Ok(s) => Some(s),
        Err(e) if e.is_unavailable() => {
            eprintln!("SKIP {test}: {e}");
            None
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// Waits for a child to exit, for at most `timeout` (then SIGKILLs it, our own child).
pub fn wait_child(child: &mut Child, timeout: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("child {} did not exit within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True when the exit status says "killed by SIGKILL".
pub fn killed_by_sigkill(status: ExitStatus) -> bool {
    status.signal() == Some(libc::SIGKILL)
}

/// True when `pid` still exists and is inside cgroup path `rel` in some hierarchy.
pub fn pid_in_cgroup(pid: i32, rel: &str) -> bool {
    match read_pid_cgroup(pid) {
        Ok(entries) => entries
            .iter()
            .any(|e| e.path == rel || e.path.starts_with(&format!("{rel}/"))),
        Err(_) => false,
    }
}

/// Every pid on the machine whose cgroup is `rel` or below it.
pub fn all_pids_in_cgroup(rel: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid_in_cgroup(pid, rel))
        .collect()
}

/// The one-letter state of `pid` from `/proc/PID/stat`.
pub fn task_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// user + system CPU seconds of `pid` from `/proc/PID/stat`.
pub fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after "state".
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / selfheal_sys::sched::clock_ticks_per_second() as f64
}
