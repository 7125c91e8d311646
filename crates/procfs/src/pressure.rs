//! /proc/pressure/{cpu,memory,io}: pressure stall information (Linux 4.20+,
//! and only when PSI is enabled).

use crate::num::{fields, lines, parse_f64, parse_u64};

/// One PSI line (`some` or `full`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiLine {
    /// Share of time stalled over the last 10 s, percent.
    pub avg10: f64,
    /// Over the last 60 s, percent.
    pub avg60: f64,
    /// Over the last 300 s, percent.
    pub avg300: f64,
    /// Total stall time in microseconds.
    pub total_usec: u64,
}

/// One pressure file. `full` is absent for cpu before Linux 5.13.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    /// Some tasks stalled.
    pub some: Option<PsiLine>,
    /// All non-idle tasks stalled.
    pub full: Option<PsiLine>,
}

/// Parses a pressure file. Returns false when neither line was found.
pub fn parse_pressure(buf: &[u8], out: &mut Pressure) -> bool {
    *out = Pressure::default();
    for line in lines(buf) {
        let mut it = fields(line);
        let Some(which) = it.next() else { continue };
        let mut p = PsiLine::default();
        for f in it {
            if let Some(v) = f.strip_prefix(b"avg10=") {
                p.avg10 = parse_f64(v).unwrap_or(0.0);
            } else if let Some(v) = f.strip_prefix(b"avg60=") {
                p.avg60 = parse_f64(v).unwrap_or(0.0);
            } else if let Some(v) = f.strip_prefix(b"avg300=") {
                p.avg300 = parse_f64(v).unwrap_or(0.0);
            } else if let Some(v) = f.strip_prefix(b"total=") {
                p.total_usec = parse_u64(v).unwrap_or(0);
            }
        }
        match which {
            b"some" => out.some = Some(p),
            b"full" => out.full = Some(p),
            _ => {}
        }
    }
    out.some.is_some() || out.full.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_files() {
        for (name, text) in [
            (
                "cpu",
                &include_bytes!("../tests/fixtures/host-6.18-2cpu/pressure/cpu")[..],
            ),
            (
                "memory",
                include_bytes!("../tests/fixtures/host-6.18-2cpu/pressure/memory"),
            ),
            (
                "io",
                include_bytes!("../tests/fixtures/host-6.18-2cpu/pressure/io"),
            ),
        ] {
            let mut p = Pressure::default();
            assert!(parse_pressure(text, &mut p), "{name}");
            let some = p.some.unwrap();
            assert!((0.0..=100.0).contains(&some.avg10), "{name}");
            assert!(p.full.is_some(), "6.18 reports full for {name}");
        }
    }

    #[test]
    fn values() {
        let mut p = Pressure::default();
        assert!(parse_pressure(
            b"some avg10=12.50 avg60=3.01 avg300=0.00 total=12345\n",
            &mut p
        ));
        let s = p.some.unwrap();
        assert_eq!((s.avg10, s.avg60, s.total_usec), (12.5, 3.01, 12345));
        assert!(p.full.is_none());
    }
}
