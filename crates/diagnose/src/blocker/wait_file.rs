//! Which file (and so which mount and device) a task in D is working on,
//! from the system call it is in (`/proc/PID/task/TID/syscall`).
//!
//! Nothing here touches the file itself: a `stat` of a file on a FUSE or
//! NFS mount whose server is stuck would block the reader too. The mount
//! comes from the descriptor's `mnt_id` (`fdinfo`) or, for a path, from
//! the longest mount point that prefixes it in the task's own
//! `mountinfo`; only files on devtmpfs/tmpfs (a block device node) are
//! `stat`ed, for their device number.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use selfheal_cgroup::mountinfo::{parse_mountinfo, MountInfo};

use crate::pseudo_file::read_small;

/// How long reading a path argument from the task's memory may take.
const PATH_READ_TIMEOUT: Duration = Duration::from_millis(100);

/// The file a task waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitFile {
    /// How it was found (`fd 3`, `openat path`, …).
    pub via: String,
    /// Its path, when known.
    pub path: Option<PathBuf>,
    /// The mount it is on, from the task's mountinfo.
    pub mount: Option<MountInfo>,
    /// For a block device node: its device number.
    pub block_device: Option<(u32, u32)>,
}

/// Where a system call's file argument is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arg {
    /// A descriptor in argument `n`.
    Fd(usize),
    /// A directory descriptor and a path (the `*at` calls).
    At(usize, usize),
    /// A path, relative to the working directory.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Path(usize),
}

fn file_arg(nr: i64) -> Option<Arg> {
    use libc::*;
    let fd0 = [
        SYS_read,
        SYS_write,
        SYS_pread64,
        SYS_pwrite64,
        SYS_readv,
        SYS_writev,
        SYS_preadv,
        SYS_pwritev,
        SYS_preadv2,
        SYS_pwritev2,
        SYS_fsync,
        SYS_fdatasync,
        SYS_ftruncate,
        SYS_fallocate,
        SYS_sync_file_range,
        SYS_fstatfs,
        SYS_flock,
        SYS_fcntl,
        SYS_ioctl,
        SYS_getdents64,
        SYS_lseek,
        SYS_syncfs,
        SYS_fchmod,
        SYS_fchown,
        SYS_fsetxattr,
        SYS_fgetxattr,
        SYS_copy_file_range,
        SYS_splice,
        SYS_close,
    ];
    let at01 = [
        SYS_openat,
        SYS_openat2,
        SYS_newfstatat,
        SYS_statx,
        SYS_mkdirat,
        SYS_mknodat,
        SYS_unlinkat,
        SYS_renameat2,
        SYS_linkat,
        SYS_faccessat,
        SYS_faccessat2,
        SYS_fchmodat,
        SYS_fchownat,
        SYS_utimensat,
        SYS_readlinkat,
    ];
    if fd0.contains(&nr) {
        return Some(Arg::Fd(0));
    }
    if nr == SYS_fstat {
        return Some(Arg::Fd(0));
    }
    if nr == SYS_sendfile {
        return Some(Arg::Fd(1));
    }
    if at01.contains(&nr) {
        return Some(Arg::At(0, 1));
    }
    #[cfg(target_arch = "x86_64")]
    {
        let p0 = [
            SYS_open,
            SYS_creat,
            SYS_stat,
            SYS_lstat,
            SYS_access,
            SYS_mkdir,
            SYS_rmdir,
            SYS_unlink,
            SYS_rename,
            SYS_truncate,
            SYS_chmod,
            SYS_chown,
            SYS_readlink,
            SYS_statfs,
        ];
        if p0.contains(&nr) {
            return Some(Arg::Path(0));
        }
    }
    None
}

/// `/proc/PID/task/TID/syscall`: the call number and its six arguments;
/// `None` when not in a system call (`running`, `-1 sp pc`).
pub fn parse_syscall(text: &str) -> Option<(i64, [u64; 6])> {
    let mut it = text.split_whitespace();
    let nr: i64 = it.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let mut args = [0u64; 6];
    for a in &mut args {
        *a = u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16).ok()?;
    }
    Some((nr, args))
}

/// The mount a path is on: the longest mount point that prefixes it (the
/// last one mounted there, as the kernel resolves).
pub fn mount_of_path<'a>(mounts: &'a [MountInfo], path: &Path) -> Option<&'a MountInfo> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| path.starts_with(&m.mount_point))
        .max_by_key(|(i, m)| (m.mount_point.components().count(), *i))
        .map(|(_, m)| m)
}

/// Reads the task's file argument. `proc_root` is normally `/proc`.
pub fn wait_file(proc_root: &Path, pid: i32, tid: i32) -> Option<WaitFile> {
    let pdir = proc_root.join(pid.to_string());
    let (nr, args) = parse_syscall(&read_small(
        &pdir.join("task").join(tid.to_string()).join("syscall"),
    )?)?;
    let mounts = parse_mountinfo(&read_small(&pdir.join("mountinfo"))?).ok()?;
    match file_arg(nr)? {
        Arg::Fd(i) => by_fd(&pdir, &mounts, args[i] as i32),
        Arg::At(d, p) => {
            let path = read_path(pid, args[p])?;
            let dirfd = args[d] as i32;
            let base = if path.is_absolute() {
                PathBuf::new()
            } else if dirfd == libc::AT_FDCWD {
                std::fs::read_link(pdir.join("cwd")).ok()?
            } else {
                std::fs::read_link(pdir.join("fd").join(dirfd.to_string())).ok()?
            };
            Some(by_path(&mounts, base.join(path), "path argument"))
        }
        Arg::Path(p) => {
            let path = read_path(pid, args[p])?;
            let base = if path.is_absolute() {
                PathBuf::new()
            } else {
                std::fs::read_link(pdir.join("cwd")).ok()?
            };
            Some(by_path(&mounts, base.join(path), "path argument"))
        }
    }
}

fn by_fd(pdir: &Path, mounts: &[MountInfo], fd: i32) -> Option<WaitFile> {
    let info = read_small(&pdir.join("fdinfo").join(fd.to_string()))?;
    let mnt_id: u32 = info
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())?;
    let path = std::fs::read_link(pdir.join("fd").join(fd.to_string())).ok();
    let mount = mounts.iter().find(|m| m.mount_id == mnt_id).cloned();
    let block_device = match (&mount, &path) {
        (Some(m), Some(p)) if matches!(m.fs_type.as_str(), "devtmpfs" | "tmpfs") => {
            block_device_of(p)
        }
        _ => None,
    };
    Some(WaitFile {
        via: format!("fd {fd}"),
        path,
        mount,
        block_device,
    })
}

fn by_path(mounts: &[MountInfo], path: PathBuf, via: &str) -> WaitFile {
    let mount = mount_of_path(mounts, &path).cloned();
    WaitFile {
        via: via.to_string(),
        block_device: match &mount {
            Some(m) if matches!(m.fs_type.as_str(), "devtmpfs" | "tmpfs") => block_device_of(&path),
            _ => None,
        },
        path: Some(path),
        mount,
    }
}

fn block_device_of(path: &Path) -> Option<(u32, u32)> {
    let m = std::fs::metadata(path).ok()?;
    m.file_type().is_block_device().then(|| {
        let r = m.rdev();
        (libc::major(r), libc::minor(r))
    })
}

/// A NUL-terminated path from the task's memory, read by a helper thread
/// that may be left behind if the task's memory map is locked (the read
/// takes its `mmap_lock`; the pipeline must not wait behind a stuck writer).
fn read_path(pid: i32, addr: u64) -> Option<PathBuf> {
    if addr == 0 {
        return None;
    }
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("selfheal-pathread".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut buf = vec![0u8; 4096];
            let got = selfheal_sys::process::read_process_memory(pid, addr, &mut buf)
                .ok()
                .and_then(|n| {
                    let b = &buf[..n];
                    let end = b.iter().position(|c| *c == 0)?;
                    use std::os::unix::ffi::OsStrExt;
                    Some(PathBuf::from(std::ffi::OsStr::from_bytes(&b[..end])))
                });
            let _ = tx.send(got);
        })
        .ok()?;
    rx.recv_timeout(PATH_READ_TIMEOUT).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_lines() {
        // Captured: `cat` reading fd 3 from a FUSE file; a writer in openat.
        let (nr, a) =
            parse_syscall("0 0x3 0x7f42129a9000 0x20000 0x7f4212a3cb60 0xffffffff 0x0 0x7fff2187e498 0x7f4212b252ad\n")
                .unwrap();
        assert_eq!((nr, a[0], a[2]), (0, 3, 0x20000));
        let (nr, a) = parse_syscall(
            "257 0xffffff9c 0x563bb15a3610 0x241 0x1b6 0x0 0x20 0x7ffd39763d20 0x7f365301d011",
        )
        .unwrap();
        assert_eq!(nr, 257);
        assert_eq!(a[0] as i32, libc::AT_FDCWD);
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0x7ffd39763d20 0x7f365301d011\n"), None);
        assert_eq!(file_arg(libc::SYS_read), Some(Arg::Fd(0)));
        assert_eq!(file_arg(libc::SYS_openat), Some(Arg::At(0, 1)));
        assert_eq!(file_arg(libc::SYS_getpid), None);
    }

    #[test]
    fn paths_map_to_the_innermost_mount() {
        let mi = "22 1 254:0 / / rw - ext4 /dev/vda rw\n\
                  45 22 0:40 / /tmp/f rw,nosuid - fuse.selfheal-stall selfheal-stall rw\n\
                  46 22 7:0 / /tmp/f/img rw - ext4 /dev/loop0 rw\n";
        let m = parse_mountinfo(mi).unwrap();
        let at = |p: &str| mount_of_path(&m, Path::new(p)).map(|m| m.mount_id);
        assert_eq!(at("/tmp/f/stall"), Some(45));
        assert_eq!(at("/tmp/f/img/x"), Some(46));
        assert_eq!(at("/tmp/fx"), Some(22));
        assert_eq!((m[1].major, m[1].minor), (0, 40));
    }
}
