//! /proc/meminfo: free, available and total memory, swap.

use crate::num::{fields, lines, parse_u64};

/// Memory figures in bytes. Fields the kernel may omit are `Option`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    /// MemTotal.
    pub total_bytes: u64,
    /// MemFree.
    pub free_bytes: u64,
    /// MemAvailable (Linux 3.14+).
    pub available_bytes: Option<u64>,
    /// Cached (page cache).
    pub cached_bytes: u64,
    /// SwapTotal.
    pub swap_total_bytes: u64,
    /// SwapFree.
    pub swap_free_bytes: u64,
    /// Shmem: tmpfs files and shared anonymous memory. It leaves
    /// MemAvailable like a leak does but belongs to files, not the kernel.
    pub shmem_bytes: u64,
}

/// Parses /proc/meminfo. Returns false when MemTotal is missing.
pub fn parse_meminfo(buf: &[u8], out: &mut MemInfo) -> bool {
    *out = MemInfo::default();
    let mut saw_total = false;
    for line in lines(buf) {
        let mut it = fields(line);
        let (Some(key), Some(val)) = (it.next(), it.next()) else {
            continue;
        };
        let Some(n) = parse_u64(val) else { continue };
        // Values are in kB unless the line has no unit (HugePages_* counts).
        let bytes = if it.next() == Some(b"kB") {
            n * 1024
        } else {
            n
        };
        match key {
            b"MemTotal:" => {
                out.total_bytes = bytes;
                saw_total = true;
            }
            b"MemFree:" => out.free_bytes = bytes,
            b"MemAvailable:" => out.available_bytes = Some(bytes),
            b"Cached:" => out.cached_bytes = bytes,
            b"SwapTotal:" => out.swap_total_bytes = bytes,
            b"SwapFree:" => out.swap_free_bytes = bytes,
            b"Shmem:" => out.shmem_bytes = bytes,
            _ => {}
        }
    }
    saw_total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_has_available() {
        let mut m = MemInfo::default();
        assert!(parse_meminfo(
            include_bytes!("../tests/fixtures/host-6.18-2cpu/meminfo"),
            &mut m
        ));
        assert!(m.total_bytes > 1 << 30);
        let avail = m.available_bytes.expect("6.18 reports MemAvailable");
        assert!(avail <= m.total_bytes && m.free_bytes <= m.total_bytes);
        assert_eq!(m.swap_total_bytes, 0);
        let shmem = include_str!("../tests/fixtures/host-6.18-2cpu/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("Shmem:"))
            .and_then(|v| v.trim().strip_suffix(" kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .expect("the fixture has Shmem");
        assert_eq!(m.shmem_bytes, shmem * 1024);
    }

    #[test]
    fn old_kernel_lacks_available() {
        let mut m = MemInfo::default();
        assert!(parse_meminfo(
            include_bytes!("../tests/fixtures/synthetic-4cpu-offline/meminfo"),
            &mut m
        ));
        assert_eq!(m.available_bytes, None);
        assert_eq!(m.total_bytes, 8062436 * 1024);
        assert_eq!(m.swap_free_bytes, 1048576 * 1024);
        assert!(!parse_meminfo(b"Nothing: 1 kB\n", &mut m));
    }
}
