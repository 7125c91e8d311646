//! Mounting the kernel's pseudo file systems selfheal needs when the
//! distribution has not (tracefs for tracepoint ids, fusectl for aborting
//! a FUSE connection).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Errno, Result, SysError};

/// Mounts a pseudo file system of type `fstype` (source "none") at
/// `target`, which must exist.
pub fn mount_pseudo(fstype: &str, target: &Path) -> Result<()> {
    let call = || format!("mount({fstype} on {})", target.display());
    let err = || SysError {
        call: call(),
        errno: Errno(libc::EINVAL),
    };
    let source = CString::new("none").map_err(|_| err())?;
    let dir = CString::new(target.as_os_str().as_bytes()).map_err(|_| err())?;
    let fs = CString::new(fstype).map_err(|_| err())?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives
    // the call; no mount data is passed.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            dir.as_ptr(),
            fs.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysError::last(call()))
    }
}
