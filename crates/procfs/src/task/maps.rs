//! /proc/PID/maps: the virtual memory areas of a process.

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

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from a real `sleep` on kernel 6.18.
    pub(crate) const MAPS: &str = "\
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
    fn skips_lines_that_do_not_parse() {
        let v = parse_maps("garbage\n55d0c2a00000-55d0c2a02000 r--p 00000000 fd:01 1837 /x\n");
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].prot(), libc::PROT_READ);
    }
}
