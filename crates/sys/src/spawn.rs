//! Work a child does between `fork` and `exec`, so it starts life already
//! confined: inside its cgroups, or pinned to its CPUs.
//!
//! Both hooks run in the forked child, where only async-signal-safe code is
//! allowed (another thread of the parent may have held the allocator lock at
//! fork time). They therefore prepare everything before the fork and, in the
//! child, make nothing but plain system calls on data they already own.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::error::{Errno, Result, SysError};

/// Makes the child of `cmd` move itself into every cgroup whose
/// `cgroup.procs` file is in `procs_files` before it executes the program.
///
/// Writing `0` to `cgroup.procs` moves the writing process (v1 and v2). The
/// child does it before `exec`, so not one instruction of the program runs
/// outside the cgroups: a fork bomb is limited from its first fork. The files
/// must be opened for writing by the caller (`std` opens them close-on-exec,
/// so the program never inherits them). If any write fails, the child exits
/// and `Command::spawn` returns that error: the program never runs
/// unconfined.
pub fn join_cgroups_before_exec(cmd: &mut Command, procs_files: Vec<OwnedFd>) {
    let hook = move || -> io::Result<()> {
        for fd in &procs_files {
            // SAFETY: write(2) is async-signal-safe; `fd` is an open file
            // owned by this closure for its whole life, and the buffer is a
            // 1-byte static slice.
            let rc = unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) };
            if rc < 0 {
                // Built from the raw errno: no allocation in the child.
                return Err(io::Error::last_os_error());
            }
            if rc != 1 {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child and only calls write(2) on
    // file descriptors it owns; it allocates nothing, takes no lock and
    // touches no state shared with other threads of the parent.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Makes the child of `cmd` restrict itself to `cpus` (sched_setaffinity)
/// before it executes the program.
///
/// This is the fallback when no cpuset controller is available. Unlike a
/// cpuset, the program may widen its own affinity again later; use it for
/// placing well-behaved workloads, not for containing hostile ones.
pub fn set_affinity_before_exec(cmd: &mut Command, cpus: &[usize]) -> Result<()> {
    let capacity = 8 * std::mem::size_of::<libc::cpu_set_t>();
    let call = || format!("sched_setaffinity(child, cpus {cpus:?})");
    if cpus.is_empty() || cpus.iter().any(|&cpu| cpu >= capacity) {
        return Err(SysError {
            call: call(),
            errno: Errno(libc::EINVAL),
        });
    }
    // SAFETY: cpu_set_t is plain old data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: `cpu` is below the set's capacity, checked above.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    let hook = move || -> io::Result<()> {
        // SAFETY: sched_setaffinity(2) is a plain system call (safe after
        // fork); `set` is a valid cpu_set_t of the size passed, owned by
        // this closure.
        let rc =
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: the hook runs in the forked child and makes one system call on
    // data it owns; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(hook);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    #[test]
    fn failing_join_stops_the_program_from_running() {
        // /dev/full fails every write with ENOSPC: the child must not run
        // `true` outside its cgroup; spawn reports the error instead.
        let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let mut cmd = Command::new("true");
        join_cgroups_before_exec(&mut cmd, vec![OwnedFd::from(full)]);
        let err = cmd.spawn().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    }

    #[test]
    fn successful_writes_let_the_program_run() {
        let null = OpenOptions::new().write(true).open("/dev/null").unwrap();
        let mut cmd = Command::new("true");
        join_cgroups_before_exec(&mut cmd, vec![OwnedFd::from(null)]);
        assert!(cmd.status().unwrap().success());
    }

    #[test]
    fn affinity_is_applied_before_exec() {
        let mut cmd = Command::new("grep");
        cmd.args(["^Cpus_allowed_list:", "/proc/self/status"]);
        set_affinity_before_exec(&mut cmd, &[0]).unwrap();
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.split_whitespace().nth(1), Some("0"), "{text}");
        assert!(set_affinity_before_exec(&mut Command::new("true"), &[]).is_err());
    }
}
