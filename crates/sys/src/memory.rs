//! Reading and writing another process's memory in bulk
//! (`process_vm_readv(2)` / `process_vm_writev(2)`).
//!
//! Remote addresses are plain numbers: they live in another address space, so
//! nothing about them can break the caller's memory safety. The local side is
//! always Rust slices.

use std::io::{IoSlice, IoSliceMut};

use crate::error::{Result, SysError};

/// Makes glibc's malloc serve every allocation of `bytes` or more with a
/// mapping of its own, unmapped when freed, and keeps the threshold there
/// (by default glibc raises it up to 32 MiB after large frees, after which
/// large buffers come from the heap arenas). Under `mlockall` an arena
/// never returns freed pages (madvise cannot drop locked pages), so a
/// daemon whose threads build large temporary buffers would keep its peak
/// forever. Returns false where this is not glibc or the call failed.
pub fn malloc_mmap_threshold(bytes: usize) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let Ok(v) = i32::try_from(bytes) else {
            return false;
        };
        // SAFETY: mallopt takes two integers and has no other effect than
        // changing malloc's tuning.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, v) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = bytes;
        false
    }
}

/// Most iovecs the kernel takes in one call (`UIO_MAXIOV`).
pub const IOV_MAX: usize = 1024;

/// One range in the remote process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteRange {
    /// Start address in the remote process.
    pub addr: u64,
    /// Length in bytes.
    pub len: usize,
}

fn remote_iovecs(remote: &[RemoteRange]) -> Vec<libc::iovec> {
    remote
        .iter()
        .map(|r| libc::iovec {
            iov_base: r.addr as *mut libc::c_void,
            iov_len: r.len,
        })
        .collect()
}

/// Copies the remote ranges of `pid` into the local buffers, in order (the
/// two lists need not line up one to one). Returns the bytes copied, which is
/// short when a remote range is unmapped partway (the copy stops there).
/// At most [`IOV_MAX`] entries on each side.
pub fn process_vm_readv(
    pid: i32,
    local: &mut [IoSliceMut<'_>],
    remote: &[RemoteRange],
) -> Result<usize> {
    let riov = remote_iovecs(remote);
    // SAFETY: IoSliceMut is ABI-compatible with iovec and each one borrows a
    // live, writable local buffer for the duration of the call; the remote
    // iovecs are addresses in the other process, which the kernel checks.
    let n = unsafe {
        libc::process_vm_readv(
            pid,
            local.as_ptr().cast::<libc::iovec>(),
            local.len() as libc::c_ulong,
            riov.as_ptr(),
            riov.len() as libc::c_ulong,
            0,
        )
    };
    if n < 0 {
        return Err(SysError::last(format!("process_vm_readv(pid {pid})")));
    }
    Ok(n as usize)
}

/// Copies the local buffers into the remote ranges of `pid`, in order.
/// Returns the bytes written (short if a remote range is not writable).
/// The write goes through the page tables like a store by the process would,
/// so it fails on pages the process could not write either.
pub fn process_vm_writev(pid: i32, local: &[IoSlice<'_>], remote: &[RemoteRange]) -> Result<usize> {
    let riov = remote_iovecs(remote);
    // SAFETY: IoSlice is ABI-compatible with iovec and each one borrows a live
    // local buffer that the kernel only reads; remote addresses are checked by
    // the kernel against the other process's mappings.
    let n = unsafe {
        libc::process_vm_writev(
            pid,
            local.as_ptr().cast::<libc::iovec>(),
            local.len() as libc::c_ulong,
            riov.as_ptr(),
            riov.len() as libc::c_ulong,
            0,
        )
    };
    if n < 0 {
        return Err(SysError::last(format!("process_vm_writev(pid {pid})")));
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_own_memory_through_the_remote_path() {
        let pid = crate::process::getpid();
        let src = vec![7u8; 8192];
        let mut dst = vec![0u8; 8192];
        let (a, b) = dst.split_at_mut(4096);
        let mut local = [IoSliceMut::new(a), IoSliceMut::new(b)];
        let remote = [RemoteRange {
            addr: src.as_ptr() as u64,
            len: 8192,
        }];
        assert_eq!(process_vm_readv(pid, &mut local, &remote).unwrap(), 8192);
        assert!(dst.iter().all(|&x| x == 7));

        let mut target = vec![0u8; 4096];
        let ones = [1u8; 4096];
        let remote = [RemoteRange {
            addr: target.as_mut_ptr() as u64,
            len: 4096,
        }];
        assert_eq!(
            process_vm_writev(pid, &[IoSlice::new(&ones)], &remote).unwrap(),
            4096
        );
        assert!(std::hint::black_box(&target).iter().all(|&x| x == 1));
    }
}
