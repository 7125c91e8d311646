//! /proc/PID/fd and /proc/PID/fdinfo/N: a process's open descriptors.

/// The fields of `/proc/PID/fdinfo/N` selfheal needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FdInfo {
    /// File offset.
    pub pos: u64,
    /// open(2) flags (octal in the file).
    pub flags: u32,
    /// Inode of the open file (Linux 5.14+; None before).
    pub ino: Option<u64>,
}

/// Parses `fdinfo` text. None without a `pos` line or with a malformed
/// `pos` or `flags`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_captured_fdinfo() {
        // A file opened O_RDWR|O_APPEND|O_CLOEXEC|O_LARGEFILE, kernel 6.18.
        let fi = parse_fdinfo("pos:\t4096\nflags:\t02102002\nmnt_id:\t25\nino:\t1234\n").unwrap();
        assert_eq!(fi.pos, 4096);
        assert_eq!(fi.flags & libc::O_ACCMODE as u32, libc::O_RDWR as u32);
        assert_ne!(fi.flags & libc::O_APPEND as u32, 0);
        assert_eq!(fi.ino, Some(1234));
        // Before 5.14 there is no ino line.
        assert_eq!(parse_fdinfo("pos:\t0\nflags:\t0\n").unwrap().ino, None);
        assert_eq!(parse_fdinfo("flags:\t0100000\n"), None);
        assert_eq!(parse_fdinfo("pos:\tx\n"), None);
    }
}
