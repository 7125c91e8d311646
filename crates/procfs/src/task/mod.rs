//! Per-task readers: /proc/PID and /proc/PID/task/TID files.
//!
//! These run off the hot path (the heavy detector and the supervisor), so
//! they may allocate. A task that exits mid-read yields
//! [`ProcError::Gone`](crate::ProcError::Gone), never a wrong number.

mod fd;
mod io;
mod list;
mod maps;
mod net_unix;
mod schedstat;
mod signals;
mod stat;
mod status;

pub use fd::{parse_fdinfo, FdInfo};
pub use io::{parse_io, IoCounters};
pub use list::{list_pids, list_tids, parse_children, read_children};
pub use maps::{parse_maps, Vma};
pub use net_unix::parse_net_unix;
pub use schedstat::{parse_task_schedstat, TaskSchedstat};
pub use signals::{parse_status_pending, parse_status_signals, SignalDispositions};
pub use stat::{parse_task_stat, TaskStat};
pub use status::{parse_task_status, TaskStatus};

use std::path::{Path, PathBuf};

use crate::error::{is_gone_io, ProcError};

/// A task directory: `/proc/PID` or `/proc/PID/task/TID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDir {
    path: PathBuf,
    pid: i32,
}

impl TaskDir {
    /// `/proc/PID` under `root`.
    pub fn process(root: &Path, pid: i32) -> TaskDir {
        TaskDir {
            path: root.join(pid.to_string()),
            pid,
        }
    }

    /// `/proc/PID/task/TID` under `root`.
    pub fn thread(root: &Path, pid: i32, tid: i32) -> TaskDir {
        TaskDir {
            path: root
                .join(pid.to_string())
                .join("task")
                .join(tid.to_string()),
            pid: tid,
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pid or tid this directory names.
    pub fn id(&self) -> i32 {
        self.pid
    }

    /// Reads a file of this task as text, mapping ENOENT/ESRCH to `Gone`.
    pub fn read_text(&self, name: &str) -> Result<String, ProcError> {
        let path = self.path.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if is_gone_io(&e) => Err(ProcError::Gone { pid: self.pid }),
            // An empty read of a zombie's file or ESRCH while the task exits.
            Err(e) => Err(ProcError::io(path, e)),
        }
    }

    /// Reads a file of this task as UTF-8, refusing other bytes (where a
    /// path read from it must not be guessed), mapping ENOENT/ESRCH to `Gone`.
    fn read_utf8(&self, name: &str) -> Result<String, ProcError> {
        let path = self.path.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text),
            Err(e) if is_gone_io(&e) => Err(ProcError::Gone { pid: self.pid }),
            Err(e) => Err(ProcError::io(path, e)),
        }
    }

    /// Reads a symbolic link of this task (`cwd`, `fd/N`).
    fn read_link(&self, name: &str) -> Result<PathBuf, ProcError> {
        let path = self.path.join(name);
        match std::fs::read_link(&path) {
            Ok(target) => Ok(target),
            Err(e) if is_gone_io(&e) => Err(ProcError::Gone { pid: self.pid }),
            Err(e) => Err(ProcError::io(path, e)),
        }
    }

    /// True while the directory exists (the task has not been reaped).
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// `stat`, parsed.
    pub fn stat(&self) -> Result<TaskStat, ProcError> {
        let text = self.read_text("stat")?;
        parse_task_stat(&text).ok_or_else(|| {
            if text.is_empty() {
                ProcError::Gone { pid: self.pid }
            } else {
                ProcError::Parse {
                    path: self.path.join("stat"),
                    what: "malformed stat line",
                }
            }
        })
    }

    /// `schedstat`, parsed (absent without CONFIG_SCHED_INFO).
    pub fn schedstat(&self) -> Result<TaskSchedstat, ProcError> {
        let text = self.read_text("schedstat")?;
        parse_task_schedstat(&text).ok_or_else(|| ProcError::Parse {
            path: self.path.join("schedstat"),
            what: "malformed schedstat line",
        })
    }

    /// `status`, parsed.
    pub fn status(&self) -> Result<TaskStatus, ProcError> {
        let text = self.read_text("status")?;
        Ok(parse_task_status(&text))
    }

    /// `comm` without the trailing newline.
    pub fn comm(&self) -> Result<String, ProcError> {
        Ok(self.read_text("comm")?.trim_end().to_string())
    }

    /// `wchan`: the kernel function the task sleeps in ("0" or empty when
    /// running or when the kernel hides it).
    pub fn wchan(&self) -> Result<Option<String>, ProcError> {
        let w = self.read_text("wchan")?;
        let w = w.trim();
        Ok((!w.is_empty() && w != "0").then(|| w.to_string()))
    }

    /// `stack`: the kernel stack (root only; `None` when not permitted or
    /// not built in).
    pub fn kernel_stack(&self) -> Result<Option<String>, ProcError> {
        match self.read_text("stack") {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.is_gone() => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// `syscall`: the system call the task is blocked in, if any, as the raw
    /// first field (`running`, `-1` or a number).
    pub fn syscall(&self) -> Result<Option<String>, ProcError> {
        match self.read_text("syscall") {
            Ok(s) => Ok(s.split_whitespace().next().map(str::to_string)),
            Err(e) if e.is_gone() => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// `cgroup`, raw text (parse it with `selfheal-cgroup`).
    pub fn cgroup(&self) -> Result<String, ProcError> {
        self.read_text("cgroup")
    }

    /// `maps`, parsed. Text that is not UTF-8 (a mapped file's name) is an
    /// error rather than a guessed path.
    pub fn maps(&self) -> Result<Vec<Vma>, ProcError> {
        Ok(parse_maps(&self.read_utf8("maps")?))
    }

    /// `io`: the read and write byte counters.
    pub fn io(&self) -> Result<IoCounters, ProcError> {
        let text = self.read_text("io")?;
        parse_io(&text).ok_or_else(|| ProcError::Parse {
            path: self.path.join("io"),
            what: "no rchar/wchar in io",
        })
    }

    /// `SigCgt` and `SigIgn` of `status`.
    pub fn signal_dispositions(&self) -> Result<SignalDispositions, ProcError> {
        let text = self.read_text("status")?;
        parse_status_signals(&text).ok_or_else(|| ProcError::Parse {
            path: self.path.join("status"),
            what: "no SigCgt/SigIgn in status",
        })
    }

    /// Signals that would be delivered next (see [`parse_status_pending`]);
    /// meaningful on a thread directory.
    pub fn pending_signals(&self) -> Result<u64, ProcError> {
        let text = self.read_text("status")?;
        parse_status_pending(&text).ok_or_else(|| ProcError::Parse {
            path: self.path.join("status"),
            what: "no SigPnd/ShdPnd/SigBlk in status",
        })
    }

    /// The open descriptors listed in `fd/`, sorted.
    pub fn fds(&self) -> Result<Vec<i32>, ProcError> {
        let dir = self.path.join("fd");
        list::numeric_entries(&dir).map_err(|e| {
            if is_gone_io(&e) {
                ProcError::Gone { pid: self.pid }
            } else {
                ProcError::io(dir, e)
            }
        })
    }

    /// `fd/N`: the magic link through which descriptor `fd` can be stat'ed
    /// or reopened.
    pub fn fd_path(&self, fd: i32) -> PathBuf {
        self.path.join("fd").join(fd.to_string())
    }

    /// Where descriptor `fd` points (the target of `fd/N`).
    pub fn fd_target(&self, fd: i32) -> Result<PathBuf, ProcError> {
        self.read_link(&format!("fd/{fd}"))
    }

    /// `fdinfo/N`, parsed.
    pub fn fdinfo(&self, fd: i32) -> Result<FdInfo, ProcError> {
        let name = format!("fdinfo/{fd}");
        let text = self.read_text(&name)?;
        parse_fdinfo(&text).ok_or_else(|| ProcError::Parse {
            path: self.path.join(name),
            what: "no pos line in fdinfo",
        })
    }

    /// The working directory (the target of `cwd`).
    pub fn cwd(&self) -> Result<PathBuf, ProcError> {
        self.read_link("cwd")
    }

    /// `net/unix`: the bound unix sockets of the task's network namespace.
    pub fn net_unix(&self) -> Result<Vec<(u64, String)>, ProcError> {
        Ok(parse_net_unix(&self.read_utf8("net/unix")?))
    }

    /// `cmdline` split on NUL.
    pub fn cmdline(&self) -> Result<Vec<String>, ProcError> {
        Ok(self
            .read_text("cmdline")?
            .split('\0')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect())
    }
}
