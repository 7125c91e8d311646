//! [`LinuxOps`]: the real system behind [`SystemOps`], through /proc,
//! cgroup files, signals and `systemctl`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use selfheal_config::RestartMethod;

use selfheal_cgroup::{Cgroup, Controller, Hierarchy, ProcCgroupEntry};
use selfheal_procfs::task::{list_pids, list_tids, parse_task_stat, TaskStat};

use super::fork_hold::{fork_hold_note, note_hold, MIN_THREADS_MAX};
use super::{
    in_quarantine_beneath, quarantine_path, ForkHold, FuseConnection, OpsError, Pinned, ProcInfo,
    SystemOps, QUARANTINE,
};

/// Lets the controlled restart stop the hardware watchdog's petting: the
/// watchdog chain pets its device only while `starve` is false.
#[derive(Debug, Clone)]
pub struct WatchdogControl {
    /// Set to stop petting.
    pub starve: Arc<AtomicBool>,
    /// The device's timeout: how long until it resets the machine.
    pub timeout: Duration,
}

/// The real system.
#[derive(Debug, Clone)]
pub struct LinuxOps {
    proc_root: PathBuf,
    hierarchy: Option<Hierarchy>,
    /// How long `systemctl` may take.
    pub command_timeout: Duration,
    watchdog: Option<WatchdogControl>,
    /// [`SystemOps::restart`] refuses unless set ([`LinuxOps::allow_restart`]).
    restart_allowed: bool,
}

impl LinuxOps {
    /// Operations on this machine (/proc, detected cgroup hierarchies).
    pub fn new() -> LinuxOps {
        LinuxOps {
            proc_root: PathBuf::from("/proc"),
            hierarchy: Hierarchy::detect().ok(),
            command_timeout: Duration::from_secs(20),
            watchdog: None,
            restart_allowed: false,
        }
    }

    /// Lets [`SystemOps::restart`] restart the machine: the daemon sets it
    /// from `recovery.allow_reboot` (and not in a dry run). Without it every
    /// restart method refuses before any system call, whatever the ladder
    /// asks; with it, `SELFHEAL_RESTART_FORBIDDEN` still refuses.
    pub fn allow_restart(mut self, allowed: bool) -> LinuxOps {
        self.restart_allowed = allowed;
        self
    }

    /// Two locks besides the ladder's own check of allow_reboot: this
    /// handle must have been made for a daemon allowed to restart, and no
    /// test harness may have forbidden it.
    fn restart_locks(&self, how: &str) -> Result<(), OpsError> {
        use selfheal_sys::power::RESTART_FORBIDDEN_ENV;
        if !self.restart_allowed {
            return Err(OpsError::Permission(format!(
                "restart by {how} refused: this LinuxOps was not made with allow_restart (recovery.allow_reboot = false, or a dry run)"
            )));
        }
        if std::env::var_os(RESTART_FORBIDDEN_ENV).is_some() {
            return Err(OpsError::Permission(format!(
                "restart by {how} refused: {RESTART_FORBIDDEN_ENV} is set"
            )));
        }
        Ok(())
    }

    /// The hardware watchdog the `watchdog` restart method stops petting.
    pub fn with_watchdog(mut self, control: WatchdogControl) -> LinuxOps {
        self.watchdog = Some(control);
        self
    }

    /// Cgroup `path` in every hierarchy where the pinned process sits
    /// exactly there (never another cgroup it is in elsewhere: in a hybrid
    /// layout its unified cgroup may be a whole login session). The entries
    /// are read while the pidfd pins the process and checked after it is
    /// still alive, so they are its own, not a reused pid's.
    fn cgroup_at(&self, p: &Pinned, path: &str) -> Result<Cgroup, OpsError> {
        let h = self
            .hierarchy
            .as_ref()
            .ok_or_else(|| OpsError::Failed("no cgroup hierarchy is mounted".into()))?;
        let entries = selfheal_cgroup::read_pid_cgroup_at(&self.proc_root, p.pid)
            .map_err(OpsError::from_cgroup)?;
        self.signal_pinned(p, 0)?;
        let at: Vec<ProcCgroupEntry> = entries
            .into_iter()
            .filter(|e| (e.path == path || in_quarantine_beneath(&e.path, path)) && !e.is_root())
            .collect();
        if at.is_empty() {
            return Err(OpsError::NotInCgroup(path.to_string()));
        }
        Cgroup::from_proc_entries(h, &at).map_err(OpsError::from_cgroup)
    }

    /// The hierarchy, for quarantine cgroups (the pids controller, v1 or v2).
    fn unified_or_pids(&self) -> Result<&Hierarchy, OpsError> {
        self.hierarchy
            .as_ref()
            .ok_or_else(|| OpsError::Failed("no cgroup hierarchy is mounted".into()))
    }

    fn stat_starttime(&self, pid: i32) -> Option<u64> {
        let text =
            std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("stat")).ok()?;
        parse_task_stat(&text).map(|s| s.starttime_ticks)
    }

    fn run(&self, what: &str, cmd: &mut Command) -> Result<(), OpsError> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| OpsError::Failed(format!("cannot run {what}: {e}")))?;
        let deadline = Instant::now() + self.command_timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    return Err(OpsError::Failed(format!(
                        "{what}: {status}: {}",
                        err.trim()
                    )));
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    // Our own child: safe to kill.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(OpsError::Failed(format!(
                        "{what} did not finish within {:?}",
                        self.command_timeout
                    )));
                }
                Err(e) => return Err(OpsError::Failed(format!("{what}: {e}"))),
            }
        }
    }
}

impl Default for LinuxOps {
    fn default() -> Self {
        LinuxOps::new()
    }
}

/// Reads one process's facts under a procfs root.
pub fn read_proc_info(proc_root: &Path, pid: i32) -> Option<ProcInfo> {
    let dir = proc_root.join(pid.to_string());
    let stat = parse_task_stat(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
    Some(ProcInfo {
        uid: read_uid(&dir),
        ..info_from_stat(proc_root, pid, &stat, true)
    })
}

/// The real uid of the process whose /proc directory is `dir`.
fn read_uid(dir: &Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
}

/// What `stat` says of `pid`, with its cgroups read only when asked for
/// (no uid: that is in `status`).
fn info_from_stat(proc_root: &Path, pid: i32, stat: &TaskStat, cgroups: bool) -> ProcInfo {
    let entries = if cgroups {
        selfheal_cgroup::read_pid_cgroup_at(proc_root, pid).unwrap_or_default()
    } else {
        Vec::new()
    };
    let unit = selfheal_cgroup::most_specific(&entries)
        .and_then(|e| selfheal_cgroup::systemd_unit_of(&e.path))
        .map(str::to_string);
    let mut paths: Vec<String> = entries
        .iter()
        .filter(|e| !e.is_root())
        .map(|e| e.path.clone())
        .collect();
    paths.sort();
    paths.dedup();
    ProcInfo {
        pid,
        ppid: stat.ppid,
        comm: stat.comm.clone(),
        starttime: stat.starttime_ticks,
        uid: None,
        kernel_thread: stat.is_kernel_thread() || pid == 2 || stat.ppid == 2,
        cgroups: paths,
        unit,
        pgid: stat.pgrp,
        sid: stat.session,
        state: stat.state,
    }
}

impl SystemOps for LinuxOps {
    fn own_pid(&self) -> i32 {
        selfheal_sys::process::getpid()
    }

    fn process(&self, pid: i32) -> Result<Option<ProcInfo>, OpsError> {
        Ok(read_proc_info(&self.proc_root, pid))
    }

    fn processes(&self) -> Result<Vec<ProcInfo>, OpsError> {
        let pids = list_pids(&self.proc_root).map_err(|e| OpsError::Failed(e.to_string()))?;
        Ok(pids
            .into_iter()
            .filter_map(|p| read_proc_info(&self.proc_root, p))
            .collect())
    }

    fn pids(&self) -> Result<Vec<i32>, OpsError> {
        list_pids(&self.proc_root).map_err(|e| OpsError::Failed(e.to_string()))
    }

    fn processes_light(
        &self,
        uid_of: Option<&str>,
        cgroups: bool,
    ) -> Result<Vec<ProcInfo>, OpsError> {
        let pids = list_pids(&self.proc_root).map_err(|e| OpsError::Failed(e.to_string()))?;
        Ok(pids
            .into_iter()
            .filter_map(|pid| {
                let dir = self.proc_root.join(pid.to_string());
                let stat = parse_task_stat(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
                let mut info = info_from_stat(&self.proc_root, pid, &stat, cgroups);
                if uid_of == Some(stat.comm.as_str()) {
                    info.uid = read_uid(&dir);
                }
                Some(info)
            })
            .collect())
    }

    fn threads(&self, pid: i32) -> Result<Vec<(i32, bool)>, OpsError> {
        let tids = list_tids(&self.proc_root, pid).map_err(|e| {
            if e.is_gone() {
                OpsError::Gone
            } else {
                OpsError::Failed(e.to_string())
            }
        })?;
        Ok(tids
            .into_iter()
            .filter_map(|tid| {
                let p = self
                    .proc_root
                    .join(pid.to_string())
                    .join("task")
                    .join(tid.to_string())
                    .join("stat");
                let s = parse_task_stat(&std::fs::read_to_string(p).ok()?)?;
                Some((tid, s.is_realtime() || s.policy == 6))
            })
            .collect())
    }

    fn set_normal_policy(&self, tid: i32) -> Result<(), OpsError> {
        selfheal_sys::sched::set_other(tid).map_err(OpsError::from_sys)
    }

    fn deprioritize_thread(&self, tid: i32, cpu: Option<u32>) -> Result<String, OpsError> {
        use selfheal_sys::sched;
        let mut done = Vec::new();
        match sched::set_idle(tid) {
            Ok(()) => done.push("SCHED_IDLE".to_string()),
            Err(e) if e.is_gone() => return Err(OpsError::Gone),
            Err(idle) => match sched::set_nice(tid, 19) {
                Ok(()) => done.push(format!("nice 19 (SCHED_IDLE refused: {idle})")),
                Err(e) => return Err(OpsError::from_sys(e)),
            },
        }
        if let Some(cpu) = cpu {
            // A kernel thread bound by the kernel (PF_NO_SETAFFINITY) refuses:
            // it stays where it is, which is one CPU anyway.
            match sched::affinity(tid) {
                Ok(now) if now.len() > 1 => match sched::pin_to_cpu(tid, cpu as usize) {
                    Ok(()) => done.push(format!("kept on cpu {cpu}")),
                    Err(e) => done.push(format!("affinity unchanged ({e})")),
                },
                _ => done.push(format!("already on cpu {cpu} only")),
            }
        }
        Ok(done.join(", "))
    }

    fn children(&self, pid: i32) -> Result<Option<Vec<i32>>, OpsError> {
        let task = self.proc_root.join(pid.to_string()).join("task");
        let tids = list_tids(&self.proc_root, pid).map_err(|e| {
            if e.is_gone() {
                OpsError::Gone
            } else {
                OpsError::Failed(e.to_string())
            }
        })?;
        let mut out = Vec::new();
        for tid in tids {
            match std::fs::read_to_string(task.join(tid.to_string()).join("children")) {
                Ok(text) => out.extend(
                    text.split_whitespace()
                        .filter_map(|w| w.parse::<i32>().ok()),
                ),
                // The task is there but not the file: the kernel lacks it
                // (CONFIG_PROC_CHILDREN); a thread that just exited is skipped.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if !task.is_dir() {
                        return Err(OpsError::Gone);
                    }
                    if task.join(tid.to_string()).is_dir() {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(OpsError::Failed(format!("{}: {e}", task.display()))),
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(Some(out))
    }

    fn children_hint(&self, pid: i32, one_thread: bool) -> Result<Option<Vec<i32>>, OpsError> {
        if !one_thread {
            return self.children(pid);
        }
        let path = self
            .proc_root
            .join(pid.to_string())
            .join("task")
            .join(pid.to_string())
            .join("children");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(
                text.split_whitespace()
                    .filter_map(|w| w.parse::<i32>().ok())
                    .collect(),
            )),
            // Gone, or no such file in this kernel: the full listing says which.
            Err(_) => self.children(pid),
        }
    }

    fn state_of(&self, pid: i32, starttime: u64) -> Option<char> {
        let text =
            std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("stat")).ok()?;
        parse_task_stat(&text)
            .filter(|s| s.starttime_ticks == starttime)
            .map(|s| s.state)
    }

    fn pin_child(
        &self,
        parent: i32,
        pid: i32,
        cgroups: bool,
    ) -> Result<Option<(Pinned, ProcInfo, bool)>, OpsError> {
        // Pinned first, then read: what the stat says is of the process
        // the fd reaches (a pid reused before the open fails the parent
        // check below; one reused after it cannot be reached).
        let fd = match selfheal_sys::signal::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) if e.is_gone() => return Ok(None),
            Err(e) => return Err(OpsError::from_sys(e)),
        };
        let path = self.proc_root.join(pid.to_string()).join("stat");
        let Some(stat) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| parse_task_stat(&t))
        else {
            return Ok(None);
        };
        let info = info_from_stat(&self.proc_root, pid, &stat, cgroups);
        if info.ppid != parent || crate::target::is_dead(&info) {
            return Ok(None);
        }
        let pinned = Pinned {
            pid,
            starttime: info.starttime,
            fd: Some(fd),
        };
        Ok(Some((pinned, info, stat.num_threads == 1)))
    }

    fn pin(&self, pid: i32, starttime: u64) -> Result<Pinned, OpsError> {
        // Pin the process first, then check it is the one we mean: a pid
        // reused after we looked can never be reached through the fd.
        let fd = selfheal_sys::signal::pidfd_open(pid).map_err(OpsError::from_sys)?;
        if self.stat_starttime(pid) != Some(starttime) {
            return Err(OpsError::Gone);
        }
        Ok(Pinned {
            pid,
            starttime,
            fd: Some(fd),
        })
    }

    fn signal_pinned(&self, p: &Pinned, sig: i32) -> Result<(), OpsError> {
        match &p.fd {
            Some(fd) => {
                selfheal_sys::signal::pidfd_send_signal(fd, sig).map_err(OpsError::from_sys)
            }
            // Not pinned by us: pin now (checks the start time again).
            None => self.signal(p.pid, p.starttime, sig),
        }
    }

    fn cgroup_members(&self, p: &Pinned, path: &str) -> Result<Vec<i32>, OpsError> {
        self.cgroup_at(p, path)?
            .procs_recursive()
            .map_err(OpsError::from_cgroup)
    }

    fn kill_cgroup(&self, p: &Pinned, path: &str) -> Result<(), OpsError> {
        self.cgroup_at(p, path)?
            .kill_all()
            .map(|_| ())
            .map_err(OpsError::from_cgroup)
    }

    fn freeze_cgroup(&self, p: &Pinned, path: &str) -> Result<(), OpsError> {
        self.cgroup_at(p, path)?
            .freeze()
            .map_err(OpsError::from_cgroup)
    }

    fn quarantine_cgroup(&self, p: &Pinned, from: &str) -> Result<String, OpsError> {
        let h = self.unified_or_pids()?;
        let entries = selfheal_cgroup::read_pid_cgroup_at(&self.proc_root, p.pid)
            .map_err(OpsError::from_cgroup)?;
        self.signal_pinned(p, 0)?;
        if !entries.iter().any(|e| e.path == from) {
            return Err(OpsError::NotInCgroup(from.to_string()));
        }
        let path = quarantine_path(from, p.pid);
        let cg = Cgroup::new(h, &path, &[Controller::Pids]).map_err(OpsError::from_cgroup)?;
        cg.create().map_err(OpsError::from_cgroup)?;
        let limits = selfheal_cgroup::Limits {
            pids_max: Some(0),
            ..Default::default()
        };
        if let Err(e) = cg.apply(&limits) {
            let _ = cg.remove();
            return Err(OpsError::from_cgroup(e));
        }
        Ok(path)
    }

    fn move_to_cgroup(
        &self,
        pid: i32,
        starttime: u64,
        to: &str,
        back: &str,
    ) -> Result<(), OpsError> {
        let h = self.unified_or_pids()?;
        let pinned = self.pin(pid, starttime)?;
        let cg = Cgroup::new(h, to, &[Controller::Pids]).map_err(OpsError::from_cgroup)?;
        match cg.add_pid(pid) {
            Ok(()) => {}
            Err(e) if e.is_gone() => return Err(OpsError::Gone),
            Err(e) => return Err(OpsError::from_cgroup(e)),
        }
        // Alive after the move: the pid was this process all along (a pid
        // is not reused before its process is reaped).
        if self.signal_pinned(&pinned, 0).is_ok() {
            return Ok(());
        }
        // It died: if its pid went to another process meanwhile, that one
        // was moved, and goes back.
        if self.stat_starttime(pid).is_some_and(|st| st != starttime) {
            let here = selfheal_cgroup::read_pid_cgroup_at(&self.proc_root, pid)
                .map(|es| es.iter().any(|e| e.path == to))
                .unwrap_or(false);
            if here {
                if let Ok(b) = Cgroup::new(h, back, &[Controller::Pids]) {
                    let _ = b.add_pid(pid);
                }
            }
        }
        Err(OpsError::Gone)
    }

    fn remove_quarantine(&self, path: &str) {
        let Ok(h) = self.unified_or_pids() else {
            return;
        };
        if !path
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with(QUARANTINE))
        {
            return;
        }
        if let Ok(cg) = Cgroup::new(h, path, &[Controller::Pids]) {
            if cg.procs_recursive().is_ok_and(|p| p.is_empty()) {
                let _ = cg.remove();
            }
        }
    }

    fn kill_quarantine(&self, path: &str, remove: bool) -> Result<(), OpsError> {
        let h = self.unified_or_pids()?;
        if !path
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with(QUARANTINE))
        {
            return Err(OpsError::Refused(format!(
                "{path} is not a quarantine cgroup selfheal made"
            )));
        }
        let cg = Cgroup::new(h, path, &[Controller::Pids]).map_err(OpsError::from_cgroup)?;
        // Thousands of killed processes take a while to exit on a loaded
        // machine (longer still under their cgroup's CPU limit): a kill
        // between passes does not wait for them; the last one does, and
        // the cgroup goes once they have.
        let wait = if remove {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(1)
        };
        match cg.kill_all_within(wait) {
            Ok(_) => {}
            Err(selfheal_cgroup::CgroupError::KillIncomplete { .. }) if !remove => {}
            Err(e) => return Err(OpsError::from_cgroup(e)),
        }
        if remove {
            cg.remove_within(Duration::from_secs(10))
                .map_err(OpsError::from_cgroup)?;
        }
        Ok(())
    }

    fn hold_forks(
        &self,
        p: &Pinned,
        path: &str,
        machine: bool,
    ) -> Result<Option<ForkHold>, OpsError> {
        let failed = |what: &Path, e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                OpsError::Permission(format!("{}: {e}", what.display()))
            } else {
                OpsError::Failed(format!("{}: {e}", what.display()))
            }
        };
        if path != "/" {
            let h = self.unified_or_pids()?;
            let entries = selfheal_cgroup::read_pid_cgroup_at(&self.proc_root, p.pid)
                .map_err(OpsError::from_cgroup)?;
            self.signal_pinned(p, 0)?;
            if !entries.iter().any(|e| e.path == path) {
                return Err(OpsError::NotInCgroup(path.to_string()));
            }
            let dir = Cgroup::new(h, path, &[Controller::Pids])
                .ok()
                .and_then(|cg| cg.dirs().into_iter().find(|d| d.join("pids.max").is_file()));
            if let Some(dir) = dir {
                let max = dir.join("pids.max");
                let previous = std::fs::read_to_string(&max).map_err(|e| failed(&max, e))?;
                let previous = previous.trim().to_string();
                // 0, not the tasks there now: a slot freed by a kill (or
                // the OOM killer) is never a member's to fork into.
                if previous == "0" {
                    return Ok(None);
                }
                let hold = ForkHold::Cgroup {
                    dir,
                    previous,
                    held_at: 0,
                };
                note_hold(&hold);
                std::fs::write(&max, "0\n").map_err(|e| {
                    let _ = std::fs::remove_file(fork_hold_note());
                    failed(&max, e)
                })?;
                return Ok(Some(hold));
            }
        }
        if !machine {
            return Ok(None);
        }
        let sysctl = self.proc_root.join("sys/kernel/threads-max");
        let previous: u64 = std::fs::read_to_string(&sysctl)
            .map_err(|e| failed(&sysctl, e))?
            .trim()
            .parse()
            .map_err(|e| OpsError::Failed(format!("{}: {e}", sysctl.display())))?;
        // The floor, not the tasks running now: a slot freed by a
        // kill (or the OOM killer) is never a member's to fork into, and
        // the bystanders' cost is the same while the bomb lives (it takes
        // every free slot the moment one frees).
        let held_at = MIN_THREADS_MAX;
        if held_at >= previous {
            return Ok(None);
        }
        let hold = ForkHold::Machine { previous, held_at };
        note_hold(&hold);
        std::fs::write(&sysctl, format!("{held_at}\n")).map_err(|e| {
            let _ = std::fs::remove_file(fork_hold_note());
            failed(&sysctl, e)
        })?;
        Ok(Some(hold))
    }

    fn release_forks(&self, hold: &ForkHold) -> Result<(), OpsError> {
        let (file, value) = match hold {
            ForkHold::Cgroup { dir, previous, .. } => (dir.join("pids.max"), previous.clone()),
            ForkHold::Machine { previous, .. } => (
                self.proc_root.join("sys/kernel/threads-max"),
                previous.to_string(),
            ),
        };
        match std::fs::write(&file, format!("{value}\n")) {
            Ok(()) => {}
            // The bomb's cgroup was removed meanwhile: nothing to restore.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(OpsError::Failed(format!("{}: {e}", file.display()))),
        }
        let _ = std::fs::remove_file(fork_hold_note());
        Ok(())
    }

    fn restart_unit(&self, unit: &str) -> Result<(), OpsError> {
        self.run(
            &format!("systemctl restart {unit}"),
            Command::new("systemctl").args(["restart", "--", unit]),
        )
    }

    fn sync_filesystems(&self, timeout: Duration) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        // A thread we may leave behind: sync blocks as long as a device does.
        let spawned = std::thread::Builder::new()
            .name("selfheal-sync".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                selfheal_sys::power::sync();
                let _ = tx.send(());
            });
        spawned.is_ok() && rx.recv_timeout(timeout).is_ok()
    }

    fn kexec_loaded(&self) -> bool {
        selfheal_sys::power::kexec_loaded(Path::new("/sys"))
    }

    fn cpu_interrupts(&self, cpu: u32) -> Option<u64> {
        let text = std::fs::read(self.proc_root.join("interrupts")).ok()?;
        selfheal_procfs::interrupts::parse_cpu_interrupts(&text, cpu)
    }

    fn emergency_restart(&self) -> Result<(), OpsError> {
        use selfheal_sys::power::{restart, RestartCmd};
        self.restart_locks("emergency")?;
        restart(RestartCmd::Emergency).map_err(OpsError::from_sys)
    }

    fn restart(&self, method: RestartMethod) -> Result<(), OpsError> {
        use selfheal_sys::power::{restart, RestartCmd};
        self.restart_locks(method.as_str())?;
        match method {
            RestartMethod::Kexec => restart(RestartCmd::Kexec).map_err(OpsError::from_sys),
            RestartMethod::Reboot => restart(RestartCmd::Restart).map_err(OpsError::from_sys),
            RestartMethod::Watchdog => {
                let Some(w) = &self.watchdog else {
                    return Err(OpsError::Failed(
                        "no hardware watchdog is petted ([watchdog] device)".into(),
                    ));
                };
                w.starve.store(true, Ordering::SeqCst);
                // The device resets the machine within its timeout.
                std::thread::sleep(w.timeout + Duration::from_secs(5));
                w.starve.store(false, Ordering::SeqCst);
                Err(OpsError::Failed(format!(
                    "the hardware watchdog did not reset the machine within {} s of its last pet",
                    w.timeout.as_secs() + 5
                )))
            }
        }
    }

    fn fuse_connection(&self, connection: u64) -> Result<FuseConnection, OpsError> {
        let mounts = read_mounts()?;
        let mount_ids = mounts
            .iter()
            .filter(|m| {
                (m.fs_type == "fuse" || m.fs_type == "fuseblk" || m.fs_type.starts_with("fuse."))
                    && selfheal_sys::fuse::connection_number(m.major, m.minor) == connection
            })
            .map(|m| m.mount_id)
            .collect();
        let dir = ensure_fusectl(&mounts).ok();
        let waiting = dir.and_then(|d| {
            std::fs::read_to_string(d.join(connection.to_string()).join("waiting"))
                .ok()?
                .trim()
                .parse()
                .ok()
        });
        Ok(FuseConnection { mount_ids, waiting })
    }

    fn abort_fuse(&self, connection: u64) -> Result<(), OpsError> {
        let dir = ensure_fusectl(&read_mounts()?)?;
        let abort = dir.join(connection.to_string()).join("abort");
        std::fs::write(&abort, "1").map_err(|e| {
            let what = format!("{}: {e}", abort.display());
            match e.kind() {
                std::io::ErrorKind::NotFound => OpsError::Gone,
                std::io::ErrorKind::PermissionDenied => OpsError::Permission(what),
                _ => OpsError::Failed(what),
            }
        })
    }
}

fn read_mounts() -> Result<Vec<selfheal_cgroup::mountinfo::MountInfo>, OpsError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| OpsError::Failed(format!("/proc/self/mountinfo: {e}")))?;
    selfheal_cgroup::mountinfo::parse_mountinfo(&text).map_err(|e| OpsError::Failed(e.to_string()))
}

/// Where fusectl is mounted, mounting it at its usual place when it is not
/// (systemd does so at boot; minimal systems do not).
fn ensure_fusectl(mounts: &[selfheal_cgroup::mountinfo::MountInfo]) -> Result<PathBuf, OpsError> {
    if let Some(m) = mounts.iter().find(|m| m.fs_type == "fusectl") {
        return Ok(m.mount_point.clone());
    }
    let dir = PathBuf::from(selfheal_sys::fuse::FUSE_CONNECTIONS);
    selfheal_sys::mount::mount_pseudo("fusectl", &dir).map_err(|e| {
        OpsError::Failed(format!(
            "fusectl is not mounted and mounting it at {} failed: {e}",
            dir.display()
        ))
    })?;
    tracing::info!(
        "mounted fusectl at {} to abort a FUSE connection",
        dir.display()
    );
    Ok(dir)
}
