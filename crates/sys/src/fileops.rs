//! File calls the checkpoint engine's file tracking needs that std does not
//! offer: open flags of a descriptor, the filesystem type, reflink clones,
//! comparing open file descriptions across processes, reading another
//! process's memory, and pidfds of single threads.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::error::{Result, SysError};

/// `pidfd_open` flag: a pidfd for one thread, not only a thread-group
/// leader (Linux 6.9+).
const PIDFD_THREAD: u32 = libc::O_EXCL as u32;

/// Opens a pidfd for thread `tid` (any thread, Linux 6.9+).
pub fn pidfd_open_thread(tid: i32) -> Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid, PIDFD_THREAD) };
    if fd < 0 {
        return Err(SysError::last(format!(
            "pidfd_open(tid {tid}, PIDFD_THREAD)"
        )));
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The open(2) flags of a descriptor (`fcntl(F_GETFL)`).
pub fn fd_flags(fd: BorrowedFd<'_>) -> Result<i32> {
    // SAFETY: F_GETFL takes no pointer argument.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if rc < 0 {
        return Err(SysError::last("fcntl(F_GETFL)"));
    }
    Ok(rc)
}

/// The `f_type` magic number of the filesystem holding `fd` (`fstatfs`).
pub fn fs_magic(fd: BorrowedFd<'_>) -> Result<i64> {
    // SAFETY: all-zero is a valid statfs; the kernel fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a live out-pointer of the right type.
    let rc = unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) };
    if rc < 0 {
        return Err(SysError::last("fstatfs"));
    }
    Ok(st.f_type as i64)
}

/// `FICLONE`: `dst` becomes a copy-on-write clone of all of `src`
/// (same filesystem; xfs with reflink, btrfs, …). EOPNOTSUPP/EXDEV/EINVAL
/// where the filesystem cannot.
pub fn ficlone(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> Result<()> {
    const FICLONE: libc::Ioctl = 0x4004_9409;
    // SAFETY: FICLONE takes the source fd by value; no memory is passed.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd()) };
    if rc < 0 {
        return Err(SysError::last("ioctl(FICLONE)"));
    }
    Ok(())
}

#[repr(C)]
struct FileCloneRange {
    src_fd: i64,
    src_offset: u64,
    src_length: u64,
    dest_offset: u64,
}

/// `FICLONERANGE`: clones `len` bytes of `src` at `src_offset` into `dst`
/// at `dst_offset` (`len` 0: to the end of `src`). Offsets and length must
/// be block-aligned except at the end of `src`.
pub fn ficlone_range(
    dst: BorrowedFd<'_>,
    src: BorrowedFd<'_>,
    src_offset: u64,
    len: u64,
    dst_offset: u64,
) -> Result<()> {
    const FICLONERANGE: libc::Ioctl = 0x4020_940d;
    let mut r = FileCloneRange {
        src_fd: src.as_raw_fd() as i64,
        src_offset,
        src_length: len,
        dest_offset: dst_offset,
    };
    // SAFETY: `r` is a live repr(C) file_clone_range, the size the request
    // encodes; the kernel only reads it.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONERANGE, &mut r as *mut FileCloneRange) };
    if rc < 0 {
        return Err(SysError::last(format!(
            "ioctl(FICLONERANGE, {len} bytes at {src_offset})"
        )));
    }
    Ok(())
}

/// True if descriptor `fd1` of process `pid1` and `fd2` of `pid2` are the
/// same open file description (`kcmp(KCMP_FILE)`; shared offset and flags).
pub fn kcmp_same_file(pid1: i32, fd1: i32, pid2: i32, fd2: i32) -> Result<bool> {
    const KCMP_FILE: i32 = 0;
    // SAFETY: plain syscall with integer arguments.
    let rc = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, KCMP_FILE, fd1, fd2) };
    if rc < 0 {
        return Err(SysError::last(format!(
            "kcmp(pid {pid1} fd {fd1}, pid {pid2} fd {fd2})"
        )));
    }
    Ok(rc == 0)
}

/// Reads `buf.len()` bytes at `addr` of process `pid` (`process_vm_readv`);
/// returns how many were read (fewer at an unmapped page).
pub fn process_vm_read(pid: i32, addr: u64, buf: &mut [u8]) -> Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, which is live and exclusively
    // borrowed; `remote` is only interpreted in the other address space.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(SysError::last(format!(
            "process_vm_readv(pid {pid}, {addr:#x}, {})",
            buf.len()
        )));
    }
    Ok(n as usize)
}

/// Exchanges two names atomically (`renameat2(RENAME_EXCHANGE)`).
pub fn rename_exchange(a: &std::path::Path, b: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    const RENAME_EXCHANGE: u32 = 2;
    // SAFETY: both are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            RENAME_EXCHANGE,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The address a unix socket is bound to (`getsockname`): its path, or
/// `@name` in the abstract namespace. None for unbound or other sockets.
pub fn unix_socket_name(fd: BorrowedFd<'_>) -> Option<String> {
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `sa` and `len` are live out-pointers; `len` holds its size.
    let rc = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut sa as *mut libc::sockaddr_un).cast(),
            &mut len,
        )
    };
    if rc < 0 || sa.sun_family != libc::AF_UNIX as libc::sa_family_t {
        return None;
    }
    let n = (len as usize).saturating_sub(2).min(sa.sun_path.len());
    let path: Vec<u8> = sa.sun_path[..n].iter().map(|c| *c as u8).collect();
    match path.first() {
        None => None,
        Some(0) => Some(format!("@{}", String::from_utf8_lossy(&path[1..]))),
        Some(_) => {
            let end = path.iter().position(|b| *b == 0).unwrap_or(path.len());
            Some(String::from_utf8_lossy(&path[..end]).into_owned())
        }
    }
}

/// A new pseudo-terminal: (master, slave), the slave opened write-only
/// without becoming our controlling terminal (`posix_openpt`, `unlockpt`,
/// `TIOCGPTPEER`).
pub fn open_pty() -> Result<(OwnedFd, OwnedFd)> {
    // SAFETY: no pointer argument; the result is checked.
    let m = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if m < 0 {
        return Err(SysError::last("posix_openpt"));
    }
    // SAFETY: `m` is a descriptor we just opened and own alone.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    // SAFETY: unlockpt takes the descriptor only.
    if unsafe { libc::unlockpt(m) } != 0 {
        return Err(SysError::last("unlockpt"));
    }
    const TIOCGPTPEER: libc::Ioctl = 0x5441;
    // SAFETY: TIOCGPTPEER takes open flags by value; no memory is passed.
    let s = unsafe {
        libc::ioctl(
            m,
            TIOCGPTPEER,
            libc::O_WRONLY | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if s < 0 {
        return Err(SysError::last("ioctl(TIOCGPTPEER)"));
    }
    // SAFETY: `s` is a descriptor the kernel just returned to us.
    Ok((master, unsafe { OwnedFd::from_raw_fd(s) }))
}
