//! userfaultfd(2) write-protect tracking, as `include/uapi/linux/userfaultfd.h`
//! of Linux 6.7+ defines it (Debian 12's headers predate the async mode).
//!
//! In async write-protect mode (`UFFD_FEATURE_WP_ASYNC`, 6.7+) the kernel
//! resolves a write to a protected page itself by dropping the protection; no
//! handler thread reads the fd. The pages written since the last protection
//! are then found, and protected again, with `PAGEMAP_SCAN` (see
//! [`crate::pagemap`]). A userfaultfd acts on the address space of the
//! process that created it, whoever holds the descriptor.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Result, SysError};

/// The API version `UFFDIO_API` expects.
pub const UFFD_API: u64 = 0xAA;
/// `userfaultfd(2)` flag: only user-mode faults are handled. Lets
/// unprivileged callers create the fd when `vm.unprivileged_userfaultfd=0`;
/// async write-protect never consults the handler, so nothing is lost.
pub const UFFD_USER_MODE_ONLY: i32 = 1;

/// Feature: wp faults are resolved by the kernel, no handler (6.7+).
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
/// Feature: write-protect also applies to not-yet-populated ptes (6.4+);
/// PAGEMAP_SCAN requires it to treat anonymous memory as trackable.
pub const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
/// Feature: write-protect on shmem and hugetlbfs (5.19+).
pub const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;

/// Register mode: write-protect tracking.
pub const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;

const fn iowr(nr: u64, size: u64) -> u64 {
    (3 << 30) | (size << 16) | (0xAA << 8) | nr
}
const UFFDIO_API: u64 = iowr(0x3F, 24);
const UFFDIO_REGISTER: u64 = iowr(0x00, 32);
const UFFDIO_UNREGISTER: u64 = (2 << 30) | (16 << 16) | (0xAA << 8) | 0x01;
const UFFDIO_WRITEPROTECT: u64 = iowr(0x06, 24);

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

fn ioctl<T>(fd: &OwnedFd, req: u64, arg: &mut T, what: impl FnOnce() -> String) -> Result<()> {
    // SAFETY: `arg` is a live, exclusively borrowed repr(C) struct of the size
    // encoded in `req`; the kernel reads and writes only that struct.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::Ioctl, arg as *mut T) };
    if rc < 0 {
        return Err(SysError::last(what()));
    }
    Ok(())
}

/// Creates a userfaultfd for the caller's own address space.
pub fn userfaultfd(flags: i32) -> Result<OwnedFd> {
    // SAFETY: plain syscall with an integer argument; returns an fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    if fd < 0 {
        return Err(SysError::last("userfaultfd"));
    }
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Handshake (`UFFDIO_API`) asking for `features`; returns the features the
/// kernel granted. Fails with EINVAL when a requested feature is unknown.
pub fn api(fd: &OwnedFd, features: u64) -> Result<u64> {
    let mut a = UffdioApi {
        api: UFFD_API,
        features,
        ioctls: 0,
    };
    ioctl(fd, UFFDIO_API, &mut a, || {
        format!("UFFDIO_API(features {features:#x})")
    })?;
    Ok(a.features)
}

/// Registers `[start, start+len)` for tracking with `mode`.
pub fn register(fd: &OwnedFd, start: u64, len: u64, mode: u64) -> Result<()> {
    let mut r = UffdioRegister {
        range: UffdioRange { start, len },
        mode,
        ioctls: 0,
    };
    ioctl(fd, UFFDIO_REGISTER, &mut r, || {
        format!("UFFDIO_REGISTER({start:#x}+{len:#x})")
    })
}

/// Unregisters `[start, start+len)`.
pub fn unregister(fd: &OwnedFd, start: u64, len: u64) -> Result<()> {
    let mut r = UffdioRange { start, len };
    ioctl(fd, UFFDIO_UNREGISTER, &mut r, || {
        format!("UFFDIO_UNREGISTER({start:#x}+{len:#x})")
    })
}

/// Write-protects (`protect`) or unprotects `[start, start+len)`.
pub fn writeprotect(fd: &OwnedFd, start: u64, len: u64, protect: bool) -> Result<()> {
    let mut w = UffdioWriteprotect {
        range: UffdioRange { start, len },
        mode: if protect {
            UFFDIO_WRITEPROTECT_MODE_WP
        } else {
            0
        },
    };
    ioctl(fd, UFFDIO_WRITEPROTECT, &mut w, || {
        format!("UFFDIO_WRITEPROTECT({start:#x}+{len:#x})")
    })
}
