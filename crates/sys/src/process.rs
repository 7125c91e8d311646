//! Process-wide facts and resource usage.

use std::time::Duration;

use crate::error::{Result, SysError};

/// CPU time consumed, from `getrusage(2)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// Time in user mode.
    pub user: Duration,
    /// Time in kernel mode.
    pub system: Duration,
}

impl CpuTime {
    /// user + system.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }
}

fn rusage(who: i32, what: &str) -> Result<CpuTime> {
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid out-pointer for the duration of the call.
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    if rc != 0 {
        return Err(SysError::last(format!("getrusage({what})")));
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    Ok(CpuTime {
        user: tv(ru.ru_utime),
        system: tv(ru.ru_stime),
    })
}

/// CPU time of the whole calling process.
pub fn process_cpu_time() -> Result<CpuTime> {
    rusage(libc::RUSAGE_SELF, "RUSAGE_SELF")
}

/// CPU time of the calling thread.
pub fn thread_cpu_time() -> Result<CpuTime> {
    rusage(libc::RUSAGE_THREAD, "RUSAGE_THREAD")
}

/// True when the effective uid is 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The effective uid.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// The process id of the caller.
pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// The parent's process id.
pub fn getppid() -> i32 {
    // SAFETY: getppid cannot fail.
    unsafe { libc::getppid() }
}

/// The session id of the caller.
pub fn getsid() -> i32 {
    // SAFETY: getsid(0) refers to the caller and cannot fail.
    unsafe { libc::getsid(0) }
}

/// Sets this process's OOM-killer adjustment (-1000 = never kill, 1000 =
/// kill first). Lowering it needs CAP_SYS_RESOURCE.
pub fn set_oom_score_adj(value: i32) -> std::io::Result<()> {
    std::fs::write("/proc/self/oom_score_adj", value.to_string())
}

/// This process's OOM-killer adjustment.
pub fn oom_score_adj() -> std::io::Result<i32> {
    let text = std::fs::read_to_string("/proc/self/oom_score_adj")?;
    text.trim()
        .parse()
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "oom_score_adj"))
}

/// Writes "0" to /proc/self/oom_score_adj in a forked child before exec,
/// using only async-signal-safe calls. Failure is ignored: raising the value
/// is always permitted, and a child left protected is no worse than before.
///
/// # Safety
/// Call only in the child between `fork` and `exec`.
pub(crate) unsafe fn reset_oom_score_adj_in_child() {
    const PATH: &[u8] = b"/proc/self/oom_score_adj\0";
    // SAFETY: PATH is NUL-terminated and static; open/write/close are
    // async-signal-safe system calls on a descriptor we own.
    unsafe {
        let fd = libc::open(PATH.as_ptr().cast(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
}

/// Reads up to `buf.len()` bytes at `addr` in process `pid`'s memory
/// (`process_vm_readv(2)`; root or ptrace access). Returns the bytes read,
/// fewer when the range crosses into unmapped memory.
///
/// It takes the target's `mmap_lock` for reading: call it only where a
/// writer of that lock cannot be stuck, or from a thread that may wait.
pub fn read_process_memory(pid: i32, addr: u64, buf: &mut [u8]) -> crate::error::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes `buf`, which is live and writable for the
    // call; the kernel checks `remote` against the target's address space
    // and never touches our memory through it.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        Err(crate::error::SysError::last(format!(
            "process_vm_readv(pid {pid}, {addr:#x})"
        )))
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let before = thread_cpu_time().unwrap();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = thread_cpu_time().unwrap();
        assert!(after.total() > before.total());
        assert!(process_cpu_time().unwrap().total() >= after.total());
        assert!(getpid() > 1);
    }
}
