//! /proc/PID/io: a process's I/O byte counters.

/// Byte counters of `/proc/PID/io` (all reads/writes through syscalls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoCounters {
    /// Bytes returned by read-like syscalls (`rchar`).
    pub rchar: u64,
    /// Bytes passed to write-like syscalls (`wchar`).
    pub wchar: u64,
}

/// Parses `io` text. None unless both `rchar` and `wchar` parse.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_captured_io() {
        // Captured on kernel 6.18.
        let text = "rchar: 6976\nwchar: 12\nsyscr: 10\nsyscw: 1\nread_bytes: 0\n\
                    write_bytes: 0\ncancelled_write_bytes: 0\n";
        assert_eq!(
            parse_io(text),
            Some(IoCounters {
                rchar: 6976,
                wchar: 12
            })
        );
        assert!(parse_io("rchar: x\n").is_none());
        assert!(parse_io("rchar: 1\n").is_none());
    }
}
