//! Mounting a FUSE file system served by this process on `/dev/fuse`, and
//! lazy unmounting. Used by test programs that inject D-state hangs (a FUSE
//! server that never answers a read); root only.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Errno, Result, SysError};

fn cstring(what: &str, bytes: &[u8]) -> Result<CString> {
    CString::new(bytes).map_err(|_| SysError {
        call: format!("{what}: embedded NUL"),
        errno: Errno(libc::EINVAL),
    })
}

/// Mounts a FUSE file system at `target`, served through `fuse_fd` (an open
/// `/dev/fuse`). `subtype` becomes `fuse.<subtype>` in /proc/mounts.
pub fn mount_fuse(target: &Path, fuse_fd: BorrowedFd<'_>, subtype: &str) -> Result<()> {
    let call = || format!("mount(fuse.{subtype} on {})", target.display());
    let source = cstring("mount source", subtype.as_bytes())?;
    let dir = cstring("mount target", target.as_os_str().as_bytes())?;
    let fstype = cstring("mount type", format!("fuse.{subtype}").as_bytes())?;
    let data = cstring(
        "mount data",
        format!(
            "fd={},rootmode=40000,user_id=0,group_id=0,allow_other",
            fuse_fd.as_raw_fd()
        )
        .as_bytes(),
    )?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives
    // the call; the kernel only reads them.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            dir.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysError::last(call()))
    }
}

/// Detaches the mount at `target` (`umount2(MNT_DETACH)`): it disappears
/// from the namespace at once and is cleaned up when no longer busy.
pub fn umount_lazy(target: &Path) -> Result<()> {
    let dir = cstring("umount target", target.as_os_str().as_bytes())?;
    // SAFETY: `dir` is a valid NUL-terminated string for the call.
    let rc = unsafe { libc::umount2(dir.as_ptr(), libc::MNT_DETACH) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysError::last(format!(
            "umount2({}, MNT_DETACH)",
            target.display()
        )))
    }
}

/// The device number of the file system mounted at `path` (`st_dev`); for
/// a FUSE mount its minor number names `/sys/fs/fuse/connections/<minor>`.
pub fn device_of(path: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.dev())
        .map_err(|e| SysError {
            call: format!("stat({})", path.display()),
            errno: Errno(e.raw_os_error().unwrap_or(libc::EIO)),
        })
}

/// The minor number of a device number.
pub fn minor(dev: u64) -> u32 {
    libc::minor(dev)
}

/// The number of the FUSE connection of a mount with device
/// `major:minor` (its directory under `/sys/fs/fuse/connections`: the
/// kernel's own `dev_t` encoding, so `0:40` is 40).
pub fn connection_number(major: u32, minor: u32) -> u64 {
    (u64::from(major) << 20) | u64::from(minor)
}

/// Where fusectl (the FUSE control filesystem) is normally mounted.
pub const FUSE_CONNECTIONS: &str = "/sys/fs/fuse/connections";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmounting_a_non_mount_fails_cleanly() {
        let d = std::env::temp_dir();
        let err = umount_lazy(&d.join("selfheal-not-a-mount-point")).unwrap_err();
        assert!(
            err.is_gone() || err.errno.0 == libc::EINVAL || err.is_permission(),
            "{err}"
        );
        assert!(device_of(&d).is_ok());
    }
}
