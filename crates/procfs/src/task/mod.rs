//! Per-task readers: /proc/PID and /proc/PID/task/TID files.
//!
//! These run off the hot path (the heavy detector and the supervisor), so
//! they may allocate. A task that exits mid-read yields
//! [`ProcError::Gone`](crate::ProcError::Gone), never a wrong number.

mod list;
mod schedstat;
mod stat;
mod status;

pub use list::{list_pids, list_tids};
pub use schedstat::{parse_task_schedstat, TaskSchedstat};
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
