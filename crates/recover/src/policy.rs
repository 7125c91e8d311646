//! Who recovery never touches, and where it may act at all.
//!
//! Always protected, whatever the configuration says:
//! - pid 1 (init): killing it panics the kernel; stopping it hangs the system;
//! - kernel threads: signals do not apply and stopping them is not possible;
//! - selfheal itself and every ancestor (its supervisor, the shell or
//!   service manager that started it): nobody would be left to finish
//!   recovery or to restart us.
//!
//! Configurable: `recovery.protected` (command names, `*` suffix = prefix;
//! default `sshd*` so the way in stays open), `recovery.protected_units`,
//! and `recovery.allowed_cgroups` (when set, act only inside those subtrees).

use std::collections::HashSet;

use selfheal_config::RecoveryConfig;

use crate::ops::{OpsError, ProcInfo, SystemOps};

/// The protection rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Command names (`comm`); a trailing `*` matches a prefix.
    pub protected: Vec<String>,
    /// systemd units.
    pub protected_units: Vec<String>,
    /// When not empty, the only cgroup subtrees recovery may act in.
    pub allowed_cgroups: Vec<String>,
}

impl Policy {
    /// From `[recovery]`.
    pub fn from_config(c: &RecoveryConfig) -> Policy {
        Policy {
            protected: c.protected.clone(),
            protected_units: c.protected_units.clone(),
            allowed_cgroups: c.allowed_cgroups.clone(),
        }
    }

    /// selfheal's own pid and all its ancestors, looked up now.
    pub fn own_lineage(ops: &dyn SystemOps) -> HashSet<i32> {
        let mut set = HashSet::new();
        let mut pid = ops.own_pid();
        while pid > 0 && set.insert(pid) {
            match ops.process(pid) {
                Ok(Some(p)) => pid = p.ppid,
                _ => break,
            }
        }
        set
    }

    /// True when [`Policy::refusal`] looks at a process's cgroups (a
    /// protected unit or an allowed-cgroups list is configured): only then
    /// must a caller read them.
    pub fn needs_cgroups(&self) -> bool {
        !self.protected_units.is_empty() || !self.allowed_cgroups.is_empty()
    }

    /// Why `p` must not be touched, or `None` when it may be. Reads
    /// `p.cgroups` and `p.unit` only when [`Policy::needs_cgroups`].
    pub fn refusal(&self, p: &ProcInfo, lineage: &HashSet<i32>) -> Option<String> {
        if p.pid == 1 {
            return Some("pid 1 (init) is always protected".into());
        }
        if p.kernel_thread {
            return Some(format!("{} (pid {}) is a kernel thread", p.comm, p.pid));
        }
        if lineage.contains(&p.pid) {
            return Some(format!(
                "{} (pid {}) is selfheal itself or one of its ancestors",
                p.comm, p.pid
            ));
        }
        if let Some(rule) = self.protected.iter().find(|r| comm_matches(r, &p.comm)) {
            return Some(format!(
                "{} (pid {}) matches recovery.protected `{rule}`",
                p.comm, p.pid
            ));
        }
        if let Some(unit) = p
            .unit
            .as_ref()
            .filter(|u| self.protected_units.iter().any(|x| x == *u))
        {
            return Some(format!(
                "{} (pid {}) belongs to protected unit {unit}",
                p.comm, p.pid
            ));
        }
        if !self.allowed_cgroups.is_empty() {
            let inside = |path: &String| self.allowed_cgroups.iter().any(|a| is_within(path, a));
            if p.cgroups.is_empty() || !p.cgroups.iter().all(inside) {
                return Some(format!(
                    "{} (pid {}) is outside recovery.allowed_cgroups ({})",
                    p.comm,
                    p.pid,
                    if p.cgroups.is_empty() {
                        "it is in the root cgroup".to_string()
                    } else {
                        p.cgroups.join(", ")
                    }
                ));
            }
        }
        None
    }

    /// Why kernel thread `p` must not be deprioritized (the one action on a
    /// kernel thread), or `None`: it must be a kernel thread, never
    /// kthreadd (pid 2) or pid 1, nor a `recovery.protected` name.
    pub fn kthread_refusal(&self, p: &ProcInfo, lineage: &HashSet<i32>) -> Option<String> {
        if !p.kernel_thread {
            return Some(format!(
                "{} (pid {}) is not a kernel thread: deprioritize acts only on runaway kernel threads",
                p.comm, p.pid
            ));
        }
        if p.pid <= 2 || lineage.contains(&p.pid) {
            return Some(format!("{} (pid {}) is always protected", p.comm, p.pid));
        }
        if p.comm.starts_with("kworker/") {
            return Some(format!(
                "{} (pid {}) is a pooled workqueue worker: it serves other work afterwards, so it is never deprioritized",
                p.comm, p.pid
            ));
        }
        self.protected
            .iter()
            .find(|r| comm_matches(r, &p.comm))
            .map(|rule| {
                format!(
                    "{} (pid {}) matches recovery.protected `{rule}`",
                    p.comm, p.pid
                )
            })
    }

    /// [`Policy::kthread_refusal`] for a pid, looked up through `ops`.
    pub fn check_kthread(
        &self,
        ops: &dyn SystemOps,
        pid: i32,
        lineage: &HashSet<i32>,
    ) -> Result<Option<String>, OpsError> {
        match ops.process(pid)? {
            Some(p) => Ok(self.kthread_refusal(&p, lineage)),
            None => Err(OpsError::Gone),
        }
    }

    /// [`Policy::refusal`] for a pid, looked up through `ops`. A vanished
    /// process is `Err(Gone)`.
    pub fn check_pid(
        &self,
        ops: &dyn SystemOps,
        pid: i32,
        lineage: &HashSet<i32>,
    ) -> Result<Option<String>, OpsError> {
        match ops.process(pid)? {
            Some(p) => Ok(self.refusal(&p, lineage)),
            None => Err(OpsError::Gone),
        }
    }
}

fn comm_matches(rule: &str, comm: &str) -> bool {
    match rule.strip_suffix('*') {
        Some(prefix) => comm.starts_with(prefix),
        None => comm == rule,
    }
}

/// True when cgroup path `path` is `ancestor` or below it.
pub fn is_within(path: &str, ancestor: &str) -> bool {
    let a = ancestor.trim_end_matches('/');
    a.is_empty() || path == a || path.strip_prefix(a).is_some_and(|r| r.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, comm: &str) -> ProcInfo {
        ProcInfo {
            pid,
            ppid: 1,
            comm: comm.into(),
            starttime: 1,
            uid: Some(0),
            kernel_thread: false,
            cgroups: vec!["/user.slice/user-0.slice/session-1.scope".into()],
            unit: Some("session-1.scope".into()),
            pgid: pid,
            sid: 1,
            state: 'S',
        }
    }

    #[test]
    fn fixed_and_configured_protection() {
        let policy = Policy {
            protected: vec!["sshd*".into(), "postgres".into()],
            protected_units: vec!["db.service".into()],
            allowed_cgroups: vec![],
        };
        let lineage: HashSet<i32> = [500, 400].into();
        assert!(policy
            .refusal(&p(1, "systemd"), &lineage)
            .unwrap()
            .contains("pid 1"));
        let mut k = p(20, "kworker/0:1");
        k.kernel_thread = true;
        assert!(policy
            .refusal(&k, &lineage)
            .unwrap()
            .contains("kernel thread"));
        assert!(policy
            .refusal(&p(400, "bash"), &lineage)
            .unwrap()
            .contains("ancestors"));
        assert!(policy.refusal(&p(30, "sshd"), &lineage).is_some());
        assert!(policy.refusal(&p(31, "sshd-session"), &lineage).is_some());
        assert!(policy.refusal(&p(32, "postgres"), &lineage).is_some());
        assert!(policy.refusal(&p(33, "postgres2"), &lineage).is_none());
        let mut db = p(34, "worker");
        db.unit = Some("db.service".into());
        assert!(policy
            .refusal(&db, &lineage)
            .unwrap()
            .contains("db.service"));
        assert!(policy.refusal(&p(35, "spin"), &lineage).is_none());
    }

    #[test]
    fn allowed_cgroups_scope() {
        let policy = Policy {
            allowed_cgroups: vec!["/selfheal-sandbox".into()],
            ..Policy::default()
        };
        let none = HashSet::new();
        let mut inside = p(10, "spin");
        inside.cgroups = vec!["/selfheal-sandbox/x-1".into()];
        assert!(policy.refusal(&inside, &none).is_none());
        let mut split = inside.clone();
        split.cgroups.push("/process_api/abc".into());
        assert!(policy
            .refusal(&split, &none)
            .unwrap()
            .contains("allowed_cgroups"));
        let mut root = inside.clone();
        root.cgroups.clear();
        assert!(policy
            .refusal(&root, &none)
            .unwrap()
            .contains("root cgroup"));
        assert!(is_within("/a/b", "/a") && !is_within("/ab", "/a") && is_within("/x", "/"));
    }
}
