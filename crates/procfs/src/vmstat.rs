//! /proc/vmstat: swap-out, major faults and OOM kills.

use crate::num::{fields, lines, parse_u64};

/// Cumulative VM event counters selfheal uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmStat {
    /// Pages swapped out since boot.
    pub pswpout: u64,
    /// Pages swapped in since boot.
    pub pswpin: u64,
    /// Major page faults since boot.
    pub pgmajfault: u64,
    /// OOM kills since boot (`oom_kill`, Linux 4.13+).
    pub oom_kill: Option<u64>,
}

/// Parses /proc/vmstat. Returns false when none of the fields was present.
pub fn parse_vmstat(buf: &[u8], out: &mut VmStat) -> bool {
    *out = VmStat::default();
    let mut seen = false;
    for line in lines(buf) {
        let mut it = fields(line);
        let (Some(key), Some(val)) = (it.next(), it.next()) else {
            continue;
        };
        let slot = match key {
            b"pswpout" => &mut out.pswpout,
            b"pswpin" => &mut out.pswpin,
            b"pgmajfault" => &mut out.pgmajfault,
            b"oom_kill" => {
                out.oom_kill = parse_u64(val);
                continue;
            }
            _ => continue,
        };
        *slot = parse_u64(val).unwrap_or(0);
        seen = true;
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host() {
        let mut v = VmStat::default();
        assert!(parse_vmstat(
            include_bytes!("../tests/fixtures/host-6.18-2cpu/vmstat"),
            &mut v
        ));
        assert!(v.pgmajfault > 0);
        assert_eq!(v.pswpout, 0, "this host has no swap");
        assert!(v.oom_kill.is_some());
    }

    #[test]
    fn missing_fields() {
        let mut v = VmStat::default();
        assert!(!parse_vmstat(b"nr_free_pages 10\n", &mut v));
        assert!(parse_vmstat(b"pswpout 7\npgmajfault 3\n", &mut v));
        assert_eq!((v.pswpout, v.pgmajfault, v.oom_kill), (7, 3, None));
    }
}
