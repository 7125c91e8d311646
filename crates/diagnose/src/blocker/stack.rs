//! What a kernel stack (`/proc/PID/task/TID/stack`) says a task waits for.

/// The kind of wait a stack shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackWait {
    /// On a filesystem's freeze protection (`sb_start_write` and friends,
    /// a percpu rw-semaphore that only `freeze_super` takes for writing).
    FrozenFilesystem,
    /// A FUSE request.
    Fuse,
    /// A network filesystem's RPC (NFS, CIFS/SMB, Ceph, 9p).
    NetworkFs,
    /// Block I/O (a page or buffer lock, a bio, a request tag).
    BlockIo,
    /// Something else (a lock, a completion, a driver).
    Other,
}

/// Callers of the superblock freeze protection. With `percpu_rwsem_wait`
/// on top they mean "this filesystem is frozen" (FIFREEZE, a snapshot).
const FREEZE_PROTECTION: &[&str] = &[
    "mnt_want_write",
    "sb_start_write",
    "sb_start_pagefault",
    "sb_start_intwrite",
    "file_start_write",
    "kiocb_start_write",
    "vfs_write",
    "vfs_writev",
    "vfs_iter_write",
    "vfs_fallocate",
    "do_truncate",
    "vfs_truncate",
    "do_page_mkwrite",
    "file_update_time",
    "file_modified",
    "__ext4_journal_start",
    "xfs_trans_alloc",
];

const FUSE: &[&str] = &["fuse_", "request_wait_answer"];
const NETWORK: &[&str] = &[
    "rpc_wait_bit_killable",
    "__rpc_execute",
    "nfs_",
    "nfs4_",
    "cifs_",
    "smb2_",
    "ceph_",
    "p9_client",
];

/// Kernel functions that mean "waiting for block I/O" (in the stack or the
/// wait channel).
pub const IO_WAITS: &[&str] = &[
    "io_schedule",
    "folio_wait",
    "wait_on_page",
    "bit_wait_io",
    "blk_mq_get_tag",
    "rq_qos_wait",
    "jbd2",
    "submit_bio_wait",
    "wait_on_buffer",
    "blkdev_direct_IO",
    "iomap_dio_rw",
    "blk_wait_io",
];

/// Classifies a stack (one frame per line, `[<0>] name+0x…/0x…`), with the
/// wait channel as a fallback when the stack is unreadable.
pub fn classify(stack: Option<&str>, wchan: Option<&str>) -> StackWait {
    let frames: Vec<&str> = stack
        .map(|s| s.lines().map(frame_name).collect())
        .unwrap_or_default();
    let frames = if frames.is_empty() {
        wchan.into_iter().collect()
    } else {
        frames
    };
    let any = |names: &[&str]| frames.iter().any(|f| names.iter().any(|n| f.contains(n)));
    if frames
        .iter()
        .any(|f| f.starts_with("percpu_rwsem_wait") || f.starts_with("__percpu_down_read"))
        && any(FREEZE_PROTECTION)
    {
        return StackWait::FrozenFilesystem;
    }
    if any(FUSE) {
        return StackWait::Fuse;
    }
    if any(NETWORK) {
        return StackWait::NetworkFs;
    }
    if any(IO_WAITS) {
        return StackWait::BlockIo;
    }
    StackWait::Other
}

/// `[<0>] percpu_rwsem_wait+0x15f/0x1d0` → `percpu_rwsem_wait`.
fn frame_name(line: &str) -> &str {
    let l = line.trim();
    let l = l.split_once("] ").map_or(l, |(_, r)| r);
    l.split('+').next().unwrap_or(l).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer blocked by `fsfreeze -f` (kernel 6.18, captured).
    const FROZEN_OPEN: &str = "[<0>] percpu_rwsem_wait+0x15f/0x1d0
[<0>] mnt_want_write+0x96/0xc0
[<0>] path_openat+0x4cc/0x1320
[<0>] do_filp_open+0x106/0x1c0
[<0>] do_sys_openat2+0x88/0xe0
[<0>] __x64_sys_openat+0x5d/0xa0
[<0>] do_syscall_64+0x71/0x290
[<0>] entry_SYSCALL_64_after_hwframe+0x76/0x7e
";

    /// A reader of a FUSE file whose read is never answered (captured).
    const FUSE_READ: &str = "[<0>] folio_wait_bit_common+0x167/0x370
[<0>] filemap_get_pages+0x751/0x770
[<0>] filemap_read+0x111/0x400
[<0>] vfs_read+0x2a4/0x3d0
[<0>] ksys_read+0x6f/0xf0
[<0>] do_syscall_64+0x71/0x290
";

    #[test]
    fn stacks() {
        assert_eq!(
            classify(Some(FROZEN_OPEN), None),
            StackWait::FrozenFilesystem
        );
        // A page-lock wait: block I/O as far as the stack can tell (which
        // filesystem it is comes from the file the task reads).
        assert_eq!(classify(Some(FUSE_READ), None), StackWait::BlockIo);
        let lookup = "[<0>] request_wait_answer+0x1/0x2\n[<0>] fuse_simple_request+0x1/0x2\n[<0>] fuse_lookup_name+0x1/0x2\n";
        assert_eq!(classify(Some(lookup), None), StackWait::Fuse);
        // The same rw-semaphore wait while forking is not a frozen filesystem.
        let fork = "[<0>] percpu_rwsem_wait+0x1/0x2\n[<0>] cgroup_can_fork+0x1/0x2\n[<0>] copy_process+0x1/0x2\n";
        assert_eq!(classify(Some(fork), None), StackWait::Other);
        assert_eq!(
            classify(None, Some("rpc_wait_bit_killable")),
            StackWait::NetworkFs
        );
        assert_eq!(classify(None, None), StackWait::Other);
    }
}
