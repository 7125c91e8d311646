//! The responder thread: answers every system call the filter asks about,
//! after recording in the journal what is needed to undo it (old bytes of
//! the range a write will overwrite, a file's size, a stash of a file about
//! to be removed). It always lets the call run unchanged: it never alters
//! what the program does, only remembers.
//!
//! The record is made before the reply, and a checkpoint only seals an
//! epoch once every thread is stopped; a call interrupted by that stop is
//! restarted and asked about again. So each change lands in the epoch it
//! runs in.
//!
//! The thread outlives the engine: once tracking ends (detach, exit) it
//! goes on letting calls through until no process uses the filter any
//! more (the listener reports a hang-up), because a filter without a
//! listener fails its calls with ENOSYS.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::Seek;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use selfheal_sys::fileops;
use selfheal_sys::seccomp::{self as sc, Notif};

use super::filter::{FICLONE, FICLONERANGE};
use super::journal::{Inode, Journal, Key, Sent};
use super::names;
use crate::events::FileRefusal;
use crate::fds::FdKind;

/// State shared by the responder and the tracer thread.
#[derive(Debug)]
pub(crate) struct Shared {
    /// What changed since each kept checkpoint.
    pub journal: Mutex<Journal>,
    /// Where calls are counted.
    pub metrics: Arc<crate::events::Metrics>,
    /// Counts calls that may have changed kernel state a checkpoint keeps
    /// (see [`super::filter::KERNEL_STATE`]); starts at a value no other
    /// listener uses. Counted before the reply: a call runs only after it.
    pub kernel_changes: std::sync::atomic::AtomicU64,
    /// Set for good once the program arms an alternate stack with
    /// `SS_AUTODISARM` (or one we could not read): the kernel then
    /// disarms and re-arms it around signal handlers, with no call the
    /// filter sees, so checkpoints must read it every time.
    pub no_kernel_cache: std::sync::atomic::AtomicBool,
}

/// `SS_AUTODISARM` in `stack_t.ss_flags`.
pub(crate) const SS_AUTODISARM: u32 = 1 << 31;

/// True if a `sigaltstack` call whose `ss_flags` word (read from the
/// program, None if unreadable) is `flags` may arm auto-disarming.
pub(crate) fn may_autodisarm(flags: Option<u64>) -> bool {
    flags.is_none_or(|w| (w as u32) & SS_AUTODISARM != 0)
}

impl Shared {
    /// The journal, even if a holder panicked.
    pub fn lock(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where a write lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// At the descriptor's position.
    Position,
    /// At this offset.
    Offset(u64),
}

/// A descriptor of the calling thread, duplicated into us.
struct Obj {
    file: File,
    meta: Metadata,
}

pub(crate) struct Responder {
    listener: OwnedFd,
    shared: Arc<Shared>,
    pidfds: HashMap<u32, OwnedFd>,
    fs_verdict: HashMap<u64, Result<(), FileRefusal>>,
    stderr_may_repeat: bool,
    quiet_peers: Vec<String>,
    tolerant_sockets: Vec<String>,
    /// The traced process (thread group).
    tracee: i32,
    /// Whether a thread id belongs to it.
    ours: HashMap<u32, bool>,
    /// The call being handled comes from another process (a child): its
    /// changes are not rolled back with the program's memory, so they
    /// cannot be undone either.
    foreign: Option<i32>,
}

/// Writes past this are bounded by the file's old size anyway; an iovec
/// array we cannot read counts as "to the end".
const UNKNOWN_LEN: u64 = u64::MAX / 2;

impl Responder {
    pub fn new(
        listener: OwnedFd,
        shared: Arc<Shared>,
        cfg: &super::FilesConfig,
        tracee: i32,
    ) -> Responder {
        Responder {
            listener,
            shared,
            pidfds: HashMap::new(),
            fs_verdict: HashMap::new(),
            stderr_may_repeat: cfg.stderr_may_repeat,
            quiet_peers: cfg.quiet_peers.clone(),
            tolerant_sockets: cfg.tolerant_sockets.clone(),
            tracee,
            ours: HashMap::new(),
            foreign: None,
        }
    }

    /// Serves until no process uses the filter.
    pub fn run(mut self) {
        loop {
            match sc::notif_wait(self.listener.as_fd()) {
                Ok(sc::Ready::Notification) => {}
                Ok(sc::Ready::Gone) => return,
                Err(e) => {
                    crate::debug(|| format!("files: poll on the listener failed: {e}"));
                    return;
                }
            }
            let n = match sc::notif_recv(self.listener.as_fd()) {
                Ok(n) => n,
                // The caller died or was interrupted before we got to it.
                Err(e) if e.errno.0 == libc::ENOENT => continue,
                Err(e) => {
                    crate::debug(|| format!("files: receiving a notification failed: {e}"));
                    return;
                }
            };
            self.shared
                .metrics
                .file_calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if super::filter::changes_kernel_state(n.arch, n.nr) {
                // stack_t: ss_sp (8), then ss_flags.
                if n.arch == sc::AUDIT_ARCH_X86_64
                    && n.nr as i64 == libc::SYS_sigaltstack
                    && may_autodisarm(self.read_u64(n.pid as i32, n.args[0].wrapping_add(8)))
                {
                    self.shared
                        .no_kernel_cache
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                }
                self.shared
                    .kernel_changes
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            if self.shared.lock().active {
                self.handle(&n);
            }
            // ENOENT: interrupted meanwhile (a checkpoint's stop); the call
            // restarts and is asked about again.
            let _ = sc::notif_continue(self.listener.as_fd(), n.id);
        }
    }

    /// True if thread `tid` belongs to the traced process.
    fn is_ours(&mut self, tid: i32) -> bool {
        if self.ours.len() > 256 {
            self.ours.clear();
        }
        let tracee = self.tracee;
        *self
            .ours
            .entry(tid as u32)
            .or_insert_with(|| tid == tracee || crate::procfs::thread(tracee, tid).exists())
    }

    /// Taints the epoch for a change by another process, if this call
    /// comes from one; true then.
    fn foreign_change(&mut self, what: &str) -> bool {
        let Some(pid) = self.foreign else {
            return false;
        };
        let comm = crate::procfs::comm_or_unknown(pid);
        self.shared
            .lock()
            .taint(what, FileRefusal::ChangedByOtherProcess { pid, comm });
        true
    }

    fn handle(&mut self, n: &Notif) {
        let tid = n.pid as i32;
        let a = n.args;
        self.foreign = (!self.is_ours(tid)).then_some(tid);
        if n.arch != sc::AUDIT_ARCH_X86_64 || n.nr >= 0x4000_0000 {
            self.shared
                .lock()
                .taint("(system call)", FileRefusal::ForeignAbi { nr: n.nr });
            return;
        }
        let fd = |i: usize| a[i] as i32;
        match n.nr as i64 {
            libc::SYS_write => self.write(tid, fd(0), At::Position, a[2]),
            libc::SYS_writev => {
                let len = self.iov_len(tid, a[1], a[2]);
                self.write(tid, fd(0), At::Position, len)
            }
            libc::SYS_pwrite64 => self.write(tid, fd(0), At::Offset(a[3]), a[2]),
            libc::SYS_pwritev => {
                let len = self.iov_len(tid, a[1], a[2]);
                self.write(tid, fd(0), At::Offset(a[3]), len)
            }
            libc::SYS_pwritev2 => {
                let len = self.iov_len(tid, a[1], a[2]);
                let at = if a[3] as i64 == -1 {
                    At::Position
                } else {
                    At::Offset(a[3])
                };
                self.write(tid, fd(0), at, len)
            }
            libc::SYS_sendfile => self.write(tid, fd(0), At::Position, a[3]),
            libc::SYS_copy_file_range | libc::SYS_splice => {
                let at = match a[3] {
                    0 => At::Position,
                    p => self.read_u64(tid, p).map_or(At::Position, At::Offset),
                };
                self.write(tid, fd(2), at, a[4])
            }
            libc::SYS_tee => self.write(tid, fd(1), At::Position, a[3]),
            libc::SYS_sendto | libc::SYS_sendmsg | libc::SYS_sendmmsg
                if self.to_quiet_peer(tid, n.nr as i64, a) => {}
            libc::SYS_vmsplice | libc::SYS_sendto | libc::SYS_sendmsg | libc::SYS_sendmmsg => {
                self.write(tid, fd(0), At::Position, 0)
            }
            libc::SYS_ftruncate => self.cut_fd(tid, fd(0), a[1], UNKNOWN_LEN),
            libc::SYS_fallocate => {
                let (mode, off, len) = (a[1] as i32, a[2], a[3]);
                let shifts = libc::FALLOC_FL_COLLAPSE_RANGE | libc::FALLOC_FL_INSERT_RANGE;
                let zeroes = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
                if mode & shifts != 0 {
                    self.cut_fd(tid, fd(0), off, UNKNOWN_LEN)
                } else if mode & zeroes != 0 {
                    self.cut_fd(tid, fd(0), off, len)
                } else {
                    // Allocation only: the size may grow, nothing is lost.
                    self.cut_fd(tid, fd(0), u64::MAX, 0)
                }
            }
            libc::SYS_ioctl => {
                let (from, len) = if a[1] as u32 == FICLONE {
                    (0, UNKNOWN_LEN)
                } else if a[1] as u32 == FICLONERANGE {
                    // struct file_clone_range { s64 src_fd; u64 src_offset,
                    // src_length, dest_offset; }
                    let len = self.read_u64(tid, a[2] + 16).unwrap_or(0);
                    let dest = self.read_u64(tid, a[2] + 24).unwrap_or(0);
                    (dest, if len == 0 { UNKNOWN_LEN } else { len })
                } else {
                    return;
                };
                self.cut_fd(tid, fd(0), from, len)
            }
            libc::SYS_mmap => self.mmap_shared(tid, a[3] as i32, fd(4)),
            libc::SYS_io_uring_setup | libc::SYS_io_submit => self
                .shared
                .lock()
                .taint("(asynchronous I/O)", FileRefusal::AsyncIo),
            libc::SYS_process_vm_writev => self
                .shared
                .lock()
                .taint("(another process's memory)", FileRefusal::ForeignMemory),
            libc::SYS_truncate => {
                if let Some(p) = self.path(tid, libc::AT_FDCWD, a[0]) {
                    self.cut_path(&p, a[1], true);
                }
            }
            libc::SYS_open => self.open(tid, libc::AT_FDCWD, a[0], a[1]),
            libc::SYS_openat => self.open(tid, fd(0), a[1], a[2]),
            libc::SYS_creat => self.open(
                tid,
                libc::AT_FDCWD,
                a[0],
                (libc::O_CREAT | libc::O_TRUNC | libc::O_WRONLY) as u64,
            ),
            libc::SYS_openat2 => {
                // struct open_how { u64 flags; u64 mode; u64 resolve; }
                let flags = self.read_u64(tid, a[2]).unwrap_or(0);
                self.open(tid, fd(0), a[1], flags)
            }
            nr => self.name_call(tid, nr, a),
        }
    }

    /// unlink, rmdir, rename, link, symlink, mkdir, mknod.
    fn name_call(&mut self, tid: i32, nr: i64, a: [u64; 6]) {
        let cwd = libc::AT_FDCWD;
        let fd = |i: usize| a[i] as i32;
        match nr {
            libc::SYS_unlink => self.remove(tid, cwd, a[0], false),
            libc::SYS_rmdir => self.remove(tid, cwd, a[0], true),
            libc::SYS_unlinkat => {
                self.remove(tid, fd(0), a[1], a[2] as i32 & libc::AT_REMOVEDIR != 0)
            }
            libc::SYS_rename => self.rename(tid, (cwd, a[0]), (cwd, a[1]), 0),
            libc::SYS_renameat => self.rename(tid, (fd(0), a[1]), (fd(2), a[3]), 0),
            libc::SYS_renameat2 => self.rename(tid, (fd(0), a[1]), (fd(2), a[3]), a[4] as u32),
            libc::SYS_link | libc::SYS_symlink => self.create(tid, cwd, a[1]),
            libc::SYS_linkat => self.create(tid, fd(2), a[3]),
            libc::SYS_symlinkat => self.create(tid, fd(1), a[2]),
            libc::SYS_mkdir | libc::SYS_mknod => self.create(tid, cwd, a[0]),
            libc::SYS_mkdirat | libc::SYS_mknodat => self.create(tid, fd(0), a[1]),
            _ => {}
        }
    }

    fn pidfd(&mut self, tid: i32) -> Option<&OwnedFd> {
        let key = tid as u32;
        if !self.pidfds.contains_key(&key) {
            // Threads come and go: keep the cache small.
            if self.pidfds.len() > 256 {
                self.pidfds.clear();
            }
            let fd = fileops::pidfd_open_thread(tid).ok()?;
            self.pidfds.insert(key, fd);
        }
        self.pidfds.get(&key)
    }

    /// The calling thread's descriptor `fd`, duplicated (None: not open,
    /// or the thread is gone; the call will fail or never run).
    fn object(&mut self, tid: i32, fd: i32) -> Option<Obj> {
        let mut retried = false;
        loop {
            let pidfd = self.pidfd(tid)?;
            match selfheal_sys::ptrace::pidfd_getfd(pidfd, fd) {
                Ok(dup) => {
                    let file = File::from(dup);
                    let meta = file.metadata().ok()?;
                    return Some(Obj { file, meta });
                }
                // A recycled thread id behind a stale pidfd: once more.
                Err(e) if e.errno.0 == libc::ESRCH && !retried => {
                    self.pidfds.remove(&(tid as u32));
                    retried = true;
                }
                Err(_) => return None,
            }
        }
    }

    fn fs_ok(&mut self, obj: &Obj) -> Result<(), FileRefusal> {
        let dev = obj.meta.dev();
        if let Some(v) = self.fs_verdict.get(&dev) {
            return v.clone();
        }
        let v = match fileops::fs_magic(obj.file.as_fd()) {
            Ok(m) => super::fs::verdict(m),
            Err(e) => Err(FileRefusal::Filesystem {
                fs: format!("unknown ({e})"),
            }),
        };
        self.fs_verdict.insert(dev, v.clone());
        v
    }

    /// Records a write of `len` bytes to `fd`.
    fn write(&mut self, tid: i32, fd: i32, at: At, len: u64) {
        let Some(obj) = self.object(tid, fd) else {
            return;
        };
        let ft = obj.meta.file_type();
        if !ft.is_file() {
            let kind = if ft.is_fifo() {
                FdKind::Pipe
            } else if ft.is_socket() {
                FdKind::Socket
            } else if ft.is_char_device() {
                if is_null_device(obj.meta.rdev()) {
                    return;
                }
                FdKind::CharDevice
            } else if ft.is_block_device() {
                FdKind::Other
            } else {
                // Directories fail the call; anonymous inodes (eventfd,
                // timerfd, …) hold no output.
                return;
            };
            if fd == 2 && self.stderr_may_repeat && kind != FdKind::Socket {
                return;
            }
            if kind == FdKind::Socket
                && !self.tolerant_sockets.is_empty()
                && fileops::unix_socket_name(obj.file.as_fd())
                    .is_some_and(|n| self.tolerant_sockets.contains(&n))
            {
                return;
            }
            self.shared.lock().sent(Sent { pid: tid, fd, kind });
            return;
        }
        let append = fileops::fd_flags(obj.file.as_fd()).is_ok_and(|f| f & libc::O_APPEND != 0);
        let size = obj.meta.len();
        let pos = if append {
            size
        } else {
            match at {
                At::Offset(o) => o,
                At::Position => (&obj.file).stream_position().unwrap_or_default(),
            }
        };
        self.record(&obj, pos, pos.saturating_add(len));
    }

    /// Touches the file and captures `[a, b)` of it.
    fn record(&mut self, obj: &Obj, a: u64, b: u64) {
        if self.foreign_change(&proc_path(&obj.file)) {
            return;
        }
        let key: Key = (obj.meta.dev(), obj.meta.ino());
        let fs = self.fs_ok(obj);
        let mut j = self.shared.lock();
        if let Err(why) = fs {
            let path = proc_path(&obj.file);
            j.taint(&path, why);
            return;
        }
        let handle = || reopen(&obj.file);
        if let Err(why) = j.touch(key, obj.meta.len(), handle) {
            j.taint(&proc_path(&obj.file), why);
            return;
        }
        j.capture(key, a, b);
    }

    /// The file loses or rewrites `[from, from + len)`: ftruncate,
    /// fallocate, clone.
    fn cut_fd(&mut self, tid: i32, fd: i32, from: u64, len: u64) {
        if let Some(obj) = self.object(tid, fd) {
            if obj.meta.is_file() {
                self.record(&obj, from, from.saturating_add(len));
            }
        }
    }

    /// Like [`Responder::cut_fd`] for a file named by path.
    fn cut_path(&mut self, path: &std::path::Path, from: u64, follow: bool) {
        let meta = if follow {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        };
        if !meta.is_ok_and(|m| m.is_file()) {
            return;
        }
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
        else {
            return;
        };
        let Ok(meta) = file.metadata() else { return };
        if meta.is_file() {
            self.record(&Obj { file, meta }, from, UNKNOWN_LEN);
        }
    }

    fn mmap_shared(&mut self, tid: i32, flags: i32, fd: i32) {
        if fd < 0 || flags & libc::MAP_ANONYMOUS != 0 {
            return;
        }
        let Some(obj) = self.object(tid, fd) else {
            return;
        };
        let rw =
            fileops::fd_flags(obj.file.as_fd()).is_ok_and(|f| f & libc::O_ACCMODE == libc::O_RDWR);
        if obj.meta.is_file() && rw {
            self.shared
                .lock()
                .taint(&proc_path(&obj.file), FileRefusal::SharedMapping);
        }
    }

    /// Records a change to names, unless another process makes it.
    fn name_change(&mut self, path: &std::path::Path, f: impl FnOnce(&mut Journal)) {
        if !self.foreign_change(&path.display().to_string()) {
            f(&mut self.shared.lock());
        }
    }

    fn open(&mut self, tid: i32, dirfd: i32, ptr: u64, flags: u64) {
        let flags = flags as i32;
        if flags & (libc::O_CREAT | libc::O_TRUNC) == 0 {
            return;
        }
        let Some(path) = self.path(tid, dirfd, ptr) else {
            return;
        };
        let follow = flags & libc::O_NOFOLLOW == 0;
        match std::fs::symlink_metadata(&path) {
            Err(_) if flags & libc::O_CREAT != 0 => {
                self.name_change(&path, |j| names::created(j, &path));
            }
            Err(_) => {}
            Ok(m) if m.file_type().is_symlink() && follow => match std::fs::metadata(&path) {
                Ok(_) if flags & libc::O_TRUNC != 0 => self.cut_path(&path, 0, true),
                Ok(_) => {}
                Err(_) if flags & libc::O_CREAT != 0 => self.shared.lock().taint(
                    &path.display().to_string(),
                    FileRefusal::Unsupported {
                        what: "a file created through a dangling symbolic link".into(),
                    },
                ),
                Err(_) => {}
            },
            Ok(m) if m.is_file() && flags & libc::O_TRUNC != 0 && m.len() > 0 => {
                self.cut_path(&path, 0, false)
            }
            Ok(_) => {}
        }
    }

    fn remove(&mut self, tid: i32, dirfd: i32, ptr: u64, dir: bool) {
        if let Some(path) = self.path(tid, dirfd, ptr) {
            self.name_change(&path, |j| names::removed(j, &path, dir));
        }
    }

    fn rename(&mut self, tid: i32, from: (i32, u64), to: (i32, u64), flags: u32) {
        let (Some(f), Some(t)) = (self.path(tid, from.0, from.1), self.path(tid, to.0, to.1))
        else {
            return;
        };
        self.name_change(&f, |j| names::renamed(j, &f, &t, flags));
    }

    fn create(&mut self, tid: i32, dirfd: i32, ptr: u64) {
        if let Some(path) = self.path(tid, dirfd, ptr) {
            if std::fs::symlink_metadata(&path).is_err() {
                self.name_change(&path, |j| names::created(j, &path));
            }
        }
    }

    /// The absolute path a call names (relative to `dirfd` or the
    /// thread's working directory). None (and the epoch tainted) if it
    /// cannot be known.
    fn path(&mut self, tid: i32, dirfd: i32, ptr: u64) -> Option<PathBuf> {
        let rel = self.read_cstr(tid, ptr)?;
        if rel.starts_with('/') {
            return Some(PathBuf::from(rel));
        }
        let task = crate::procfs::process(tid);
        let base = if dirfd == libc::AT_FDCWD {
            task.cwd()
        } else {
            task.fd_target(dirfd)
        };
        match base {
            Ok(b) if !b.to_string_lossy().ends_with(" (deleted)") && b.is_absolute() => {
                Some(b.join(rel))
            }
            _ => {
                self.shared.lock().taint(&rel, FileRefusal::PathUnknown);
                None
            }
        }
    }

    fn read_cstr(&self, tid: i32, mut addr: u64) -> Option<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        while out.len() < libc::PATH_MAX as usize {
            // Never read across a page boundary: the next page may be unmapped.
            let room = (4096 - (addr % 4096)).min(buf.len() as u64) as usize;
            let n = fileops::process_vm_read(tid, addr, &mut buf[..room]).ok()?;
            if n == 0 {
                return None;
            }
            if let Some(z) = buf[..n].iter().position(|b| *b == 0) {
                out.extend_from_slice(&buf[..z]);
                return String::from_utf8(out).ok();
            }
            out.extend_from_slice(&buf[..n]);
            addr += n as u64;
        }
        None
    }

    /// A datagram addressed to one of the quiet peers (the supervisor's
    /// notify socket)?
    fn to_quiet_peer(&self, tid: i32, nr: i64, a: [u64; 6]) -> bool {
        if self.quiet_peers.is_empty() {
            return false;
        }
        // sendto(fd, buf, len, flags, addr, addrlen); sendmsg(fd, msghdr, ..)
        // and sendmmsg(fd, mmsghdr[], ..) start with msg_name, msg_namelen.
        let (addr, len) = match nr {
            libc::SYS_sendto => (a[4], a[5]),
            _ => match (self.read_u64(tid, a[1]), self.read_u64(tid, a[1] + 8)) {
                (Some(p), Some(l)) => (p, l & 0xffff_ffff),
                _ => return false,
            },
        };
        if nr == libc::SYS_sendmmsg && a[2] != 1 {
            return false;
        }
        let len = len.min(110) as usize;
        if addr == 0 || len <= 2 {
            return false;
        }
        let mut buf = vec![0u8; len];
        if fileops::process_vm_read(tid, addr, &mut buf).ok() != Some(len) {
            return false;
        }
        if u16::from_ne_bytes([buf[0], buf[1]]) != libc::AF_UNIX as u16 {
            return false;
        }
        let path = &buf[2..];
        let name = if path[0] == 0 {
            format!("@{}", String::from_utf8_lossy(&path[1..]))
        } else {
            let end = path.iter().position(|b| *b == 0).unwrap_or(path.len());
            String::from_utf8_lossy(&path[..end]).into_owned()
        };
        self.quiet_peers.contains(&name)
    }

    fn read_u64(&self, tid: i32, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        (fileops::process_vm_read(tid, addr, &mut b).ok()? == 8).then(|| u64::from_ne_bytes(b))
    }

    /// Total length of an iovec array (unknown: "to the end").
    fn iov_len(&self, tid: i32, iov: u64, cnt: u64) -> u64 {
        if cnt > 1024 {
            return UNKNOWN_LEN;
        }
        let mut buf = vec![0u8; cnt as usize * 16];
        match fileops::process_vm_read(tid, iov, &mut buf) {
            Ok(n) if n == buf.len() => buf
                .chunks_exact(16)
                .map(|c| u64::from_ne_bytes(c[8..16].try_into().expect("8 bytes")))
                .fold(0u64, |s, l| s.saturating_add(l)),
            _ => UNKNOWN_LEN,
        }
    }
}

use std::os::unix::fs::OpenOptionsExt;

/// Our own read-write handle on the file behind `dup` (a new open file
/// description: the program's offset and flags stay untouched).
fn reopen(dup: &File) -> std::io::Result<Inode> {
    let path = proc_path(dup);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(crate::procfs::own_fd_path(dup.as_raw_fd()))?;
    Ok(Inode { file, path })
}

/// Where a descriptor of ours points, for messages.
fn proc_path(f: &File) -> String {
    std::fs::read_link(crate::procfs::own_fd_path(f.as_raw_fd()))
        .map_or_else(|_| "(unknown)".into(), |p| p.display().to_string())
}

/// /dev/null, /dev/zero, /dev/full, /dev/random, /dev/urandom: writes
/// there change nothing anyone can see.
fn is_null_device(rdev: u64) -> bool {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    major == 1 && matches!(minor, 3 | 5 | 7 | 8 | 9)
}
