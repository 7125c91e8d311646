//! Tests whose every process runs in sandboxes (pids, memory and CPU
//! limits) under one parent cgroup, [`PARENT`], beside the real `selfheal
//! watch` with the default recovery ladders and its recovery confined to
//! that subtree (`recovery.allowed_cgroups`), so that on a shared machine
//! the daemon can never touch a process these tests did not start.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use selfheal_cgroup::{Sandbox, SandboxConfig};
use selfheal_event::{Event, EventKind};

use super::{on_path, ChildGuard, EventLogWatch};

/// The cgroup parent of every sandbox here, and recovery's scope.
pub const PARENT: &str = "selfheal-bystanders";

/// Where other tests' sandboxes are (`SandboxConfig`'s default parent):
/// their faults, seen by the same daemon, are not ours to judge.
pub const OTHER_TESTS: &str = "/selfheal-sandbox/";

/// A daemon with the default recovery ladders, confined to [`PARENT`].
pub struct Watch(pub EventLogWatch);

impl Watch {
    /// Starts the daemon and waits for its start event.
    pub fn start() -> Watch {
        Watch::start_with("")
    }

    /// [`Watch::start`] with `extra` appended to the config.
    pub fn start_with(extra: &str) -> Watch {
        let w = Watch(EventLogWatch::start(&format!(
            "[daemon]\nlisten = \"\"\n\n[recovery]\nallowed_cgroups = [\"/{PARENT}\"]\n{extra}"
        )));
        assert!(
            w.wait_event(Duration::from_secs(30), |e| e.kind == EventKind::Start)
                .is_some(),
            "selfheal watch did not start:\n{}",
            w.0.daemon.log_text()
        );
        // Let the canaries and the first samples settle.
        std::thread::sleep(Duration::from_millis(500));
        w
    }

    /// The events so far.
    pub fn events(&self) -> Vec<Event> {
        self.0
            .events()
            .into_iter()
            .filter_map(|e| serde_json::from_value(e).ok())
            .collect()
    }

    /// The first event `pred` accepts, waiting up to `timeout` for it.
    pub fn wait_event(&self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        super::poll(timeout, Duration::from_millis(50), || {
            self.events().into_iter().find(|e| pred(e))
        })
    }

    /// Recovery events that signalled or changed a process.
    pub fn actions(&self) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|e| e.kind == EventKind::Recovery)
            .filter(|e| {
                e.details["touched"]
                    .as_array()
                    .is_some_and(|t| !t.is_empty())
            })
            .collect()
    }
}

/// Root, a writable cgroup hierarchy and `programs` on the PATH, or the
/// reason to skip.
pub fn can_run(test: &str, programs: &[&str]) -> bool {
    if !selfheal_sys::process::is_root() {
        eprintln!("SKIP {test}: needs root (cgroup sandboxes, the kernel log)");
        return false;
    }
    for p in programs {
        if !on_path(p) {
            eprintln!("SKIP {test}: `{p}` is not installed (scripts/install-deps installs it)");
            return false;
        }
    }
    true
}

/// A sandbox under [`PARENT`], or `None` (with the reason printed).
pub fn sandbox(test: &str, config: SandboxConfig) -> Option<Sandbox> {
    match Sandbox::new(config.parent(PARENT)) {
        Ok(s) => Some(s),
        Err(e) if e.is_unavailable() => {
            eprintln!("SKIP {test}: {e}");
            None
        }
        Err(e) => panic!("{test}: cannot create a sandbox: {e}"),
    }
}

/// `program ARGS` inside `sb`, in a process group of its own (a job of its
/// own, as a shell or a service manager would start it).
pub fn spawn(sb: &Sandbox, program: &str, args: &[&str]) -> ChildGuard {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    ChildGuard(sb.spawn(&mut cmd).expect("spawn inside the sandbox"))
}

/// (state, start time) of `pid`.
pub fn stat_of(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some((
        fields.first()?.chars().next()?,
        fields.get(19)?.parse().ok()?,
    ))
}

/// Live (not zombie) processes in `sb`.
pub fn live_members(sb: &Sandbox) -> Vec<i32> {
    sb.cgroup()
        .procs_recursive()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| stat_of(*p).is_some_and(|(s, _)| s != 'Z' && s != 'X'))
        .collect()
}

/// The pids a recovery step signalled or changed.
pub fn touched(e: &Event) -> Vec<i32> {
    e.details["touched"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|p| p.as_i64())
                .map(|p| p as i32)
                .collect()
        })
        .unwrap_or_default()
}

/// The cgroup of the event's culprit.
pub fn culprit_cgroup(e: &Event) -> Option<&str> {
    e.culprit.as_ref().and_then(|c| c.cgroup.as_deref())
}
