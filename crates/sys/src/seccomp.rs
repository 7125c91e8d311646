//! seccomp user notification (`seccomp_unotify(2)`), from the supervisor's
//! side: receiving a notification, letting the system call go on, checking
//! that a notification is still pending.
//!
//! The filter itself is installed inside the traced process by a remote
//! system call (see the checkpoint crate); what is here works on the
//! listener descriptor once it has been pulled out with `pidfd_getfd`.

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::error::{Errno, Result, SysError};

/// `seccomp(2)` operation: install a filter.
pub const SECCOMP_SET_MODE_FILTER: u64 = 1;
/// Filter flag: apply to every thread of the process.
pub const SECCOMP_FILTER_FLAG_TSYNC: u64 = 1;
/// Filter flag: return a listener fd for `SECCOMP_RET_USER_NOTIF`.
pub const SECCOMP_FILTER_FLAG_NEW_LISTENER: u64 = 1 << 3;
/// Filter flag: with TSYNC, report a thread that could not be synced as
/// ESRCH instead of its tid (so the listener fd stays unambiguous).
pub const SECCOMP_FILTER_FLAG_TSYNC_ESRCH: u64 = 1 << 4;
/// Filter action: ask the listener.
pub const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
/// Filter action: run the system call.
pub const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
/// `SECCOMP_IOCTL_NOTIF_SET_FLAGS` flag: wake the target on the responder's
/// CPU (Linux 6.6+), which shortens each round trip.
pub const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;
/// `seccomp_data.arch` of x86-64 system calls.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// One pending system call of a filtered task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notif {
    /// Cookie for the reply.
    pub id: u64,
    /// Thread (in the listener's pid namespace).
    pub pid: u32,
    /// System call number.
    pub nr: i32,
    /// `AUDIT_ARCH_*` of the call.
    pub arch: u32,
    /// Instruction pointer.
    pub ip: u64,
    /// Arguments.
    pub args: [u64; 6],
}

fn ioctl<T>(fd: BorrowedFd<'_>, req: libc::Ioctl, arg: *mut T) -> i32 {
    // SAFETY: callers pass a pointer to a live repr(C) value of the size the
    // request encodes; the kernel reads or writes only that value.
    unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) }
}

/// Waits for the next notification (`SECCOMP_IOCTL_NOTIF_RECV`). Blocks
/// unless the fd polled readable. ENOENT: the task went away between the
/// poll and the receive; try again.
pub fn notif_recv(fd: BorrowedFd<'_>) -> Result<Notif> {
    loop {
        // SAFETY: all-zero is a valid seccomp_notif (the kernel requires it).
        let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        if ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n) == 0 {
            return Ok(Notif {
                id: n.id,
                pid: n.pid,
                nr: n.data.nr,
                arch: n.data.arch,
                ip: n.data.instruction_pointer,
                args: n.data.args,
            });
        }
        let e = Errno::last();
        if e.0 != libc::EINTR {
            return Err(SysError {
                call: "ioctl(SECCOMP_IOCTL_NOTIF_RECV)".into(),
                errno: e,
            });
        }
    }
}

fn send(fd: BorrowedFd<'_>, id: u64, val: i64, error: i32, flags: u32) -> Result<()> {
    let mut r = libc::seccomp_notif_resp {
        id,
        val,
        error,
        flags,
    };
    if ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut r) == 0 {
        return Ok(());
    }
    Err(SysError::last(format!(
        "ioctl(SECCOMP_IOCTL_NOTIF_SEND, id {id})"
    )))
}

/// Lets the system call run as if there were no filter. ENOENT: the call
/// was interrupted meanwhile (it restarts and is notified again).
pub fn notif_continue(fd: BorrowedFd<'_>, id: u64) -> Result<()> {
    send(fd, id, 0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32)
}

/// Fails the system call with `errno` without running it.
pub fn notif_fail(fd: BorrowedFd<'_>, id: u64, errno: i32) -> Result<()> {
    send(fd, id, 0, -errno, 0)
}

/// True while notification `id` is still pending (its task did not die or
/// get interrupted): data read from the task since it was received is
/// then the task's as of the call.
pub fn notif_id_valid(fd: BorrowedFd<'_>, id: u64) -> bool {
    let mut id = id;
    ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id) == 0
}

/// Sets listener flags (`SECCOMP_IOCTL_NOTIF_SET_FLAGS`, Linux 6.6+).
pub fn notif_set_flags(fd: BorrowedFd<'_>, flags: u64) -> Result<()> {
    // SAFETY: this request takes the flags by value; the kernel reads no
    // memory for it.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS,
            flags as libc::c_ulong,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    Err(SysError::last(format!(
        "ioctl(SECCOMP_IOCTL_NOTIF_SET_FLAGS, {flags:#x})"
    )))
}

/// Encodes one classic BPF instruction (`struct sock_filter`) as the 8
/// bytes the kernel reads.
pub fn bpf_insn(code: u16, jt: u8, jf: u8, k: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0..2].copy_from_slice(&code.to_ne_bytes());
    b[2] = jt;
    b[3] = jf;
    b[4..8].copy_from_slice(&k.to_ne_bytes());
    b
}

/// What waiting on a listener found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// A notification can be received.
    Notification,
    /// No task uses the filter any more (Linux 5.10+): nothing will come.
    Gone,
}

/// Waits until a notification is pending or the filter has no users left.
pub fn notif_wait(fd: BorrowedFd<'_>) -> Result<Ready> {
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd that lives for the call.
        let rc = unsafe { libc::poll(&mut pfd, 1, -1) };
        if rc < 0 {
            let e = Errno::last();
            if e.0 == libc::EINTR {
                continue;
            }
            return Err(SysError {
                call: "poll(seccomp listener)".into(),
                errno: e,
            });
        }
        if pfd.revents & libc::POLLIN != 0 {
            return Ok(Ready::Notification);
        }
        if pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            return Ok(Ready::Gone);
        }
    }
}
