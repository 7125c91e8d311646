//! /proc/loadavg: load averages, and the tasks that exist now.
//!
//! The fourth field is `running/total`; `total` is the kernel's
//! `nr_threads`, the count `kernel.threads-max` is checked against at
//! every fork.

use crate::num::{fields, lines};

/// Parses the task total of /proc/loadavg
/// (`"0.08 0.03 0.01 1/123 4567\n"` gives 123). `None` on malformed text.
pub fn parse_loadavg_tasks(text: &[u8]) -> Option<u64> {
    let field = fields(lines(text).next()?).nth(3)?;
    let slash = field.iter().position(|&b| b == b'/')?;
    let total = &field[slash + 1..];
    if total.is_empty() || !total.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(total).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_text() {
        // The 2-CPU 6.18 VM, 2026-12-07, and the hang lab's guest during
        // a fork bomb.
        assert_eq!(
            parse_loadavg_tasks(b"1.92 1.37 1.21 3/412 412051\n"),
            Some(412)
        );
        assert_eq!(
            parse_loadavg_tasks(b"311.40 90.12 31.80 286/3840 4301\n"),
            Some(3840)
        );
    }

    #[test]
    fn malformed_text_is_none() {
        for bad in [
            &b""[..],
            b"1.92 1.37 1.21\n",
            b"1.92 1.37 1.21 3-412 4\n",
            b"1.92 1.37 1.21 3/ 4\n",
            b"1.92 1.37 1.21 3/-4 4\n",
            b"1.92 1.37 1.21 3/99999999999999999999999 4\n",
        ] {
            assert_eq!(parse_loadavg_tasks(bad), None, "{bad:?}");
        }
    }
}
