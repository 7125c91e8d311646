//! The /proc files a checkpoint reads (`maps`, `fdinfo/N`, `status`, `io`,
//! the task list, `children`, `net/unix`), read by `selfheal-procfs`'s
//! readers at the live root [`ROOT`]. The parsers and their tests on
//! captured text live there; this module only fixes the root and hands
//! errors back as `io::Error`, which the tracer's error types wrap.

use std::io;
use std::path::{Path, PathBuf};

use selfheal_procfs::task::TaskDir;
use selfheal_procfs::ProcError;

pub use selfheal_procfs::task::{
    parse_fdinfo, parse_io, parse_maps, parse_net_unix, parse_status_pending, parse_status_signals,
    FdInfo, IoCounters, SignalDispositions, Vma,
};

/// The procfs of the processes a checkpoint traces: always the live one.
pub const ROOT: &str = "/proc";

/// `/proc/PID`.
pub(crate) fn process(pid: i32) -> TaskDir {
    TaskDir::process(Path::new(ROOT), pid)
}

/// `/proc/PID/task/TID`.
pub(crate) fn thread(pid: i32, tid: i32) -> TaskDir {
    TaskDir::thread(Path::new(ROOT), pid, tid)
}

/// `/proc/self/fd/N`: reopens or names a descriptor of our own.
pub(crate) fn own_fd_path(fd: i32) -> PathBuf {
    Path::new(ROOT).join("self/fd").join(fd.to_string())
}

/// The error as the I/O error it came from. A task that is gone reads as
/// ENOENT, what opening its file returns.
pub(crate) fn into_io(e: ProcError) -> io::Error {
    match e {
        ProcError::Io { source, .. } => source,
        ProcError::Gone { .. } => io::Error::from_raw_os_error(libc::ENOENT),
        ProcError::Parse { what, .. } => io::Error::new(io::ErrorKind::InvalidData, what),
    }
}

/// Reads and parses `/proc/PID/maps`.
pub fn read_maps(pid: i32) -> io::Result<Vec<Vma>> {
    process(pid).maps().map_err(into_io)
}

/// Reads the signal dispositions of `pid`.
pub fn read_signal_dispositions(pid: i32) -> io::Result<SignalDispositions> {
    process(pid).signal_dispositions().map_err(into_io)
}

/// Signals that would be delivered to thread `tid` of `pid` next.
pub fn read_pending_signals(pid: i32, tid: i32) -> io::Result<u64> {
    thread(pid, tid).pending_signals().map_err(into_io)
}

/// Signals queued for thread `tid` of `pid` and for the whole process
/// (`SigPnd` and `ShdPnd`, blocked ones included; bit n-1 for signal n).
pub(crate) fn read_queued_signals(pid: i32, tid: i32) -> io::Result<(u64, u64)> {
    let text = thread(pid, tid).read_text("status").map_err(into_io)?;
    parse_queued(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no SigPnd/ShdPnd in status"))
}

/// `SigPnd` and `ShdPnd` of a `status` file.
fn parse_queued(text: &str) -> Option<(u64, u64)> {
    Some((
        status_field(text, "SigPnd:")?,
        status_field(text, "ShdPnd:")?,
    ))
}

/// `SigBlk`, `SigPnd` and `ShdPnd` of thread `tid` of `pid`: the mask
/// in force now (a wait's temporary one while it waits) and the signals
/// queued for the thread and for the process.
pub(crate) fn read_blocked_and_queued(pid: i32, tid: i32) -> io::Result<(u64, u64, u64)> {
    let text = thread(pid, tid).read_text("status").map_err(into_io)?;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "no SigBlk/SigPnd/ShdPnd in status",
        )
    };
    let (queued, shared) = parse_queued(&text).ok_or_else(bad)?;
    Ok((
        status_field(&text, "SigBlk:").ok_or_else(bad)?,
        queued,
        shared,
    ))
}

fn status_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// The system call thread `tid` of `pid` is blocked in and its six
/// arguments (`/proc/PID/task/TID/syscall`); None while it runs or is
/// blocked outside a system call.
pub(crate) fn read_syscall(pid: i32, tid: i32) -> io::Result<Option<(i64, [u64; 6])>> {
    let text = thread(pid, tid).read_text("syscall").map_err(into_io)?;
    Ok(parse_syscall(&text))
}

/// Parses a `syscall` file: "NR ARG1 … ARG6 SP PC", "-1 SP PC" outside
/// a system call, "running".
fn parse_syscall(text: &str) -> Option<(i64, [u64; 6])> {
    let mut f = text.split_whitespace();
    let nr: i64 = f.next()?.parse().ok()?;
    if nr < 0 {
        return None;
    }
    let mut args = [0u64; 6];
    for a in &mut args {
        let v = f.next()?;
        *a = u64::from_str_radix(v.strip_prefix("0x")?, 16).ok()?;
    }
    Some((nr, args))
}

/// Reads `/proc/PID/io`.
pub fn read_io(pid: i32) -> io::Result<IoCounters> {
    process(pid).io().map_err(into_io)
}

/// Thread ids of `pid`, from `/proc/PID/task`, sorted.
pub fn read_tids(pid: i32) -> io::Result<Vec<i32>> {
    selfheal_procfs::task::list_tids(Path::new(ROOT), pid).map_err(into_io)
}

/// Child pids of every thread of `pid` (`/proc/PID/task/TID/children`, which
/// needs CONFIG_PROC_CHILDREN). `None` when the kernel lacks the file.
pub fn read_children(pid: i32, tids: &[i32]) -> Option<Vec<i32>> {
    selfheal_procfs::task::read_children(Path::new(ROOT), pid, tids)
}

/// Reads the unix sockets of `pid`'s network namespace (see [`parse_net_unix`]).
pub fn read_net_unix(pid: i32) -> io::Result<Vec<(u64, String)>> {
    process(pid).net_unix().map_err(into_io)
}

/// The text of `/proc/PID/comm`, "?" when it cannot be read (for messages).
pub(crate) fn comm_or_unknown(pid: i32) -> String {
    process(pid).comm().unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_signals_of_the_thread_and_the_process_blocked_ones_included() {
        let text = "SigQ:\t1/1000\nSigPnd:\t0000000000000200\nShdPnd:\t0000000000000001\nSigBlk:\t0000000000000200\n";
        assert_eq!(parse_queued(text), Some((0x200, 1)));
        assert_eq!(parse_queued("SigPnd:\t0\n"), None);
    }

    #[test]
    fn the_system_call_a_thread_waits_in_with_its_arguments() {
        // Captured from sigwait.c in ppoll (kernel 6.18).
        let text =
            "271 0x0 0x0 0x0 0x7ffd6256b500 0x8 0x7ff472d8f6d0 0x7ffd6256b430 0x7ff472c92308\n";
        assert_eq!(
            parse_syscall(text),
            Some((271, [0, 0, 0, 0x7ffd6256b500, 8, 0x7ff472d8f6d0]))
        );
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0x7ffc6b1e5ef8 0x401136\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id() as i32;
        let maps = read_maps(me).unwrap();
        assert!(maps.iter().any(|v| v.path == "[stack]"));
        assert!(read_tids(me).unwrap().contains(&me));
        assert!(read_io(me).unwrap().rchar > 0);
        assert!(read_signal_dispositions(me).is_ok());
        assert!(read_pending_signals(me, me).is_ok());
    }

    #[test]
    fn a_gone_process_reads_as_enoent() {
        let e = read_maps(0x3fff_fff0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let e = read_tids(0x3fff_fff0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
