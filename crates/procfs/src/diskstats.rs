//! /proc/diskstats: per-device I/O counters.

use crate::num::{fields, lines, parse_u64};

/// A device name stored inline so a table of them never allocates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DevName {
    bytes: [u8; 32],
    len: u8,
}

impl DevName {
    /// A name truncated to 32 bytes (kernel disk names are at most 32).
    pub fn new(name: &[u8]) -> DevName {
        let mut bytes = [0u8; 32];
        let len = name.len().min(32);
        bytes[..len].copy_from_slice(&name[..len]);
        DevName {
            bytes,
            len: len as u8,
        }
    }

    /// The name as text (lossy for non-UTF-8, which the kernel never emits).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("?")
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for DevName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// Counters of one block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskCounters {
    /// Device name (`sda`, `nvme0n1`, `vda`).
    pub name: DevName,
    /// Major device number.
    pub major: u32,
    /// Minor device number.
    pub minor: u32,
    /// Reads completed.
    pub reads: u64,
    /// Writes completed.
    pub writes: u64,
    /// I/Os currently in flight.
    pub in_flight: u64,
    /// Milliseconds spent doing I/O (the basis of % busy).
    pub io_ticks_ms: u64,
    /// Weighted milliseconds spent doing I/O.
    pub weighted_ms: u64,
}

/// Parses every line of /proc/diskstats, calling `sink` for each device.
/// Lines with fewer than the 14 classic fields are skipped.
pub fn parse_diskstats(buf: &[u8], mut sink: impl FnMut(DiskCounters)) {
    for line in lines(buf) {
        let mut v = [0u64; 14];
        let mut name: &[u8] = b"";
        let mut n = 0;
        for (i, f) in fields(line).enumerate().take(14) {
            if i == 2 {
                name = f;
            } else {
                v[i] = parse_u64(f).unwrap_or(0);
            }
            n = i + 1;
        }
        if n < 14 {
            continue;
        }
        sink(DiskCounters {
            name: DevName::new(name),
            major: v[0] as u32,
            minor: v[1] as u32,
            reads: v[3],
            writes: v[7],
            in_flight: v[11],
            io_ticks_ms: v[12],
            weighted_ms: v[13],
        });
    }
}

/// Whether a device is worth watching by default: whole disks that do real
/// I/O, not loop/ram/zram devices (which are memory, not disks).
pub fn is_interesting_device(name: &[u8]) -> bool {
    !(name.starts_with(b"loop")
        || name.starts_with(b"ram")
        || name.starts_with(b"zram")
        || name.starts_with(b"fd")
        || name.starts_with(b"sr"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host() {
        let mut devs = Vec::new();
        parse_diskstats(
            include_bytes!("../tests/fixtures/host-6.18-2cpu/diskstats"),
            |d| devs.push(d),
        );
        let vda = devs.iter().find(|d| d.name.as_str() == "vda").unwrap();
        assert_eq!((vda.major, vda.minor), (254, 0));
        assert!(vda.reads > 0 && vda.io_ticks_ms > 0);
        assert!(devs.iter().any(|d| d.name.as_str() == "loop0"));
        assert!(!is_interesting_device(b"loop0") && is_interesting_device(b"vda"));
    }

    #[test]
    fn old_and_short_lines() {
        // Linux < 4.18 has 14 fields; partitions on < 2.6.25 had 7 (skipped).
        let text = b"   8       0 sda 10 0 80 5 20 0 160 9 1 30 40\n   8       1 sda1 1 2 3 4\n";
        let mut devs = Vec::new();
        parse_diskstats(text, |d| devs.push(d));
        assert_eq!(devs.len(), 1);
        assert_eq!(
            (devs[0].writes, devs[0].in_flight, devs[0].io_ticks_ms),
            (20, 1, 30)
        );
    }

    #[test]
    fn long_names_truncate() {
        let n = DevName::new(&[b'a'; 40]);
        assert_eq!(n.as_str().len(), 32);
    }
}
