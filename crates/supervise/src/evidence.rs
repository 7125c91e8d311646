//! Evidence captured before acting on a hang: every thread's state from
//! /proc, and the output of the app's own hook command.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use selfheal_config::HookConfig;
use selfheal_procfs::task::{list_tids, TaskDir};
use selfheal_sys::child::{pipe_cloexec, poll_readable_any, set_nonblocking};

use crate::child::{ChildHandle, LaunchSpec, ProcessChild, Program, SignalScope, StdioSpec};

/// Bytes of hook output kept in the event.
const HOOK_OUTPUT: usize = 8 * 1024;

/// Threads read at most (a program with thousands of threads must not
/// make the event huge).
const MAX_THREADS: usize = 256;

/// The `thread_stacks` of an `app_hang` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ThreadStacks {
    /// The threads read (at most [`MAX_THREADS`]).
    Read {
        threads: Vec<ThreadStack>,
        /// Threads the program had, read or not.
        total_threads: usize,
    },
    /// The thread list could not be read.
    Unreadable { error: String },
}

/// One thread in [`ThreadStacks`]; what could not be read is `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadStack {
    pub tid: i32,
    pub comm: String,
    /// State letter (R, S, D, …).
    pub state: String,
    pub wchan: Option<String>,
    /// `/proc/…/syscall` as the kernel wrote it.
    pub syscall: Option<String>,
    /// Function names, innermost first (root only).
    pub kernel_stack: Option<Vec<String>>,
}

/// What the hook command did: the `result` of the hook's `app_action`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HookRun {
    /// It ran (and ended, or was killed at its timeout).
    Ran {
        command: Vec<String>,
        /// How it ended; `null` when killed at its timeout.
        status: Option<String>,
        timed_out: bool,
        elapsed_ms: u64,
        /// Its stdout and stderr, at most 8 KiB.
        output: String,
    },
    /// It could not be started.
    NotStarted { command: Vec<String>, error: String },
}

/// Every thread's name, state, wait channel, system call and (when
/// readable: root only) kernel stack.
pub fn thread_stacks(proc_root: &Path, pid: i32) -> ThreadStacks {
    let tids = match list_tids(proc_root, pid) {
        Ok(t) => t,
        Err(e) => {
            return ThreadStacks::Unreadable {
                error: e.to_string(),
            }
        }
    };
    let threads = tids
        .iter()
        .take(MAX_THREADS)
        .filter_map(|&tid| {
            let dir = TaskDir::thread(proc_root, pid, tid);
            let stat = dir.stat().ok()?;
            let stack = dir.kernel_stack().ok().flatten().map(|s| {
                s.lines()
                    .map(|l| l.split_whitespace().nth(1).unwrap_or(l).to_string())
                    .collect::<Vec<_>>()
            });
            Some(ThreadStack {
                tid,
                comm: stat.comm,
                state: stat.state.to_string(),
                wchan: dir.wchan().ok().flatten(),
                syscall: dir.syscall().ok().flatten(),
                kernel_stack: stack,
            })
        })
        .collect();
    ThreadStacks::Read {
        threads,
        total_threads: tids.len(),
    }
}

/// Runs the hook command (if any) with `SELFHEAL_APP`, `SELFHEAL_PID` and
/// `SELFHEAL_REASON` set, for at most its timeout. `None` when no command
/// is configured.
pub fn run_hook(cfg: &HookConfig, app: &str, pid: i32, reason: &str) -> Option<HookRun> {
    if cfg.command.is_empty() {
        return None;
    }
    let not_started = |error: String| {
        Some(HookRun::NotStarted {
            command: cfg.command.clone(),
            error,
        })
    };
    let started = Instant::now();
    let deadline = started + cfg.timeout.get();
    let (r, w) = match pipe_cloexec() {
        Ok(p) => p,
        Err(e) => return not_started(e.to_string()),
    };
    let w2 = match w.try_clone() {
        Ok(w2) => w2,
        Err(e) => return not_started(e.to_string()),
    };
    let spec = LaunchSpec {
        program: Program {
            argv: cfg.command.clone(),
            env: vec![
                ("SELFHEAL_APP".into(), app.into()),
                ("SELFHEAL_PID".into(), pid.to_string()),
                ("SELFHEAL_REASON".into(), reason.into()),
            ],
            stdio: [StdioSpec::Null, StdioSpec::Fd(w), StdioSpec::Fd(w2)],
            new_process_group: true,
            ..Program::default()
        },
        kill_group_on_exit: true,
        parent_death_signal: Some(libc::SIGKILL),
    };
    let mut child = match ProcessChild::spawn(spec) {
        Ok(c) => c,
        Err(e) => return not_started(e.to_string()),
    };
    let _ = set_nonblocking(r.as_fd(), true);
    let mut out = File::from(r);
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    let mut timed_out = false;
    // Read while waiting, so a chatty hook never blocks on a full pipe.
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            timed_out = true;
            let _ = child.signal(libc::SIGKILL, SignalScope::Group);
            break None;
        }
        let ready = poll_readable_any(&[out.as_fd(), child.exit_fd()], Some(left)).unwrap_or(0);
        if ready & 1 != 0 {
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let room = HOOK_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    };
    while let Ok(n) = out.read(&mut buf) {
        if n == 0 {
            break;
        }
        let room = HOOK_OUTPUT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    Some(HookRun::Ran {
        command: cfg.command.clone(),
        status: status.map(|s| s.describe()),
        timed_out,
        elapsed_ms: started.elapsed().as_millis() as u64,
        output: String::from_utf8_lossy(&kept).into_owned(),
    })
}

/// How long the hook may take at most, for callers that budget time.
pub fn hook_budget(cfg: &HookConfig) -> Duration {
    if cfg.command.is_empty() {
        Duration::ZERO
    } else {
        cfg.timeout.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use selfheal_config::HumanDuration;

    #[test]
    fn stacks_of_own_process() {
        let v = thread_stacks(Path::new("/proc"), std::process::id() as i32);
        let ThreadStacks::Read { threads, .. } = &v else {
            panic!("{v:?}")
        };
        assert!(threads.iter().any(|t| t.tid == std::process::id() as i32));
        let gone = thread_stacks(Path::new("/proc"), 0x3fff_fff0);
        let ThreadStacks::Unreadable { error } = &gone else {
            panic!("{gone:?}")
        };
        assert!(error.contains("gone"), "{error}");
    }

    #[test]
    fn hook_output_environment_and_timeout() {
        let cfg = HookConfig {
            command: vec![
                "sh".into(),
                "-c".into(),
                "echo app=$SELFHEAL_APP pid=$SELFHEAL_PID why=$SELFHEAL_REASON; echo err >&2"
                    .into(),
            ],
            ..HookConfig::default()
        };
        let v = run_hook(&cfg, "web", 42, "watchdog").unwrap();
        let HookRun::Ran { status, output, .. } = &v else {
            panic!("{v:?}")
        };
        assert_eq!(status.as_deref(), Some("exited with status 0"));
        assert_eq!(output, "app=web pid=42 why=watchdog\nerr\n");

        let slow = HookConfig {
            command: vec!["sleep".into(), "30".into()],
            timeout: HumanDuration::from_millis(100),
            ..HookConfig::default()
        };
        let t0 = Instant::now();
        let v = run_hook(&slow, "web", 1, "x").unwrap();
        assert!(
            matches!(
                v,
                HookRun::Ran {
                    timed_out: true,
                    ..
                }
            ),
            "{v:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(run_hook(&HookConfig::default(), "web", 1, "x").is_none());
    }

    /// The documents are exactly the ones the old `json!` literals built,
    /// and old documents read back as the same variant.
    #[test]
    fn documents_match_the_old_json_and_read_back() {
        use serde_json::json;
        let cases = [
            (
                serde_json::to_value(ThreadStacks::Read {
                    threads: vec![ThreadStack {
                        tid: 5,
                        comm: "web".into(),
                        state: "S".into(),
                        wchan: Some("futex_wait_queue".into()),
                        syscall: None,
                        kernel_stack: Some(vec!["futex_wait".into()]),
                    }],
                    total_threads: 9,
                })
                .unwrap(),
                json!({"threads": [{"tid": 5, "comm": "web", "state": "S",
                       "wchan": "futex_wait_queue", "syscall": null,
                       "kernel_stack": ["futex_wait"]}], "total_threads": 9}),
            ),
            (
                serde_json::to_value(ThreadStacks::Unreadable {
                    error: "gone".into(),
                })
                .unwrap(),
                json!({"error": "gone"}),
            ),
        ];
        for (typed, old) in cases {
            assert_eq!(typed, old);
            let back: ThreadStacks = serde_json::from_value(old.clone()).unwrap();
            assert_eq!(serde_json::to_value(back).unwrap(), old);
        }
        let cases = [
            (
                serde_json::to_value(HookRun::Ran {
                    command: vec!["dump".into()],
                    status: None,
                    timed_out: true,
                    elapsed_ms: 100,
                    output: "x".into(),
                })
                .unwrap(),
                json!({"command": ["dump"], "status": null, "timed_out": true,
                       "elapsed_ms": 100, "output": "x"}),
            ),
            (
                serde_json::to_value(HookRun::NotStarted {
                    command: vec!["dump".into()],
                    error: "ENOENT".into(),
                })
                .unwrap(),
                json!({"command": ["dump"], "error": "ENOENT"}),
            ),
        ];
        for (typed, old) in cases {
            assert_eq!(typed, old);
            let back: HookRun = serde_json::from_value(old.clone()).unwrap();
            assert_eq!(serde_json::to_value(back).unwrap(), old);
        }
    }
}
