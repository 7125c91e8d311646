//! Parsers for the /proc files a checkpoint reads: `maps`, `fdinfo/N`,
//! `status` and `io`. Parsing is separate from I/O so tests feed captured text.

use std::fs;
use std::io;
use std::path::Path;

/// One line of `/proc/PID/maps`: a virtual memory area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vma {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
    /// MAP_SHARED (`s`) rather than private (`p`).
    pub shared: bool,
    /// File offset of `start` (meaningful only for file mappings).
    pub offset: u64,
    /// Device as `major:minor` (hex), `00:00` for anonymous memory.
    pub dev: String,
    /// Inode of the mapped file, 0 for anonymous memory.
    pub inode: u64,
    /// Path or pseudo-name (`[heap]`, `[stack]`, `[vdso]`), empty if none.
    pub path: String,
}

impl Vma {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// True for an empty range (never produced by the kernel).
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Backed by a file (inode != 0), as opposed to anonymous memory.
    pub fn is_file(&self) -> bool {
        self.inode != 0
    }

    /// Kernel-provided mappings that are never checkpointed nor restored.
    pub fn is_special(&self) -> bool {
        matches!(
            self.path.as_str(),
            "[vdso]" | "[vvar]" | "[vvar_vclock]" | "[vsyscall]" | "[uprobes]"
        )
    }

    /// `prot` bits as mmap(2) takes them.
    pub fn prot(&self) -> i32 {
        let mut p = 0;
        if self.read {
            p |= libc::PROT_READ;
        }
        if self.write {
            p |= libc::PROT_WRITE;
        }
        if self.exec {
            p |= libc::PROT_EXEC;
        }
        p
    }
}

/// Parses the text of `/proc/PID/maps`. Lines that do not parse are skipped
/// (the format has been stable since 2.6; a bad line means a kernel change we
/// would rather survive than crash on).
pub fn parse_maps(text: &str) -> Vec<Vma> {
    text.lines().filter_map(parse_maps_line).collect()
}

fn parse_maps_line(line: &str) -> Option<Vma> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?.as_bytes();
    let offset = u64::from_str_radix(it.next()?, 16).ok()?;
    let dev = it.next()?.to_string();
    let inode = it.next()?.parse().ok()?;
    let path = it.next().unwrap_or("").trim_start().to_string();
    let (s, e) = range.split_once('-')?;
    if perms.len() < 4 {
        return None;
    }
    Some(Vma {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        read: perms[0] == b'r',
        write: perms[1] == b'w',
        exec: perms[2] == b'x',
        shared: perms[3] == b's',
        offset,
        dev,
        inode,
        path,
    })
}

/// Reads and parses `/proc/PID/maps`.
pub fn read_maps(pid: i32) -> io::Result<Vec<Vma>> {
    Ok(parse_maps(&fs::read_to_string(format!(
        "/proc/{pid}/maps"
    ))?))
}

/// The fields of `/proc/PID/fdinfo/N` a checkpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FdInfo {
    /// File offset.
    pub pos: u64,
    /// open(2) flags (octal in the file).
    pub flags: u32,
    /// Inode of the open file (Linux 5.14+; None before).
    pub ino: Option<u64>,
}

/// Parses `fdinfo` text.
pub fn parse_fdinfo(text: &str) -> Option<FdInfo> {
    let mut info = FdInfo::default();
    let mut seen = false;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("pos:") {
            info.pos = v.trim().parse().ok()?;
            seen = true;
        } else if let Some(v) = line.strip_prefix("flags:") {
            info.flags = u32::from_str_radix(v.trim(), 8).ok()?;
        } else if let Some(v) = line.strip_prefix("ino:") {
            info.ino = v.trim().parse().ok();
        }
    }
    seen.then_some(info)
}

/// Signal dispositions from `/proc/PID/status`: bit `sig-1` set per signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SignalDispositions {
    /// Signals with a handler installed (`SigCgt`).
    pub caught: u64,
    /// Ignored signals (`SigIgn`).
    pub ignored: u64,
}

impl SignalDispositions {
    /// True when the program installed its own handler for `sig`.
    pub fn catches(&self, sig: i32) -> bool {
        (1..=64).contains(&sig) && self.caught & (1u64 << (sig - 1)) != 0
    }
}

/// Parses `SigCgt`/`SigIgn` from `/proc/PID/status` text.
pub fn parse_status_signals(text: &str) -> Option<SignalDispositions> {
    let mut d = SignalDispositions::default();
    let (mut c, mut i) = (false, false);
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("SigCgt:") {
            d.caught = u64::from_str_radix(v.trim(), 16).ok()?;
            c = true;
        } else if let Some(v) = line.strip_prefix("SigIgn:") {
            d.ignored = u64::from_str_radix(v.trim(), 16).ok()?;
            i = true;
        }
    }
    (c && i).then_some(d)
}

/// Reads the signal dispositions of `pid`.
pub fn read_signal_dispositions(pid: i32) -> io::Result<SignalDispositions> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_signals(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no SigCgt/SigIgn in status"))
}

/// Signals pending and not blocked for one thread, its own (`SigPnd`) and
/// the process's (`ShdPnd`) less those it blocks (`SigBlk`), from
/// `/proc/PID/task/TID/status` text: bit `sig-1` set per signal. None if a
/// line is missing or malformed.
pub fn parse_status_pending(text: &str) -> Option<u64> {
    let (mut thread, mut shared, mut blocked) = (None, None, None);
    for line in text.lines() {
        let hex = |v: &str| u64::from_str_radix(v.trim(), 16).ok();
        if let Some(v) = line.strip_prefix("SigPnd:") {
            thread = Some(hex(v)?);
        } else if let Some(v) = line.strip_prefix("ShdPnd:") {
            shared = Some(hex(v)?);
        } else if let Some(v) = line.strip_prefix("SigBlk:") {
            blocked = Some(hex(v)?);
        }
    }
    Some((thread? | shared?) & !blocked?)
}

/// Signals that would be delivered to thread `tid` of `pid` next.
pub fn read_pending_signals(pid: i32, tid: i32) -> io::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))?;
    parse_status_pending(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "no SigPnd/ShdPnd/SigBlk in status",
        )
    })
}

/// Byte counters of `/proc/PID/io` (all reads/writes through syscalls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoCounters {
    /// Bytes returned by read-like syscalls (`rchar`).
    pub rchar: u64,
    /// Bytes passed to write-like syscalls (`wchar`).
    pub wchar: u64,
}

/// Parses `/proc/PID/io` text.
pub fn parse_io(text: &str) -> Option<IoCounters> {
    let mut io = IoCounters::default();
    let mut n = 0;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("rchar:") {
            io.rchar = v.trim().parse().ok()?;
            n += 1;
        } else if let Some(v) = line.strip_prefix("wchar:") {
            io.wchar = v.trim().parse().ok()?;
            n += 1;
        }
    }
    (n == 2).then_some(io)
}

/// Reads `/proc/PID/io`.
pub fn read_io(pid: i32) -> io::Result<IoCounters> {
    let text = fs::read_to_string(format!("/proc/{pid}/io"))?;
    parse_io(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no rchar/wchar in io"))
}

/// Thread ids of `pid`, from `/proc/PID/task`, sorted.
pub fn read_tids(pid: i32) -> io::Result<Vec<i32>> {
    let mut tids: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    Ok(tids)
}

/// Child pids of every thread of `pid` (`/proc/PID/task/TID/children`, which
/// needs CONFIG_PROC_CHILDREN). `None` when the kernel lacks the file.
pub fn read_children(pid: i32, tids: &[i32]) -> Option<Vec<i32>> {
    let mut all = Vec::new();
    for tid in tids {
        let p = format!("/proc/{pid}/task/{tid}/children");
        match fs::read_to_string(Path::new(&p)) {
            Ok(text) => all.extend(
                text.split_whitespace()
                    .filter_map(|s| s.parse::<i32>().ok()),
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound && *tid == pid => return None,
            Err(_) => {}
        }
    }
    all.sort_unstable();
    Some(all)
}

/// Parses `/proc/PID/net/unix`: the inode of every bound unix socket and
/// its path (abstract names start with `@`). A connection accepted on a
/// listening socket shows the listener's path. Unbound sockets are left out.
pub fn parse_net_unix(text: &str) -> Vec<(u64, String)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            // Num RefCount Protocol Flags Type St Inode Path (may hold spaces)
            let mut rest = line.trim_start();
            let mut field = || {
                let (f, r) = rest.split_once(' ')?;
                rest = r.trim_start();
                Some(f)
            };
            for _ in 0..6 {
                field()?;
            }
            let (inode, path) = match rest.split_once(' ') {
                Some((i, p)) => (i, p),
                None => return None,
            };
            let inode = inode.parse().ok()?;
            (!path.is_empty()).then(|| (inode, path.to_string()))
        })
        .collect()
}

/// Reads the unix sockets of `pid`'s network namespace (see [`parse_net_unix`]).
pub fn read_net_unix(pid: i32) -> io::Result<Vec<(u64, String)>> {
    Ok(parse_net_unix(&fs::read_to_string(format!(
        "/proc/{pid}/net/unix"
    ))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from a real `sleep` on kernel 6.18.
    const MAPS: &str = "\
55d0c2a00000-55d0c2a02000 r--p 00000000 fd:01 1837     /usr/bin/sleep
55d0c2a02000-55d0c2a06000 r-xp 00002000 fd:01 1837     /usr/bin/sleep
55d0c2a0b000-55d0c2a0c000 rw-p 0000a000 fd:01 1837     /usr/bin/sleep
55d0c3b6e000-55d0c3b8f000 rw-p 00000000 00:00 0        [heap]
7f1a2c000000-7f1a2c021000 rw-s 00000000 00:01 4242     /dev/shm/my file (deleted)
7f1a2c200000-7f1a2c201000 ---p 00000000 00:00 0 
7ffd6f5a1000-7ffd6f5c2000 rw-p 00000000 00:00 0        [stack]
7ffd6f5fa000-7ffd6f5fe000 r--p 00000000 00:00 0        [vvar]
7ffd6f5fe000-7ffd6f600000 r-xp 00000000 00:00 0        [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]
";

    #[test]
    fn parses_real_maps() {
        let v = parse_maps(MAPS);
        assert_eq!(v.len(), 10);
        assert_eq!(v[0].start, 0x55d0c2a00000);
        assert_eq!(v[0].path, "/usr/bin/sleep");
        assert!(v[2].write && !v[2].shared && v[2].is_file());
        assert_eq!(v[2].offset, 0xa000);
        assert_eq!(v[3].path, "[heap]");
        assert!(!v[3].is_file());
        assert!(v[4].shared && v[4].write);
        assert_eq!(v[4].path, "/dev/shm/my file (deleted)");
        assert_eq!(v[5].prot(), 0);
        assert_eq!(v[5].path, "");
        assert!(v[8].is_special() && v[9].is_special());
        assert_eq!(v[9].end, 0xffffffffff601000);
    }

    #[test]
    fn parses_net_unix_with_paths_and_spaces() {
        // Captured on kernel 6.18: a listener, a connection accepted on it
        // (same path), an unbound socket and an abstract one.
        let text = "Num       RefCount Protocol Flags    Type St Inode Path
0000000004be18eb: 00000002 00000000 00010000 0001 01 124174 /tmp/x sock.s
00000000e860e751: 00000003 00000000 00000000 0001 03 124176 /tmp/x sock.s
000000005c7c0485: 00000003 00000000 00000000 0001 03 123177
000000002fb5f2dd: 00000002 00000000 00000000 0002 01 124178 @abstract-name
";
        assert_eq!(
            parse_net_unix(text),
            vec![
                (124174, "/tmp/x sock.s".to_string()),
                (124176, "/tmp/x sock.s".to_string()),
                (124178, "@abstract-name".to_string()),
            ]
        );
        assert!(parse_net_unix("garbage\nmore garbage\n").is_empty());
    }

    #[test]
    fn parses_fdinfo_status_io() {
        let fi = parse_fdinfo("pos:\t4096\nflags:\t02102002\nmnt_id:\t25\nino:\t1234\n").unwrap();
        assert_eq!(fi.pos, 4096);
        assert_eq!(fi.flags & libc::O_ACCMODE as u32, libc::O_RDWR as u32);
        assert_ne!(fi.flags & libc::O_APPEND as u32, 0);
        assert_eq!(fi.ino, Some(1234));
        assert_eq!(parse_fdinfo("pos:\t0\nflags:\t0\n").unwrap().ino, None);

        let st = "Name:\tx\nSigQ:\t0/95000\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n\
                  SigBlk:\t0000000000000000\nSigIgn:\t0000000000001000\nSigCgt:\t0000000180000400\n";
        let d = parse_status_signals(st).unwrap();
        assert!(d.catches(libc::SIGSEGV));
        assert!(!d.catches(libc::SIGBUS));
        assert_eq!(d.ignored, 1 << (libc::SIGPIPE - 1));

        let io = parse_io("rchar: 1948\nwchar: 12\nsyscr: 7\nsyscw: 1\n").unwrap();
        assert_eq!((io.rchar, io.wchar), (1948, 12));
        assert!(parse_io("rchar: x\n").is_none());
    }

    #[test]
    fn pending_signals_join_the_thread_and_the_process_queue() {
        let text = "Name:\tx\nSigQ:\t1/1000\nSigPnd:\t0000000000000001\nShdPnd:\t0000000000000402\nSigBlk:\t0000000000000002\n";
        // Signal 2 is pending but blocked: it would not be delivered now.
        assert_eq!(parse_status_pending(text), Some(0x401));
        assert_eq!(parse_status_pending("SigPnd:\t1\n"), None);
        assert_eq!(parse_status_pending("SigPnd:\tzz\nShdPnd:\t0\n"), None);
    }
}
