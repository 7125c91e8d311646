//! The `PAGEMAP_SCAN` ioctl on `/proc/PID/pagemap` (Linux 6.7+), as
//! `include/uapi/linux/fs.h` defines it.
//!
//! One call walks a virtual range and returns runs of pages sharing a set of
//! categories (written, present, file-backed…); with `PM_SCAN_WP_MATCHING`
//! it also write-protects the matching pages in the same walk, which makes
//! "give me the pages written since last time and start tracking again" one
//! atomic step.

use std::fs::File;
use std::os::fd::AsRawFd;

use crate::error::{Result, SysError};

/// The range's VMA is registered for async write-protect tracking.
pub const PAGE_IS_WPALLOWED: u64 = 1 << 0;
/// Written since it was last write-protected (or never protected).
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
/// Backed by the page cache (for a private mapping: not yet copied on write).
pub const PAGE_IS_FILE: u64 = 1 << 2;
/// Present in memory.
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
/// Swapped out.
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
/// Mapped to the shared zero page.
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;
/// Part of a huge page.
pub const PAGE_IS_HUGE: u64 = 1 << 6;

/// Write-protect the pages that match, in the same walk.
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// Fail with EPERM if a VMA in the range is not async-wp registered.
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

/// One run of pages `[start, end)` sharing `categories` (masked by the
/// request's return mask).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageRegion {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// `PAGE_IS_*` bits.
    pub categories: u64,
}

#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

const PAGEMAP_SCAN: u64 =
    (3 << 30) | ((std::mem::size_of::<PmScanArg>() as u64) << 16) | (0x66 << 8) | 16;

/// What to look for. A page matches when
/// `((categories ^ inverted) & mask) == mask` and, if `anyof` is non-zero,
/// `(categories ^ inverted) & anyof != 0`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanRequest {
    /// `PM_SCAN_*` flags.
    pub flags: u64,
    /// Categories to test inverted.
    pub inverted: u64,
    /// Categories that must all be set.
    pub mask: u64,
    /// Categories of which one must be set (0: no such test).
    pub anyof: u64,
    /// Categories reported in each [`PageRegion`].
    pub return_mask: u64,
}

/// Scans `[start, end)` of the process whose `pagemap` file is open as
/// `pagemap`, appending matching runs to `out` (cleared first). Loops until
/// the whole range is walked, reusing `out`'s capacity as the kernel buffer.
pub fn pagemap_scan(
    pagemap: &File,
    start: u64,
    end: u64,
    req: &ScanRequest,
    out: &mut Vec<PageRegion>,
) -> Result<()> {
    // Entries handed to the kernel per call; the walk resumes where it
    // stopped when they run out.
    const CHUNK: usize = 4096;
    out.clear();
    let mut pos = start;
    while pos < end {
        let have = out.len();
        if out.capacity() - have < CHUNK {
            out.reserve(CHUNK);
        }
        let room = out.capacity() - have;
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: req.flags,
            start: pos,
            end,
            walk_end: 0,
            // SAFETY: `have` is within the allocation; we point at the spare capacity.
            vec: unsafe { out.as_mut_ptr().add(have) } as u64,
            vec_len: room as u64,
            max_pages: 0,
            category_inverted: req.inverted,
            category_mask: req.mask,
            category_anyof_mask: req.anyof,
            return_mask: req.return_mask,
        };
        // SAFETY: `arg` is a live pm_scan_arg of the size encoded in the
        // request; `vec` points to `room` writable PageRegion slots (spare
        // capacity of `out`), of which the kernel fills the count it returns.
        let n = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN as libc::Ioctl, &mut arg) };
        if n < 0 {
            return Err(SysError::last(format!("PAGEMAP_SCAN({pos:#x}..{end:#x})")));
        }
        let n = (n as usize).min(room);
        // SAFETY: the kernel initialised the first `n` spare slots.
        unsafe { out.set_len(have + n) };
        if arg.walk_end <= pos {
            break;
        }
        pos = arg.walk_end;
    }
    Ok(())
}
