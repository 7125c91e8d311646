//! /proc/uptime: seconds since boot and idle time summed over CPUs.
//!
//! The idle figure is the same per-CPU idle time /proc/stat reports (I/O
//! wait excluded, the current idle period included on a tickless CPU),
//! summed over all possible CPUs and printed with two decimals: a few bytes
//! the kernel formats without walking every interrupt counter, which makes
//! it a cheap gate in front of /proc/stat on an idle machine.

use crate::num::{fields, lines};

/// Parses the idle field of /proc/uptime (`"<up> <idle>\n"`, both in
/// seconds with two decimals) as centiseconds. `None` on malformed text.
pub fn parse_uptime_idle_cs(text: &[u8]) -> Option<u64> {
    let field = fields(lines(text).next()?).nth(1)?;
    let (secs, frac) = match field.iter().position(|&b| b == b'.') {
        Some(dot) => (&field[..dot], &field[dot + 1..]),
        None => (field, &b""[..]),
    };
    if secs.is_empty() || !secs.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if frac.len() > 2 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut cs: u64 = 0;
    for &b in secs {
        cs = cs.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    let mut hundredths = 0;
    for (i, &b) in frac.iter().enumerate() {
        hundredths += u64::from(b - b'0') * if i == 0 { 10 } else { 1 };
    }
    cs.checked_mul(100)?.checked_add(hundredths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_host_text() {
        // /proc/uptime of the 2-CPU 6.18 VM, 2026-12-07.
        assert_eq!(
            parse_uptime_idle_cs(b"56796.63 19424.68\n"),
            Some(1_942_468)
        );
        assert_eq!(parse_uptime_idle_cs(b"0.50 0.07\n"), Some(7));
        assert_eq!(parse_uptime_idle_cs(b"12.00 3.5\n"), Some(350));
        assert_eq!(parse_uptime_idle_cs(b"12.00 3\n"), Some(300));
    }

    #[test]
    fn malformed_text_is_none() {
        for bad in [
            &b""[..],
            b"56796.63\n",
            b"56796.63 -1.00\n",
            b"56796.63 1.234\n",
            b"56796.63 x.00\n",
            b"1 99999999999999999999.00\n",
        ] {
            assert_eq!(parse_uptime_idle_cs(bad), None, "{bad:?}");
        }
    }
}
