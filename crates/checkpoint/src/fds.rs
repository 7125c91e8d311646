//! The file descriptor table: what each fd is, and file offsets.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crate::procfs;

/// What kind of object a descriptor refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FdKind {
    /// A regular file (offset restorable, reopenable by path).
    File,
    /// A directory.
    Dir,
    /// A pipe or FIFO.
    Pipe,
    /// A socket.
    Socket,
    /// A terminal or other character device.
    CharDevice,
    /// A char device that yields no state (/dev/null, /dev/zero, /dev/urandom).
    NullDevice,
    /// eventfd, timerfd, epoll, signalfd, …
    AnonInode,
    /// Anything else.
    Other,
}

/// One descriptor as of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FdSnap {
    /// Number.
    pub fd: i32,
    /// Kind.
    pub kind: FdKind,
    /// readlink of /proc/PID/fd/N.
    pub target: String,
    /// Device of the object.
    pub dev: u64,
    /// Inode of the object.
    pub ino: u64,
    /// Offset.
    pub pos: u64,
    /// open(2) flags.
    pub flags: u32,
}

impl FdSnap {
    /// Same object (not just the same number).
    pub fn same_object(&self, other: &FdSnap) -> bool {
        self.dev == other.dev && self.ino == other.ino && self.kind == other.kind
    }

    /// Opened for reading.
    pub fn readable(&self) -> bool {
        let acc = self.flags & libc::O_ACCMODE as u32;
        acc == libc::O_RDONLY as u32 || acc == libc::O_RDWR as u32
    }
}

fn kind_of(target: &str, meta: Option<&fs::Metadata>) -> FdKind {
    if target.starts_with("socket:") {
        return FdKind::Socket;
    }
    if target.starts_with("pipe:") {
        return FdKind::Pipe;
    }
    if target.starts_with("anon_inode:") {
        return FdKind::AnonInode;
    }
    if matches!(
        target,
        "/dev/null" | "/dev/zero" | "/dev/urandom" | "/dev/random"
    ) {
        return FdKind::NullDevice;
    }
    match meta.map(|m| m.file_type()) {
        Some(t) if t.is_file() => FdKind::File,
        Some(t) if t.is_dir() => FdKind::Dir,
        Some(t) if t.is_fifo() => FdKind::Pipe,
        Some(t) if t.is_socket() => FdKind::Socket,
        Some(t) if t.is_char_device() => FdKind::CharDevice,
        _ => FdKind::Other,
    }
}

/// Reads the fd table of `pid`. What is known about a descriptor whose link
/// target is unchanged since `prev` is reused; only regular files and
/// directories get their offset read again. Descriptors that vanish while we look are skipped.
pub(crate) fn capture(pid: i32, prev: &[FdSnap]) -> std::io::Result<Vec<FdSnap>> {
    let mut out = Vec::new();
    let dir = procfs::process(pid);
    for fd in dir.fds().map_err(procfs::into_io)? {
        let path = dir.fd_path(fd);
        let Ok(target) = dir.fd_target(fd) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        let fdinfo = || dir.fdinfo(fd).unwrap_or_default();
        let mut info = None;
        if let Some(old) = prev.iter().find(|p| p.fd == fd && p.target == target) {
            // Offsets matter for regular files and directories (reopened
            // by a rollback only at offset 0).
            if !matches!(old.kind, FdKind::File | FdKind::Dir) {
                out.push(old.clone());
                continue;
            }
            // The same name may be another file now (a deleted file's
            // "(deleted)" name, a file renamed over): compare inodes.
            let i = fdinfo();
            if i.ino.is_none_or(|ino| ino == old.ino) {
                let mut snap = old.clone();
                snap.pos = i.pos;
                snap.flags = i.flags;
                out.push(snap);
                continue;
            }
            info = Some(i);
        }
        let meta = fs::metadata(&path).ok();
        let info = info.unwrap_or_else(fdinfo);
        out.push(FdSnap {
            fd,
            kind: kind_of(&target, meta.as_ref()),
            dev: meta.as_ref().map_or(0, |m| m.dev()),
            ino: meta.as_ref().map_or(0, |m| m.ino()),
            target,
            pos: info.pos,
            flags: info.flags,
        });
    }
    out.sort_by_key(|f| f.fd);
    Ok(out)
}
