//! Deleted files the program holds open at a checkpoint (sqlite's
//! statement journals and temporary tables, `tmpfile()`, `O_TMPFILE`) are
//! kept alive by a descriptor of ours: when the program closes one after
//! the checkpoint, its last reference would otherwise be gone and a
//! rollback could not give the descriptor back. The rollback reopens it
//! through `/proc/<us>/fd/<n>` (from inside the program, so the program
//! must be allowed to look into our descriptors: it runs as root).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};

use super::journal::Key;
use crate::fds::{FdKind, FdSnap};

/// Our descriptors on deleted files, with the newest checkpoint that saw
/// each open in the program.
#[derive(Debug, Default)]
pub(crate) struct Kept {
    files: HashMap<Key, (File, u64)>,
}

/// True for a regular file whose every name is gone.
pub(crate) fn is_deleted(f: &FdSnap) -> bool {
    f.kind == FdKind::File && f.target.ends_with(" (deleted)")
}

impl Kept {
    /// Keeps the deleted files among `fds` (the program's descriptors at
    /// checkpoint `id`).
    pub fn note(&mut self, pidfd: &OwnedFd, fds: &[FdSnap], id: u64) {
        for f in fds.iter().filter(|f| is_deleted(f)) {
            let key = (f.dev, f.ino);
            if let Some(e) = self.files.get_mut(&key) {
                e.1 = id;
                continue;
            }
            // Closed meanwhile: nothing to keep (and nothing to give back).
            if let Ok(fd) = selfheal_sys::ptrace::pidfd_getfd(pidfd, f.fd) {
                self.files.insert(key, (File::from(fd), id));
            }
        }
    }

    /// Checkpoints older than `oldest` are gone: so are the files only
    /// they saw.
    pub fn forget_before(&mut self, oldest: u64) {
        self.files.retain(|_, (_, id)| *id >= oldest);
    }

    /// Lets every file go.
    pub fn clear(&mut self) {
        self.files.clear();
    }

    /// Our descriptors (not "another process" holding the files).
    pub fn raw_fds(&self) -> impl Iterator<Item = i32> + '_ {
        self.files.values().map(|(f, _)| f.as_raw_fd())
    }

    /// A path the program can reopen `f` through, if we kept it.
    pub fn path(&self, f: &FdSnap) -> Option<String> {
        let (file, _) = self.files.get(&(f.dev, f.ino))?;
        let us = crate::procfs::process(std::process::id() as i32);
        Some(us.fd_path(file.as_raw_fd()).display().to_string())
    }
}

/// True if process `pid` runs as root (may open our `/proc/PID/fd`).
pub(crate) fn runs_as_root(pid: i32) -> bool {
    crate::procfs::process(pid)
        .status()
        .is_ok_and(|s| s.euid == Some(0))
}
