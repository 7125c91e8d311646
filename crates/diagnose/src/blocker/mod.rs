//! What a task stuck in uninterruptible sleep (D) waits for, and whether
//! it is held there on purpose.
//!
//! A D state is a symptom; the blocker is what to name and, where a real
//! action exists, what to act on. For each stuck thread, in order:
//!
//! 1. its own cgroup is frozen (v1 `freezer.state`, v2 `cgroup.freeze` /
//!    `cgroup.events`): **held**, `frozen_cgroup`;
//! 2. its kernel stack waits on a filesystem's freeze protection
//!    (`percpu_rwsem_wait` under `mnt_want_write`, `sb_start_write`, …;
//!    only `freeze_super` — FIFREEZE, a snapshot — takes it for writing):
//!    **held**, `frozen_filesystem`, with the mount of the file it writes;
//! 3. the file its system call works on ([`wait_file`]) is on a FUSE
//!    mount: the connection (`/sys/fs/fuse/connections/N`) and the process
//!    serving it ([`fuse`]); a server that is stopped, traced or frozen is
//!    **held** (`stopped`, `traced`, `frozen_cgroup`), otherwise the
//!    connection is the blocker (recovery may abort it);
//! 4. on a network filesystem: the server named by the mount source;
//! 5. on a block device or a block-backed filesystem: throttled by a blkio
//!    or `io.max` rule of its cgroups for that disk → **held**,
//!    `throttled`; else the device (the classifier decides `io_stall`);
//! 6. a lock whose owner the kernel's hung-task report names;
//! 7. otherwise unknown (what the stack shows is still recorded).
//!
//! Nothing here reads a file that could block on the blocker itself.

pub mod fuse;
pub mod held;
pub mod stack;
pub mod wait_file;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use selfheal_cgroup::mountinfo::{parse_mountinfo, MountInfo};
use selfheal_cgroup::Hierarchy;
use selfheal_kmsg::{KernelReport, VerdictKind};
use selfheal_procfs::task::parse_task_stat;

use crate::classify::evidence::Name;

use crate::pseudo_file::read_small;
use stack::StackWait;

/// Why a task is held on purpose. Names are stable (`details.evidence.held[].reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldReason {
    /// In (or waiting for a process in) a frozen cgroup.
    FrozenCgroup,
    /// Writing to a frozen filesystem.
    FrozenFilesystem,
    /// Waiting for a process stopped by job control.
    Stopped,
    /// Waiting for a process stopped by a debugger.
    Traced,
    /// Its I/O is throttled by a cgroup limit.
    Throttled,
}

impl HeldReason {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            HeldReason::FrozenCgroup => "frozen_cgroup",
            HeldReason::FrozenFilesystem => "frozen_filesystem",
            HeldReason::Stopped => "stopped",
            HeldReason::Traced => "traced",
            HeldReason::Throttled => "throttled",
        }
    }
}

/// A mount, as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRef {
    /// Mount id (`mountinfo`).
    pub mount_id: u32,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Filesystem type.
    pub fs_type: String,
    /// Mount source (device, server, FUSE name).
    pub source: String,
    /// `major:minor`.
    pub device: String,
}

impl MountRef {
    fn of(m: &MountInfo) -> MountRef {
        MountRef {
            mount_id: m.mount_id,
            mount_point: m.mount_point.clone(),
            fs_type: m.fs_type.clone(),
            source: m.source.clone(),
            device: format!("{}:{}", m.major, m.minor),
        }
    }
}

/// A process, as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRef {
    /// Process id.
    pub pid: i32,
    /// Command name.
    pub comm: String,
    /// Start time (identity).
    pub starttime: u64,
}

/// An I/O throttle rule, as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    /// The cgroup file.
    pub file: PathBuf,
    /// `major:minor` of the disk.
    pub device: String,
    /// `rbps`, `wbps`, `riops`, `wiops`.
    pub limit: Name,
    /// Bytes or I/Os per second.
    pub value: u64,
}

/// Whose cgroup is frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Whose {
    /// The stuck task's own.
    Waiter,
    /// The FUSE server's it waits for.
    FuseServer,
}

/// A task held on purpose, with what says so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Held {
    /// A cgroup freezer.
    FrozenCgroup {
        /// The frozen one's cgroup.
        cgroup: String,
        /// `v1` or `v2`.
        version: Name,
        /// The file that says so.
        file: PathBuf,
        /// What it says.
        state: String,
        /// Whose cgroup.
        whose: Whose,
        /// The FUSE server, when it is the one frozen.
        server: Option<ProcRef>,
    },
    /// A frozen filesystem (FIFREEZE).
    FrozenFilesystem {
        /// The filesystem, when the file written is known.
        mount: Option<MountRef>,
        /// How the file was found (`fd 3`, `path argument`).
        via: Option<String>,
    },
    /// The FUSE server it waits for is stopped (SIGSTOP, Ctrl-Z).
    Stopped {
        /// The server.
        server: ProcRef,
        /// Its connection.
        connection: u64,
    },
    /// The FUSE server it waits for is held by a debugger.
    Traced {
        /// The server.
        server: ProcRef,
        /// Its connection.
        connection: u64,
        /// The debugger's pid.
        tracer: Option<i32>,
    },
    /// Throttled I/O.
    Throttled {
        /// The rules on its disk (or, when the disk is unknown, all of its cgroups').
        rules: Vec<RuleRef>,
        /// The disk, when known.
        device: Option<String>,
    },
}

impl Held {
    /// The reason.
    pub fn reason(&self) -> HeldReason {
        match self {
            Held::FrozenCgroup { .. } => HeldReason::FrozenCgroup,
            Held::FrozenFilesystem { .. } => HeldReason::FrozenFilesystem,
            Held::Stopped { .. } => HeldReason::Stopped,
            Held::Traced { .. } => HeldReason::Traced,
            Held::Throttled { .. } => HeldReason::Throttled,
        }
    }

    /// One line for messages.
    pub fn describe(&self) -> String {
        match self {
            Held::FrozenCgroup {
                file,
                state,
                whose,
                server,
                ..
            } => match (whose, server) {
                (Whose::FuseServer, Some(s)) => format!(
                    "its FUSE server {} pid {} is frozen ({} says {state})",
                    s.comm,
                    s.pid,
                    file.display()
                ),
                _ => format!("frozen cgroup ({} says {state})", file.display()),
            },
            Held::FrozenFilesystem { mount, .. } => match mount {
                Some(m) => format!(
                    "filesystem {} ({} on {}) is frozen",
                    m.mount_point.display(),
                    m.fs_type,
                    m.source
                ),
                None => "writing to a frozen filesystem".to_string(),
            },
            Held::Stopped { server, connection } => format!(
                "its FUSE server {} pid {} (connection {connection}) is stopped",
                server.comm, server.pid
            ),
            Held::Traced {
                server,
                connection,
                tracer,
            } => format!(
                "its FUSE server {} pid {} (connection {connection}) is stopped by a debugger{}",
                server.comm,
                server.pid,
                tracer.map_or(String::new(), |t| format!(" (pid {t})"))
            ),
            Held::Throttled { rules, device } => format!(
                "I/O throttled{}: {}",
                device
                    .as_deref()
                    .map_or(String::new(), |d| format!(" on {d}")),
                rules
                    .iter()
                    .take(3)
                    .map(|r| format!("{} {}={}", r.file.display(), r.limit, r.value))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// What a stuck task waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Blocker {
    /// Held on purpose: never acted on.
    Held(Held),
    /// A FUSE connection whose server does not answer.
    Fuse {
        /// Its number (`/sys/fs/fuse/connections/N`).
        connection: u64,
        /// The mount.
        mount: MountRef,
        /// Requests waiting on it, when fusectl is mounted.
        waiting: Option<u64>,
        /// The server process, when found.
        server: Option<ProcRef>,
        /// How the server was found.
        server_found_by: Option<Name>,
    },
    /// A network filesystem server.
    NetworkFs {
        /// The mount.
        mount: MountRef,
        /// The server, from the mount source.
        server: String,
    },
    /// Block I/O on this device.
    Device {
        /// `major:minor`.
        device: String,
        /// The mount, when the file is on a filesystem.
        mount: Option<MountRef>,
    },
    /// A lock whose owner the kernel names.
    Lock {
        /// `mutex`, `semaphore`, `rw-semaphore`.
        lock: String,
        /// The owner's pid.
        owner_pid: i32,
        /// The owner's command.
        owner_comm: String,
    },
    /// Not known; what the kernel stack shows.
    Unknown {
        /// `block_io`, `fuse`, `network_fs`, `other`.
        wait: Name,
    },
}

impl Blocker {
    /// True when held on purpose.
    pub fn held(&self) -> Option<&Held> {
        match self {
            Blocker::Held(h) => Some(h),
            _ => None,
        }
    }

    /// A key grouping tasks stuck on the same thing.
    pub fn key(&self) -> String {
        match self {
            Blocker::Held(h) => format!("held:{}", h.reason().as_str()),
            Blocker::Fuse { connection, .. } => format!("fuse:{connection}"),
            Blocker::NetworkFs { mount, .. } => format!("netfs:{}", mount.mount_id),
            Blocker::Device { device, .. } => format!("dev:{device}"),
            Blocker::Lock { owner_pid, .. } => format!("lock:{owner_pid}"),
            Blocker::Unknown { .. } => "unknown".to_string(),
        }
    }

    /// One line for messages; empty when unknown.
    pub fn describe(&self) -> String {
        match self {
            Blocker::Held(h) => h.describe(),
            Blocker::Fuse {
                connection,
                mount,
                server,
                waiting,
                ..
            } => format!(
                "FUSE connection {connection} ({} on {}){}{}",
                mount.fs_type,
                mount.mount_point.display(),
                waiting.map_or(String::new(), |w| format!(", {w} requests waiting")),
                server
                    .as_ref()
                    .map_or(", server not found".to_string(), |s| format!(
                        ", served by {} pid {}",
                        s.comm, s.pid
                    ))
            ),
            Blocker::NetworkFs { mount, server } => format!(
                "network filesystem {} ({}) server {server}",
                mount.mount_point.display(),
                mount.fs_type
            ),
            Blocker::Device { device, mount } => format!(
                "block device {device}{}",
                mount.as_ref().map_or(String::new(), |m| format!(
                    " ({} on {})",
                    m.mount_point.display(),
                    m.source
                ))
            ),
            Blocker::Lock {
                lock,
                owner_pid,
                owner_comm,
            } => format!("a {lock} owned by {owner_comm} pid {owner_pid} (per the kernel)"),
            Blocker::Unknown { .. } => String::new(),
        }
    }
}

/// Network filesystem types (the mount source names the server).
const NETWORK_FS: &[&str] = &[
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "9p", "afs", "lustre", "ncpfs",
];

fn is_fuse(fs_type: &str) -> bool {
    fs_type == "fuse" || fs_type == "fuseblk" || fs_type.starts_with("fuse.")
}

/// `host:/export` → `host`; `//host/share` → `host`; else the source.
fn server_of_source(source: &str) -> String {
    if let Some(rest) = source.strip_prefix("//") {
        return rest.split('/').next().unwrap_or(rest).to_string();
    }
    match source.rsplit_once(":/") {
        Some((host, _)) => host.to_string(),
        None => source.to_string(),
    }
}

/// The lock owner a hung-task report names for `tid` (Linux 6.16+:
/// `INFO: task a:12 is blocked on a mutex likely owned by task b:34.`).
pub fn lock_owner(report: &KernelReport, tid: i32) -> Option<(String, i32, String)> {
    let me = format!(":{tid} ");
    report.lines.iter().find_map(|l| {
        let (head, tail) = l.split_once(" blocked on a")?;
        if !head.contains(&me) && !head.ends_with(&format!(":{tid}")) {
            return None;
        }
        let lock = tail
            .trim_start_matches('n')
            .split_whitespace()
            .next()?
            .to_string();
        let owner = tail.rsplit_once("by task ")?.1;
        let owner = owner.trim().trim_end_matches('.');
        let owner = owner.split(" <").next()?;
        let (comm, pid) = owner.rsplit_once(':')?;
        Some((lock, pid.parse().ok()?, comm.to_string()))
    })
}

/// Finds blockers.
#[derive(Debug, Clone)]
pub struct BlockerReader {
    proc_root: PathBuf,
    sys_root: PathBuf,
    fuse_connections: PathBuf,
    hierarchy: Option<Hierarchy>,
}

impl BlockerReader {
    /// Reads under `proc_root` (and /sys, and the detected cgroup mounts).
    pub fn new(proc_root: &Path) -> BlockerReader {
        BlockerReader {
            proc_root: proc_root.to_path_buf(),
            sys_root: PathBuf::from("/sys"),
            fuse_connections: PathBuf::from("/sys/fs/fuse/connections"),
            hierarchy: Hierarchy::detect().ok(),
        }
    }

    /// With explicit roots (tests).
    pub fn with_roots(proc_root: &Path, sys_root: &Path, hierarchy: Option<Hierarchy>) -> Self {
        BlockerReader {
            proc_root: proc_root.to_path_buf(),
            sys_root: sys_root.to_path_buf(),
            fuse_connections: sys_root.join("fs/fuse/connections"),
            hierarchy,
        }
    }

    fn proc_ref(&self, pid: i32) -> Option<ProcRef> {
        let st = parse_task_stat(&read_small(&self.proc_root.join(format!("{pid}/stat")))?)?;
        Some(ProcRef {
            pid,
            comm: st.comm,
            starttime: st.starttime_ticks,
        })
    }

    /// What thread `tid` of `pid` waits for. `kernel`: recent kernel reports.
    pub fn blocker_of(
        &self,
        pid: i32,
        tid: i32,
        wchan: Option<&str>,
        kernel: &[KernelReport],
    ) -> Blocker {
        let h = self.hierarchy.as_ref();
        // 1. Its own cgroup frozen.
        if let Some(f) = h.and_then(|h| held::frozen_cgroup(h, &self.proc_root, pid)) {
            return Blocker::Held(Held::FrozenCgroup {
                cgroup: f.cgroup,
                version: f.version.into(),
                file: f.file,
                state: f.state,
                whose: Whose::Waiter,
                server: None,
            });
        }
        let stack_text = read_small(&self.proc_root.join(format!("{pid}/task/{tid}/stack")));
        let wait = stack::classify(stack_text.as_deref(), wchan);
        let file = wait_file::wait_file(&self.proc_root, pid, tid);
        let mount = file.as_ref().and_then(|f| f.mount.as_ref());
        // 2. A frozen filesystem.
        if wait == StackWait::FrozenFilesystem {
            return Blocker::Held(Held::FrozenFilesystem {
                mount: mount.map(MountRef::of),
                via: file.as_ref().map(|f| f.via.clone()),
            });
        }
        // 3.–5. By the file it works on.
        if let Some(m) = mount {
            if is_fuse(&m.fs_type) {
                return self.fuse_blocker(m);
            }
            if NETWORK_FS.contains(&m.fs_type.as_str()) {
                return Blocker::NetworkFs {
                    mount: MountRef::of(m),
                    server: server_of_source(&m.source),
                };
            }
        }
        let device = file
            .as_ref()
            .and_then(|f| f.block_device)
            .or_else(|| mount.filter(|m| m.major != 0).map(|m| (m.major, m.minor)));
        if device.is_some() || wait == StackWait::BlockIo {
            if let Some(t) = h.and_then(|h| self.throttled(h, pid, device)) {
                return t;
            }
        }
        if let Some((major, minor)) = device {
            return Blocker::Device {
                device: format!("{major}:{minor}"),
                mount: mount.map(MountRef::of),
            };
        }
        // FUSE by its stack only: the one connection with requests waiting.
        if wait == StackWait::Fuse {
            if let Some(b) = self.only_waiting_fuse(pid) {
                return b;
            }
        }
        // 6. A lock owner named by the kernel.
        let owner = kernel
            .iter()
            .filter(|r| r.kind == VerdictKind::HungTask)
            .find_map(|r| lock_owner(r, tid));
        if let Some((lock, owner_pid, owner_comm)) = owner {
            return Blocker::Lock {
                lock,
                owner_pid,
                owner_comm,
            };
        }
        Blocker::Unknown {
            wait: match wait {
                StackWait::BlockIo => "block_io",
                StackWait::Fuse => "fuse",
                StackWait::NetworkFs => "network_fs",
                StackWait::FrozenFilesystem | StackWait::Other => "other",
            }
            .into(),
        }
    }

    fn fuse_blocker(&self, m: &MountInfo) -> Blocker {
        let connection = fuse::connection_of(m.major, m.minor);
        let found = fuse::server_of(&self.proc_root, connection);
        let server = found.as_ref().and_then(|s| self.proc_ref(s.pid));
        if let Some(s) = &server {
            match held::stop_state(&self.proc_root, s.pid) {
                Some(held::StopState::Stopped) => {
                    return Blocker::Held(Held::Stopped {
                        server: s.clone(),
                        connection,
                    })
                }
                Some(held::StopState::Traced { tracer }) => {
                    return Blocker::Held(Held::Traced {
                        server: s.clone(),
                        connection,
                        tracer,
                    })
                }
                None => {}
            }
            let frozen = self
                .hierarchy
                .as_ref()
                .and_then(|h| held::frozen_cgroup(h, &self.proc_root, s.pid));
            if let Some(f) = frozen {
                return Blocker::Held(Held::FrozenCgroup {
                    cgroup: f.cgroup,
                    version: f.version.into(),
                    file: f.file,
                    state: f.state,
                    whose: Whose::FuseServer,
                    server: Some(s.clone()),
                });
            }
        }
        Blocker::Fuse {
            connection,
            mount: MountRef::of(m),
            waiting: fuse::waiting(&self.fuse_connections, connection),
            server,
            server_found_by: found.map(|f| f.how.into()),
        }
    }

    fn only_waiting_fuse(&self, pid: i32) -> Option<Blocker> {
        let mounts = parse_mountinfo(&read_small(
            &self.proc_root.join(format!("{pid}/mountinfo")),
        )?)
        .ok()?;
        let mut waiting = mounts.iter().filter(|m| {
            is_fuse(&m.fs_type)
                && fuse::waiting(
                    &self.fuse_connections,
                    fuse::connection_of(m.major, m.minor),
                )
                .is_some_and(|w| w > 0)
        });
        let one = waiting.next()?;
        waiting.next().is_none().then(|| self.fuse_blocker(one))
    }

    fn throttled(&self, h: &Hierarchy, pid: i32, device: Option<(u32, u32)>) -> Option<Blocker> {
        let disk = device.map(|d| held::whole_disk(&self.sys_root, d));
        let rules: Vec<RuleRef> = held::throttle_rules(h, &self.proc_root, pid)
            .into_iter()
            .filter(|r| match (device, disk) {
                (Some(d), Some(w)) => (r.major, r.minor) == d || (r.major, r.minor) == w,
                _ => true,
            })
            .map(|r| RuleRef {
                device: format!("{}:{}", r.major, r.minor),
                file: r.file,
                limit: r.limit.into(),
                value: r.value,
            })
            .collect();
        (!rules.is_empty()).then(|| {
            Blocker::Held(Held::Throttled {
                rules,
                device: disk.map(|(a, b)| format!("{a}:{b}")),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_from_mount_sources() {
        assert_eq!(server_of_source("fileserver:/export/home"), "fileserver");
        assert_eq!(server_of_source("[fd00::1]:/srv"), "[fd00::1]");
        assert_eq!(server_of_source("//nas/share"), "nas");
        assert!(is_fuse("fuse.sshfs") && is_fuse("fuseblk") && !is_fuse("fusectl"));
    }

    #[test]
    fn lock_owner_lines_of_hung_task_reports() {
        let report = |lines: &[&str]| KernelReport {
            kind: VerdictKind::HungTask,
            seq: 1,
            ts_us: 0,
            level: 3,
            cpu: None,
            pid: Some(713),
            comm: Some("lab_dwaiter".into()),
            cgroup: None,
            oom_constraint: None,
            oom_memcg: None,
            stuck_for_s: Some(1),
            headline: lines[0].to_string(),
            lines: lines.iter().map(|l| l.to_string()).collect(),
            wall_unix_ms: None,
        };
        // The formats of kernel/hung_task.c (6.16+).
        let r = report(&[
            "INFO: task lab_dwaiter:713 blocked for more than 1 seconds.",
            "INFO: task lab_dwaiter:713 is blocked on a mutex likely owned by task lab_dholder:118.",
        ]);
        assert_eq!(
            lock_owner(&r, 713),
            Some(("mutex".into(), 118, "lab_dholder".into()))
        );
        assert_eq!(lock_owner(&r, 714), None);
        let r = report(&[
            "INFO: task cat:9 blocked for more than 1 seconds.",
            "INFO: task cat:9 <reader> blocked on an rw-semaphore likely owned by task kworker/0:1:55 <writer>",
        ]);
        assert_eq!(
            lock_owner(&r, 9),
            Some(("rw-semaphore".into(), 55, "kworker/0:1".into()))
        );
    }
}
